//! The requests `mongoose_cassandra` sends, checked on the caller's thread:
//!
//! - `{write, Query, Rows, Opts}`: `Rows` a list of parameter sets, written
//!   in batches;
//! - `{read, Query, Params, Opts}`: every row;
//! - `{read_page, Query, Params, PagingState, Opts}`: one page, from the
//!   state the previous page gave (`undefined` for the first), answered
//!   `{ok, Rows, NextState | undefined}` (for `cql_foldl`).
//!
//! `Query` is CQL text (binary or string) with `?` or `:name` markers;
//! `Params` a map or a `[{Name, Value}]` list whose names are the markers'
//! (the column's name for `?`, `[limit]` for `LIMIT ?`). `Opts` holds
//! `mongoose_cassandra_worker`'s options: `retry` (3), `batch_size` (20),
//! `consistency` (`one`), `batch_mode` (`unlogged`); unknown ones are refused.

use scylla::statement::batch::BatchType;
use scylla::statement::Consistency;

use crate::drivers::http::shape;
use crate::error::{Error, Result};
use crate::term::Term;

/// Marker name and value, in the caller's order.
pub type Params = Vec<(String, Term)>;

pub enum Request {
    Write {
        query: String,
        rows: Vec<Params>,
        opts: Opts,
    },
    Read {
        query: String,
        params: Params,
        opts: Opts,
    },
    ReadPage {
        query: String,
        params: Params,
        opts: Opts,
        /// The server's paging state; `None` for the first page.
        paging: Option<Vec<u8>>,
    },
}

/// `mongoose_cassandra_worker`'s `DEFAULT_OPTS` (timeout aside: calls wait
/// `call_timeout`).
#[derive(Debug, Clone, PartialEq)]
pub struct Opts {
    pub retry: u32,
    pub batch_size: usize,
    pub consistency: Consistency,
    pub batch_mode: BatchType,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            retry: 3,
            batch_size: 20,
            consistency: Consistency::One,
            batch_mode: BatchType::Unlogged,
        }
    }
}

fn bad(what: String) -> Error {
    Error::BadRequest(what)
}

pub fn parse(request: &Term) -> Result<Request> {
    let form = || {
        bad(format!(
            "expected {{write, Query, Rows, Opts}}, {{read, Query, Params, Opts}} or \
             {{read_page, Query, Params, PagingState, Opts}}, got {}",
            shape(request)
        ))
    };
    let Term::Tuple(items) = request else {
        return Err(form());
    };
    let (op, query, args, paging, opts) = match items.as_slice() {
        [op, query, args, opts] => (op, query, args, None, opts),
        [op, query, args, paging, opts] => (op, query, args, Some(paging), opts),
        _ => return Err(form()),
    };
    let query = match query.as_text() {
        Some(q) if !q.trim().is_empty() => q,
        _ => {
            return Err(bad(format!(
                "the query must be CQL text (a binary or string), got {}",
                query.describe()
            )))
        }
    };
    let opts = read_opts(opts)?;
    match (op.as_atom(), paging) {
        (Some("write"), None) => {
            let Term::List(rows) = args else {
                return Err(bad(format!(
                    "the rows to write must be a list of parameter maps, got {}",
                    shape(args)
                )));
            };
            let rows = rows
                .iter()
                .enumerate()
                .map(|(i, r)| params(r).map_err(|e| bad(format!("row {}: {e}", i + 1))))
                .collect::<Result<_>>()?;
            Ok(Request::Write { query, rows, opts })
        }
        (Some("read"), None) => Ok(Request::Read {
            query,
            params: params(args).map_err(bad)?,
            opts,
        }),
        (Some("read_page"), Some(paging)) => Ok(Request::ReadPage {
            query,
            params: params(args).map_err(bad)?,
            opts,
            paging: match paging {
                Term::Bin(state) => Some(state.clone()),
                t if t.as_atom() == Some("undefined") => None,
                t => {
                    return Err(bad(format!(
                        "the paging state must be a binary or undefined, got {}",
                        shape(t)
                    )))
                }
            },
        }),
        _ => Err(form()),
    }
}

/// A map or a `[{Name, Value}]` list (cqerl takes both).
fn params(term: &Term) -> std::result::Result<Params, String> {
    let pairs: Vec<(&Term, &Term)> = match term {
        Term::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        Term::List(items) => items
            .iter()
            .map(|item| match item {
                Term::Tuple(kv) if kv.len() == 2 => Ok((&kv[0], &kv[1])),
                _ => Err(format!(
                    "parameters must be a map or a list of {{Name, Value}}, got {}",
                    shape(term)
                )),
            })
            .collect::<std::result::Result<_, _>>()?,
        _ => {
            return Err(format!(
                "parameters must be a map or a list of {{Name, Value}}, got {}",
                shape(term)
            ))
        }
    };
    pairs
        .into_iter()
        .map(|(k, v)| match k {
            Term::Atom(_) | Term::Bin(_) => k
                .as_text()
                .map(|name| (name, v.clone()))
                .ok_or_else(|| format!("a parameter name is not UTF-8: {}", k.describe())),
            _ => Err(format!(
                "a parameter name must be an atom or a binary, got {}",
                k.describe()
            )),
        })
        .collect()
}

fn read_opts(term: &Term) -> Result<Opts> {
    let mut opts = Opts::default();
    let pairs = match term {
        Term::Map(pairs) => pairs,
        _ => {
            return Err(bad(format!(
                "the options must be a map, got {}",
                term.describe()
            )))
        }
    };
    for (k, v) in pairs {
        let wrong = |expected: &str| {
            bad(format!(
                "option {}: expected {expected}, got {}",
                k.describe(),
                v.describe()
            ))
        };
        match (k.as_atom(), v) {
            (Some("retry"), Term::Int(n)) if (0..=100).contains(n) => opts.retry = *n as u32,
            (Some("retry"), _) => return Err(wrong("an integer from 0 to 100")),
            (Some("batch_size"), Term::Int(n)) if (1..=65535).contains(n) => {
                opts.batch_size = *n as usize
            }
            (Some("batch_size"), _) => return Err(wrong("an integer from 1 to 65535")),
            (Some("consistency"), _) => {
                opts.consistency = consistency(v).ok_or_else(|| {
                    wrong(
                        "any, one, two, three, quorum, all, local_quorum, each_quorum or local_one",
                    )
                })?
            }
            (Some("batch_mode"), _) => {
                opts.batch_mode = match v.as_atom() {
                    Some("logged") => BatchType::Logged,
                    Some("unlogged") => BatchType::Unlogged,
                    Some("counter") => BatchType::Counter,
                    _ => return Err(wrong("logged, unlogged or counter")),
                }
            }
            _ => {
                return Err(bad(format!(
                    "unknown option {}; expected retry, batch_size, consistency or batch_mode",
                    k.describe()
                )))
            }
        }
    }
    Ok(opts)
}

fn consistency(term: &Term) -> Option<Consistency> {
    Some(match term.as_atom()? {
        "any" => Consistency::Any,
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "three" => Consistency::Three,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "local_one" => Consistency::LocalOne,
        _ => return None,
    })
}
