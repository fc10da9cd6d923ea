//! An owned, VM-independent picture of an Erlang term.
//!
//! Requests arrive as `Term`s decoded by the NIF glue and results leave as
//! `Term`s it encodes, so every driver is plain Rust that `cargo test` can run.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

#[derive(Clone)]
pub enum Term {
    Atom(String),
    Int(i64),
    Float(f64),
    Bin(Vec<u8>),
    List(Vec<Term>),
    Tuple(Vec<Term>),
    Map(Vec<(Term, Term)>),
    /// A term the library carries but never looks into (generic pool payloads).
    Opaque(Arc<dyn Any + Send + Sync>),
}

impl Term {
    pub fn atom(name: &str) -> Term {
        Term::Atom(name.to_owned())
    }

    pub fn bin(bytes: impl Into<Vec<u8>>) -> Term {
        Term::Bin(bytes.into())
    }

    pub fn tuple(items: Vec<Term>) -> Term {
        Term::Tuple(items)
    }

    pub fn ok(value: Term) -> Term {
        Term::Tuple(vec![Term::atom("ok"), value])
    }

    pub fn error(reason: Term) -> Term {
        Term::Tuple(vec![Term::atom("error"), reason])
    }

    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Term::Atom(a) => Some(a),
            _ => None,
        }
    }

    /// Text the way Erlang callers write it: a binary, a charlist or an atom.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Term::Bin(b) => String::from_utf8(b.clone()).ok(),
            Term::Atom(a) => Some(a.clone()),
            Term::List(items) => charlist(items),
            _ => None,
        }
    }

    /// The bytes of an iolist, binary, charlist, atom or integer (eredis argument forms).
    pub fn to_iodata(&self, out: &mut Vec<u8>) -> bool {
        match self {
            Term::Bin(b) => out.extend_from_slice(b),
            Term::Atom(a) => out.extend_from_slice(a.as_bytes()),
            Term::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
            Term::Float(f) => out.extend_from_slice(format!("{f}").as_bytes()),
            Term::List(items) => {
                for item in items {
                    match item {
                        Term::Int(c) if (0..=255).contains(c) => out.push(*c as u8),
                        Term::Bin(_) | Term::List(_) => {
                            if !item.to_iodata(out) {
                                return false;
                            }
                        }
                        _ => return false,
                    }
                }
            }
            _ => return false,
        }
        true
    }

    /// Looks a key up in a map or a proplist, by atom or binary name.
    pub fn get(&self, key: &str) -> Option<&Term> {
        let matches = |k: &Term| match k {
            Term::Atom(a) => a == key,
            Term::Bin(b) => b.as_slice() == key.as_bytes(),
            _ => false,
        };
        match self {
            Term::Map(pairs) => pairs.iter().find(|(k, _)| matches(k)).map(|(_, v)| v),
            Term::List(items) => items.iter().find_map(|item| match item {
                Term::Tuple(kv) if kv.len() == 2 && matches(&kv[0]) => Some(&kv[1]),
                _ => None,
            }),
            _ => None,
        }
    }
}

fn charlist(items: &[Term]) -> Option<String> {
    items
        .iter()
        .map(|t| match t {
            Term::Int(c) => u32::try_from(*c).ok().and_then(char::from_u32),
            _ => None,
        })
        .collect()
}

impl PartialEq for Term {
    fn eq(&self, other: &Term) -> bool {
        use Term::*;
        match (self, other) {
            (Atom(a), Atom(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Float(a), Float(b)) => a == b,
            (Bin(a), Bin(b)) => a == b,
            (List(a), List(b)) | (Tuple(a), Tuple(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            (Opaque(a), Opaque(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl fmt::Debug for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, open: &str, items: &[Term], close: &str) -> fmt::Result {
            f.write_str(open)?;
            for (i, t) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{t:?}")?;
            }
            f.write_str(close)
        }
        match self {
            Term::Atom(a) => f.write_str(a),
            Term::Int(i) => write!(f, "{i}"),
            Term::Float(x) => write!(f, "{x}"),
            Term::Bin(b) => match std::str::from_utf8(b) {
                Ok(s) => write!(f, "<<{s:?}>>"),
                Err(_) => write!(f, "<<{} bytes>>", b.len()),
            },
            Term::List(items) => match charlist(items) {
                Some(s) if !items.is_empty() => write!(f, "{s:?}"),
                _ => seq(f, "[", items, "]"),
            },
            Term::Tuple(items) => seq(f, "{", items, "}"),
            Term::Map(pairs) => {
                f.write_str("#{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{k:?} => {v:?}")?;
                }
                f.write_str("}")
            }
            Term::Opaque(_) => f.write_str("#opaque"),
        }
    }
}

impl From<&str> for Term {
    fn from(s: &str) -> Term {
        Term::Bin(s.as_bytes().to_vec())
    }
}

impl From<String> for Term {
    fn from(s: String) -> Term {
        Term::Bin(s.into_bytes())
    }
}

impl From<i64> for Term {
    fn from(i: i64) -> Term {
        Term::Int(i)
    }
}

impl From<bool> for Term {
    fn from(b: bool) -> Term {
        Term::atom(if b { "true" } else { "false" })
    }
}
