//! What every pool type that speaks HTTP shares (`http`, `elastic`): the
//! reqwest client over rustls and the mapping of a request that got no
//! answer to `{Kind, Message}`.

use std::error::Error as StdError;
use std::time::Duration;

use reqwest::Client;
use rustls::ClientConfig;

use crate::error::{Error, Result};
use crate::term::Term;

/// Idle connections are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// One client for all of a pool's workers: its connection pool keeps
/// connections alive (`workers` of them idle at most) and speaks HTTP/2
/// where the server offers it through ALPN. Redirects are not followed.
/// `server` names the pool's server in the error.
pub fn build_client(tls: &ClientConfig, workers: usize, server: &str) -> Result<Client> {
    Client::builder()
        .use_preconfigured_tls(tls.clone())
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(workers)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| Error::Config(format!("{server}: cannot build the HTTP client: {e}")))
}

pub fn reason(kind: &str, message: String) -> Term {
    Term::tuple(vec![Term::atom(kind), Term::from(message)])
}

/// `{request_timeout, Message}`: no complete answer in time.
pub fn timed_out(what: &str, timeout: Duration) -> Term {
    reason(
        "request_timeout",
        format!(
            "{what}: no complete answer within {} ms",
            timeout.as_millis()
        ),
    )
}

/// The causes of an error, following the errors `io::Error` wraps (which
/// its `source()` skips).
fn causes<'a>(top: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = vec![];
    let mut next = Some(top);
    while let Some(e) = next {
        out.push(e);
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
        if out.len() > 16 {
            break;
        }
    }
    out
}

/// `{Kind, Message}` for a request that got no answer; see [`failure_parts`].
pub fn failure(what: &str, e: &reqwest::Error) -> Term {
    let (kind, message) = failure_parts(what, e);
    reason(kind, message)
}

/// Why a request got no answer: `Kind` one of `tls_error`,
/// `connection_refused`, `connect_failed`, `connection_lost`, and a message
/// that starts with `what` (the request, never its query string).
pub fn failure_parts(what: &str, e: &reqwest::Error) -> (&'static str, String) {
    let chain = causes(e);
    let tls = chain.iter().any(|c| c.is::<rustls::Error>());
    let refused = chain.iter().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    let kind = if tls {
        "tls_error"
    } else if refused {
        "connection_refused"
    } else if e.is_connect() {
        "connect_failed"
    } else {
        "connection_lost"
    };
    // The first entry is reqwest's own "error sending request for url (...)".
    let mut parts: Vec<String> = vec![];
    for cause in chain.iter().skip(1) {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        parts.push(
            if e.is_body() {
                "the response body could not be read"
            } else {
                "the request failed"
            }
            .to_string(),
        );
    }
    (kind, format!("{what}: {}", parts.join(": ")))
}
