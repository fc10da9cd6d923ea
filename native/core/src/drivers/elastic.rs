//! The `elastic` pool type: Elasticsearch (or OpenSearch) over its REST API,
//! for `mongoose_elasticsearch`.
//!
//! It shares the `http` type's reqwest client and error mapping
//! ([`super::http_client`]): every worker is one execution slot on a client
//! that keeps its own connections alive, so a failed request never breaks a
//! worker's "connection" and nothing here asks the engine to reconnect.
//!
//! # Connection options (`outgoing_pools.elastic.TAG.connection`)
//!
//! | key | form | default |
//! |---|---|---|
//! | `host` | host name or address | `"localhost"` |
//! | `port` | 1..65535 | `9200` |
//! | `username`, `password` | HTTP basic authentication | none |
//! | `tls` | table, see [`read_tls`]; present means HTTPS | plain HTTP |
//!
//! # Versions
//!
//! At start the pool reads `GET /` and keeps what it found (shown by
//! `stats/3`): Elasticsearch before 7 takes the caller's mapping type in
//! paths (`/Index/Type/Id`), as MongooseIM writes them; Elasticsearch 7 and
//! later and OpenSearch get typeless paths (`/Index/_doc/Id`,
//! `/Index/_search`), which 8.x requires. A server that does not answer
//! `GET /` with a version fails the start.
//!
//! # The requests (built by `mongoose_elasticsearch`)
//!
//! `health`, `{insert_document, Index, Type, Id, Doc}`,
//! `{search | count | delete_by_query, Index, Type, Query}`; names are text
//! (binary, charlist or atom), `Doc` and `Query` a map (encoded as JSON,
//! binaries as strings, `true`/`false`/`null` as themselves, other atoms as
//! strings) or a binary already holding JSON.
//!
//! # The answers
//!
//! `{ok, Map}` for a 2xx answer (JSON decoded: objects to maps with binary
//! keys, strings to binaries, `null` to `null`); `{error, {Status, Body}}`
//! for any other status, `Body` the decoded error object (or the raw binary
//! when it is not JSON); `{error, {bad_response, Msg}}` for a 2xx answer that
//! is not JSON; `{error, {request_timeout, Msg}}` past `call_timeout`; and
//! the `http` type's `{error, {Kind, Msg}}` when no answer came.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::{Client, Method, StatusCode, Url};
use rustls::ClientConfig;
use serde_json::Value;

use crate::config::{Node, PoolSettings, Secret};
use crate::drivers::http::shape;
use crate::drivers::http_client::{build_client, failure, failure_parts, reason, timed_out};
use crate::engine::pool::{AnyPool, Driver, Outcome, Pool};
use crate::error::{Error, Result};
use crate::options::Opt;
use crate::registry::Opening;
use crate::term::Term;
use crate::tls::{read_tls, TLS_SECTION};

pub const DEFAULT_HOST: &str = "localhost";
pub const DEFAULT_PORT: i64 = 9200;
/// Deeper documents are refused rather than walked on the caller's stack.
const MAX_DEPTH: usize = 512;

/// The validated connection options of an `elastic` pool.
#[derive(Clone)]
pub struct ElasticConfig {
    /// `scheme://host:port`.
    pub base: Url,
    pub tls: Arc<ClientConfig>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl fmt::Debug for ElasticConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElasticConfig")
            .field("base", &self.base.as_str())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

const PORT: Opt = Opt::int("port", 1, 65535);

impl ElasticConfig {
    pub const OPTIONS: [Opt; 5] = [
        Opt::text("host"),
        PORT,
        Opt::text("username"),
        Opt::secret("password"),
        TLS_SECTION,
    ];

    pub fn read(conn: &Node) -> Result<ElasticConfig> {
        conn.only(&Self::OPTIONS)?;
        let host_node = conn.at("host");
        let host = host_node.string_or(DEFAULT_HOST)?;
        let port = conn.opt(&PORT).int_or(DEFAULT_PORT)?;
        let tls_node = conn.at(TLS_SECTION.name);
        let scheme = if tls_node.is_set() { "https" } else { "http" };
        let name = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let base = Url::parse(&format!("{scheme}://{name}:{port}/"))
            .ok()
            .filter(|u| !host.is_empty() && u.path() == "/" && u.username().is_empty())
            .ok_or_else(|| host_node.invalid("a host name or address, without scheme or port"))?;
        let username = conn.at("username").string()?;
        let password = conn.at("password").secret()?;
        if password.is_some() && username.is_none() {
            return Err(conn.at("username").missing("a string when password is set"));
        }
        Ok(ElasticConfig {
            base,
            tls: Arc::new(read_tls(&tls_node)?),
            username,
            password,
        })
    }

    fn server(&self) -> String {
        format!("elastic {}", self.base.as_str().trim_end_matches('/'))
    }
}

/// What `GET /` said, kept for the pool's life.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    /// `elasticsearch` or `opensearch`.
    pub distribution: String,
    pub version: String,
    /// Whether paths carry the caller's mapping type.
    pub typed: bool,
}

impl ServerInfo {
    /// Reads the body of `GET /`.
    pub fn from_root(body: &Value) -> Option<ServerInfo> {
        let version = body.get("version")?;
        let number = version.get("number")?.as_str()?;
        let major: u64 = number.split('.').next()?.parse().ok()?;
        let distribution = version
            .get("distribution")
            .and_then(Value::as_str)
            .unwrap_or("elasticsearch")
            .to_string();
        let typed = distribution == "elasticsearch" && major < 7;
        Some(ServerInfo {
            distribution,
            version: number.to_string(),
            typed,
        })
    }
}

// ---------------------------------------------------------------------------
// Opening a pool: read the version, then start the workers
// ---------------------------------------------------------------------------

/// The registry's `open` for `elastic`.
pub fn open(conn: &Node, settings: PoolSettings) -> Result<Opening> {
    let config = ElasticConfig::read(conn)?;
    let client = build_client(&config.tls, settings.workers, &config.server())?;
    let timeout = Duration::from_millis(settings.call_timeout_ms);
    Ok(Box::pin(async move {
        let server = detect(&client, &config, timeout).await?;
        log::info!(
            "{}: {} {}, {} paths",
            config.server(),
            server.distribution,
            server.version,
            if server.typed { "typed" } else { "typeless" }
        );
        let driver = ElasticDriver {
            client,
            config,
            server: server.clone(),
            timeout,
        };
        let pool = Pool::start(driver, settings).await?;
        Ok(Box::new(pool) as Box<dyn AnyPool>)
    }))
}

async fn detect(client: &Client, config: &ElasticConfig, timeout: Duration) -> Result<ServerInfo> {
    let what = format!("{}: reading the server's version (GET /)", config.server());
    let request = authorized(client.get(config.base.clone()), config);
    let exchange = async {
        let response = request
            .send()
            .await
            .map_err(|e| Error::Connect(failure_parts(&what, &e).1))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::Connect(failure_parts(&what, &e).1))?;
        Ok::<_, Error>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            Error::Connect(format!(
                "{what}: no answer within call_timeout ({} ms)",
                timeout.as_millis()
            ))
        })??;
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(Error::Connect(if config.username.is_some() {
            format!(
                "{what}: the server refused connection.username and connection.password ({status})"
            )
        } else {
            format!("{what}: the server requires authentication ({status}): set connection.username and connection.password")
        }));
    }
    if !status.is_success() {
        return Err(Error::Connect(format!(
            "{what}: the server answered {status}: {}",
            excerpt(&body)
        )));
    }
    serde_json::from_slice::<Value>(&body)
        .ok()
        .as_ref()
        .and_then(ServerInfo::from_root)
        .ok_or_else(|| {
            Error::Connect(format!(
                "{what}: the answer has no version.number, so this is not Elasticsearch or OpenSearch: {}",
                excerpt(&body)
            ))
        })
}

/// At most 100 characters of a body, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(100) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.into_owned(),
    }
}

fn authorized(builder: reqwest::RequestBuilder, config: &ElasticConfig) -> reqwest::RequestBuilder {
    match &config.username {
        Some(user) => builder.basic_auth(user, config.password.as_ref().map(Secret::expose)),
        None => builder,
    }
}

pub struct ElasticDriver {
    client: Client,
    config: ElasticConfig,
    server: ServerInfo,
    timeout: Duration,
}

pub struct ElasticRequest {
    method: Method,
    url: Url,
    body: Option<Vec<u8>>,
}

impl ElasticRequest {
    fn describe(&self) -> String {
        format!("{} {}", self.method, self.url)
    }
}

fn text(term: &Term, what: &str) -> Result<String> {
    match term.as_text() {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Error::BadRequest(format!(
            "the {what} must be a non-empty binary, string or atom, got {}",
            term.describe()
        ))),
    }
}

fn body(term: &Term, what: &str) -> Result<Vec<u8>> {
    match term {
        Term::Bin(json) => Ok(json.clone()),
        Term::Map(_) | Term::Tuple(_) => serde_json::to_vec(&to_json(term, what, 0)?)
            .map_err(|e| Error::BadRequest(format!("the {what} cannot be encoded: {e}"))),
        other => Err(Error::BadRequest(format!(
            "the {what} must be a map or a binary holding JSON, got {}",
            shape(other)
        ))),
    }
}

/// A term as JSON, the way jiffy encodes one (including its `{Proplist}`
/// object form).
pub fn to_json(term: &Term, what: &str, depth: usize) -> Result<Value> {
    if depth > MAX_DEPTH {
        return Err(Error::BadRequest(format!(
            "the {what} is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let object = |pairs: &mut dyn Iterator<Item = (&Term, &Term)>| {
        let mut out = serde_json::Map::new();
        for (k, v) in pairs {
            let key = match k {
                Term::Bin(_) | Term::Atom(_) => k.as_text(),
                _ => None,
            }
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "a key in the {what} must be a UTF-8 binary or an atom, got {}",
                    shape(k)
                ))
            })?;
            out.insert(key, to_json(v, what, depth + 1)?);
        }
        Ok::<_, Error>(Value::Object(out))
    };
    Ok(match term {
        Term::Map(pairs) => object(&mut pairs.iter().map(|(k, v)| (k, v)))?,
        Term::Tuple(items) => match items.as_slice() {
            [Term::List(props)] => {
                let pairs = props
                    .iter()
                    .map(|p| match p {
                        Term::Tuple(kv) if kv.len() == 2 => Ok((&kv[0], &kv[1])),
                        _ => Err(Error::BadRequest(format!(
                            "an object {{[{{Key, Value}}]}} in the {what} holds {}",
                            shape(p)
                        ))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                object(&mut pairs.into_iter())?
            }
            _ => {
                return Err(Error::BadRequest(format!(
                    "the {what} holds a tuple, which JSON has no form for"
                )))
            }
        },
        Term::List(items) => Value::Array(
            items
                .iter()
                .map(|t| to_json(t, what, depth + 1))
                .collect::<Result<_>>()?,
        ),
        Term::Bin(b) => Value::String(String::from_utf8(b.clone()).map_err(|_| {
            Error::BadRequest(format!("the {what} holds a binary that is not UTF-8"))
        })?),
        Term::Atom(a) => match a.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            _ => Value::String(a.clone()),
        },
        Term::Int(i) => Value::from(*i),
        Term::Float(f) => Value::from(*f),
        Term::Opaque(_) => {
            return Err(Error::BadRequest(format!(
                "the {what} holds an opaque term"
            )))
        }
    })
}

/// JSON as the term jiffy's `return_maps` decodes it to.
pub fn from_json(value: Value) -> Term {
    match value {
        Value::Null => Term::atom("null"),
        Value::Bool(b) => Term::from(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Term::Int(i),
            None => Term::Float(n.as_f64().unwrap_or(f64::MAX)),
        },
        Value::String(s) => Term::from(s),
        Value::Array(items) => Term::List(items.into_iter().map(from_json).collect()),
        Value::Object(pairs) => Term::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Term::from(k), from_json(v)))
                .collect(),
        ),
    }
}

impl ElasticDriver {
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.config.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear().extend(segments);
        }
        url
    }

    /// `/Index/Type/Op` on a typed server, `/Index/Op` otherwise.
    fn on_index(&self, index: &str, kind: &str, op: &str) -> Url {
        if self.server.typed {
            self.url(&[index, kind, op])
        } else {
            self.url(&[index, op])
        }
    }
}

impl Driver for ElasticDriver {
    type Conn = Client;
    type Request = ElasticRequest;

    /// `{server, [{distribution, _}, {version, _}, {paths, typed | typeless}]}`:
    /// what `GET /` found at start.
    fn stats(&self) -> Vec<Term> {
        let kv = |k: &str, v: Term| Term::tuple(vec![Term::atom(k), v]);
        let paths = if self.server.typed {
            "typed"
        } else {
            "typeless"
        };
        let server = Term::List(vec![
            kv("distribution", Term::atom(&self.server.distribution)),
            kv("version", Term::from(self.server.version.clone())),
            kv("paths", Term::atom(paths)),
        ]);
        vec![kv("server", server)]
    }

    fn parse(&self, request: Term) -> Result<ElasticRequest> {
        let form = || {
            Error::BadRequest(format!(
                "expected health, {{insert_document, Index, Type, Id, Doc}} or \
                 {{search | count | delete_by_query, Index, Type, Query}}, got {}",
                shape(&request)
            ))
        };
        if request.as_atom() == Some("health") {
            return Ok(ElasticRequest {
                method: Method::GET,
                url: self.url(&["_cluster", "health"]),
                body: None,
            });
        }
        let Term::Tuple(items) = &request else {
            return Err(form());
        };
        match items.as_slice() {
            [op, index, kind, id, doc] if op.as_atom() == Some("insert_document") => {
                let (index, kind, id) =
                    (text(index, "index")?, text(kind, "type")?, text(id, "id")?);
                let kind = if self.server.typed {
                    kind.as_str()
                } else {
                    "_doc"
                };
                Ok(ElasticRequest {
                    method: Method::PUT,
                    url: self.url(&[&index, kind, &id]),
                    body: Some(body(doc, "document")?),
                })
            }
            [op, index, kind, query] => {
                let path = match op.as_atom() {
                    Some("search") => "_search",
                    Some("count") => "_count",
                    Some("delete_by_query") => "_delete_by_query",
                    _ => return Err(form()),
                };
                Ok(ElasticRequest {
                    method: Method::POST,
                    url: self.on_index(&text(index, "index")?, &text(kind, "type")?, path),
                    body: Some(body(query, "query")?),
                })
            }
            _ => Err(form()),
        }
    }

    fn connect(&self, _worker: usize) -> BoxFuture<'static, Result<Client>> {
        let client = self.client.clone();
        Box::pin(async move { Ok(client) })
    }

    fn execute(&self, client: Client, request: ElasticRequest) -> BoxFuture<'static, Outcome> {
        let builder = authorized(
            client.request(request.method.clone(), request.url.clone()),
            &self.config,
        );
        let timeout = self.timeout;
        Box::pin(async move { call(builder, request, timeout).await.into() })
    }
}

/// One request. Failures are answers, never `Err`: the client is shared
/// and replaces its broken connections itself, so the verdict on the
/// worker's "connection" is always that it is fine.
async fn call(
    builder: reqwest::RequestBuilder,
    request: ElasticRequest,
    timeout: Duration,
) -> Result<Term> {
    let what = request.describe();
    let builder = builder.header("accept", "application/json");
    let builder = match request.body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(body),
        None => builder,
    };
    let exchange = async {
        let response = builder.send().await.map_err(|e| failure(&what, &e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| failure(&what, &e))?;
        Ok::<_, Term>((status, body))
    };
    let (status, body) = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(reason)) => return Ok(Term::error(reason)),
        Err(_) => return Ok(Term::error(timed_out(&what, timeout))),
    };
    let decoded = serde_json::from_slice::<Value>(&body);
    Ok(match (status.is_success(), decoded) {
        (true, Ok(json)) => Term::ok(from_json(json)),
        (true, Err(e)) => Term::error(reason(
            "bad_response",
            format!(
                "{what}: the {status} answer is not JSON ({e}): {}",
                excerpt(&body)
            ),
        )),
        (false, json) => Term::error(Term::tuple(vec![
            Term::Int(i64::from(status.as_u16())),
            json.map_or_else(|_| Term::bin(body.to_vec()), from_json),
        ])),
    })
}

#[cfg(test)]
#[path = "elastic_tests.rs"]
mod tests;
