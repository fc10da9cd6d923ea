//! The `riak` pool type: Riak's Protocol Buffers API (PBC) for
//! `mongoose_riak`, MongooseIM 5.1.0's Riak layer over riakc.
//!
//! Every message is a 4-byte big-endian length, a 1-byte message code and
//! the protobuf body ([`pb`]). Each worker owns one connection and carries
//! one request at a time (Riak answers in order and has no request ids); a
//! streamed answer (list_keys, list_buckets, mapred) is read to its `done`
//! message and gathered into one answer. A reader task owns the socket's
//! read half, so a connection the server closes while idle is found and
//! replaced at once.
//!
//! # Connection options (`outgoing_pools.riak.TAG.connection`)
//!
//! | key | form | default |
//! |---|---|---|
//! | `address` | host name or address | `"127.0.0.1"` |
//! | `port` | 1..65535 | `8087` |
//! | `credentials` | `{user, password}` | none |
//! | `tls` | the shared TLS section; `cacertfile` required | none |
//!
//! As in riakc, credentials force TLS: the connection sends RpbStartTls,
//! upgrades to TLS (the chain checked against `cacertfile`: `verify_peer`
//! defaults to true here), then authenticates with RpbAuthReq. Without
//! credentials riakc never starts TLS, so a `tls` section alone is refused
//! rather than silently ignored. Seed 000's legacy list form
//! (`{credentials, User, Password}`, `{cacertfile, Path}`, `{ssl_opts,
//! Opts}`) is read too.

mod pb;
mod request;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, Mutex};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::config::{Node, Secret};
use crate::engine::pool::{Driver, Outcome};
use crate::error::{Error, Result};
use crate::options::Opt;
use crate::runtime;
use crate::term::Term;
use crate::tls::{read_tls, ssl_client_options, TLS_OPTIONS, TLS_SECTION};

pub use request::RiakRequest;
use request::{answer, server_error, Gathered};

pub const DEFAULT_ADDRESS: &str = "127.0.0.1";
pub const DEFAULT_PORT: i64 = 8087;
/// How long opening a connection (TCP, STARTTLS, TLS, authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A larger frame is taken as a broken stream, not allocated.
const MAX_FRAME: usize = 256 << 20;
/// Frames the reader task may hold before the worker takes them.
const READ_AHEAD: usize = 16;
/// Past `call_timeout` by this much the worker gives a stalled request up
/// (the caller's own timeout comes first) and replaces the connection.
const CLIENT_MARGIN: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

#[derive(Clone)]
pub struct RiakConfig {
    pub address: String,
    pub port: u16,
    pub credentials: Option<Credentials>,
    pub tls: Option<Arc<ClientConfig>>,
}

const ADDRESS: Opt = Opt::text("address");
const PORT: Opt = Opt::int("port", 1, 65535);
const CREDENTIALS_OPTIONS: [Opt; 2] = [Opt::text("user"), Opt::secret("password")];
const CREDENTIALS: Opt = Opt::section("credentials", &CREDENTIALS_OPTIONS);

impl RiakConfig {
    /// MongooseIM 5.1's (seed 002), with the shared TLS section.
    pub const OPTIONS: [Opt; 4] = [ADDRESS, PORT, CREDENTIALS, TLS_SECTION];

    pub fn read(conn: &Node) -> Result<RiakConfig> {
        let legacy = legacy_form(conn)?;
        let conn = match &legacy {
            Some(term) => conn.beside(conn.path(), term),
            None => conn.clone(),
        };
        conn.only(&Self::OPTIONS)?;
        let address_node = conn.at(ADDRESS.name);
        let address = address_node.string_or(DEFAULT_ADDRESS)?;
        if address.is_empty() {
            return Err(address_node.invalid("a host name or address"));
        }
        let port = conn.opt(&PORT).int_or(DEFAULT_PORT)? as u16;
        let cred = conn.at(CREDENTIALS.name);
        let credentials = if cred.is_set() {
            cred.only(&CREDENTIALS_OPTIONS)?;
            let (user, password) = (
                cred.at(CREDENTIALS_OPTIONS[0].name),
                cred.at(CREDENTIALS_OPTIONS[1].name),
            );
            let password = password
                .secret()?
                .ok_or_else(|| password.missing("a string"))?;
            Some(Credentials {
                user: user.required_string()?,
                password,
            })
        } else {
            None
        };
        let tls_node = conn.at(TLS_SECTION.name);
        let tls = match (&credentials, tls_node.is_set()) {
            (None, false) => None,
            (None, true) => {
                return Err(Error::Config(format!(
                    "{}: Riak uses TLS only to authenticate: set connection.credentials \
                     too, or remove tls",
                    tls_node.path()
                )))
            }
            (Some(_), false) => {
                return Err(tls_node
                    .at("cacertfile")
                    .missing("the CA certificate file: credentials force TLS, as Riak requires"))
            }
            (Some(_), true) => {
                tls_node.only(&TLS_OPTIONS)?;
                tls_node
                    .at("cacertfile")
                    .string()?
                    .ok_or_else(|| tls_node.at("cacertfile").missing("a CA certificate file"))?;
                let checked = verifying(&tls_node);
                let mut config = match &checked {
                    Some(term) => read_tls(&tls_node.beside(tls_node.path(), term))?,
                    None => read_tls(&tls_node)?,
                };
                config.alpn_protocols.clear();
                Some(Arc::new(config))
            }
        };
        Ok(RiakConfig {
            address,
            port,
            credentials,
            tls,
        })
    }

    fn server(&self) -> String {
        format!("riak {}:{}", self.address, self.port)
    }
}

/// The `tls` section with `verify_peer = true` added unless it says how to
/// verify (riakc verifies the server against `cacertfile`).
fn verifying(tls: &Node) -> Option<Term> {
    if tls.at("verify_peer").is_set() || tls.at("verify_mode").is_set() {
        return None;
    }
    let verify = (Term::atom("verify_peer"), Term::from(true));
    match tls.term()? {
        Term::Map(pairs) => {
            let mut pairs = pairs.clone();
            pairs.push(verify);
            Some(Term::Map(pairs))
        }
        Term::List(items) => {
            let mut items = items.clone();
            items.push(Term::tuple(vec![verify.0, verify.1]));
            Some(Term::List(items))
        }
        _ => None,
    }
}

/// Seed 000's list: `{credentials, User, Password}` (a 3-tuple),
/// `{cacertfile, Path}` and `{ssl_opts, Opts}` become `credentials` and
/// `tls`; `None` when the section is not in that form.
fn legacy_form(conn: &Node) -> Result<Option<Term>> {
    let Some(Term::List(items)) = conn.term() else {
        return Ok(None);
    };
    let is_legacy = items.iter().any(|i| match i {
        Term::Tuple(t) => {
            let key = t.first().and_then(Term::as_atom);
            (t.len() == 3 && key == Some("credentials"))
                || (t.len() == 2 && matches!(key, Some("cacertfile" | "ssl_opts")))
        }
        _ => false,
    });
    if !is_legacy {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut tls = Vec::new();
    for item in items {
        match item {
            Term::Tuple(t) if t.len() == 3 && t[0].as_atom() == Some("credentials") => {
                let creds = Term::map_of(vec![("user", t[1].clone()), ("password", t[2].clone())]);
                out.push((Term::atom("credentials"), creds));
            }
            Term::Tuple(t) if t.len() == 2 && t[0].as_atom() == Some("cacertfile") => {
                tls.push((Term::atom("cacertfile"), t[1].clone()));
            }
            Term::Tuple(t) if t.len() == 2 && t[0].as_atom() == Some("ssl_opts") => {
                let node = conn.beside(format!("{}.ssl_opts", conn.path()), &t[1]);
                if let Term::Map(pairs) = ssl_client_options(&node)? {
                    tls.extend(pairs);
                }
            }
            Term::Tuple(t) if t.len() == 2 => out.push((t[0].clone(), t[1].clone())),
            other => {
                return Err(Error::Config(format!(
                    "{}: expected {{Key, Value}} pairs or {{credentials, User, Password}}, got {}",
                    conn.path(),
                    other.describe()
                )))
            }
        }
    }
    if !tls.is_empty() {
        out.push((Term::atom("tls"), Term::Map(tls)));
    }
    Ok(Some(Term::Map(out)))
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Frame = (u8, Vec<u8>);

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, code: u8, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len() + 1)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    let mut buf = Vec::with_capacity(body.len() + 5);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.push(code);
    buf.extend_from_slice(body);
    w.write_all(&buf).await?;
    w.flush().await
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Frame> {
    let len = r.read_u32().await? as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message of {len} bytes, outside 1..{MAX_FRAME}"),
        ));
    }
    let code = r.read_u8().await?;
    let mut body = vec![0; len - 1];
    r.read_exact(&mut body).await?;
    Ok((code, body))
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

struct Link {
    write: WriteHalf<Box<dyn Io>>,
    frames: mpsc::Receiver<io::Result<Frame>>,
}

/// One connection; `closed` fires when its reader task ends.
#[derive(Clone)]
pub struct RiakConn {
    link: Arc<Mutex<Link>>,
    closed: CancellationToken,
}

async fn open(config: &RiakConfig) -> std::result::Result<RiakConn, String> {
    let mut tcp = crate::drivers::tcp::connect(&config.address, config.port).await?;
    let io: Box<dyn Io> = match (&config.credentials, &config.tls) {
        (Some(creds), Some(tls)) => {
            write_frame(&mut tcp, pb::START_TLS, &[])
                .await
                .map_err(|e| format!("sending RpbStartTls: {e}"))?;
            match read_frame(&mut tcp)
                .await
                .map_err(|e| format!("STARTTLS: {e}"))?
            {
                (pb::START_TLS, _) => {}
                (pb::ERROR_RESP, body) => {
                    return Err(format!(
                        "the server refused STARTTLS (is security enabled?): {}",
                        server_error(&body).map_or_else(|e| e.to_string(), |t| t.describe())
                    ))
                }
                (code, _) => return Err(format!("message {code} in answer to RpbStartTls")),
            }
            let name = ServerName::try_from(config.address.clone())
                .map_err(|_| format!("{} is not a TLS server name", config.address))?;
            let mut stream = TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            let auth = pb::RpbAuthReq {
                user: creds.user.clone().into_bytes(),
                password: creds.password.expose().as_bytes().to_vec(),
            };
            write_frame(
                &mut stream,
                pb::AUTH_REQ,
                &prost::Message::encode_to_vec(&auth),
            )
            .await
            .map_err(|e| format!("sending RpbAuthReq: {e}"))?;
            match read_frame(&mut stream)
                .await
                .map_err(|e| format!("authentication: {e}"))?
            {
                (pb::AUTH_RESP, _) => {}
                (pb::ERROR_RESP, _) => {
                    return Err(
                        "the server refused connection.credentials (user and password)".into(),
                    )
                }
                (code, _) => return Err(format!("message {code} in answer to RpbAuthReq")),
            }
            Box::new(stream)
        }
        _ => Box::new(tcp),
    };
    let (mut read, write) = tokio::io::split(io);
    let (tx, frames) = mpsc::channel(READ_AHEAD);
    let closed = CancellationToken::new();
    let on_end = closed.clone();
    runtime::handle().spawn(async move {
        loop {
            let frame = read_frame(&mut read).await;
            let end = frame.is_err();
            if tx.send(frame).await.is_err() || end {
                break;
            }
        }
        on_end.cancel();
    });
    Ok(RiakConn {
        link: Arc::new(Mutex::new(Link { write, frames })),
        closed,
    })
}

pub struct RiakDriver {
    config: Arc<RiakConfig>,
    op_timeout: Duration,
}

impl RiakDriver {
    pub fn new(config: RiakConfig, call_timeout_ms: u64) -> RiakDriver {
        RiakDriver {
            config: Arc::new(config),
            op_timeout: Duration::from_millis(call_timeout_ms) + CLIENT_MARGIN,
        }
    }
}

impl Driver for RiakDriver {
    type Conn = RiakConn;
    type Request = RiakRequest;

    fn parse(&self, request: Term) -> Result<RiakRequest> {
        RiakRequest::parse(&request)
    }

    fn connect(&self, _worker: usize) -> BoxFuture<'static, Result<RiakConn>> {
        let config = self.config.clone();
        Box::pin(async move {
            match tokio::time::timeout(CONNECT_TIMEOUT, open(&config)).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(Error::Connect(format!("{}: {e}", config.server()))),
                Err(_) => Err(Error::Connect(format!(
                    "{}: no connection within {CONNECT_TIMEOUT:?}",
                    config.server()
                ))),
            }
        })
    }

    fn execute(&self, conn: RiakConn, request: RiakRequest) -> BoxFuture<'static, Outcome> {
        let timeout = self.op_timeout;
        let server = self.config.server();
        Box::pin(async move {
            let mut link = conn.link.lock().await;
            match tokio::time::timeout(timeout, exchange(&mut link, &request, &server)).await {
                Ok(result) => result.into(),
                Err(_) => Outcome::failed(Error::Timeout(format!(
                    "{server}: no answer within {} ms",
                    timeout.as_millis()
                ))),
            }
        })
    }

    fn closed(&self, conn: &RiakConn) -> BoxFuture<'static, ()> {
        Box::pin(conn.closed.clone().cancelled_owned())
    }
}

/// Sends one request and reads its answer: one message, or for streamed
/// answers every message up to the one marked `done`.
async fn exchange(link: &mut Link, request: &RiakRequest, server: &str) -> Result<Term> {
    let lost = |e: io::Error| Error::ConnectionLost(format!("{server}: {e}"));
    write_frame(&mut link.write, request.code, &request.body)
        .await
        .map_err(lost)?;
    let expect = request.expect;
    let mut gathered = Gathered::new();
    loop {
        let (code, body) = match link.frames.recv().await {
            Some(frame) => frame.map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::ConnectionLost(format!("{server}: the server closed the connection"))
                } else {
                    lost(e)
                }
            })?,
            None => {
                return Err(Error::ConnectionLost(format!(
                    "{server}: the connection is closed"
                )))
            }
        };
        if code == pb::ERROR_RESP {
            return server_error(&body);
        }
        if code != expect.response_code() {
            return Err(Error::ConnectionLost(format!(
                "{server}: message {code} in answer to message {}",
                request.code
            )));
        }
        if !expect.streamed() {
            return answer(expect, &body);
        }
        if gathered.add(expect, &body)? {
            return Ok(gathered.finish());
        }
    }
}

#[cfg(test)]
mod tests;
