//! The requests `mongoose_rdbms` builds:
//!
//! - `{sql_query, Query}`: iodata, run with the simple (text) protocol. With
//!   pgsql every value comes back as a binary; with mysql integers and floats
//!   are decoded, the rest are binaries. `NULL` is `null`.
//! - `{sql_execute, Name, SQL, Params}`: a prepared statement written with `?`
//!   placeholders (turned into `$1..` for pgsql), prepared on first use on each
//!   connection and cached there by `Name`; values come back typed (integers,
//!   floats, binaries, `true`/`false` on pgsql, `null`).
//! - `rdbms_engine` answers `pgsql` or `mysql`.

use crate::error::{Error, Result};
use crate::term::Term;

pub enum RdbmsRequest {
    Query(String),
    Execute {
        name: String,
        sql: String,
        params: Vec<Term>,
    },
    Engine,
}

fn iodata_text(term: &Term, what: &str) -> Result<String> {
    let mut buf = Vec::new();
    // `to_iodata` takes a lone atom or number too (Redis arguments); SQL is
    // iodata only, as for Erlang.
    if !matches!(term, Term::Bin(_) | Term::List(_)) || !term.to_iodata(&mut buf) {
        return Err(Error::BadRequest(format!(
            "{what}: expected iodata, got {}",
            term.describe()
        )));
    }
    String::from_utf8(buf).map_err(|_| Error::BadRequest(format!("{what}: not valid UTF-8")))
}

/// Reads a request term (the forms of the module documentation).
pub fn parse_request(request: Term) -> Result<RdbmsRequest> {
    let bad = |why: &str| Error::BadRequest(why.to_string());
    let items = match &request {
        Term::Tuple(items) => items.as_slice(),
        one => std::slice::from_ref(one),
    };
    let tag = items.first().and_then(Term::as_atom);
    match (tag, items) {
        (Some("rdbms_engine"), [_]) => Ok(RdbmsRequest::Engine),
        (Some("sql_query"), [_, query]) => Ok(RdbmsRequest::Query(iodata_text(query, "query")?)),
        (Some("sql_execute"), [_, name, sql, params]) => {
            let name = name
                .as_text()
                .ok_or_else(|| bad("the statement name is not an atom"))?;
            let sql = iodata_text(sql, "statement")?;
            let Term::List(params) = params else {
                return Err(bad("the parameters are not a list"));
            };
            let params = params.clone();
            Ok(RdbmsRequest::Execute { name, sql, params })
        }
        _ => Err(Error::BadRequest(format!(
            "expected {{sql_query, Query}} or {{sql_execute, Name, SQL, Params}}, got {}",
            request.describe()
        ))),
    }
}
