//! Outgoing connections to other datacenters: opened on first use, frames
//! queued (bounded) and written in batches.
//!
//! Every frame `send` accepts is written to a connection or handed back
//! to the caller's [`Undeliverable`] (which retries or bounces it, as the
//! bounce settings say); only frames already written to a connection that
//! then died can be lost. A connection that cannot be opened, that breaks
//! on a write, or that its peer closes (watched while idle: the listening
//! side never writes, so its socket turning readable is its close) is
//! marked down at once, so `send` refuses and callers bounce new stanzas;
//! what it had accepted and not written is handed back before it is
//! opened again (retried with backoff in the background), so that nothing
//! sent after it can overtake it there.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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

/// Takes the accepted frames a connection could not write.
pub trait Undeliverable: Send + Sync + 'static {
    /// `frames`: encoded data frames for `host`, oldest first. The future
    /// ends once they are taken care of (the connection waits for it
    /// before it is opened again).
    fn hand_back(&self, host: &str, frames: Vec<Vec<u8>>) -> BoxFuture<'static, ()>;
}

/// One connection to one endpoint of a remote datacenter.
pub struct Outgoing {
    pub endpoint: SocketAddr,
    /// Only enabled connections are picked for new stanzas.
    pub enabled: bool,
    tx: mpsc::Sender<Vec<u8>>,
    /// Set while the connection is not up.
    down: Arc<AtomicBool>,
}

pub struct Dialer {
    pub local_host: String,
    pub tls: Option<TlsConnector>,
    pub metrics: Arc<Metrics>,
    pub queue: usize,
    pub undeliverable: Arc<dyn Undeliverable>,
}

impl Outgoing {
    /// A connection to `endpoint` of the datacenter `host`.
    pub fn open(host: &str, endpoint: SocketAddr, dialer: Arc<Dialer>) -> Outgoing {
        let (tx, rx) = mpsc::channel(dialer.queue);
        let down = Arc::new(AtomicBool::new(false));
        let link = Link {
            host: host.to_string(),
            endpoint,
            counts: Scoped {
                all: dialer.metrics.clone(),
                host: Some(dialer.metrics.host(host)),
            },
            dialer,
            rx,
            down: down.clone(),
            unwritten: Vec::new(),
        };
        runtime::handle().spawn(link.run());
        Outgoing {
            endpoint,
            enabled: true,
            tx,
            down,
        }
    }

    /// Queues an encoded frame; refused when the queue is full or the
    /// connection is down.
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

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}
type Stream = Box<dyn Conn>;

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

/// How a connection ended.
enum End {
    /// Every `Outgoing` is gone and everything was written.
    Done,
    /// Broken, or closed by the peer: to be opened again.
    Lost,
}

/// The task behind one `Outgoing`.
struct Link {
    host: String,
    endpoint: SocketAddr,
    dialer: Arc<Dialer>,
    counts: Scoped,
    rx: mpsc::Receiver<Vec<u8>>,
    down: Arc<AtomicBool>,
    /// Accepted and not written to the current connection, oldest first.
    unwritten: Vec<Vec<u8>>,
}

impl Link {
    async fn run(mut self) {
        // Opened on first use: nothing is dialled until a frame waits.
        let Some(first) = self.rx.recv().await else {
            return;
        };
        self.unwritten.push(first);
        let mut backoff = BACKOFF_MIN;
        loop {
            match dial(self.endpoint, &self.dialer).await {
                Ok(mut stream) => {
                    backoff = BACKOFF_MIN;
                    self.down.store(false, Ordering::Release);
                    self.counts.bump(|m| &m.outgoing_established_count);
                    if let End::Done = self.serve(&mut stream).await {
                        let _ = stream.shutdown().await;
                        self.counts.bump(|m| &m.outgoing_closed_count);
                        return;
                    }
                    // Opened again at once: usually the peer is back.
                    self.hand_back().await;
                }
                Err(e) => {
                    self.down.store(true, Ordering::Release);
                    self.counts.bump(|m| &m.outgoing_errored_count);
                    log::warn!(
                        "global distribution connection to {} failed ({e}); retrying in \
                         {backoff:?}",
                        self.endpoint
                    );
                    self.hand_back().await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    // Accepted while `down` was being set.
                    self.hand_back().await;
                    if self.rx.is_closed() {
                        return;
                    }
                }
            }
        }
    }

    /// Writes what is queued until the connection is lost (then marked
    /// down, with what it did not write in `unwritten`) or every
    /// `Outgoing` is gone.
    async fn serve(&mut self, stream: &mut Stream) -> End {
        let mut batch = Vec::with_capacity(BATCH_BYTES);
        loop {
            if self.unwritten.is_empty() {
                let mut probe = [0u8; 64];
                tokio::select! {
                    // The peer's close first: nothing is written to a
                    // connection already known closed.
                    biased;
                    read = stream.read(&mut probe) => match read {
                        // The peer never writes: bytes are ignored, an end
                        // or an error means the connection is gone.
                        Ok(n) if n > 0 => continue,
                        Ok(_) => {
                            self.down.store(true, Ordering::Release);
                            log::warn!(
                                "global distribution connection to {} closed by its peer",
                                self.endpoint
                            );
                            self.counts.bump(|m| &m.outgoing_closed_count);
                            return End::Lost;
                        }
                        Err(e) => return self.broke(&e),
                    },
                    frame = self.rx.recv() => match frame {
                        Some(f) => self.unwritten.push(f),
                        None => return End::Done,
                    },
                }
            }
            let mut size: usize = self.unwritten.iter().map(Vec::len).sum();
            while size < BATCH_BYTES {
                match self.rx.try_recv() {
                    Ok(f) => {
                        size += f.len();
                        self.unwritten.push(f);
                    }
                    Err(_) => break,
                }
            }
            batch.clear();
            for f in &self.unwritten {
                batch.extend_from_slice(f);
            }
            let now = now_us();
            let mut written = 0;
            let outcome = async {
                while written < batch.len() {
                    match stream.write(&batch[written..]).await? {
                        0 => return Err(std::io::ErrorKind::WriteZero.into()),
                        n => written += n,
                    }
                }
                stream.flush().await
            }
            .await;
            match outcome {
                Ok(()) => {
                    let frames = self.unwritten.len() as u64;
                    for f in self.unwritten.drain(..) {
                        self.counts.queue_time(queued_us(&f, now));
                    }
                    self.counts.add(|m| &m.outgoing_messages_count, frames);
                }
                Err(e) => {
                    // Frames wholly given to the dead connection cannot be
                    // known delivered or not: they are the only loss. One
                    // cut short is discarded by the peer: it is handed back.
                    let mut end = 0;
                    let gone = self
                        .unwritten
                        .iter()
                        .take_while(|f| {
                            end += f.len();
                            end <= written
                        })
                        .count();
                    self.unwritten.drain(..gone);
                    if gone > 0 {
                        log::warn!(
                            "global distribution connection to {}: {gone} stanzas written \
                             just before it broke may be lost",
                            self.endpoint
                        );
                    }
                    return self.broke(&e);
                }
            }
        }
    }

    fn broke(&mut self, e: &std::io::Error) -> End {
        self.down.store(true, Ordering::Release);
        log::warn!(
            "global distribution connection to {} broke: {e}",
            self.endpoint
        );
        self.counts.bump(|m| &m.outgoing_errored_count);
        End::Lost
    }

    /// Hands back what was not written and what the queue holds (`send`
    /// refuses meanwhile), and waits until it was taken.
    async fn hand_back(&mut self) {
        while let Ok(f) = self.rx.try_recv() {
            self.unwritten.push(f);
        }
        if self.unwritten.is_empty() {
            return;
        }
        let frames = std::mem::take(&mut self.unwritten);
        log::warn!(
            "global distribution connection to {} down: {} stanzas handed back",
            self.endpoint,
            frames.len()
        );
        self.dialer
            .undeliverable
            .hand_back(&self.host, frames)
            .await;
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
