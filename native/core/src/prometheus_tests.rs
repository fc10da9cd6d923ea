use super::*;
use crate::engine::metrics::PoolMetrics;
use crate::engine::reply::Reply;
use crate::engine::strategy::Choice;
use crate::term::Term;

/// A pool outside the engine whose figures the test sets.
struct Fixed(Figures);

impl AnyPool for Fixed {
    fn submit(&self, _: Choice, _: Term, _: Reply) -> Result<()> {
        Err(Error::PoolStopped)
    }
    fn stream(&self, _: Choice, _: Term, _: Reply) -> Result<()> {
        Err(Error::PoolStopped)
    }
    fn lease(&self, _: Choice, _: crate::engine::lease::WrapLease, _: Reply) -> Result<()> {
        Err(Error::PoolStopped)
    }
    fn stats(&self) -> Term {
        Term::List(vec![])
    }
    fn figures(&self) -> Option<Figures> {
        Some(self.0.clone())
    }
    fn stop(&self) {}
}

fn labels_of(tag: &str) -> PoolLabels {
    PoolLabels {
        pool_type: "redis".into(),
        host_type: "global".into(),
        tag: tag.into(),
    }
}

fn figures() -> Figures {
    let m = PoolMetrics::default();
    m.requested();
    m.requested();
    m.answered(&Term::atom("ok"), Duration::from_micros(300), false);
    m.answered(
        &Term::error(Term::from("ERR")),
        Duration::from_secs(20),
        false,
    );
    m.figures(10, 9, 3, 2)
}

#[test]
fn pools_render_in_the_text_format() {
    let text = render_pools(&[(labels_of("t\"x"), figures())]);
    let l = r#"pool_type="redis",host_type="global",pool_tag="t\"x""#;
    for line in [
        "# TYPE mongoose_native_pool_workers gauge".to_string(),
        format!("mongoose_native_pool_workers{{{l}}} 10"),
        format!("mongoose_native_pool_connected_workers{{{l}}} 9"),
        format!("mongoose_native_pool_queue_length{{{l}}} 3"),
        format!("mongoose_native_pool_in_flight_requests{{{l}}} 2"),
        "# TYPE mongoose_native_pool_requests_total counter".to_string(),
        format!("mongoose_native_pool_requests_total{{{l}}} 2"),
        format!("mongoose_native_pool_errors_total{{{l},kind=\"server_error\"}} 1"),
        format!("mongoose_native_pool_errors_total{{{l},kind=\"timeout\"}} 0"),
        "# TYPE mongoose_native_pool_call_duration_seconds histogram".to_string(),
        format!("mongoose_native_pool_call_duration_seconds_bucket{{{l},le=\"0.00025\"}} 0"),
        format!("mongoose_native_pool_call_duration_seconds_bucket{{{l},le=\"0.0005\"}} 1"),
        format!("mongoose_native_pool_call_duration_seconds_bucket{{{l},le=\"10\"}} 1"),
        format!("mongoose_native_pool_call_duration_seconds_bucket{{{l},le=\"+Inf\"}} 2"),
        format!("mongoose_native_pool_call_duration_seconds_sum{{{l}}} 20.0003"),
        format!("mongoose_native_pool_call_duration_seconds_count{{{l}}} 2"),
    ] {
        assert!(
            text.lines().any(|t| t == line),
            "{line} missing from\n{text}"
        );
    }
    // One HELP and TYPE per family, whatever the number of pools.
    let two = render_pools(&[(labels_of("a"), figures()), (labels_of("b"), figures())]);
    assert_eq!(
        two.matches("# TYPE mongoose_native_pool_workers ").count(),
        1
    );
    assert_eq!(two.matches("mongoose_native_pool_workers{").count(), 2);
}

#[test]
fn registered_pools_and_sections_are_scraped_until_gone() {
    let pool: Arc<dyn AnyPool> = Arc::new(Fixed(figures()));
    register(labels_of("scraped_until_gone"), &pool);
    set_section("test_section", "test_metric_total 7\n".into());
    let text = render();
    assert!(
        text.contains("pool_tag=\"scraped_until_gone\"} 10"),
        "{text}"
    );
    assert!(text.ends_with("test_metric_total 7\n") || text.contains("\ntest_metric_total 7\n"));
    // Registered again under the same labels: one pool, the newer.
    let again: Arc<dyn AnyPool> = Arc::new(Fixed(Figures {
        workers: 77,
        ..figures()
    }));
    register(labels_of("scraped_until_gone"), &again);
    let text = render();
    assert!(
        text.contains("pool_tag=\"scraped_until_gone\"} 77"),
        "{text}"
    );
    assert!(
        !text.contains("pool_tag=\"scraped_until_gone\"} 10"),
        "{text}"
    );
    unregister(&again);
    drop(pool);
    set_section("test_section", String::new());
    let text = render();
    assert!(!text.contains("scraped_until_gone"), "{text}");
    assert!(!text.contains("test_metric_total"), "{text}");
}

#[test]
fn a_dropped_pool_leaves_the_scrape() {
    let pool: Arc<dyn AnyPool> = Arc::new(Fixed(figures()));
    register(labels_of("dropped"), &pool);
    assert!(render().contains("pool_tag=\"dropped\""));
    drop(pool);
    assert!(!render().contains("pool_tag=\"dropped\""));
}

async fn request(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn the_endpoint_answers_get_metrics_only() {
    let addr = listen("127.0.0.1:0").await.unwrap();
    let ok = request(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(
        ok.contains("Content-Type: text/plain; version=0.0.4"),
        "{ok}"
    );
    let (head, body) = ok.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{ok}"
    );
    assert!(body.contains("# TYPE mongoose_native_pool_workers gauge"));
    let with_query = request(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
    assert!(with_query.starts_with("HTTP/1.1 200 OK"), "{with_query}");
    let other = request(addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let post = request(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let garbage = request(addr, b"\x00\x01\x02\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', MAX_REQUEST));
    let huge = request(addr, &huge).await;
    assert!(huge.starts_with("HTTP/1.1 431"), "{huge}");
    // A second listen replaces the first.
    let second = listen("127.0.0.1:0").await.unwrap();
    let again = request(second, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(again.starts_with("HTTP/1.1 200 OK"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the first still listens"
    );
    stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(second).await.is_err());
}

#[tokio::test]
async fn a_bad_address_is_refused_clearly() {
    let e = listen("not an address").await.unwrap_err();
    assert_eq!(e.kind(), "invalid_config");
    assert!(
        e.to_string()
            .starts_with("metrics_listen: cannot listen on \"not an address\""),
        "{e}"
    );
}
