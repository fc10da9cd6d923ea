//! Outgoing connections to other datacenters: opened on first use, frames
//! queued (bounded) and written in batches, reopened with backoff.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use super::frame::gd_start;
use super::metrics::{bump, Metrics};
use crate::runtime;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Bytes gathered from the queue into one write.
const BATCH_BYTES: usize = 256 * 1024;

/// One connection to one endpoint of a remote datacenter.
pub struct Outgoing {
    pub endpoint: SocketAddr,
    tx: mpsc::Sender<Vec<u8>>,
}

pub struct Dialer {
    pub local_host: String,
    pub tls: Option<TlsConnector>,
    pub metrics: Arc<Metrics>,
    pub queue: usize,
}

impl Outgoing {
    pub fn open(endpoint: SocketAddr, dialer: Arc<Dialer>) -> Outgoing {
        let (tx, rx) = mpsc::channel(dialer.queue);
        runtime::handle().spawn(write_loop(endpoint, dialer, rx));
        Outgoing { endpoint, tx }
    }

    /// Queues an encoded frame; refused when the queue is full.
    pub fn send(&self, frame: Vec<u8>) -> Result<(), &'static str> {
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

async fn write_loop(endpoint: SocketAddr, dialer: Arc<Dialer>, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut backoff = Duration::from_millis(100);
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    // Opened on first use: nothing is dialled until a frame waits.
    while let Some(first) = rx.recv().await {
        let mut stream = match dial(endpoint, &dialer).await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("global distribution connection to {endpoint} failed: {e}");
                bump(&dialer.metrics.outgoing_errored_count);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                // Frames queued meanwhile cannot reach that endpoint now.
                while rx.try_recv().is_ok() {}
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        bump(&dialer.metrics.outgoing_established_count);
        let mut next = Some(first);
        loop {
            let frame = match next.take() {
                Some(f) => f,
                None => match rx.recv().await {
                    Some(f) => f,
                    None => {
                        let _ = stream.shutdown().await;
                        bump(&dialer.metrics.outgoing_closed_count);
                        return;
                    }
                },
            };
            batch.clear();
            batch.extend_from_slice(&frame);
            let mut frames = 1;
            while batch.len() < BATCH_BYTES {
                match rx.try_recv() {
                    Ok(f) => {
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
                bump(&dialer.metrics.outgoing_errored_count);
                break;
            }
            dialer
                .metrics
                .outgoing_messages_count
                .fetch_add(frames, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
