//! Tests of `config`.

use super::*;

fn settings(opts: Term, kind: PoolType) -> Result<PoolSettings> {
    PoolSettings::read(kind, &Node::new("outgoing_pools.x.default", &opts))
}

#[test]
fn defaults_differ_by_type() {
    let s = settings(Term::Map(vec![]), PoolType::Rdbms).unwrap();
    assert_eq!((s.workers, s.call_timeout_ms), (10, 60_000));
    let s = settings(Term::List(vec![]), PoolType::Cassandra).unwrap();
    assert_eq!((s.workers, s.call_timeout_ms), (20, 5_000));
    assert_eq!(s.strategy, Strategy::Best);
    assert_eq!(s.queue_bound(), DEFAULT_QUEUE_BOUND);
}

#[test]
fn errors_name_path_expectation_and_value() {
    let opts = Term::Map(vec![(Term::atom("workers"), Term::Int(0))]);
    let e = settings(opts, PoolType::Redis).unwrap_err();
    assert_eq!(
        e,
        Error::Config(
            "outgoing_pools.x.default.workers: expected an integer between 1 and 100000, got 0"
                .into()
        )
    );
    let opts = Term::List(vec![Term::tuple(vec![
        Term::atom("strategy"),
        Term::from("fast"),
    ])]);
    let e = settings(opts, PoolType::Redis).unwrap_err().to_string();
    assert!(e.contains("strategy: expected one of best_worker"), "{e}");
    let opts = Term::Map(vec![(Term::atom("wrkers"), Term::Int(3))]);
    let e = settings(opts, PoolType::Redis).unwrap_err().to_string();
    assert!(
        e.starts_with("outgoing_pools.x.default.wrkers: unknown option"),
        "{e}"
    );
}

#[test]
fn secrets_stay_out_of_errors() {
    let t = Term::Map(vec![(Term::atom("password"), Term::Int(123456))]);
    let e = Node::new("p", &t)
        .at("password")
        .secret()
        .unwrap_err()
        .to_string();
    assert_eq!(e, "p.password: expected a string, got an integer");
    let s = Node::new("p", &Term::from("hunter2"))
        .secret()
        .unwrap()
        .unwrap();
    assert_eq!(format!("{s:?}"), "<secret>");
}

#[test]
fn toml_pools_become_mongooseim_maps() {
    let text = r#"
        [outgoing_pools.redis.global_distrib]
          scope = "single_host"
          host = "a.com"
          workers = 3
          strategy = "next_worker"
          [outgoing_pools.redis.global_distrib.connection]
            port = 6380
        [outgoing_pools.generic.default]
          scope = "host"
    "#;
    let pools = pools_from_toml(text).unwrap();
    assert_eq!(pools.len(), 2);
    let of_type = |t: &str| {
        pools
            .iter()
            .find(|p| p.get("type") == Some(&Term::atom(t)))
            .unwrap()
    };
    let redis = of_type("redis");
    assert_eq!(redis.get("scope"), Some(&Term::from("a.com")));
    assert_eq!(
        redis.get("opts").unwrap().get("strategy"),
        Some(&Term::atom("next_worker"))
    );
    assert_eq!(
        redis.get("conn_opts").unwrap().get("port"),
        Some(&Term::Int(6380))
    );
    assert_eq!(
        of_type("generic").get("scope"),
        Some(&Term::atom("host_type"))
    );
}

#[test]
fn bad_toml_is_named() {
    let e = pools_from_toml("[outgoing_pools.redis.x]\nscope = \"single_host\"\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("outgoing_pools.redis.x.host: required"),
        "{e}"
    );
    let e = pools_from_toml("[outgoing_pools.mongo.x]\n").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("outgoing_pools.mongo: expected a pool type"),
        "{e}"
    );
    let e = pools_from_toml("[outgoing_pools\n").unwrap_err();
    assert!(e.to_string().starts_with("TOML syntax"), "{e}");
}
