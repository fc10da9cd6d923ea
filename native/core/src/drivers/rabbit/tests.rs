//! Tests of `rabbit` against the real RabbitMQ on 127.0.0.1:5672 (guest/guest).

use super::*;
use crate::config::{Node, PoolType};
use crate::engine::pool::AnyPool;
use crate::engine::reply::oneshot;
use crate::engine::strategy::Choice;
use std::sync::atomic::Ordering;

/// Tests run in parallel: the one that closes every connection on the
/// broker takes this exclusively, the others shared.
static BROKER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn conn(pairs: &[(&str, Term)]) -> Term {
    let mut all = vec![(Term::atom("amqp_host"), Term::from("127.0.0.1"))];
    all.extend(pairs.iter().map(|(k, v)| (Term::atom(k), v.clone())));
    Term::Map(all)
}

async fn start(conn: Term, workers: i64) -> Result<Box<dyn AnyPool>> {
    let opts = Term::Map(vec![(Term::atom("workers"), Term::Int(workers))]);
    let settings = PoolSettings::read(PoolType::Rabbit, &Node::new("p", &opts))?;
    let config = RabbitConfig::read(&Node::new("p.connection", &conn))?;
    open(config, settings)?.await
}

async fn call(p: &dyn AnyPool, req: Term) -> Term {
    let (reply, rx) = oneshot();
    match p.submit(Choice::Strategy, req, reply) {
        Ok(()) => rx.await.unwrap_or(Term::atom("no_answer")),
        Err(e) => e.to_term(),
    }
}

fn bin(s: &str) -> Term {
    Term::from(s)
}

fn t(items: Vec<Term>) -> Term {
    Term::tuple(items)
}

fn a(s: &str) -> Term {
    Term::atom(s)
}

fn amqp_call(method: Term) -> Term {
    t(vec![a("amqp_call"), method])
}

fn exchange_declare(name: &str) -> Term {
    t(vec![
        a("exchange.declare"),
        Term::Int(0),
        bin(name),
        bin("fanout"),
        a("false"),
        a("false"),
        a("false"),
        a("false"),
        a("false"),
        Term::List(vec![]),
    ])
}

fn queue_declare(name: &str, args: Vec<Term>) -> Term {
    t(vec![
        a("queue.declare"),
        Term::Int(0),
        bin(name),
        a("false"),
        a("false"),
        a("false"),
        a("false"),
        a("false"),
        Term::List(args),
    ])
}

fn queue_bind(queue: &str, exchange: &str) -> Term {
    t(vec![
        a("queue.bind"),
        Term::Int(0),
        bin(queue),
        bin(exchange),
        bin(""),
        a("false"),
        Term::List(vec![]),
    ])
}

fn queue_delete(name: &str) -> Term {
    t(vec![
        a("queue.delete"),
        Term::Int(0),
        bin(name),
        a("false"),
        a("false"),
        a("false"),
    ])
}

fn publish(exchange: &str, payload: &str) -> Term {
    let undefined = || a("undefined");
    let mut props = vec![a("P_basic")];
    props.extend((0..14).map(|_| undefined()));
    t(vec![
        a("amqp_publish"),
        t(vec![
            a("basic.publish"),
            Term::Int(0),
            bin(exchange),
            bin(""),
            a("false"),
            a("false"),
        ]),
        t(vec![a("amqp_msg"), t(props), bin(payload)]),
    ])
}

fn basic_get(queue: &str) -> Term {
    amqp_call(t(vec![a("basic.get"), Term::Int(0), bin(queue), a("true")]))
}

/// The payloads in `queue`, read with basic.get through the pool.
async fn drain(p: &dyn AnyPool, queue: &str) -> Vec<String> {
    let mut out = vec![];
    loop {
        match call(p, basic_get(queue)).await {
            Term::Tuple(ok) if ok.len() == 2 => match &ok[1] {
                Term::Tuple(empty) if empty[0] == a("basic.get_empty") => return out,
                Term::Tuple(got) if got.len() == 2 => match &got[1] {
                    Term::Tuple(msg) => out.push(msg[2].as_text().unwrap_or_default()),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }
}

fn stat(stats: &Term, key: &str) -> i64 {
    let rabbit = stats.get("rabbit").expect("rabbit section");
    match rabbit.get(key) {
        Some(Term::Int(n)) => *n,
        other => panic!("{key}: {other:?}"),
    }
}

async fn topology(p: &dyn AnyPool, exchange: &str, queue: &str, args: Vec<Term>) {
    let ok = |name: &str| t(vec![a("ok"), t(vec![a(name)])]);
    assert_eq!(
        call(p, amqp_call(exchange_declare(exchange))).await,
        ok("exchange.declare_ok")
    );
    call(p, amqp_call(queue_delete(queue))).await;
    let declared = call(p, amqp_call(queue_declare(queue, args))).await;
    assert_eq!(
        declared,
        t(vec![
            a("ok"),
            t(vec![
                a("queue.declare_ok"),
                bin(queue),
                Term::Int(0),
                Term::Int(0)
            ])
        ])
    );
    assert_eq!(
        call(p, amqp_call(queue_bind(queue, exchange))).await,
        ok("queue.bind_ok")
    );
}

#[tokio::test]
async fn publish_and_read_back_with_and_without_confirms() {
    let _broker = BROKER.read().await;
    for confirms in [false, true] {
        let p = start(conn(&[("confirms_enabled", Term::from(confirms))]), 2)
            .await
            .unwrap();
        let (ex, q) = (
            format!("mn.rust.ex.{confirms}"),
            format!("mn.rust.q.{confirms}"),
        );
        topology(&*p, &ex, &q, vec![]).await;
        for i in 0..20 {
            assert_eq!(call(&*p, publish(&ex, &format!("m{i}"))).await, a("ok"));
        }
        let mut got = drain(&*p, &q).await;
        got.sort();
        let mut want: Vec<_> = (0..20).map(|i| format!("m{i}")).collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(stat(&p.stats(), "published"), 20);
        p.stop();
    }
}

#[tokio::test]
async fn nack_from_a_full_queue_is_reported_and_counted() {
    let _broker = BROKER.read().await;
    let p = start(conn(&[("confirms_enabled", Term::from(true))]), 1)
        .await
        .unwrap();
    let args = vec![
        t(vec![bin("x-max-length"), a("long"), Term::Int(1)]),
        t(vec![bin("x-overflow"), a("longstr"), bin("reject-publish")]),
    ];
    topology(&*p, "mn.rust.ex.nack", "mn.rust.q.nack", args).await;
    assert_eq!(
        call(&*p, publish("mn.rust.ex.nack", "first")).await,
        a("ok")
    );
    assert_eq!(
        call(&*p, publish("mn.rust.ex.nack", "second")).await,
        Term::error(a("nack"))
    );
    assert_eq!(stat(&p.stats(), "nacked"), 1);
    assert_eq!(
        drain(&*p, "mn.rust.q.nack").await,
        vec!["first".to_string()]
    );
    p.stop();
}

#[tokio::test]
async fn a_refused_method_closes_only_the_channel() {
    let _broker = BROKER.read().await;
    let p = start(conn(&[]), 1).await.unwrap();
    let passive = t(vec![
        a("exchange.declare"),
        Term::Int(0),
        bin("mn.rust.no.such.exchange"),
        bin("direct"),
        a("true"),
        a("false"),
        a("false"),
        a("false"),
        a("false"),
        Term::List(vec![]),
    ]);
    match call(&*p, amqp_call(passive)).await {
        Term::Tuple(e) if e[0] == a("exit") => {
            assert!(format!("{:?}", e[1]).contains("404"), "{e:?}")
        }
        other => panic!("{other:?}"),
    }
    topology(&*p, "mn.rust.ex.after", "mn.rust.q.after", vec![]).await;
    p.stop();
}

#[tokio::test]
async fn malformed_requests_are_refused_at_once() {
    let _broker = BROKER.read().await;
    let p = start(conn(&[]), 1).await.unwrap();
    for req in [
        a("hello"),
        amqp_call(a("exchange.declare")),
        amqp_call(t(vec![a("exchange.declare"), Term::Int(0)])),
        amqp_call(t(vec![a("confirm.select"), a("false")])),
        amqp_call(t(vec![
            a("queue.declare"),
            Term::Int(0),
            Term::Int(5),
            a("false"),
            a("false"),
            a("false"),
            a("false"),
            a("false"),
            Term::List(vec![]),
        ])),
        t(vec![a("amqp_publish"), a("x"), a("y")]),
    ] {
        let answer = call(&*p, req.clone()).await;
        assert!(
            format!("{answer:?}").contains("bad_request"),
            "{req:?} -> {answer:?}"
        );
    }
    p.stop();
}

#[tokio::test]
async fn wrong_password_names_the_options_not_the_secret() {
    let _broker = BROKER.read().await;
    let err = start(conn(&[("amqp_password", bin("canary-s3cret"))]), 1)
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(text.contains("p.connection.amqp_username"), "{text}");
    assert!(text.contains("p.connection.amqp_password"), "{text}");
    assert!(!text.contains("canary-s3cret"), "{text}");
}

#[tokio::test]
async fn unknown_vhost_names_the_option() {
    let _broker = BROKER.read().await;
    let err = start(conn(&[("virtual_host", bin("mn_no_such_vhost"))]), 1)
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(text.contains("p.connection.virtual_host"), "{text}");
}

#[tokio::test]
async fn unreachable_broker_fails_the_start() {
    let _broker = BROKER.read().await;
    let err = start(conn(&[("amqp_port", Term::Int(1))]), 1)
        .await
        .err()
        .unwrap();
    assert_eq!(err.kind(), "connect_failed");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[test]
fn config_defaults_aliases_and_errors() {
    let empty = Term::Map(vec![]);
    let c = RabbitConfig::read(&Node::new("c", &empty)).unwrap();
    assert_eq!(
        (c.host.as_str(), c.port, c.username.as_str()),
        ("localhost", 5672, "guest")
    );
    assert_eq!(
        (c.virtual_host.as_str(), c.confirms, c.max_queue_len),
        ("/", false, 1000)
    );
    let both = Term::Map(vec![(a("host"), bin("a")), (a("amqp_host"), bin("b"))]);
    let e = RabbitConfig::read(&Node::new("c", &both))
        .unwrap_err()
        .to_string();
    assert!(e.contains("amqp_host and host"), "{e}");
    let port = Term::List(vec![t(vec![a("amqp_port"), bin("5672")])]);
    let e = RabbitConfig::read(&Node::new("c", &port))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "c.amqp_port: expected an integer between 1 and 65535, got <<\"5672\">>"
    );
    let pass = Term::Map(vec![(a("password"), Term::Int(12345))]);
    let e = RabbitConfig::read(&Node::new("c", &pass))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("c.password: expected a string") && !e.contains("12345"),
        "{e}"
    );
    let inf = Term::Map(vec![(a("max_worker_queue_len"), a("infinity"))]);
    let c = RabbitConfig::read(&Node::new("c", &inf)).unwrap();
    assert_eq!(c.max_queue_len, crate::config::INFINITE_QUEUE_BOUND);
    let typo = Term::Map(vec![(a("amqp_hots"), bin("x"))]);
    let e = RabbitConfig::read(&Node::new("c", &typo))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("c.amqp_hots: unknown option"), "{e}");
}

/// Sends every request before awaiting any answer.
async fn burst(p: &dyn AnyPool, reqs: Vec<Term>) -> Vec<Term> {
    let mut waiting = vec![];
    for req in reqs {
        let (reply, rx) = oneshot();
        p.submit(Choice::Strategy, req, reply).unwrap();
        waiting.push(rx);
    }
    let mut out = vec![];
    for rx in waiting {
        out.push(rx.await.unwrap_or(a("no_answer")));
    }
    out
}

#[tokio::test]
async fn a_full_lane_drops_its_oldest_requests() {
    let _broker = BROKER.read().await;
    let p = start(
        conn(&[
            ("confirms_enabled", Term::from(true)),
            ("max_worker_queue_len", Term::Int(5)),
        ]),
        1,
    )
    .await
    .unwrap();
    topology(&*p, "mn.rust.ex.drop", "mn.rust.q.drop", vec![]).await;
    let n = 500;
    let answers = burst(
        &*p,
        (0..n)
            .map(|i| publish("mn.rust.ex.drop", &format!("{i}")))
            .collect(),
    )
    .await;
    let dropped = answers
        .iter()
        .filter(|t| **t == a("request_dropped"))
        .count();
    let got: Vec<usize> = drain(&*p, "mn.rust.q.drop")
        .await
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(dropped > 0, "nothing dropped");
    assert_eq!(dropped + got.len(), n);
    assert_eq!(stat(&p.stats(), "dropped") as usize, dropped);
    // The newest survive, in order.
    assert_eq!(got.last(), Some(&(n - 1)));
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    p.stop();
}

fn close_all_connections() {
    let out = std::process::Command::new("rabbitmqctl")
        .args(["close_all_connections", "mongoose_native test"])
        .output()
        .expect("rabbitmqctl");
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn closed_connections_reconnect_redeclare_and_lose_no_confirmed_publish() {
    let _broker = BROKER.write().await;
    let p = start(conn(&[("confirms_enabled", Term::from(true))]), 2)
        .await
        .unwrap();
    let other = start(conn(&[]), 1).await.unwrap();
    let (ex, q) = ("mn.rust.ex.restart", "mn.rust.q.restart");
    topology(&*p, ex, q, vec![]).await;
    // The exchange goes away behind the pool's back, as a broker restart
    // takes non-durable exchanges; the queue stays, bound again below.
    let delete = t(vec![
        a("exchange.delete"),
        Term::Int(0),
        bin(ex),
        a("false"),
        a("false"),
    ]);
    assert_eq!(
        call(&*other, amqp_call(delete)).await,
        t(vec![a("ok"), t(vec![a("exchange.delete_ok")])])
    );
    let n = 400;
    let (first, second): (Vec<_>, Vec<_>) = (0..n)
        .map(|i| publish(ex, &format!("{i}")))
        .enumerate()
        .partition(|(i, _)| *i < n / 2);
    close_all_connections();
    // Until the pool is back, publishes wait (within call_timeout).
    let waiting = burst(&*p, first.into_iter().map(|(_, r)| r).collect());
    let reconnected = async {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let passive = t(vec![
                a("exchange.declare"),
                Term::Int(0),
                bin(ex),
                bin("fanout"),
                a("true"),
                a("false"),
                a("false"),
                a("false"),
                a("false"),
                Term::List(vec![]),
            ]);
            if call(&*other, amqp_call(passive)).await
                == t(vec![a("ok"), t(vec![a("exchange.declare_ok")])])
            {
                break;
            }
        }
    };
    let (answers, ()) = tokio::join!(waiting, reconnected);
    assert!(answers.iter().all(|t| *t == a("ok")), "{answers:?}");
    assert_eq!(
        call(&*other, amqp_call(queue_bind(q, ex))).await.as_atom(),
        None
    );
    // Publishes paced over the time rabbitmqctl takes to close the
    // connections again: those unconfirmed then are sent once more.
    let before = stat(&p.stats(), "reconnects");
    let closing = tokio::task::spawn_blocking(close_all_connections);
    let mut waiting = vec![];
    for (_, req) in second {
        let (reply, rx) = oneshot();
        p.submit(Choice::Strategy, req, reply).unwrap();
        waiting.push(rx);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    closing.await.unwrap();
    for rx in waiting {
        assert_eq!(rx.await.unwrap(), a("ok"));
    }
    assert!(stat(&p.stats(), "reconnects") > before, "{:?}", p.stats());
    let mut got: Vec<usize> = drain(&*other, q)
        .await
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    got.sort();
    got.dedup();
    let stats = p.stats();
    assert!(stat(&stats, "reconnects") >= 2, "{stats:?}");
    // The first half was published before the queue was bound again.
    assert_eq!(got, (n / 2..n).collect::<Vec<_>>(), "{stats:?}");
    p.stop();
    other.stop();
}

/// A TCP proxy to the broker that can be cut: while cut it drops every
/// connection through it and refuses new ones.
struct Proxy {
    port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    gen: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gen = Arc::new(tokio::sync::watch::channel(0u64).0);
        let (c, g) = (cut.clone(), gen.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let mut cut_signal = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut broker) => {}
                        _ = cut_signal.changed() => {}
                    }
                });
            }
        });
        Proxy { port, cut, gen }
    }

    fn cut(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
        if on {
            self.gen.send_modify(|g| *g += 1);
        }
    }
}

#[tokio::test]
async fn while_the_broker_is_unreachable_requests_fail_in_time_then_the_pool_recovers() {
    let _broker = BROKER.read().await;
    let proxy = Proxy::start().await;
    let opts = Term::Map(vec![
        (Term::atom("workers"), Term::Int(1)),
        (Term::atom("call_timeout"), Term::Int(1000)),
    ]);
    let settings = PoolSettings::read(PoolType::Rabbit, &Node::new("p", &opts)).unwrap();
    let c = conn(&[
        ("amqp_port", Term::Int(proxy.port.into())),
        ("confirms_enabled", Term::from(true)),
    ]);
    let config = RabbitConfig::read(&Node::new("p.connection", &c)).unwrap();
    let p = open(config, settings).unwrap().await.unwrap();
    topology(&*p, "mn.rust.ex.proxy", "mn.rust.q.proxy", vec![]).await;
    proxy.cut(true);
    let connected = |p: &dyn AnyPool| format!("{:?}", p.stats()).contains("{connected,true}");
    while connected(&*p) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A call fails at once; a publish waits for a connection, at most call_timeout.
    let t0 = std::time::Instant::now();
    let answer = call(&*p, amqp_call(queue_declare("mn.rust.q.proxy", vec![]))).await;
    assert!(
        format!("{answer:?}").contains("no_connection"),
        "{answer:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    let answer = call(&*p, publish("mn.rust.ex.proxy", "lost")).await;
    assert!(
        format!("{answer:?}").contains("no_connection"),
        "{answer:?}"
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
    assert_eq!(stat(&p.stats(), "failed"), 1);
    // Back within the capped backoff (5 s), declaring the exchange again.
    proxy.cut(false);
    for _ in 0..100 {
        if connected(&*p) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(connected(&*p), "{:?}", p.stats());
    assert_eq!(
        call(&*p, publish("mn.rust.ex.proxy", "after")).await,
        a("ok")
    );
    assert_eq!(
        drain(&*p, "mn.rust.q.proxy").await,
        vec!["after".to_string()]
    );
    p.stop();
}

/// A TLS front for the broker (as RabbitMQ's own TLS listener would be),
/// with a certificate for 127.0.0.1 from a CA of its own; returns its port
/// and the CA's PEM.
async fn tls_front() -> (u16, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &*ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let Ok(mut broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    (port, ca.pem())
}

#[tokio::test]
async fn tls_with_the_right_ca_and_refused_with_another() {
    let _broker = BROKER.read().await;
    let (port, ca_pem) = tls_front().await;
    let (_, other_ca) = tls_front().await;
    let dir = std::env::temp_dir();
    let ca_file = dir.join(format!("mn_rabbit_ca_{}.pem", std::process::id()));
    let other_file = dir.join(format!("mn_rabbit_other_ca_{}.pem", std::process::id()));
    std::fs::write(&ca_file, ca_pem).unwrap();
    std::fs::write(&other_file, other_ca).unwrap();
    let tls = |ca: &std::path::Path| {
        Term::Map(vec![
            (a("verify_peer"), a("true")),
            (
                a("cacertfile"),
                Term::from(ca.to_string_lossy().to_string()),
            ),
        ])
    };
    let p = start(
        conn(&[
            ("amqp_port", Term::Int(port.into())),
            ("tls", tls(&ca_file)),
        ]),
        1,
    )
    .await
    .unwrap();
    topology(&*p, "mn.rust.ex.tls", "mn.rust.q.tls", vec![]).await;
    assert_eq!(
        call(&*p, publish("mn.rust.ex.tls", "over tls")).await,
        a("ok")
    );
    assert_eq!(
        drain(&*p, "mn.rust.q.tls").await,
        vec!["over tls".to_string()]
    );
    p.stop();
    let err = start(
        conn(&[
            ("amqp_port", Term::Int(port.into())),
            ("tls", tls(&other_file)),
        ]),
        1,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.kind(), "connect_failed", "{err}");
    let _ = std::fs::remove_file(ca_file);
    let _ = std::fs::remove_file(other_file);
}
