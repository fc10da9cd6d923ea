//! `mode = "cluster"`: a worker's connection is the redis crate's cluster
//! connection, which discovers the slot map from the seeds, routes each
//! command by its key's slot, follows MOVED and ASK, refreshes the map on
//! MOVED and reconnects to nodes itself. A `qp` is split here by slot: the
//! crate sends a pipeline to one node only.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_read_routing::RandomReplicaStrategy;
use redis::cluster_routing::{SingleNodeRoutingInfo, Slot};
use redis::{aio::ConnectionLike, Arg, Cmd, ConnectionAddr, RedisResult, Value};

use super::config::Server;
use super::{pipeline, reply, RedisRequest};
use crate::config::Secret;
use crate::error::{Error, Result};
use crate::term::Term;

pub struct Cluster {
    client: ClusterClient,
    target: String,
}

impl Cluster {
    pub fn new(
        seeds: &[Server],
        password: Option<&Secret>,
        read_from_replicas: bool,
        connect_timeout: Duration,
        call_timeout: Duration,
    ) -> Result<Cluster> {
        let target = seeds
            .iter()
            .map(|s| format!("{}:{}", s.host, s.port))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = seeds
            .iter()
            .map(|s| ConnectionAddr::Tcp(s.host.clone(), s.port));
        let mut builder = ClusterClientBuilder::new(nodes)
            .connection_timeout(connect_timeout)
            // Per attempt and overall: a caller waits call_timeout at most,
            // so the cluster connection need not try longer.
            .response_timeout(call_timeout)
            .overall_response_timeout(Some(call_timeout));
        if let Some(p) = password {
            builder = builder.password(p.expose());
        }
        if read_from_replicas {
            builder = builder.read_routing_strategy(RandomReplicaStrategy);
        }
        let client = builder
            .build()
            .map_err(|e| Error::Config(format!("redis cluster {target}: {e}")))?;
        Ok(Cluster { client, target })
    }

    pub fn connect(
        &self,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<ClusterConnection>> + 'static {
        let (client, target) = (self.client.clone(), self.target.clone());
        async move {
            match tokio::time::timeout(timeout, client.get_async_connection()).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(Error::Connect(format!(
                    "redis cluster (seeds {target}): {}",
                    super::describe(&e)
                ))),
                Err(_) => Err(Error::Connect(format!(
                    "redis cluster (seeds {target}): no connection within {timeout:?}"
                ))),
            }
        }
    }
}

/// Carries a request; errors are answers, never a broken worker, because
/// the cluster connection replaces its node connections itself.
pub async fn run(conn: ClusterConnection, request: RedisRequest) -> Term {
    let answer = match request {
        RedisRequest::Single(cmd) => one(conn, cmd).await,
        RedisRequest::Pipeline { cmds, transaction } if transaction => {
            // One node, one piece: the crate routes it by its keys' slot and
            // refuses keys of several slots (CROSSSLOT).
            let n = cmds.len();
            let values = conn
                .clone()
                .req_packed_commands(&pipeline(cmds), 0, n)
                .await;
            list(values, n)
        }
        RedisRequest::Pipeline { cmds, .. } => Ok(Term::List(split(conn, cmds).await)),
    };
    answer.unwrap_or_else(|e| e.to_term())
}

/// How often a command redirected mid-migration is sent again.
const REDIRECTS: usize = 3;

async fn one(mut conn: ClusterConnection, cmd: Cmd) -> Result<Term> {
    let mut answer = conn.req_packed_command(&cmd).await;
    for _ in 0..REDIRECTS {
        answer = match redirect(&answer) {
            // The crate sends ASKING and the command as two requests on a
            // connection other callers share, so another's command may take
            // the ASKING; as one pipeline they reach the node back to back.
            Some(Redirect::Ask(host, port)) => {
                let mut p = redis::Pipeline::with_capacity(2);
                p.add_command(redis::cmd("ASKING")).add_command(cmd.clone());
                let route = SingleNodeRoutingInfo::ByAddress { host, port };
                match conn.route_pipeline(p, 1, 1, route).await {
                    Ok(mut values) => values.pop().map_or(answer, Ok),
                    Err(e) => Err(e),
                }
            }
            // A MOVED the crate handed back (its own retries spent while a
            // migration ends): the command did not run, so it is sent again
            // by the refreshed slot map.
            Some(Redirect::Moved) => conn.req_packed_command(&cmd).await,
            None => break,
        };
    }
    reply(answer)
}

enum Redirect {
    /// To the node importing the slot, for this command only.
    Ask(String, u16),
    Moved,
}

/// Where an `ASK` or `MOVED` answer sends the command.
fn redirect(answer: &RedisResult<Value>) -> Option<Redirect> {
    let (code, detail) = match answer {
        Ok(Value::ServerError(e)) => (e.code(), e.details()),
        Err(e) => (e.code()?, e.detail()),
        Ok(_) => return None,
    };
    match code {
        "MOVED" => Some(Redirect::Moved),
        "ASK" => {
            let addr = detail?.split_ascii_whitespace().nth(1)?;
            let (host, port) = addr.rsplit_once(':')?;
            Some(Redirect::Ask(host.to_string(), port.parse().ok()?))
        }
        _ => None,
    }
}

fn list(values: RedisResult<Vec<Value>>, n: usize) -> Result<Term> {
    match values {
        Ok(values) => values
            .into_iter()
            .map(|v| reply(Ok(v)))
            .collect::<Result<Vec<_>>>()
            .map(Term::List),
        Err(e) => reply(Err(e)).map(|t| Term::List(vec![t; n])),
    }
}

/// A pipeline across slots: each command goes through the crate's routing
/// (which follows MOVED, and `one` ASK); the commands of one slot run one
/// after the other in their order, different slots side by side; a command
/// without one slot (keyless, or keys across slots) waits for those before
/// it and those after it wait for it. The answers come back in the caller's
/// order. Not one pipeline per node: the crate retries a whole pipeline when
/// one command in it is redirected, which would run the others twice during
/// a migration.
async fn split(conn: ClusterConnection, cmds: Vec<Cmd>) -> Vec<Term> {
    let mut answers = Vec::with_capacity(cmds.len());
    let mut by_slot: HashMap<Slot, Vec<Cmd>> = HashMap::new();
    let mut order = vec![];
    for cmd in cmds {
        match slot_of(&cmd) {
            Some(slot) => {
                order.push(slot);
                by_slot.entry(slot).or_default().push(cmd);
            }
            None => {
                answers.extend(side_by_side(&conn, std::mem::take(&mut by_slot), &order).await);
                order.clear();
                answers.push(answer(one(conn.clone(), cmd).await));
            }
        }
    }
    answers.extend(side_by_side(&conn, by_slot, &order).await);
    answers
}

/// Runs each slot's commands in order, the slots concurrently; `order` is
/// the slot of each command as the caller gave them.
async fn side_by_side(
    conn: &ClusterConnection,
    by_slot: HashMap<Slot, Vec<Cmd>>,
    order: &[Slot],
) -> Vec<Term> {
    let chains = by_slot.into_iter().map(|(slot, chain)| {
        let conn = conn.clone();
        async move {
            let mut out = Vec::with_capacity(chain.len());
            for cmd in chain {
                out.push(answer(one(conn.clone(), cmd).await));
            }
            (slot, out.into_iter())
        }
    });
    let mut done: HashMap<Slot, std::vec::IntoIter<Term>> =
        join_all(chains).await.into_iter().collect();
    order
        .iter()
        .map(|slot| {
            done.get_mut(slot)
                .and_then(Iterator::next)
                .unwrap_or_else(|| Term::atom("undefined"))
        })
        .collect()
}

fn answer(result: Result<Term>) -> Term {
    result.unwrap_or_else(|e| e.to_term())
}

/// Commands whose first argument is not a key, or that have no key: they
/// are routed by the crate (to any master, or to all) rather than grouped.
const NOT_FIRST_KEY: [&[u8]; 47] = [
    b"PING",
    b"ECHO",
    b"INFO",
    b"CONFIG",
    b"CLIENT",
    b"CLUSTER",
    b"COMMAND",
    b"KEYS",
    b"SCAN",
    b"FLUSHDB",
    b"FLUSHALL",
    b"DBSIZE",
    b"RANDOMKEY",
    b"PUBLISH",
    b"PUBSUB",
    b"SCRIPT",
    b"FUNCTION",
    b"ACL",
    b"MEMORY",
    b"OBJECT",
    b"DEBUG",
    b"TIME",
    b"LASTSAVE",
    b"SAVE",
    b"BGSAVE",
    b"BGREWRITEAOF",
    b"WAIT",
    b"WAITAOF",
    b"SLOWLOG",
    b"LATENCY",
    b"MODULE",
    b"ROLE",
    b"LOLWUT",
    b"XREAD",
    b"XREADGROUP",
    b"XINFO",
    b"XGROUP",
    b"BITOP",
    b"ZUNION",
    b"ZINTER",
    b"ZDIFF",
    b"ZINTERCARD",
    b"SINTERCARD",
    b"LMPOP",
    b"ZMPOP",
    b"BLMPOP",
    b"BZMPOP",
];

/// The one slot all of `cmd`'s keys hash to, as far as this can tell; a
/// wrong guess costs order only between a command whose key is elsewhere
/// and the others on that key.
fn slot_of(cmd: &Cmd) -> Option<Slot> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            Arg::Simple(b) => b,
            _ => b"",
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let keys: Vec<&[u8]> = match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let numkeys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            args.get(3..3 + numkeys)?.to_vec()
        }
        b"MGET" | b"DEL" | b"EXISTS" | b"UNLINK" | b"TOUCH" => args[1..].to_vec(),
        b"MSET" | b"MSETNX" => args[1..].iter().step_by(2).copied().collect(),
        n if NOT_FIRST_KEY.contains(&n) => return None,
        _ => args.get(1..2)?.to_vec(),
    };
    let mut slots = keys.iter().map(Slot::for_key);
    let first = slots.next()?;
    slots.all(|s| s == first).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Cmd {
        let mut c = Cmd::new();
        for a in args {
            c.arg(*a);
        }
        c
    }

    #[test]
    fn slots_of_commands() {
        let slot = |k: &str| Slot::for_key(k);
        assert_eq!(slot_of(&cmd(&["GET", "foo"])), Some(slot("foo")));
        assert_eq!(slot_of(&cmd(&["get", "{u}a"])), Some(slot("u")));
        assert_eq!(slot_of(&cmd(&["MGET", "{u}a", "{u}b"])), Some(slot("u")));
        assert_eq!(slot_of(&cmd(&["MGET", "a", "b"])), None);
        assert_eq!(
            slot_of(&cmd(&["EVALSHA", "x", "1", "k", "v"])),
            Some(slot("k"))
        );
        assert_eq!(slot_of(&cmd(&["EVAL", "x", "0"])), None);
        assert_eq!(slot_of(&cmd(&["PING"])), None);
        assert_eq!(slot_of(&cmd(&["KEYS", "*"])), None);
    }
}
