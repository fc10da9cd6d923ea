//! `mode = "sentinel"`: the master is asked of the sentinels (the redis
//! crate's `Sentinel`, which also checks that the server it names calls
//! itself master) each time a worker connects, so a reconnect after a
//! failover finds the new master. The connection itself is opened as in
//! single mode (keepalive, the `closed` signal).

use std::time::Duration;

use futures::future::BoxFuture;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{Arg, Client, Cmd, ConnectionAddr, RedisConnectionInfo};

use super::config::Server;
use super::{single, RedisRequest};
use crate::engine::pool::Outcome;
use crate::error::{Error, Result};
use crate::term::Term;

pub struct Sentinels {
    sentinels: Vec<ConnectionAddr>,
    master_name: String,
    settings: RedisConnectionInfo,
    read_from_replicas: bool,
    target: String,
}

/// The master's connection and, with `read_from_replicas`, a replica's
/// (none while no replica answers: reads then go to the master).
#[derive(Clone)]
pub struct Conn {
    pub master: single::Conn,
    pub replica: Option<single::Conn>,
}

impl Sentinels {
    pub fn new(
        sentinels: &[Server],
        master_name: &str,
        settings: RedisConnectionInfo,
        read_from_replicas: bool,
    ) -> Sentinels {
        let list = sentinels
            .iter()
            .map(|s| format!("{}:{}", s.host, s.port))
            .collect::<Vec<_>>()
            .join(",");
        Sentinels {
            sentinels: sentinels
                .iter()
                .map(|s| ConnectionAddr::Tcp(s.host.clone(), s.port))
                .collect(),
            master_name: master_name.to_string(),
            settings,
            read_from_replicas,
            target: format!("master {master_name} (sentinels {list})"),
        }
    }

    pub fn connect(
        &self,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Conn>> + 'static {
        let sentinels = self.sentinels.clone();
        let name = self.master_name.clone();
        let settings = self.settings.clone();
        let read_from_replicas = self.read_from_replicas;
        let target = self.target.clone();
        async move {
            let resolving = async {
                let mut sentinel = Sentinel::build(sentinels).map_err(|e| super::describe(&e))?;
                let info = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(settings.clone());
                let master = sentinel
                    .async_master_for(&name, Some(&info))
                    .await
                    .map_err(|e| super::describe(&e))?;
                let (host, port) = address(&master)?;
                let master = single::open(host, port, settings.clone(), None).await?;
                let replica = match read_from_replicas {
                    true => match sentinel.async_replica_for(&name, Some(&info)).await {
                        Ok(client) => {
                            let (host, port) = address(&client)?;
                            single::open(host, port, settings, None).await.ok()
                        }
                        Err(_) => None,
                    },
                    false => None,
                };
                Ok::<_, String>(Conn { master, replica })
            };
            match tokio::time::timeout(timeout, resolving).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(Error::Connect(format!("redis {target}: {e}"))),
                Err(_) => Err(Error::Connect(format!(
                    "redis {target}: no connection within {timeout:?}"
                ))),
            }
        }
    }
}

fn address(client: &Client) -> std::result::Result<(String, u16), String> {
    match client.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, port) => Ok((host.clone(), *port)),
        other => Err(format!("the sentinels named {other}, not a TCP address")),
    }
}

/// Reads go to the replica when there is one; the rest to the master. A
/// master that answers READONLY was demoted by a failover: the worker
/// reconnects, through the sentinels, to the new one.
pub async fn run(conn: Conn, request: RedisRequest) -> Outcome {
    let target = match (&conn.replica, &request) {
        (Some(replica), RedisRequest::Single(cmd)) if reads_only(cmd) => replica,
        _ => &conn.master,
    };
    let answer = single::run(target.clone(), request).await;
    match answer.broken {
        None if demoted(&answer.answer) => Outcome {
            answer: answer.answer,
            broken: Some(Error::ConnectionLost(
                "redis: the master became a replica (failover); asking the sentinels again".into(),
            )),
        },
        _ => answer,
    }
}

/// Either connection closing replaces both.
pub fn closed(conn: &Conn) -> BoxFuture<'static, ()> {
    let master = conn.master.closed().cancelled_owned();
    match &conn.replica {
        Some(r) => {
            let replica = r.closed().cancelled_owned();
            Box::pin(async move {
                tokio::select! {
                    _ = master => {}
                    _ = replica => {}
                }
            })
        }
        None => Box::pin(master),
    }
}

/// Commands that only read data, which a replica answers as the master
/// would (modulo replication lag).
const READ_ONLY: [&str; 40] = [
    "GET",
    "MGET",
    "STRLEN",
    "GETRANGE",
    "EXISTS",
    "TTL",
    "PTTL",
    "TYPE",
    "KEYS",
    "SCAN",
    "DBSIZE",
    "RANDOMKEY",
    "HGET",
    "HMGET",
    "HGETALL",
    "HKEYS",
    "HVALS",
    "HLEN",
    "HEXISTS",
    "HSCAN",
    "SMEMBERS",
    "SISMEMBER",
    "SMISMEMBER",
    "SCARD",
    "SRANDMEMBER",
    "SSCAN",
    "SUNION",
    "SINTER",
    "LRANGE",
    "LLEN",
    "LINDEX",
    "ZRANGE",
    "ZRANGEBYSCORE",
    "ZSCORE",
    "ZCARD",
    "ZRANK",
    "ZCOUNT",
    "ZSCAN",
    "BITCOUNT",
    "GETBIT",
];

fn reads_only(cmd: &Cmd) -> bool {
    match cmd.args_iter().next() {
        Some(Arg::Simple(name)) => READ_ONLY
            .iter()
            .any(|r| r.as_bytes().eq_ignore_ascii_case(name)),
        _ => false,
    }
}

/// `{error, <<"READONLY ...">>}`, alone or in a pipeline's answers.
fn demoted(answer: &Term) -> bool {
    match answer {
        Term::Tuple(e) if e.len() == 2 && e[0] == Term::atom("error") => {
            matches!(&e[1], Term::Bin(b) if b.starts_with(b"READONLY"))
        }
        Term::List(items) => items.iter().any(demoted),
        _ => false,
    }
}
