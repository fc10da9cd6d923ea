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

fn toml_error(text: &str) -> String {
    match pools_from_toml(text) {
        Err(Error::Config(msg)) => msg,
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// Each TOML text refused with an error that starts as given.
fn refused_with_path(cases: &[(&str, &str)]) {
    for (text, refused) in cases {
        let e = toml_error(text);
        assert!(e.starts_with(refused), "{text}: {e}");
    }
}

/// MongooseIM's parser types each TOML value: a boolean, a number, an
/// array or a date where text belongs is refused with its path, where an
/// Erlang caller's atom or charlist is text.
#[test]
fn toml_values_of_the_wrong_type_are_not_text() {
    let pool = "[outgoing_pools.redis.x]\nscope = \"single_host\"\n";
    for (value, got) in [
        ("true", "got true"),
        ("7", "got 7"),
        // (described as Erlang would print it)
        ("[104, 105]", "got \"hi\""),
        ("1979-05-27", "got {toml_datetime"),
    ] {
        let e = toml_error(&format!("{pool}host = {value}\n"));
        assert!(
            e.starts_with("outgoing_pools.redis.x.host: expected a string, ") && e.contains(got),
            "{value}: {e}"
        );
    }
    refused_with_path(&[
        (
            "[outgoing_pools.redis.x]\nstrategy = false\n",
            "outgoing_pools.redis.x.strategy: expected one of",
        ),
        (
            "[outgoing_pools.redis.x.connection]\npassword = true\n",
            "outgoing_pools.redis.x.connection.password: expected a string, got a boolean",
        ),
        (
            "[outgoing_pools.redis.x]\nconnection = []\n",
            "outgoing_pools.redis.x.connection: expected a table",
        ),
        (
            "[outgoing_pools.redis.x]\nmax_worker_queue_len = [105]\n",
            "outgoing_pools.redis.x.max_worker_queue_len: expected",
        ),
    ]);
    // From Erlang, an atom and a charlist are text.
    let erlang = Term::map_of(vec![
        ("host", Term::atom("localhost")),
        ("password", Term::charlist("pw")),
    ]);
    let node = Node::new("c", &erlang);
    assert_eq!(
        node.at("host").string().unwrap().as_deref(),
        Some("localhost")
    );
    assert_eq!(
        node.at("password").secret().unwrap().unwrap().expose(),
        "pw"
    );
    // The same values read from TOML are not.
    let toml_node = Node::toml("c", &erlang);
    assert!(toml_node.at("host").string().is_err());
    assert!(toml_node.at("password").secret().is_err());
}

#[test]
fn the_pool_section_is_read_through_its_table() {
    let e = toml_error("[outgoing_pools.redis.x]\nscope = \"global\"\nhost = \"a.com\"\n");
    assert_eq!(
        e,
        "outgoing_pools.redis.x.host: only used with scope = \"single_host\" (scope is \"global\")"
    );
    let e = toml_error("[outgoing_pools.redis.x]\nhost = \"a.com\"\nhost_type = \"b.com\"\n");
    assert_eq!(e, "outgoing_pools.redis.x: set host or host_type, not both");
    let pools = pools_from_toml(
        "[outgoing_pools.redis.x]\nscope = \"single_host\"\nhost_type = \"b.com\"\n",
    )
    .unwrap();
    assert_eq!(pools[0].get("scope"), Some(&Term::from("b.com")));
    refused_with_path(&[
        (
            "[outgoing_pools.redis.x]\nworkers = 3\ntag = \"y\"\n",
            "outgoing_pools.redis.x.tag: unknown option",
        ),
        // Connection options are checked on the way, as MongooseIM's parser does.
        (
            "[outgoing_pools.riak.x.connection]\nport = 0\n",
            "outgoing_pools.riak.x.connection.port: expected",
        ),
        (
            "[outgoing_pools.redis]\nx = 7\n",
            "outgoing_pools.redis.x: expected a table",
        ),
    ]);
}
