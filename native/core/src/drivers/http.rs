//! The `http` pool type: requests to one HTTP(S) server with reqwest over rustls.
//!
//! All workers share one [`reqwest::Client`] (its connection pool keeps
//! connections alive and reuses them; HTTP/2 is used where the server offers
//! it through ALPN, HTTP/1.1 otherwise). A worker is one execution slot, so
//! `workers` bounds the requests in flight and the pool strategies choose
//! among them as for every other type.
//!
//! # Connection options (`outgoing_pools.http.TAG.connection`)
//!
//! | key | form | default |
//! |---|---|---|
//! | `host` (legacy name `server`) | `"http[s]://name[:port]"` | `"http://localhost"` |
//! | `path_prefix` | string | `"/"` |
//! | `request_timeout` | positive integer, milliseconds | `2000` |
//! | `tls` | table, see [`read_tls`] | verification off |
//!
//! # The request (built by `mongoose_http_client`)
//!
//! `{request, Method, Path, Headers, Body}`:
//! - `Method`: a binary, charlist or atom (`<<"GET">>`, `post`);
//! - `Path`: iodata, appended to `path_prefix` (see [`join_path`]); it may
//!   carry a query string;
//! - `Headers`: a list of `{Name, Value}`, each iodata or atom;
//! - `Body`: iodata, `<<>>` for none.
//!
//! # The answer
//!
//! - `{ok, {Status, Headers, Body}}`: `Status` the code as a binary
//!   (`<<"200">>`), `Headers` a list of `{LowercaseName, Value}` binaries,
//!   `Body` a binary. Every status is an answer, redirects are not followed.
//! - `{error, {Kind, Message}}` when no answer came, `Kind` one of
//!   `request_timeout` (no complete answer within `request_timeout`),
//!   `connection_refused`, `tls_error` (handshake or certificate failure),
//!   `connect_failed` (any other failure to connect, e.g. name resolution)
//!   and `connection_lost` (the connection broke while carrying the request).
//!   Messages name the method, server and path, never the query string.
//! - A malformed request is refused at submit with `{error, {bad_request, Message}}`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, Url};
use rustls::ClientConfig;

use crate::config::Node;
use crate::drivers::http_client::{build_client, failure, timed_out};
use crate::engine::pool::{Driver, Outcome};
use crate::error::{Error, Result};
use crate::options::Opt;
use crate::term::Term;
use crate::tls::{read_tls, TLS_SECTION};

pub const DEFAULT_HOST: &str = "http://localhost";
pub const DEFAULT_PATH_PREFIX: &str = "/";
pub const DEFAULT_REQUEST_TIMEOUT_MS: i64 = 2000;

/// The validated connection options of an `http` pool.
#[derive(Clone)]
pub struct HttpConfig {
    /// `scheme://host[:port]`, no trailing slash.
    pub base: String,
    pub path_prefix: String,
    pub request_timeout: Duration,
    /// Built from the `tls` table; used for `https` hosts.
    pub tls: Arc<ClientConfig>,
}

impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConfig")
            .field("base", &self.base)
            .field("path_prefix", &self.path_prefix)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

const REQUEST_TIMEOUT: Opt = Opt::int("request_timeout", 1, i64::MAX);

impl HttpConfig {
    pub const OPTIONS: [Opt; 5] = [
        Opt::text("host"),
        Opt::text("server").alias_of("host"),
        Opt::text("path_prefix"),
        REQUEST_TIMEOUT,
        TLS_SECTION,
    ];

    /// Reads the options at `conn` (a map or a proplist). Certificate and key
    /// files are read here, so a bad file is an error naming its option.
    pub fn read(conn: &Node) -> Result<HttpConfig> {
        conn.only(&Self::OPTIONS)?;
        let host = match (conn.at("host"), conn.at("server")) {
            (h, s) if h.is_set() && s.is_set() => {
                return Err(Error::Config(format!(
                    "{}: set either host or its legacy name server, not both",
                    s.path()
                )))
            }
            (h, s) if s.is_set() && !h.is_set() => s,
            (h, _) => h,
        };
        let base = read_host(&host)?;
        let path_prefix = conn.at("path_prefix").string_or(DEFAULT_PATH_PREFIX)?;
        let request_timeout = conn
            .opt(&REQUEST_TIMEOUT)
            .int_or(DEFAULT_REQUEST_TIMEOUT_MS)? as u64;
        let tls = read_tls(&conn.at(TLS_SECTION.name))?;
        Ok(HttpConfig {
            base,
            path_prefix,
            request_timeout: Duration::from_millis(request_timeout),
            tls: Arc::new(tls),
        })
    }
}

/// `http[s]://name[:port]`, returned without a trailing slash.
fn read_host(node: &Node) -> Result<String> {
    const FORM: &str = "\"http[s]://name[:port]\"";
    let text = node.string_or(DEFAULT_HOST)?;
    let Ok(url) = Url::parse(&text) else {
        return Err(node.invalid(FORM));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(node.invalid(&format!("{FORM} without user information")));
    }
    let only_root = matches!(url.path(), "" | "/") && url.query().is_none();
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(node.invalid(FORM));
    }
    if !only_root || url.fragment().is_some() {
        return Err(node.invalid(&format!("{FORM} without a path (put it in path_prefix)")));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// `path_prefix` followed by a call's path, as MongooseIM prepends it, except
/// that the result always starts with `/` and a slash ending the prefix and
/// one starting the path are written once: `"/api/"` and `"/users"` give
/// `"/api/users"`, `"/api"` and `"users"` give `"/apiusers"`.
pub fn join_path(prefix: &str, path: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + path.len() + 1);
    if !prefix.starts_with('/') {
        out.push('/');
    }
    out.push_str(prefix);
    match path.strip_prefix('/') {
        Some(rest) if out.ends_with('/') => out.push_str(rest),
        _ => out.push_str(path),
    }
    out
}

// ---------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------

pub struct HttpDriver {
    client: Client,
    config: HttpConfig,
}

impl HttpDriver {
    /// Builds the client every worker shares; `workers` bounds its idle
    /// connections too.
    pub fn new(config: HttpConfig, workers: usize) -> Result<HttpDriver> {
        let client = build_client(&config.tls, workers, &format!("http {}", config.base))?;
        Ok(HttpDriver { client, config })
    }
}

pub struct HttpRequest {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl HttpRequest {
    /// `METHOD scheme://host:port/path`, without the query string.
    fn describe(&self) -> String {
        let mut url = self.url.clone();
        url.set_query(None);
        format!("{} {url}", self.method)
    }
}

/// What a term is, without its value (a request may carry credentials).
pub(crate) fn shape(term: &Term) -> &'static str {
    match term {
        Term::Atom(_) => "an atom",
        Term::Int(_) => "an integer",
        Term::Float(_) => "a float",
        Term::Bin(_) => "a binary",
        Term::List(_) => "a list",
        Term::Tuple(_) => "a tuple",
        Term::Map(_) => "a map",
        Term::Opaque(_) => "an opaque term",
    }
}

fn iodata(term: &Term, what: &str) -> Result<Vec<u8>> {
    let mut out = vec![];
    if term.to_iodata(&mut out) {
        Ok(out)
    } else {
        Err(Error::BadRequest(format!(
            "the {what} must be iodata, got {}",
            shape(term)
        )))
    }
}

fn header(pair: &Term) -> Result<(HeaderName, HeaderValue)> {
    let Term::Tuple(kv) = pair else {
        return Err(Error::BadRequest(format!(
            "a header is {{Name, Value}}, got {}",
            shape(pair)
        )));
    };
    let [name, value] = kv.as_slice() else {
        return Err(Error::BadRequest(format!(
            "a header is {{Name, Value}}, got {}",
            shape(pair)
        )));
    };
    let name_bytes = iodata(name, "header name")?;
    let name = HeaderName::from_bytes(&name_bytes).map_err(|_| {
        Error::BadRequest(format!(
            "invalid header name {:?}",
            String::from_utf8_lossy(&name_bytes)
        ))
    })?;
    let value = HeaderValue::from_bytes(&iodata(value, "header value")?)
        .map_err(|_| Error::BadRequest(format!("invalid value for header {name}")))?;
    Ok((name, value))
}

impl Driver for HttpDriver {
    type Conn = Client;
    type Request = HttpRequest;

    fn parse(&self, request: Term) -> Result<HttpRequest> {
        let form = || {
            Error::BadRequest(format!(
                "expected {{request, Method, Path, Headers, Body}}, got {}",
                shape(&request)
            ))
        };
        let Term::Tuple(items) = &request else {
            return Err(form());
        };
        let [tag, method, path, headers, body] = items.as_slice() else {
            return Err(form());
        };
        if tag.as_atom() != Some("request") {
            return Err(form());
        }
        let method = method
            .as_text()
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .ok_or_else(|| {
                Error::BadRequest(format!("invalid HTTP method {}", method.describe()))
            })?;
        let path = String::from_utf8(iodata(path, "path")?)
            .map_err(|_| Error::BadRequest("the path is not UTF-8".into()))?;
        let full = join_path(&self.config.path_prefix, &path);
        let url = Url::parse(&format!("{}{full}", self.config.base))
            .map_err(|e| Error::BadRequest(format!("invalid path: {e}")))?;
        let Term::List(pairs) = headers else {
            return Err(Error::BadRequest(format!(
                "the headers must be a list of {{Name, Value}}, got {}",
                shape(headers)
            )));
        };
        let mut map = HeaderMap::with_capacity(pairs.len());
        for pair in pairs {
            let (name, value) = header(pair)?;
            map.append(name, value);
        }
        Ok(HttpRequest {
            method,
            url,
            headers: map,
            body: iodata(body, "body")?,
        })
    }

    fn connect(&self, _worker: usize) -> BoxFuture<'static, Result<Client>> {
        let client = self.client.clone();
        Box::pin(async move { Ok(client) })
    }

    /// reqwest's client keeps its own connections, so every failure is an
    /// answer and no verdict breaks the worker.
    fn execute(&self, client: Client, request: HttpRequest) -> BoxFuture<'static, Outcome> {
        let timeout = self.config.request_timeout;
        Box::pin(async move {
            let what = request.describe();
            let mut builder = client
                .request(request.method.clone(), request.url)
                .headers(request.headers);
            let bodiless = matches!(
                request.method,
                Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
            );
            if !(request.body.is_empty() && bodiless) {
                builder = builder.body(request.body);
            }
            let exchange = async {
                let response = builder.send().await.map_err(|e| failure(&what, &e))?;
                let status = response.status().as_u16().to_string();
                let headers = response
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        Term::tuple(vec![Term::from(k.as_str()), Term::bin(v.as_bytes())])
                    })
                    .collect();
                let body = response.bytes().await.map_err(|e| failure(&what, &e))?;
                Ok::<Term, Term>(Term::tuple(vec![
                    Term::from(status),
                    Term::List(headers),
                    Term::bin(body.to_vec()),
                ]))
            };
            Outcome::answer(match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok(answer)) => Term::ok(answer),
                Ok(Err(reason)) => Term::error(reason),
                Err(_) => Term::error(timed_out(&what, timeout)),
            })
        })
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
