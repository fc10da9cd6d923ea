//! Incoming connections: `gd_start`, then data frames handed to a sink.
//!
//! A malformed, oversized or cut frame closes that connection only and
//! counts `incoming_errored_count`; nothing else is affected, and so does a
//! peer that has not finished its TLS handshake or sent its `gd_start`
//! within [`GD_START_TIMEOUT`] (it would hold a connection for nothing).
//! Frames are handed over in batches: everything one read of the socket
//! brought.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::frame::{parse_data, parse_gd_start, read_frame, FrameError};
use super::metrics::{Metrics, Scoped};
use crate::runtime;

const READ_BUFFER: usize = 64 * 1024;
/// At most this many frames wait for a flush, however fast they come.
const MAX_BATCH: usize = 512;
/// A connected peer's time to finish TLS and send `gd_start`; a
/// datacenter sends it at once.
pub const GD_START_TIMEOUT: Duration = Duration::from_secs(5);

/// Receives every data frame of one connection, in order.
pub trait Sink: Send + 'static {
    /// `host` is the sender's local host from `gd_start`.
    fn frame(&mut self, host: &str, transfer_time_us: i64, key: &[u8], term: &[u8]);

    /// Hands over the frames gathered since the last flush; the future ends
    /// when the consumers have room for more (the reader waits for it).
    fn flush(&mut self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

pub trait SinkFactory: Send + Sync + 'static {
    fn sink(&self) -> Box<dyn Sink>;
}

/// Dropping it stops accepting and closes the connections it accepted.
pub struct Listener {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
    closing: CancellationToken,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.closing.cancel();
        self.task.abort();
    }
}

pub struct Incoming {
    pub tls: Option<TlsAcceptor>,
    pub max_frame: usize,
    pub sinks: Arc<dyn SinkFactory>,
    pub metrics: Arc<Metrics>,
}

/// Binds `addr` and serves it until the returned listener is dropped.
pub async fn listen(addr: SocketAddr, incoming: Arc<Incoming>) -> std::io::Result<Listener> {
    let socket = TcpListener::bind(addr).await?;
    let addr = socket.local_addr()?;
    let closing = CancellationToken::new();
    let closed = closing.clone();
    let task = runtime::handle().spawn(async move {
        loop {
            let Ok((stream, peer)) = socket.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let incoming = incoming.clone();
            let closed = closed.clone();
            runtime::handle().spawn(async move {
                // The peer's host is known from its gd_start on.
                let mut counts = Scoped {
                    all: incoming.metrics.clone(),
                    host: None,
                };
                counts.bump(|m| &m.incoming_established_count);
                let served = async {
                    match &incoming.tls {
                        None => serve(stream, &incoming, &mut counts).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(GD_START_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => serve(tls, &incoming, &mut counts).await,
                                Ok(Err(e)) => Err(FrameError::Io(format!("TLS handshake: {e}"))),
                                Err(_) => Err(silent()),
                            }
                        }
                    }
                };
                let outcome = tokio::select! {
                    outcome = served => outcome,
                    () = closed.cancelled() => Ok(()),
                };
                match outcome {
                    Ok(()) => counts.bump(|m| &m.incoming_closed_count),
                    Err(e) => {
                        log::warn!("global distribution connection from {peer} closed: {e}");
                        counts.bump(|m| &m.incoming_errored_count);
                    }
                }
            });
        }
    });
    Ok(Listener {
        addr,
        task,
        closing,
    })
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    incoming: &Incoming,
    counts: &mut Scoped,
) -> Result<(), FrameError> {
    // Frames are small and many: read the socket in large chunks.
    let mut stream = BufReader::with_capacity(READ_BUFFER, stream);
    let mut buf = Vec::new();
    let first = read_frame(&mut stream, incoming.max_frame, &mut buf);
    match tokio::time::timeout(GD_START_TIMEOUT, first).await {
        Err(_) => return Err(silent()),
        Ok(read) => {
            if read?.is_none() {
                return Ok(());
            }
        }
    }
    let (host, _conn_id) = parse_gd_start(&buf)?;
    counts.host = Some(incoming.metrics.host(&host));
    counts.bump(|m| &m.incoming_first_packet_count);
    let mut sink = incoming.sinks.sink();
    let mut batched = 0;
    let outcome = loop {
        match read_frame(&mut stream, incoming.max_frame, &mut buf).await {
            Ok(Some(())) => {}
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
        let data = match parse_data(&buf) {
            Ok(data) => data,
            Err(e) => break Err(e),
        };
        let transfer = now_us().saturating_sub(data.clock_us as i64);
        sink.frame(&host, transfer, data.key, data.term);
        counts.bump(|m| &m.incoming_messages_count);
        counts.transfer_time(transfer.max(0) as u64);
        batched += 1;
        // Nothing more buffered: the next read would wait on the socket.
        if stream.buffer().is_empty() || batched == MAX_BATCH {
            sink.flush().await;
            batched = 0;
        }
    };
    // What arrived before a close or a bad frame is still delivered.
    sink.flush().await;
    outcome
}

fn silent() -> FrameError {
    FrameError::Io(format!(
        "no gd_start within {} s of connecting",
        GD_START_TIMEOUT.as_secs()
    ))
}

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
