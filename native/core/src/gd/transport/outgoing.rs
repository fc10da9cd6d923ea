//! Outgoing connections to other datacenters: opened on first use, frames
//! queued (bounded) and written in batches. A connection that cannot be
//! opened is retried with backoff in the background, and meanwhile `send`
//! refuses at once, so callers can bounce instead of losing stanzas.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use super::frame::gd_start;
use super::listener::now_us;
use super::metrics::{Metrics, Scoped};
use crate::runtime;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Bytes gathered from the queue into one write.
const BATCH_BYTES: usize = 256 * 1024;

/// One connection to one endpoint of a remote datacenter.
pub struct Outgoing {
    pub endpoint: SocketAddr,
    /// Only enabled connections are picked for new stanzas.
    pub enabled: bool,
    tx: mpsc::Sender<Vec<u8>>,
    /// Set while the endpoint cannot be reached.
    down: Arc<AtomicBool>,
}

pub struct Dialer {
    pub local_host: String,
    pub tls: Option<TlsConnector>,
    pub metrics: Arc<Metrics>,
    pub queue: usize,
}

impl Outgoing {
    /// A connection to `endpoint` of the datacenter `host`.
    pub fn open(host: &str, endpoint: SocketAddr, dialer: Arc<Dialer>) -> Outgoing {
        let (tx, rx) = mpsc::channel(dialer.queue);
        let down = Arc::new(AtomicBool::new(false));
        let counts = Scoped {
            all: dialer.metrics.clone(),
            host: Some(dialer.metrics.host(host)),
        };
        runtime::handle().spawn(write_loop(endpoint, dialer, counts, rx, down.clone()));
        Outgoing {
            endpoint,
            enabled: true,
            tx,
            down,
        }
    }

    /// Queues an encoded frame; refused when the queue is full or the
    /// endpoint is unreachable.
    pub fn send(&self, frame: Vec<u8>) -> Result<(), &'static str> {
        if self.down.load(Ordering::Acquire) {
            return Err("the endpoint cannot be reached; retrying in the background");
        }
        self.tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => "the connection's queue is full",
            mpsc::error::TrySendError::Closed(_) => "the connection is closed",
        })
    }
}

type Stream = Box<dyn AsyncWrite + Unpin + Send>;

async fn dial(endpoint: SocketAddr, dialer: &Dialer) -> Result<Stream, String> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut stream: Stream = match &dialer.tls {
        None => Box::new(tcp),
        Some(connector) => {
            let name = ServerName::IpAddress(endpoint.ip().into());
            let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS handshake: {e}"))?;
            Box::new(tls)
        }
    };
    let conn_id = format!("{:032x}", rand::random::<u128>());
    stream
        .write_all(&gd_start(&dialer.local_host, &conn_id))
        .await
        .map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    Ok(stream)
}

async fn write_loop(
    endpoint: SocketAddr,
    dialer: Arc<Dialer>,
    counts: Scoped,
    mut rx: mpsc::Receiver<Vec<u8>>,
    down: Arc<AtomicBool>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    // Opened on first use: nothing is dialled until a frame waits.
    let Some(first) = rx.recv().await else { return };
    let mut next = Some(first);
    loop {
        let mut stream = match dial(endpoint, &dialer).await {
            Ok(s) => s,
            Err(e) => {
                down.store(true, Ordering::Release);
                counts.bump(|m| &m.outgoing_errored_count);
                // Frames queued before the failure was known cannot go now.
                let mut lost = usize::from(next.take().is_some());
                while rx.try_recv().is_ok() {
                    lost += 1;
                }
                log::warn!(
                    "global distribution connection to {endpoint} failed ({e}); \
                     {lost} stanzas dropped, retrying in {backoff:?}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                if rx.is_closed() {
                    return;
                }
                continue;
            }
        };
        down.store(false, Ordering::Release);
        backoff = BACKOFF_MIN;
        counts.bump(|m| &m.outgoing_established_count);
        loop {
            let frame = match next.take() {
                Some(f) => f,
                None => match rx.recv().await {
                    Some(f) => f,
                    None => {
                        let _ = stream.shutdown().await;
                        counts.bump(|m| &m.outgoing_closed_count);
                        return;
                    }
                },
            };
            batch.clear();
            let now = now_us();
            counts.queue_time(queued_us(&frame, now));
            batch.extend_from_slice(&frame);
            let mut frames = 1;
            while batch.len() < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(f) => {
                        counts.queue_time(queued_us(&f, now));
                        batch.extend_from_slice(&f);
                        frames += 1;
                    }
                    Err(_) => break,
                }
            }
            let written = async {
                stream.write_all(&batch).await?;
                stream.flush().await
            };
            if let Err(e) = written.await {
                log::warn!("global distribution connection to {endpoint} broke: {e}");
                counts.bump(|m| &m.outgoing_errored_count);
                break;
            }
            counts.add(|m| &m.outgoing_messages_count, frames);
        }
    }
}

/// How long an encoded data frame waited: its clock field (bytes 4..12) is
/// the time it was queued.
fn queued_us(frame: &[u8], now: i64) -> u64 {
    let clock = frame
        .get(4..12)
        .and_then(|b| b.try_into().ok())
        .map_or(now, |b: [u8; 8]| u64::from_be_bytes(b) as i64);
    now.saturating_sub(clock).max(0) as u64
}
