//! The requests `mongoose_rdbms` builds:
//!
//! - `{sql_query, Query}`: iodata, run with the simple (text) protocol. With
//!   pgsql every value comes back as a binary; with mysql integers and floats
//!   are decoded, the rest are binaries. `NULL` is `null`.
//! - `{sql_execute, Name, SQL, Params}`: a prepared statement written with `?`
//!   placeholders (turned into `$1..` for pgsql), prepared on first use on each
//!   connection and cached there by `Name`; values come back typed (integers,
//!   floats, binaries, `true`/`false` on pgsql, `null`).
//! - `{rdbms_checkout, Checkout}` (built by the NIF, `Checkout` an opaque
//!   [`Checkout`]): holds the worker's connection for the caller; see
//!   *Transactions* in the module documentation of `rdbms`.
//! - `rdbms_engine` answers `pgsql` or `mysql`.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::reply::Reply;
use crate::term::Term;

use super::Transaction;

pub enum RdbmsRequest {
    Query(String),
    Execute {
        name: String,
        sql: String,
        params: Vec<Term>,
    },
    Checkout(Checkout),
    Engine,
}

/// Where a checkout delivers its [`Transaction`]: `wrap` turns it into the
/// term `reply` carries (the NIF makes it a resource).
pub struct Checkout {
    pub reply: Reply,
    pub wrap: fn(Arc<Transaction>) -> Term,
}

/// A [`Checkout`] inside a request term (`Term::Opaque`), taken once.
pub struct CheckoutCell(std::sync::Mutex<Option<Checkout>>);

impl CheckoutCell {
    pub fn new(checkout: Checkout) -> Arc<CheckoutCell> {
        Arc::new(CheckoutCell(std::sync::Mutex::new(Some(checkout))))
    }

    fn take(&self) -> Option<Checkout> {
        self.0.lock().ok().and_then(|mut c| c.take())
    }
}

fn iodata_text(term: &Term, what: &str) -> Result<String> {
    let mut buf = Vec::new();
    // `to_iodata` takes a lone atom or number too (Redis arguments); SQL is
    // iodata only, as for Erlang.
    if !matches!(term, Term::Bin(_) | Term::List(_)) || !term.to_iodata(&mut buf) {
        return Err(Error::BadRequest(format!(
            "{what}: expected iodata, got {term:?}"
        )));
    }
    String::from_utf8(buf).map_err(|_| Error::BadRequest(format!("{what}: not valid UTF-8")))
}

/// Reads a request term (the forms of the module documentation).
pub fn parse_request(request: Term) -> Result<RdbmsRequest> {
    match request {
        Term::Atom(a) if a == "rdbms_engine" => Ok(RdbmsRequest::Engine),
        Term::Tuple(t) => match (t.first().and_then(|a| a.as_atom()), t.len()) {
            (Some("sql_query"), 2) => Ok(RdbmsRequest::Query(iodata_text(&t[1], "query")?)),
            (Some("sql_execute"), 4) => {
                let name = t[1]
                    .as_text()
                    .ok_or_else(|| Error::BadRequest("the statement name is not an atom".into()))?;
                let sql = iodata_text(&t[2], "statement")?;
                let Term::List(params) = &t[3] else {
                    return Err(Error::BadRequest(
                        "the parameters are not a list".to_string(),
                    ));
                };
                Ok(RdbmsRequest::Execute {
                    name,
                    sql,
                    params: params.clone(),
                })
            }
            (Some("rdbms_checkout"), 2) => match &t[1] {
                Term::Opaque(any) => any
                    .downcast_ref::<CheckoutCell>()
                    .and_then(CheckoutCell::take)
                    .map(RdbmsRequest::Checkout)
                    .ok_or_else(|| Error::BadRequest("a checkout is made by the NIF".into())),
                _ => Err(Error::BadRequest("a checkout is made by the NIF".into())),
            },
            (Some("rdbms_engine"), 1) => Ok(RdbmsRequest::Engine),
            _ => Err(Error::BadRequest(format!(
                "expected {{sql_query, Query}} or {{sql_execute, Name, SQL, Params}}, got {:?}",
                Term::Tuple(t)
            ))),
        },
        other => Err(Error::BadRequest(format!(
            "expected {{sql_query, Query}} or {{sql_execute, Name, SQL, Params}}, got {other:?}"
        ))),
    }
}
