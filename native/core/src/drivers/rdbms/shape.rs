//! MongooseIM's result shapes: `{selected, Rows}`, `{updated, N}`, one per
//! statement of a query.

use super::backend::Item;
use super::Engine;
use crate::term::Term;

/// What a statement's first keyword says about its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SELECT`, `WITH`, `SHOW`, `VALUES`, ...: `{selected, Rows}`.
    Rows,
    /// `INSERT`, `UPDATE`, `DELETE`: `{updated, N}`, or `{updated, N, Rows}` with `RETURNING`.
    Dml,
    Other,
}

/// The statements of a query, split on `;` outside literals and comments.
pub fn statement_kinds(sql: &str) -> Vec<Kind> {
    let b = sql.as_bytes();
    let mut kinds = vec![];
    let mut start = 0;
    let mut i = 0;
    let push = |from: usize, to: usize, kinds: &mut Vec<Kind>| {
        if let Some(kind) = first_keyword(&sql[from..to]) {
            kinds.push(kind);
        }
    };
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && q == b'\'' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b';' => {
                push(start, i, &mut kinds);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < b.len() {
        push(start, b.len(), &mut kinds);
    }
    kinds
}

fn first_keyword(stmt: &str) -> Option<Kind> {
    let mut rest = stmt;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    if word.is_empty() {
        return None;
    }
    Some(match word.as_str() {
        "select" | "with" | "show" | "values" | "table" | "explain" | "describe" | "desc" => {
            Kind::Rows
        }
        "insert" | "update" | "delete" | "replace" => Kind::Dml,
        _ => Kind::Other,
    })
}

/// A prepared statement's kind: one that returns columns gives rows, except
/// pgsql's `INSERT ... RETURNING` and the like (`{updated, N, Rows}`).
pub(super) fn prepared_kind(engine: Engine, sql: &str, has_columns: bool) -> Kind {
    let kind = statement_kinds(sql).first().copied().unwrap_or(Kind::Other);
    if has_columns && !(engine == Engine::Pgsql && kind == Kind::Dml) {
        Kind::Rows
    } else {
        kind
    }
}

fn shape(engine: Engine, kind: Kind, affected: u64, rows: Vec<Term>) -> Term {
    let n = Term::Int(i64::try_from(affected).unwrap_or(i64::MAX));
    match kind {
        Kind::Rows => Term::tuple(vec![Term::atom("selected"), Term::List(rows)]),
        _ if rows.is_empty() => Term::tuple(vec![Term::atom("updated"), n]),
        _ if engine == Engine::Pgsql => {
            Term::tuple(vec![Term::atom("updated"), n, Term::List(rows)])
        }
        _ => Term::tuple(vec![Term::atom("selected"), Term::List(rows)]),
    }
}

/// The answer of a prepared statement.
pub(super) fn shape_prepared(engine: Engine, kind: Kind, items: Vec<Item>) -> Term {
    let mut rows = vec![];
    let mut affected = 0;
    for item in items {
        match item {
            Item::Row(row) => rows.push(row),
            Item::Done(n) => affected += n,
        }
    }
    shape(engine, kind, affected, rows)
}

/// The answer of a simple-protocol query: one result per statement, each
/// shaped by what its first keyword says (or, failing that, by its rows).
pub(super) fn shape_query(engine: Engine, sql: &str, items: Vec<Item>) -> Term {
    let kinds = statement_kinds(sql);
    let mut results = vec![];
    let mut rows = vec![];
    for item in items {
        match item {
            Item::Row(row) => rows.push(row),
            Item::Done(affected) => {
                let guess = if rows.is_empty() {
                    Kind::Other
                } else {
                    Kind::Rows
                };
                let kind = kinds.get(results.len()).copied().unwrap_or(guess);
                results.push(shape(engine, kind, affected, std::mem::take(&mut rows)));
            }
        }
    }
    match results.len() {
        0 => Term::tuple(vec![Term::atom("updated"), Term::Int(0)]),
        1 => results.pop().unwrap_or(Term::List(vec![])),
        _ => {
            // In reverse order on pgsql, as MongooseIM's epgsql backend gives them.
            if engine == Engine::Pgsql {
                results.reverse();
            }
            Term::List(results)
        }
    }
}

pub(super) fn null() -> Term {
    Term::atom("null")
}
