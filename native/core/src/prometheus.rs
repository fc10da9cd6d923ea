//! The opt-in Prometheus endpoint (`metrics_listen`): a small HTTP/1.1
//! responder on the runtime answering `GET /metrics` in the text format
//! with every registered pool's figures, read at scrape time, then the
//! sections the Erlang side publishes (global distribution, some of whose
//! figures live in Erlang). Labels carry only the pool type, host type,
//! tag and remote host: never a connection option.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::engine::metrics::{Figures, BUCKETS_US};
use crate::engine::pool::AnyPool;
use crate::error::{Error, Result};
use crate::runtime;

/// Who a pool is, as its series are labelled.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolLabels {
    pub pool_type: String,
    pub host_type: String,
    pub tag: String,
}

type Registered = (PoolLabels, Weak<dyn AnyPool>);

static POOLS: Mutex<Vec<Registered>> = Mutex::new(Vec::new());
static SECTIONS: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
static SERVER: Mutex<Option<AbortHandle>> = Mutex::new(None);

/// A request line and headers larger than this are refused.
const MAX_REQUEST: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more connections wait in the listen backlog.
const CONNECTIONS: usize = 16;

/// Includes `pool` in every scrape, under `labels` (replacing a pool that
/// had them: a pool started again under the same name).
pub fn register(labels: PoolLabels, pool: &Arc<dyn AnyPool>) {
    if let Ok(mut pools) = POOLS.lock() {
        pools.retain(|(l, p)| *l != labels && p.strong_count() > 0);
        pools.push((labels, Arc::downgrade(pool)));
    }
}

pub fn unregister(pool: &Arc<dyn AnyPool>) {
    let gone = Arc::downgrade(pool);
    if let Ok(mut pools) = POOLS.lock() {
        pools.retain(|(_, p)| !p.ptr_eq(&gone) && p.strong_count() > 0);
    }
}

/// Sets the text of a named section of every scrape (already in the
/// Prometheus text format); an empty text removes it.
pub fn set_section(name: &str, text: String) {
    if let Ok(mut sections) = SECTIONS.lock() {
        match text.is_empty() {
            true => sections.remove(name),
            false => sections.insert(name.to_string(), text),
        };
    }
}

/// Binds `addr` ("127.0.0.1:9105") and serves scrapes there, in place of
/// an endpoint started before; the address actually bound.
pub async fn listen(addr: &str) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("metrics_listen: cannot listen on {addr:?}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("metrics_listen: {e}")))?;
    let serving = runtime::current().spawn(serve(listener));
    if let Ok(mut server) = SERVER.lock() {
        if let Some(old) = server.replace(serving.abort_handle()) {
            old.abort();
        }
    }
    log::info!("metrics endpoint listening on {bound}");
    Ok(bound)
}

/// Stops the endpoint (scrapes being answered are cut).
pub fn stop() {
    if let Some(server) = SERVER.lock().ok().and_then(|mut s| s.take()) {
        server.abort();
    }
}

async fn serve(listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                runtime::current().spawn(async move {
                    if let Err(e) = answer(stream).await {
                        log::debug!("metrics scrape failed: {e}");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                log::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One request per connection, then close.
async fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() <= MAX_REQUEST {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    let (status, body) = match head {
        Err(_) | Ok(Err(_)) => return Ok(()),
        Ok(Ok(())) => respond(&buf),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        match status {
            "200 OK" => "text/plain; version=0.0.4; charset=utf-8",
            _ => "text/plain; charset=utf-8",
        },
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The status and body for a request head.
fn respond(head: &[u8]) -> (&'static str, String) {
    if head.len() > MAX_REQUEST {
        return ("431 Request Header Fields Too Large", String::new());
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    match (method, path, parts.next()) {
        (Some(b"GET"), Some(b"/metrics"), Some(v)) if v.starts_with(b"HTTP/1.") => {
            ("200 OK", render())
        }
        (Some(_), Some(b"/metrics"), Some(_)) => ("405 Method Not Allowed", String::new()),
        (Some(_), Some(_), Some(_)) => ("404 Not Found", "GET /metrics\n".into()),
        _ => ("400 Bad Request", String::new()),
    }
}

/// The whole scrape: the pools, then the published sections.
pub fn render() -> String {
    let pools: Vec<(PoolLabels, Figures)> = POOLS
        .lock()
        .map(|pools| {
            pools
                .iter()
                .filter_map(|(l, p)| Some((l.clone(), p.upgrade()?.figures()?)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = render_pools(&pools);
    if let Ok(sections) = SECTIONS.lock() {
        for text in sections.values() {
            out.push_str(text);
        }
    }
    out
}

fn render_pools(pools: &[(PoolLabels, Figures)]) -> String {
    let mut out = String::new();
    let gauges: [Family; 4] = [
        ("workers", "Workers (connections) of the pool.", |f| {
            f.workers
        }),
        (
            "connected_workers",
            "Workers whose connection is open.",
            |f| f.connected,
        ),
        (
            "queue_length",
            "Requests waiting in the workers' queues.",
            |f| f.queued,
        ),
        ("in_flight_requests", "Requests being carried out.", |f| {
            f.in_flight
        }),
    ];
    for (name, help, value) in gauges {
        family(&mut out, name, help, "gauge");
        for (l, f) in pools {
            series(&mut out, name, &labels(l, &[]), value(f));
        }
    }
    let counters: [Family; 4] = [
        (
            "requests_total",
            "Requests made to the pool, answered or not.",
            |f| f.requests,
        ),
        (
            "timeouts_total",
            "Requests whose caller stopped waiting, or that timed out in the pool or its driver.",
            |f| f.timeouts,
        ),
        (
            "reconnects_total",
            "Connections reopened after one broke.",
            |f| f.reconnects,
        ),
        (
            "connect_failures_total",
            "Attempts to reopen a connection that failed.",
            |f| f.connect_failures,
        ),
    ];
    for (name, help, value) in counters {
        family(&mut out, name, help, "counter");
        for (l, f) in pools {
            series(&mut out, name, &labels(l, &[]), value(f));
        }
    }
    let name = "errors_total";
    let help = "Requests refused or answered with an error, by kind (server_error: the server's own error answers).";
    family(&mut out, name, help, "counter");
    for (l, f) in pools {
        for (kind, n) in crate::Error::KINDS.iter().zip(f.errors) {
            series(&mut out, name, &labels(l, &[("kind", kind)]), n);
        }
    }
    let name = "call_duration_seconds";
    let help = "Time from a request's admission to its answer.";
    family(&mut out, name, help, "histogram");
    for (l, f) in pools {
        for (bound, n) in BUCKETS_US.iter().zip(f.latency_buckets) {
            let le = seconds(*bound);
            let bucket = format!("{name}_bucket");
            series(&mut out, &bucket, &labels(l, &[("le", &le)]), n);
        }
        let count = f.latency_buckets[BUCKETS_US.len()];
        let bucket = format!("{name}_bucket");
        series(&mut out, &bucket, &labels(l, &[("le", "+Inf")]), count);
        let sum = seconds(f.latency_sum_us);
        let _ = writeln!(out, "{PREFIX}{name}_sum{} {sum}", labels(l, &[]));
        series(&mut out, &format!("{name}_count"), &labels(l, &[]), count);
    }
    out
}

const PREFIX: &str = "mongoose_native_pool_";

/// A family with one series per pool: its name, help and value.
type Family = (&'static str, &'static str, fn(&Figures) -> u64);

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
}

fn series(out: &mut String, name: &str, labels: &str, value: u64) {
    let _ = writeln!(out, "{PREFIX}{name}{labels} {value}");
}

fn seconds(us: u64) -> String {
    (us as f64 / 1e6).to_string()
}

fn labels(l: &PoolLabels, extra: &[(&str, &str)]) -> String {
    let mut out = format!(
        "{{pool_type=\"{}\",host_type=\"{}\",pool_tag=\"{}\"",
        escape(&l.pool_type),
        escape(&l.host_type),
        escape(&l.tag)
    );
    for (k, v) in extra {
        let _ = write!(out, ",{k}=\"{}\"", escape(v));
    }
    out.push('}');
    out
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
