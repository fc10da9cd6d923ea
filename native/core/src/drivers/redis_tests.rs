//! Tests of `redis`.

use super::*;
use crate::config::{PoolSettings, PoolType};
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
