//! Opening a client connection the way every driver that owns its socket
//! wants it: no Nagle delay, and TCP keepalive so that a connection that
//! died silently (no FIN: a partition, a host gone) is found and replaced
//! within about a minute.

use std::time::Duration;

use tokio::net::TcpStream;

const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(30))
    .with_interval(Duration::from_secs(10));

/// Connects to `host:port`; the error is the system's, for the caller's message.
pub async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    socket2::SockRef::from(&tcp)
        .set_tcp_keepalive(&KEEPALIVE)
        .map_err(|e| e.to_string())?;
    Ok(tcp)
}
