use super::*;

fn kind_count(f: &Figures, kind: &str) -> u64 {
    f.errors[Error::KINDS.iter().position(|k| *k == kind).unwrap()]
}

#[test]
fn server_is_server_error() {
    assert_eq!(Error::KINDS[SERVER], "server_error");
}

#[test]
fn answers_fill_buckets_and_kinds() {
    let m = PoolMetrics::default();
    let ok = Term::atom("ok");
    m.requested();
    m.answered(&ok, Duration::from_micros(100), false);
    m.answered(&ok, Duration::from_micros(101), false);
    m.answered(&ok, Duration::from_secs(60), false);
    m.answered(&Error::Timeout("t".into()).to_term(), Duration::ZERO, true);
    m.answered(&Term::error(Term::from("WRONGTYPE")), Duration::ZERO, false);
    m.answered(
        &Term::error(Term::atom("duplicate_key")),
        Duration::ZERO,
        false,
    );
    m.failed(&Error::NoAvailableWorkers);
    m.gave_up();
    m.reconnected();
    m.connect_failed();
    let f = m.figures(4, 3, 2, 1);
    assert_eq!(
        (f.workers, f.connected, f.queued, f.in_flight),
        (4, 3, 2, 1)
    );
    assert_eq!(f.requests, 1);
    // 0 and 0 and 100 µs in the first bucket, 101 µs in the second,
    // a minute only in the last.
    assert_eq!(f.latency_buckets[0], 4);
    assert_eq!(f.latency_buckets[1], 5);
    assert_eq!(f.latency_buckets[BUCKETS_US.len() - 1], 5);
    assert_eq!(f.latency_buckets[BUCKETS_US.len()], 6);
    assert_eq!(f.latency_sum_us, 60_000_201);
    assert_eq!(kind_count(&f, "timeout"), 1);
    assert_eq!(kind_count(&f, "server_error"), 2);
    assert_eq!(kind_count(&f, "no_available_workers"), 1);
    // The timeout answer counts once though its caller also gave up,
    // and so does the request skipped because its caller had left.
    assert_eq!(f.timeouts, 2);
    assert_eq!((f.reconnects, f.connect_failures), (1, 1));
}

#[test]
fn answers_that_are_not_errors() {
    for t in [
        Term::atom("error"),
        Term::tuple(vec![Term::atom("ok"), Term::atom("error")]),
        Term::tuple(vec![Term::atom("error"), Term::Int(1), Term::Int(2)]),
    ] {
        assert_eq!(error_kind(&t), None, "{t:?}");
    }
}
