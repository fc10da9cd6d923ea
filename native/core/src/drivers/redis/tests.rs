//! Tests of `redis`.

use super::*;
use crate::config::{Node, PoolSettings, PoolType};
use crate::engine::pool::{AnyPool, Pool};
use crate::engine::reply::oneshot;
use crate::engine::strategy::Choice;

fn q(args: &[&str]) -> Term {
    Term::tuple(vec![
        Term::atom("q"),
        Term::List(args.iter().map(|a| Term::from(*a)).collect()),
    ])
}

async fn pool(conn: Term) -> Result<std::sync::Arc<Pool<RedisDriver>>> {
    let opts = Term::Map(vec![(Term::atom("workers"), Term::Int(2))]);
    let settings = PoolSettings::read(PoolType::Redis, &Node::new("p", &opts))?;
    let driver = RedisDriver::new(RedisConfig::read(&Node::new("p.connection", &conn))?, 5000)?;
    Pool::start(driver, settings).await
}

async fn call(p: &std::sync::Arc<Pool<RedisDriver>>, req: Term) -> Term {
    let (reply, rx) = oneshot();
    p.submit(Choice::Strategy, req, reply).unwrap();
    rx.await.unwrap()
}

#[tokio::test]
async fn set_get_and_shapes() {
    let p = pool(Term::Map(vec![(Term::atom("database"), Term::Int(3))]))
        .await
        .unwrap();
    assert_eq!(
        call(&p, q(&["SET", "mn:rust:k", "v"])).await,
        Term::ok(Term::from("OK"))
    );
    assert_eq!(
        call(&p, q(&["GET", "mn:rust:k"])).await,
        Term::ok(Term::from("v"))
    );
    assert_eq!(
        call(&p, q(&["DEL", "mn:rust:k"])).await,
        Term::ok(Term::from("1"))
    );
    assert_eq!(
        call(&p, q(&["GET", "mn:rust:k"])).await,
        Term::ok(Term::atom("undefined"))
    );
    let err = call(&p, q(&["NOSUCHCMD"])).await;
    assert!(
        matches!(&err, Term::Tuple(t) if t[0] == Term::atom("error")),
        "{err:?}"
    );
    p.stop();
}

#[tokio::test]
async fn unreachable_server_fails_start_clearly() {
    let conn = Term::Map(vec![(Term::atom("port"), Term::Int(1))]);
    let e = pool(conn).await.err().unwrap();
    assert_eq!(e.kind(), "connect_failed");
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
}

#[tokio::test]
async fn bad_requests_are_refused_before_queueing() {
    let p = pool(Term::Map(vec![])).await.unwrap();
    let (reply, _rx) = oneshot();
    let e = p
        .submit(Choice::Strategy, Term::atom("get"), reply)
        .unwrap_err();
    assert_eq!(e.kind(), "bad_request");
    p.stop();
}

#[test]
fn shared_connections_refuse_state_and_endless_blocking() {
    let args = |a: &[&str]| a.iter().map(|s| Term::from(*s)).collect::<Vec<_>>();
    let limit = Duration::from_millis(5000);
    for refused in [
        &["multi"][..],
        &["SELECT", "2"],
        &["client", "reply", "off"],
        &["BLPOP", "k", "0"],
        &["BRPOP", "k", "5"],
        &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
        &["WAIT", "1", "0"],
    ] {
        let e = check_shared(&args(refused), limit).unwrap_err();
        assert_eq!(e.kind(), "bad_request", "{refused:?}");
    }
    for allowed in [
        &["GET", "k"][..],
        &["BLPOP", "k", "0.5"],
        &["XREAD", "COUNT", "1", "STREAMS", "s", "0"],
        &["CLIENT", "SETNAME", "x"],
    ] {
        assert!(check_shared(&args(allowed), limit).is_ok(), "{allowed:?}");
    }
}

fn read(pairs: Vec<(&str, Term)>) -> Result<RedisConfig> {
    let conn = Term::Map(pairs.into_iter().map(|(k, v)| (Term::atom(k), v)).collect());
    RedisConfig::read(&Node::new("outgoing_pools.redis.default.connection", &conn))
}

fn servers(ports: &[i64]) -> Term {
    Term::List(
        ports
            .iter()
            .map(|p| {
                Term::Map(vec![
                    (Term::atom("host"), Term::from("127.0.0.1")),
                    (Term::atom("port"), Term::Int(*p)),
                ])
            })
            .collect(),
    )
}

#[test]
fn modes_are_read_from_maps_and_legacy_tuples() {
    let c = read(vec![]).unwrap();
    assert_eq!(
        c.mode,
        Mode::Single {
            host: "127.0.0.1".into(),
            port: 6379
        }
    );
    let c = read(vec![
        ("mode", Term::from("cluster")),
        ("servers", servers(&[7000, 7001])),
        ("read_from_replicas", Term::atom("true")),
    ])
    .unwrap();
    assert!(c.read_from_replicas);
    assert!(
        matches!(&c.mode, Mode::Cluster { seeds } if seeds.len() == 2 && seeds[1].port == 7001)
    );
    // Seed 000's form: a proplist with atoms and {Host, Port} tuples.
    let legacy = Term::List(vec![
        Term::tuple(vec![Term::atom("mode"), Term::atom("sentinel")]),
        Term::tuple(vec![
            Term::atom("servers"),
            Term::List(vec![Term::tuple(vec![
                Term::from("10.0.0.1"),
                Term::Int(5000),
            ])]),
        ]),
        Term::tuple(vec![Term::atom("master_name"), Term::from("mymaster")]),
    ]);
    let c = RedisConfig::read(&Node::new("p.connection", &legacy)).unwrap();
    assert_eq!(
        c.mode,
        Mode::Sentinel {
            sentinels: vec![Server {
                host: "10.0.0.1".into(),
                port: 5000
            }],
            master_name: "mymaster".into()
        }
    );
    let c = read(vec![
        ("mode", Term::from("sentinel")),
        (
            "servers",
            Term::List(vec![Term::Map(vec![(
                Term::atom("host"),
                Term::from("s1"),
            )])]),
        ),
        ("master_name", Term::from("m")),
    ])
    .unwrap();
    assert!(matches!(&c.mode, Mode::Sentinel { sentinels, .. } if sentinels[0].port == 26379));
}

#[test]
fn mode_errors_name_the_option() {
    let p = "outgoing_pools.redis.default.connection";
    let err = |pairs| read(pairs).unwrap_err().to_string();
    assert_eq!(
        err(vec![("mode", Term::from("ring"))]),
        format!("{p}.mode: expected one of single, cluster, sentinel, got <<\"ring\">>")
    );
    assert_eq!(
        err(vec![("mode", Term::from("cluster"))]),
        format!("{p}.servers: required, expected a non-empty list of {{host, port}} entries")
    );
    assert!(err(vec![
        ("mode", Term::from("cluster")),
        ("servers", Term::List(vec![]))
    ])
    .starts_with(&format!("{p}.servers: expected a non-empty list")));
    assert!(err(vec![
        ("mode", Term::from("cluster")),
        ("servers", servers(&[70000])),
    ])
    .starts_with(&format!(
        "{p}.servers[0].port: expected an integer between 1 and 65535"
    )));
    assert!(err(vec![
        ("mode", Term::from("cluster")),
        (
            "servers",
            Term::List(vec![Term::Map(vec![(Term::atom("hots"), Term::from("x"))])])
        ),
    ])
    .starts_with(&format!("{p}.servers[0].hots: unknown option")));
    assert!(err(vec![
        ("mode", Term::from("cluster")),
        ("servers", servers(&[7000])),
        ("host", Term::from("x")),
    ])
    .starts_with(&format!("{p}.host: only used with mode = \"single\"")));
    assert!(err(vec![
        ("mode", Term::from("cluster")),
        ("servers", servers(&[7000])),
        ("database", Term::Int(2)),
    ])
    .starts_with(&format!("{p}.database: expected 0")));
    assert_eq!(
        err(vec![
            ("mode", Term::from("sentinel")),
            ("servers", servers(&[26379]))
        ]),
        format!("{p}.master_name: required, expected a string")
    );
    assert!(
        err(vec![("servers", servers(&[7000]))]).starts_with(&format!(
            "{p}.servers: only used with mode = \"cluster\" or \"sentinel\""
        ))
    );
    assert!(err(vec![("read_from_replicas", Term::atom("true"))])
        .starts_with(&format!("{p}.read_from_replicas: only used with")));
    assert!(err(vec![
        ("mode", Term::from("cluster")),
        ("servers", servers(&[7000])),
        ("tls", Term::Map(vec![])),
    ])
    .starts_with(&format!(
        "{p}.tls: TLS is supported with mode = \"single\" only"
    )));
}
