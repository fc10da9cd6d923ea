//! The session table in Redis, in stock MongooseIM's layout (CONTRACTS.md
//! section 3), reached through a redis pool with the driver's `{q, Args}` and
//! `{qp, [Args]}` requests.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};

use crate::engine::pool::AnyPool;
use crate::engine::reply;
use crate::engine::strategy::Choice;
use crate::error::{Error, Result};
use crate::term::Term;

/// Commands per pipelined request when refreshing sessions.
pub const REFRESH_BATCH: usize = 10_000;
/// Refresh requests in flight at once (each on a worker of its own).
const REFRESH_PARALLEL: usize = 4;
/// How long one request may take before the mapping gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Deletes KEYS[1] only while it holds ARGV[1] (this datacenter's host);
/// for component domains.
const DELETE_IF_OURS: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
/// A domain's refresh: re-writes KEYS[1] with ARGV[1] and a fresh TTL,
/// unless another datacenter wrote its own host there since.
const REFRESH_IF_OURS: &str = "local v = redis.call('GET', KEYS[1]) \
if v == false or v == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end \
return 0";

/// Reads a session's owner record (`STAMP HOST`; HOST empty once that
/// session was deleted) into `cs`, `ch`.
const OWNER: &str = "local v = redis.call('GET', KEYS[1]) \
local c = redis.call('GET', KEYS[2]) local cs, ch \
if c then local sp = string.find(c, ' ', 1, true) \
if sp then cs = tonumber(string.sub(c, 1, sp - 1)) ch = string.sub(c, sp + 1) end end ";

/// A session's entry KEYS[1] and owner record KEYS[2], for host ARGV[1]
/// with TTL ARGV[2]. ARGV[3] `new`: a session opened now takes the entry
/// with a stamp newer than any before (Redis' clock, in microseconds).
/// ARGV[3] a stamp: the refresh of that session writes unless a newer one
/// owns the entry, that very session was deleted (its refresh was in
/// flight), or a writer without a record (stock MongooseIM) holds it.
/// Answers the stamp written, or 0.
fn claim_script() -> String {
    format!(
        "{OWNER}local s \
if ARGV[3] == 'new' then local t = redis.call('TIME') \
s = tonumber(t[1]) * 1000000 + tonumber(t[2]) \
if cs and cs >= s then s = cs + 1 end \
else s = tonumber(ARGV[3]) \
if cs and ch == '' then if cs == s then return 0 end cs = nil end \
if cs and cs > s then return 0 end \
if v and v ~= ARGV[1] and not (cs and ch == v) then return 0 end end \
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) \
redis.call('SET', KEYS[2], string.format('%d %s', s, ARGV[1]), 'EX', ARGV[2]) \
return s"
    )
}

/// The end of session ARGV[3]: unless a newer session owns the entry, the
/// entry goes if it holds this host, and the owner record remembers the
/// deletion for `expire_after` (a refresh of it in flight then skips).
fn delete_script() -> String {
    format!(
        "{OWNER}local s = tonumber(ARGV[3]) \
if cs and ch ~= '' and cs > s then return 0 end \
if v == ARGV[1] then redis.call('DEL', KEYS[1]) end \
redis.call('SET', KEYS[2], string.format('%d ', s), 'EX', ARGV[2]) \
return 1"
    )
}

/// The owner record beside session entry `key`, in the same cluster slot:
/// `{KEY}#owner`, or `KEY#owner` when the key has a hash tag of its own.
pub fn owner_key(key: &[u8]) -> Vec<u8> {
    let tagged = key.iter().position(|&b| b == b'{').is_some_and(|open| {
        key[open + 1..]
            .iter()
            .position(|&b| b == b'}')
            .is_some_and(|len| len > 0)
    });
    if tagged || key.contains(&b'}') {
        [key, b"#owner"].concat()
    } else {
        [b"{", key, b"}#owner"].concat()
    }
}

/// A session key and the stamp it was written with (`None`: not written
/// yet, the next refresh claims it as a session opened now).
pub type Session = (Vec<u8>, Option<u64>);

pub type Cmd = Vec<Vec<u8>>;

fn cmd(parts: &[&[u8]]) -> Cmd {
    parts.iter().map(|p| p.to_vec()).collect()
}

fn cmd_term(c: Cmd) -> Term {
    Term::List(c.into_iter().map(Term::Bin).collect())
}

/// `LOCALHOST#{nodes}`.
pub fn nodes_key(host: &[u8]) -> Vec<u8> {
    [host, b"#{nodes}"].concat()
}

/// `LOCALHOST#NODE#{KIND}` for `domains`, `public_domains`, `endpoints`.
pub fn node_key(host: &[u8], node: &[u8], kind: &str) -> Vec<u8> {
    [host, b"#", node, b"#{", kind.as_bytes(), b"}"].concat()
}

pub const HOSTS_KEY: &[u8] = b"hosts";

/// What a refresh wrote, for logs, tests and the benchmark.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefreshReport {
    pub jids: usize,
    pub domains: usize,
    pub expired_nodes: Vec<Vec<u8>>,
    pub round_trips: usize,
    /// Sessions skipped because another datacenter holds them now.
    pub skipped: usize,
    /// Every session written, with its stamp.
    pub written: Vec<(Vec<u8>, u64)>,
}

/// The data this node owns and keeps alive in the table.
#[derive(Debug, Clone, Default)]
pub struct Owned {
    pub jids: Vec<Session>,
    pub domains: Vec<Vec<u8>>,
    pub public_domains: Vec<Vec<u8>>,
    pub endpoints: Vec<Vec<u8>>,
}

pub struct Store {
    pool: Arc<dyn AnyPool>,
    pub local_host: Vec<u8>,
    pub node: Vec<u8>,
    pub expire_after: u64,
}

impl Store {
    pub fn new(pool: Arc<dyn AnyPool>, local_host: &str, node: &str, expire_after: u64) -> Store {
        Store {
            pool,
            local_host: local_host.as_bytes().to_vec(),
            node: node.as_bytes().to_vec(),
            expire_after,
        }
    }

    fn expire(&self) -> Vec<u8> {
        self.expire_after.to_string().into_bytes()
    }

    pub fn key(&self, kind: &str) -> Vec<u8> {
        node_key(&self.local_host, &self.node, kind)
    }

    async fn call(&self, request: Term, timeout: Duration) -> Result<Term> {
        let (reply, rx) = reply::oneshot();
        self.pool.submit(Choice::Strategy, request, reply)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(_)) => Err(Error::Internal("the redis pool dropped the request".into())),
            Err(_) => Err(Error::Timeout(format!(
                "redis gave no answer within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    /// One command; its value, or the error Redis or the pool gave.
    pub async fn q(&self, c: Cmd) -> Result<Term> {
        let t = self
            .call(
                Term::tuple(vec![Term::atom("q"), cmd_term(c)]),
                CALL_TIMEOUT,
            )
            .await?;
        answer(t)
    }

    /// Commands sent back to back on one connection: one round trip.
    pub async fn qp(&self, cmds: Vec<Cmd>) -> Result<Vec<Result<Term>>> {
        self.qp_with(cmds, CALL_TIMEOUT).await
    }

    async fn qp_with(&self, cmds: Vec<Cmd>, timeout: Duration) -> Result<Vec<Result<Term>>> {
        if cmds.is_empty() {
            return Ok(vec![]);
        }
        let request = Term::tuple(vec![
            Term::atom("qp"),
            Term::List(cmds.into_iter().map(cmd_term).collect()),
        ]);
        match self.call(request, timeout).await? {
            Term::List(items) => Ok(items.into_iter().map(answer).collect()),
            other => Err(answer(other).err().unwrap_or_else(|| {
                Error::Internal("a pipeline answered with a single value".into())
            })),
        }
    }

    /// Every answer of a pipeline, failing on the first error.
    async fn qp_all(&self, cmds: Vec<Cmd>) -> Result<Vec<Term>> {
        self.qp(cmds).await?.into_iter().collect()
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.q(cmd(&[b"GET", key])).await? {
            Term::Bin(v) => Ok(Some(v)),
            _ => Ok(None),
        }
    }

    fn set_cmd(&self, key: &[u8]) -> Cmd {
        cmd(&[b"SET", key, &self.local_host, b"EX", &self.expire()])
    }

    /// `EVAL SCRIPT` or `EVALSHA SHA` on a session's entry and owner record.
    fn session_cmd(&self, verb: &[u8], script: &[u8], key: &[u8], stamp: &[u8]) -> Cmd {
        let owner = owner_key(key);
        cmd(&[
            verb,
            script,
            b"2",
            key,
            &owner,
            &self.local_host,
            &self.expire(),
            stamp,
        ])
    }

    /// Sessions opened here: each key takes this datacenter's host with a
    /// stamp newer than any before, in one round trip; the stamps.
    pub async fn claim_new(&self, keys: &[Vec<u8>]) -> Result<Vec<u64>> {
        let script = claim_script();
        let cmds = keys
            .iter()
            .map(|k| self.session_cmd(b"EVAL", script.as_bytes(), k, b"new"))
            .collect();
        self.qp_all(cmds).await?.into_iter().map(stamp).collect()
    }

    /// Sessions closed here: see [`delete_script`].
    pub async fn delete_sessions(&self, sessions: &[(Vec<u8>, u64)]) -> Result<()> {
        let script = delete_script();
        let cmds = sessions
            .iter()
            .map(|(k, s)| self.session_cmd(b"EVAL", script.as_bytes(), k, s.to_string().as_bytes()))
            .collect();
        self.qp_all(cmds).await.map(drop)
    }

    /// Removes each key only while its value is this datacenter's host.
    pub async fn delete_if_ours(&self, keys: &[Vec<u8>]) -> Result<()> {
        let cmds = keys
            .iter()
            .map(|k| {
                cmd(&[
                    b"EVAL",
                    DELETE_IF_OURS.as_bytes(),
                    b"1",
                    k,
                    &self.local_host,
                ])
            })
            .collect();
        self.qp_all(cmds).await.map(drop)
    }

    /// A component domain: the node's `{domains}` set, the domain key, and
    /// the `{public_domains}` set unless it is hidden.
    pub async fn put_domain(&self, domain: &[u8], hidden: bool) -> Result<()> {
        let mut cmds = vec![
            cmd(&[b"SADD", &self.key("domains"), domain]),
            self.set_cmd(domain),
        ];
        if !hidden {
            cmds.push(cmd(&[b"SADD", &self.key("public_domains"), domain]));
        }
        self.qp_all(cmds).await.map(drop)
    }

    pub async fn delete_domain(&self, domain: &[u8]) -> Result<()> {
        self.delete_if_ours(&[domain.to_vec()]).await?;
        self.qp_all(vec![
            cmd(&[b"SREM", &self.key("domains"), domain]),
            cmd(&[b"SREM", &self.key("public_domains"), domain]),
        ])
        .await
        .map(drop)
    }

    pub async fn hosts(&self) -> Result<Vec<Vec<u8>>> {
        binaries(self.q(cmd(&[b"SMEMBERS", HOSTS_KEY])).await?)
    }

    pub async fn nodes(&self, host: &[u8]) -> Result<Vec<Vec<u8>>> {
        binaries(self.q(cmd(&[b"HKEYS", &nodes_key(host)])).await?)
    }

    /// The union of one per-node set over every node of every host.
    pub async fn all_of(&self, kind: &str) -> Result<Vec<Vec<u8>>> {
        let hosts = self.hosts().await?;
        let keys = self
            .qp_all(
                hosts
                    .iter()
                    .map(|h| cmd(&[b"HKEYS", &nodes_key(h)]))
                    .collect(),
            )
            .await?;
        let mut set_keys = vec![];
        for (host, nodes) in hosts.iter().zip(keys) {
            for node in binaries(nodes)? {
                set_keys.push(node_key(host, &node, kind));
            }
        }
        self.union(set_keys).await
    }

    /// The `{endpoints}` of every node of `host` (`HOST#PORT` each).
    pub async fn endpoints(&self, host: &[u8]) -> Result<Vec<Vec<u8>>> {
        let keys = self
            .nodes(host)
            .await?
            .iter()
            .map(|n| node_key(host, n, "endpoints"))
            .collect();
        self.union(keys).await
    }

    async fn union(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let mut c: Cmd = vec![b"SUNION".to_vec()];
        c.extend(keys);
        let mut out = binaries(self.q(c).await?)?;
        out.sort();
        Ok(out)
    }

    /// One refresh of everything this node owns: the `hosts` set, the
    /// nodes hash (dropping nodes silent for `expire_after`), the per-node
    /// sets (PERSIST, SREM stale, SADD, EXPIRE), the domain keys and every
    /// session key, pipelined: two round trips plus one per
    /// [`REFRESH_BATCH`] sessions.
    pub async fn refresh(&self, owned: &Owned, now: u64) -> Result<RefreshReport> {
        let nodes = nodes_key(&self.local_host);
        let sets = [
            (self.key("endpoints"), &owned.endpoints),
            (self.key("domains"), &owned.domains),
            (self.key("public_domains"), &owned.public_domains),
        ];
        let mut first = vec![
            cmd(&[b"SADD", HOSTS_KEY, &self.local_host]),
            cmd(&[b"HGETALL", &nodes]),
            cmd(&[b"SCRIPT", b"LOAD", REFRESH_IF_OURS.as_bytes()]),
            cmd(&[b"SCRIPT", b"LOAD", claim_script().as_bytes()]),
        ];
        for (key, _) in &sets {
            first.push(cmd(&[b"PERSIST", key]));
            first.push(cmd(&[b"SMEMBERS", key]));
        }
        let answers = self.qp_all(first).await?;
        let mut report = RefreshReport {
            round_trips: 1,
            ..Default::default()
        };

        let mut second = vec![];
        report.expired_nodes = expired_nodes(&answers[1], now, self.expire_after, &self.node)?;
        if !report.expired_nodes.is_empty() {
            let mut c: Cmd = vec![b"HDEL".to_vec(), nodes.clone()];
            c.extend(report.expired_nodes.iter().cloned());
            second.push(c);
        }
        second.push(cmd(&[
            b"HSET",
            &nodes,
            &self.node,
            now.to_string().as_bytes(),
        ]));
        let sha = script_sha(&answers[2])?;
        let claim_sha = script_sha(&answers[3])?;
        for (i, (key, members)) in sets.iter().enumerate() {
            let wanted: BTreeSet<&Vec<u8>> = members.iter().collect();
            let existing = binaries(answers[5 + 2 * i].clone())?;
            let stale: Vec<Vec<u8>> = existing
                .into_iter()
                .filter(|m| !wanted.contains(m))
                .collect();
            if !stale.is_empty() {
                let mut c: Cmd = vec![b"SREM".to_vec(), key.clone()];
                c.extend(stale);
                second.push(c);
            }
            if !wanted.is_empty() {
                let mut c: Cmd = vec![b"SADD".to_vec(), key.clone()];
                c.extend(wanted.into_iter().cloned());
                second.push(c);
            }
            second.push(cmd(&[b"EXPIRE", key, &self.expire()]));
        }
        let refresh =
            |k: &[u8]| cmd(&[b"EVALSHA", &sha, b"1", k, &self.local_host, &self.expire()]);
        second.extend(owned.domains.iter().map(|d| refresh(d)));
        report.domains = owned.domains.len();
        self.qp_all(second).await?;
        report.round_trips += 1;

        let claim = |(k, s): &Session| {
            let stamp = s.map_or_else(|| b"new".to_vec(), |s| s.to_string().into_bytes());
            self.session_cmd(b"EVALSHA", &claim_sha, k, &stamp)
        };
        let batches: Vec<Vec<Cmd>> = owned
            .jids
            .chunks(REFRESH_BATCH)
            .map(|chunk| chunk.iter().map(claim).collect())
            .collect();
        report.round_trips += batches.len();
        // In order, to pair the answers with the sessions.
        let results: Vec<Result<Vec<Result<Term>>>> = stream::iter(batches)
            .map(|b| self.qp_with(b, BATCH_TIMEOUT))
            .buffered(REFRESH_PARALLEL)
            .collect()
            .await;
        for (sessions, answers) in owned.jids.chunks(REFRESH_BATCH).zip(results) {
            for ((key, _), answer) in sessions.iter().zip(answers?) {
                match stamp(answer?)? {
                    0 => report.skipped += 1,
                    s => report.written.push((key.clone(), s)),
                }
            }
        }
        report.jids = report.written.len();
        Ok(report)
    }
}

/// Nodes of the hash whose last refresh is `expire_after` old or older;
/// never this node itself.
fn expired_nodes(hgetall: &Term, now: u64, expire_after: u64, me: &[u8]) -> Result<Vec<Vec<u8>>> {
    let flat = binaries(hgetall.clone())?;
    let mut out = vec![];
    for pair in flat.chunks(2) {
        let [node, stamp] = pair else { continue };
        let stamp = std::str::from_utf8(stamp)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let expired = match stamp {
            Some(s) => s + expire_after <= now,
            None => true,
        };
        if expired && node.as_slice() != me {
            out.push(node.clone());
        }
    }
    Ok(out)
}

fn script_sha(t: &Term) -> Result<Vec<u8>> {
    match t {
        Term::Bin(b) => Ok(b.clone()),
        other => Err(Error::Server(format!("SCRIPT LOAD answered {other:?}"))),
    }
}

/// A session script's answer: the stamp written, or 0.
fn stamp(t: Term) -> Result<u64> {
    match t {
        Term::Int(n) => Ok(n.max(0) as u64),
        Term::Bin(b) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Internal(format!("a stamp, not {b:?}"))),
        other => Err(Error::Internal(format!("a stamp, not {other:?}"))),
    }
}

/// `{ok, Value}` → the value; `{error, Msg}` and `{error, {Kind, Msg}}` → an error.
fn answer(t: Term) -> Result<Term> {
    match t {
        Term::Tuple(mut items) if items.len() == 2 => {
            let value = items.pop().unwrap_or(Term::atom("undefined"));
            match items[0].as_atom() {
                Some("ok") => Ok(value),
                Some("error") => Err(match value {
                    Term::Bin(msg) => {
                        Error::Server(format!("redis: {}", String::from_utf8_lossy(&msg)))
                    }
                    Term::Tuple(r) if r.len() == 2 => Error::Server(format!(
                        "redis pool: {}: {}",
                        r[0].as_atom().unwrap_or("error"),
                        r[1].as_text().unwrap_or_default()
                    )),
                    other => Error::Server(format!("redis: {other:?}")),
                }),
                _ => Err(Error::Internal(format!(
                    "unexpected redis answer {items:?}"
                ))),
            }
        }
        other => Err(Error::Internal(format!(
            "unexpected redis answer {other:?}"
        ))),
    }
}

fn binaries(t: Term) -> Result<Vec<Vec<u8>>> {
    match t {
        Term::List(items) => items
            .into_iter()
            .map(|i| match i {
                Term::Bin(b) => Ok(b),
                other => Err(Error::Internal(format!("expected a binary, got {other:?}"))),
            })
            .collect(),
        Term::Atom(a) if a == "undefined" => Ok(vec![]),
        other => Err(Error::Internal(format!("expected a list, got {other:?}"))),
    }
}
