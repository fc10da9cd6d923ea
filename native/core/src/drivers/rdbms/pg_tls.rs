//! TLS for tokio-postgres with the rustls configuration the pool's `tls`
//! section describes (`tls::read_tls`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

/// Makes a connector per connection.
#[derive(Clone)]
pub(super) struct MakeRustls(Arc<ClientConfig>);

impl MakeRustls {
    pub(super) fn new(config: Arc<ClientConfig>) -> MakeRustls {
        MakeRustls(config)
    }
}

pub(super) struct Connect {
    config: Arc<ClientConfig>,
    host: String,
}

/// The TLS session over the connection's socket.
pub(super) struct Stream(tokio_rustls::client::TlsStream<Socket>);

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = Stream;
    type TlsConnect = Connect;
    type Error = io::Error;

    /// `host` is the configured host, the name the certificate must carry.
    fn make_tls_connect(&mut self, host: &str) -> io::Result<Connect> {
        Ok(Connect {
            config: self.0.clone(),
            host: host.to_string(),
        })
    }
}

impl TlsConnect<Socket> for Connect {
    type Stream = Stream;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<Stream>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let name = ServerName::try_from(self.host)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let connector = tokio_rustls::TlsConnector::from(self.config);
            connector.connect(name, socket).await.map(Stream)
        })
    }
}

impl TlsStream for Stream {
    /// No channel binding: SCRAM authenticates without it.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
