//! TLS for AMQP connections from the shared rustls configuration
//! (`crate::tls`), through lapin's custom transport hook.

use std::sync::Arc;

use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use rustls::ClientConfig;

pub async fn connect(
    uri: AMQPUri,
    props: ConnectionProperties,
    tls: Arc<ClientConfig>,
) -> lapin::Result<Connection> {
    let connector = RustlsConnector::from(tls);
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            let host = uri.authority.host.clone();
            let addrs = runtime.to_socket_addrs((host.clone(), uri.authority.port));
            let tcp = AsyncTcpStream::connect(&runtime, addrs).await?;
            Ok(tcp.into_rustls(&connector, &host).await?)
        },
        props,
    )
    .await
}
