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

    /// A string as Erlang's string type: a list of code points.
    pub fn charlist(s: &str) -> Term {
        Term::List(
            s.chars()
                .map(|c| Term::Int(i64::from(u32::from(c))))
                .collect(),
        )
    }

    /// A map with atom keys.
    pub fn map_of(pairs: Vec<(&str, Term)>) -> Term {
        Term::Map(pairs.into_iter().map(|(k, v)| (Term::atom(k), v)).collect())
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

/// Keys whose values are never shown: passwords, key passphrases, credentials.
pub const SECRET_KEYS: [&str; 5] = [
    "password",
    "amqp_password",
    "passwd",
    "secret",
    "credentials",
];

pub fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.contains(&key)
}

/// How many characters of a term an error message shows.
const DESCRIBE_LIMIT: usize = 100;

impl Term {
    /// The term as an error message or a log line may show it: at most
    /// about 100 characters, and safe. A string prints as written, with a
    /// URL's credentials cut out; inside lists, tuples and maps strings print
    /// as `"..."` and the value under a secret key as `<secret>`, so a
    /// password in a misshapen section or request never reaches an error, a
    /// log line or a crash report, whatever the shape around it.
    pub fn describe(&self) -> String {
        let mut out = Bounded(String::new());
        if write_term(&mut out, self, Show::Top).is_err() {
            let cut = (0..=DESCRIBE_LIMIT)
                .rev()
                .find(|&i| out.0.is_char_boundary(i))
                .unwrap_or(0);
            out.0.truncate(cut);
            out.0.push_str("...");
        }
        out.0
    }
}

/// A `String` that refuses to grow past the limit, so describing a huge
/// term costs no more than describing its first hundred characters.
struct Bounded(String);

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.push_str(s);
        if self.0.len() > DESCRIBE_LIMIT {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// How much of a term a printout shows: everything (`Debug`), or what an
/// error may show, at the top level or inside a list, tuple or map.
#[derive(Clone, Copy, PartialEq)]
enum Show {
    All,
    Top,
    Inner,
}

/// The one walk over a term that both `Debug` and [`Term::describe`] use.
fn write_term(out: &mut dyn fmt::Write, t: &Term, show: Show) -> fmt::Result {
    let (inner, key) = match show {
        Show::All => (Show::All, Show::All),
        // A key is an option's name: shown as written.
        Show::Top | Show::Inner => (Show::Inner, Show::Top),
    };
    let text = |out: &mut dyn fmt::Write, s: &str, open: &str, close: &str| match show {
        Show::All => write!(out, "{open}{s:?}{close}"),
        Show::Top => write!(out, "{open}{:?}{close}", without_credentials(s)),
        Show::Inner => write!(out, "{open}\"...\"{close}"),
    };
    let hidden = |k: &Term| show != Show::All && k.as_text().is_some_and(|k| is_secret_key(&k));
    let seq = |out: &mut dyn fmt::Write, open: &str, items: &[Term], close: &str| {
        out.write_str(open)?;
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.write_str(",")?;
            }
            write_term(out, item, inner)?;
        }
        out.write_str(close)
    };
    match t {
        Term::Atom(a) => out.write_str(a),
        Term::Int(i) => write!(out, "{i}"),
        Term::Float(x) => write!(out, "{x}"),
        Term::Bin(b) => match std::str::from_utf8(b) {
            Ok(s) => text(out, s, "<<", ">>"),
            Err(_) => write!(out, "<<{} bytes>>", b.len()),
        },
        Term::List(items) => match charlist(items) {
            Some(s) if !items.is_empty() => text(out, &s, "", ""),
            _ => seq(out, "[", items, "]"),
        },
        Term::Tuple(kv) if kv.len() == 2 && hidden(&kv[0]) => {
            out.write_str("{")?;
            write_term(out, &kv[0], inner)?;
            out.write_str(",<secret>}")
        }
        Term::Tuple(items) => seq(out, "{", items, "}"),
        Term::Map(pairs) => {
            out.write_str("#{")?;
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.write_str(",")?;
                }
                write_term(out, k, key)?;
                out.write_str(" => ")?;
                if hidden(k) {
                    out.write_str("<secret>")?;
                } else {
                    write_term(out, v, inner)?;
                }
            }
            out.write_str("}")
        }
        Term::Opaque(_) => out.write_str("#opaque"),
    }
}

/// `scheme://user:password@host/...` without `user:password@`.
fn without_credentials(s: &str) -> std::borrow::Cow<'_, str> {
    let Some(start) = s.find("://").map(|i| i + 3) else {
        return s.into();
    };
    let authority_end = s[start..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| start + i);
    match s[start..authority_end].rfind('@') {
        Some(at) => format!("{}<secret>@{}", &s[..start], &s[start + at + 1..]).into(),
        None => s.into(),
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
        write_term(f, self, Show::All)
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

#[cfg(test)]
#[path = "term_tests.rs"]
mod tests;
