//! The global-distribution transport for Erlang: start, send, endpoints,
//! metrics. Incoming frames go to ordered Erlang workers, all frames of one
//! worker key to the same worker, in batches (see `ToWorkers::flush`) that
//! the worker acknowledges with `gd_transport_ack/2` once handled.
//! Outgoing stanzas the transport accepted and could not write are handed
//! back to the worker of their key (`Undeliverable for Workers`).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use futures::future::BoxFuture;
use mongoose_native::config::Node;
use mongoose_native::gd::config::{socket_addr, MAX_CONNECTIONS_PER_ENDPOINT};
use mongoose_native::gd::transport::credit::Credit;
use mongoose_native::gd::transport::frame::{parse_data, DEFAULT_MAX_FRAME};
use mongoose_native::gd::transport::listener::{
    listen, now_us, Incoming, Listener, Sink, SinkFactory,
};
use mongoose_native::gd::transport::metrics::Metrics;
use mongoose_native::gd::transport::outgoing::{Dialer, Undeliverable};
use mongoose_native::gd::transport::Transport;
use mongoose_native::{tls, Error, Term};
use rustler::{Atom, Binary, Encoder, Env, LocalPid, NewBinary, OwnedEnv, ResourceArc};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::convert::{decode, encode};
use crate::ok;
use crate::reply::{error_term, spawn_answer};

rustler::atoms! { gd_packets, gd_undeliverable }

/// Frames a worker may be behind before the readers feeding it pause
/// (about 14 MB of 1.4 KB frames): its mailbox stays bounded and a slow
/// worker slows its senders through TCP instead.
const WORKER_BACKLOG: usize = 10_000;
/// A batch buffer larger than this is freed after its flush.
const KEPT_BATCH_BYTES: usize = 256 * 1024;

pub struct TransportRes {
    transport: Transport,
    listeners: Mutex<Vec<Listener>>,
    workers: Arc<Workers>,
}

#[rustler::resource_impl]
impl rustler::Resource for TransportRes {}

/// A worker's credit, handed to it with each batch for its acknowledgement.
pub struct CreditRes(Arc<Credit>);

#[rustler::resource_impl]
impl rustler::Resource for CreditRes {}

/// A worker's pid (replaced when its supervisor restarts it) and credit.
#[derive(Clone)]
struct Worker {
    pid: Arc<RwLock<LocalPid>>,
    credit: ResourceArc<CreditRes>,
}

struct Workers(Vec<Worker>);

/// The worker (of `n`) of a key: all frames of one key go to the same one.
fn worker_of(key: &[u8], n: usize) -> Option<usize> {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (n > 0).then(|| (h.finish() % n as u64) as usize)
}

/// Each undeliverable stanza to the worker of its key, which bounces it
/// (retried by the bounce store, or an error to its sender), in order, as
/// `{gd_undeliverable, Credit, Host, [{ClockUs, Bin}]}`: one message per
/// worker, done once every worker that got one acknowledged it or died.
impl Undeliverable for Workers {
    fn hand_back(&self, host: &str, frames: Vec<Vec<u8>>) -> BoxFuture<'static, ()> {
        let mut per_worker: Vec<Vec<(u64, &[u8])>> = vec![Vec::new(); self.0.len()];
        for frame in &frames {
            // Encoded by this transport: a length, then the data frame.
            let Some(data) = frame.get(4..).and_then(|d| parse_data(d).ok()) else {
                continue;
            };
            if let Some(i) = worker_of(data.key, self.0.len()) {
                per_worker[i].push((data.clock_us, data.term));
            }
        }
        let mut env = OwnedEnv::new();
        let mut behind = Vec::new();
        for (worker, stanzas) in self.0.iter().zip(per_worker) {
            if stanzas.is_empty() {
                continue;
            }
            let Ok(pid) = worker.pid.read().map(|p| *p) else {
                continue;
            };
            let credit = ResourceArc::new(CreditRes(Arc::new(Credit::new(1))));
            // Owed before it can be acknowledged.
            credit.0.take(stanzas.len());
            let sent = env.send_and_clear(&pid, |env| {
                let list: Vec<rustler::Term> = stanzas
                    .iter()
                    .map(|&(clock, term)| (clock, bin(env, term)).encode(env))
                    .collect();
                (
                    gd_undeliverable(),
                    credit.clone(),
                    bin(env, host.as_bytes()),
                    list,
                )
                    .encode(env)
            });
            // A worker that is gone acknowledges nothing: owe it nothing.
            if sent.is_ok() {
                behind.push((credit.0.clone(), pid));
            }
        }
        Box::pin(wait_for(behind))
    }
}

impl SinkFactory for Workers {
    fn sink(&self) -> Box<dyn Sink> {
        Box::new(ToWorkers {
            batches: self.0.iter().map(|w| Batch::new(w.clone())).collect(),
            host: String::new(),
            env: OwnedEnv::new(),
        })
    }
}

/// The frames of one flush for one worker: their bytes in one buffer.
struct Batch {
    worker: Worker,
    bytes: Vec<u8>,
    /// (transfer time, key end, term end) offsets into `bytes`.
    frames: Vec<(i64, usize, usize)>,
}

impl Batch {
    fn new(worker: Worker) -> Self {
        Batch {
            worker,
            bytes: Vec::new(),
            frames: Vec::new(),
        }
    }
}

/// One per connection, so one environment serves all its batches.
struct ToWorkers {
    batches: Vec<Batch>,
    host: String,
    env: OwnedEnv,
}

impl Sink for ToWorkers {
    fn frame(&mut self, host: &str, transfer_us: i64, key: &[u8], term: &[u8]) {
        if self.host != host {
            self.host = host.to_string();
        }
        let Some(i) = worker_of(key, self.batches.len()) else {
            return;
        };
        let batch = &mut self.batches[i];
        batch.bytes.extend_from_slice(key);
        let key_end = batch.bytes.len();
        batch.bytes.extend_from_slice(term);
        batch.frames.push((transfer_us, key_end, batch.bytes.len()));
    }

    /// One message per worker with frames:
    /// `{gd_packets, Credit, Host, ReceivedUs, [{TransferUs, Key, Bin}]}`,
    /// keys and stanzas sub-binaries of one binary.
    fn flush(&mut self) -> BoxFuture<'static, ()> {
        let received = now_us();
        let mut behind = Vec::new();
        for batch in self.batches.iter_mut().filter(|b| !b.frames.is_empty()) {
            let worker = &batch.worker;
            let count = batch.frames.len();
            let Ok(pid) = worker.pid.read().map(|p| *p) else {
                continue;
            };
            let sent = self.env.send_and_clear(&pid, |env| {
                let mut all = NewBinary::new(env, batch.bytes.len());
                all.as_mut_slice().copy_from_slice(&batch.bytes);
                let all: Binary = all.into();
                let mut start = 0;
                let packets: Vec<rustler::Term> = batch
                    .frames
                    .iter()
                    .map(|&(transfer, key_end, term_end)| {
                        let key = sub(env, &all, start, key_end);
                        let term = sub(env, &all, key_end, term_end);
                        start = term_end;
                        (transfer, key, term).encode(env)
                    })
                    .collect();
                (
                    gd_packets(),
                    worker.credit.clone(),
                    bin(env, self.host.as_bytes()),
                    received,
                    packets,
                )
                    .encode(env)
            });
            // A worker that is gone acknowledges nothing: owe it nothing.
            if sent.is_ok() {
                worker.credit.0.take(count);
                behind.push((worker.credit.0.clone(), pid));
            }
            batch.bytes.clear();
            batch.frames.clear();
            // One large frame must not pin its size per worker and connection.
            if batch.bytes.capacity() > KEPT_BATCH_BYTES {
                batch.bytes = Vec::new();
            }
        }
        Box::pin(wait_for(behind))
    }
}

/// Waits until each worker is below its credit's limit, or dead.
async fn wait_for(behind: Vec<(Arc<Credit>, LocalPid)>) {
    for (credit, pid) in behind {
        credit.wait_for_room(|| is_alive(pid)).await;
    }
}

/// Whether `pid` runs; callable from any thread (enif_is_process_alive).
fn is_alive(pid: LocalPid) -> bool {
    OwnedEnv::new().run(|env| env.is_process_alive(pid))
}

fn sub<'a>(env: Env<'a>, all: &Binary<'a>, from: usize, to: usize) -> rustler::Term<'a> {
    all.make_subbinary(from, to - from)
        .map_or_else(|_| bin(env, &all.as_slice()[from..to]), |b| b.encode(env))
}

fn bin<'a>(env: Env<'a>, data: &[u8]) -> rustler::Term<'a> {
    let mut b = NewBinary::new(env, data.len());
    b.as_mut_slice().copy_from_slice(data);
    b.into()
}

struct Options {
    local_host: String,
    listen: Vec<SocketAddr>,
    per_endpoint: usize,
    max_frame: usize,
    queue: usize,
    tls: Option<(TlsAcceptor, TlsConnector)>,
}

const OPTIONS: [&str; 6] = [
    "local_host",
    "endpoints",
    "connections_per_endpoint",
    "max_frame_size",
    "queue_len",
    "tls",
];

fn read_options(opts: &Term) -> Result<Options, Error> {
    let node = Node::new("modules.mod_global_distrib.connections", opts);
    node.only_keys(&OPTIONS)?;
    let local_host = node.at("local_host").required_string()?;
    let mut listen = vec![];
    for ep in node.at("endpoints").list()?.unwrap_or_default() {
        listen.push(socket_addr(&ep)?);
    }
    let tls = match node.at("tls") {
        t if t.is_set() => {
            let (server, client) = tls::read_mutual(&t)?;
            Some((
                TlsAcceptor::from(Arc::new(server)),
                TlsConnector::from(Arc::new(client)),
            ))
        }
        _ => None,
    };
    Ok(Options {
        local_host,
        listen,
        per_endpoint: node.at("connections_per_endpoint").int_or(
            1,
            MAX_CONNECTIONS_PER_ENDPOINT,
            1,
        )? as usize,
        max_frame: node.at("max_frame_size").int_or(
            16,
            i64::from(u32::MAX),
            DEFAULT_MAX_FRAME as i64,
        )? as usize,
        queue: node.at("queue_len").int_or(1, 10_000_000, 100_000)? as usize,
        tls,
    })
}

/// Reads the options (and the TLS files they name) and binds the listeners
/// on the runtime, then answers `{Tag, {ok, Transport}}` or `{Tag, {error,
/// Reason}}`.
#[rustler::nif]
fn gd_transport_start<'a>(
    env: Env<'a>,
    opts: rustler::Term<'a>,
    workers: Vec<LocalPid>,
    pid: LocalPid,
    tag: rustler::Term<'a>,
) -> rustler::Term<'a> {
    let opts = match decode(opts) {
        Ok(t) => t,
        Err(e) => {
            let e = Error::Config(format!("modules.mod_global_distrib.connections: {e}"));
            return error_term(env, e.reason());
        }
    };
    spawn_answer(env, pid, tag, async move {
        let options = read_options(&opts).map_err(|e| e.reason())?;
        let metrics = Arc::new(Metrics::default());
        let (acceptor, connector) = match options.tls {
            Some((a, c)) => (Some(a), Some(c)),
            None => (None, None),
        };
        let workers = Arc::new(Workers(
            workers
                .into_iter()
                .map(|pid| Worker {
                    pid: Arc::new(RwLock::new(pid)),
                    credit: ResourceArc::new(CreditRes(Arc::new(Credit::new(WORKER_BACKLOG)))),
                })
                .collect(),
        ));
        let incoming = Arc::new(Incoming {
            tls: acceptor,
            max_frame: options.max_frame,
            sinks: workers.clone(),
            metrics: metrics.clone(),
        });
        let mut listeners = vec![];
        let mut failed = None;
        for addr in options.listen {
            match listen(addr, incoming.clone()).await {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    failed = Some(Error::Connect(format!("cannot listen on {addr}: {e}")));
                    break;
                }
            }
        }
        let dialer = Dialer {
            local_host: options.local_host,
            tls: connector,
            metrics,
            queue: options.queue,
            undeliverable: workers.clone(),
        };
        match failed {
            Some(e) => Err(e.reason()),
            None => Ok((
                ok(),
                ResourceArc::new(TransportRes {
                    transport: Transport::new(dialer, options.per_endpoint),
                    listeners: Mutex::new(listeners),
                    workers,
                }),
            )),
        }
    })
}

/// Worker `index` (1-based) was restarted as `pid`: frames for its keys go
/// there from now on, and what its predecessor owed is forgotten.
#[rustler::nif]
fn gd_transport_set_worker<'a>(
    env: Env<'a>,
    res: ResourceArc<TransportRes>,
    index: usize,
    pid: LocalPid,
) -> rustler::Term<'a> {
    let Some(worker) = index.checked_sub(1).and_then(|i| res.workers.0.get(i)) else {
        return error_term(
            env,
            Error::BadRequest(format!("no worker {index}")).reason(),
        );
    };
    if let Ok(mut p) = worker.pid.write() {
        *p = pid;
    }
    worker.credit.0.forget();
    ok().encode(env)
}

/// A worker is done with `count` frames of its batches.
#[rustler::nif]
fn gd_transport_ack(credit: ResourceArc<CreditRes>, count: usize) -> Atom {
    credit.0.give_back(count);
    ok()
}

#[rustler::nif]
fn gd_transport_send<'a>(
    env: Env<'a>,
    res: ResourceArc<TransportRes>,
    host: String,
    affinity: u64,
    key: Binary<'a>,
    term: Binary<'a>,
) -> rustler::Term<'a> {
    match res
        .transport
        .send(&host, affinity, key.as_slice(), term.as_slice())
    {
        Ok(()) => ok().encode(env),
        Err(e) => error_term(env, e.reason()),
    }
}

fn endpoint_list(what: &str, term: rustler::Term) -> Result<Vec<SocketAddr>, Error> {
    let t = decode(term).map_err(Error::BadRequest)?;
    let node = Node::new(what, &t);
    node.list()?
        .unwrap_or_default()
        .iter()
        .map(socket_addr)
        .collect()
}

/// `Enabled` endpoints take new stanzas; `Disabled` ones keep their
/// connections until they are left out of both lists.
#[rustler::nif]
fn gd_transport_set_endpoints<'a>(
    env: Env<'a>,
    res: ResourceArc<TransportRes>,
    host: String,
    enabled: rustler::Term<'a>,
    disabled: rustler::Term<'a>,
) -> rustler::Term<'a> {
    let parsed = endpoint_list("enabled", enabled)
        .and_then(|e| Ok((e, endpoint_list("disabled", disabled)?)));
    match parsed {
        Ok((enabled, disabled)) => {
            res.transport.set_endpoints(&host, &enabled, &disabled);
            ok().encode(env)
        }
        Err(e) => error_term(env, e.reason()),
    }
}

fn addr_term(a: &SocketAddr) -> Term {
    Term::tuple(vec![
        Term::from(a.ip().to_string()),
        Term::Int(i64::from(a.port())),
    ])
}

#[rustler::nif]
fn gd_transport_disabled_endpoints(
    env: Env,
    res: ResourceArc<TransportRes>,
    host: String,
) -> rustler::Term {
    let eps = res.transport.disabled_endpoints(&host);
    encode(env, &Term::List(eps.iter().map(addr_term).collect()))
}

#[rustler::nif]
fn gd_transport_endpoints(env: Env, res: ResourceArc<TransportRes>, host: String) -> rustler::Term {
    let eps = res.transport.endpoints(&host);
    encode(env, &Term::List(eps.iter().map(addr_term).collect()))
}

/// The addresses the listeners are bound to (port 0 resolved).
#[rustler::nif]
fn gd_transport_listening(env: Env, res: ResourceArc<TransportRes>) -> rustler::Term {
    let addrs = res
        .listeners
        .lock()
        .map(|ls| ls.iter().map(|l| addr_term(&l.addr)).collect());
    encode(env, &Term::List(addrs.unwrap_or_default()))
}

#[rustler::nif]
fn gd_transport_metrics(env: Env, res: ResourceArc<TransportRes>) -> rustler::Term {
    encode(env, &res.transport.metrics.to_term())
}

/// `[{Host, [QueueTimeUs]}]`: each outgoing stanza's queue time since the
/// last call, for MongooseIM's per-stanza instrumentation event; `keep`
/// says whether to go on keeping them (they are kept only while asked for).
#[rustler::nif]
fn gd_transport_queue_times(env: Env, res: ResourceArc<TransportRes>, keep: bool) -> rustler::Term {
    let taken = res.transport.metrics.take_queue_times(keep);
    let per_host = taken
        .into_iter()
        .map(|(host, times)| {
            let times = times.into_iter().map(|us| Term::Int(us as i64)).collect();
            Term::tuple(vec![Term::from(host.as_str()), Term::List(times)])
        })
        .collect();
    encode(env, &Term::List(per_host))
}

#[rustler::nif]
fn gd_transport_stop(res: ResourceArc<TransportRes>) -> Atom {
    if let Ok(mut listeners) = res.listeners.lock() {
        listeners.clear();
    }
    res.transport.stop();
    ok()
}
