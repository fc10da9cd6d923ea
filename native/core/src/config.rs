//! Reads configuration: pool options here; each connection section in its
//! driver's module, mod_global_distrib's in `gd::config` and the
//! transport's in the NIF's `gd_transport`.
//!
//! Every input (the maps MongooseIM's parser produces, a TOML file in seed
//! 002's format, the legacy tuples of seed 000) ends up as a [`Term`] read
//! through [`Node`], so a wrong value always gets the same kind of error: the
//! TOML path, the expected form, and what was found (a secret's value never).

use std::fmt;

use crate::engine::strategy::Strategy;
use crate::error::{Error, Result};
use crate::options::Opt;
use crate::registry;
use crate::term::{is_secret_key, Term};

/// The queue bound per worker when `max_worker_queue_len` is not set.
pub const DEFAULT_QUEUE_BOUND: usize = 1000;
/// What `max_worker_queue_len = "infinity"` means: still bounded, but far away.
pub const INFINITE_QUEUE_BOUND: usize = 1_000_000;

/// A configuration value at a known path.
#[derive(Clone)]
pub struct Node<'a> {
    path: String,
    term: Option<&'a Term>,
    /// Read from a TOML document ([`toml_to_term`]): each value must have
    /// the TOML type its option takes, as in MongooseIM's config parser,
    /// where Erlang callers may write text as a binary, charlist or atom.
    from_toml: bool,
}

impl<'a> Node<'a> {
    /// A value an Erlang caller gave (MongooseIM's maps, legacy tuples).
    pub fn new(path: impl Into<String>, term: &'a Term) -> Node<'a> {
        Node {
            path: path.into(),
            term: Some(term),
            from_toml: false,
        }
    }

    /// A value read from a TOML document by [`toml_to_term`].
    pub fn toml(path: impl Into<String>, term: &'a Term) -> Node<'a> {
        Node {
            from_toml: true,
            ..Node::new(path, term)
        }
    }

    /// `term` (a translation of this node's value, say) read at `path` as
    /// this node's input is.
    pub fn beside<'b>(&self, path: impl Into<String>, term: &'b Term) -> Node<'b> {
        Node {
            path: path.into(),
            term: Some(term),
            from_toml: self.from_toml,
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn term(&self) -> Option<&'a Term> {
        self.term
    }

    pub fn at(&self, key: &str) -> Node<'a> {
        Node {
            path: format!("{}.{}", self.path, key),
            term: self.term.and_then(|t| t.get(key)),
            from_toml: self.from_toml,
        }
    }

    /// `t` as text, if this input writes text that way: from TOML a string
    /// only (not a boolean, nor an array of numbers taken for a charlist);
    /// from Erlang a binary, a charlist or an atom. Every reading of text
    /// in a configuration comes through here.
    pub fn text_of(&self, t: &Term) -> Option<String> {
        match t {
            Term::Bin(_) => t.as_text(),
            _ if self.from_toml => None,
            _ => t.as_text(),
        }
    }

    pub fn is_set(&self) -> bool {
        self.term.is_some()
    }

    pub fn invalid(&self, expected: &str) -> Error {
        let got = match self.term {
            None => "nothing".to_string(),
            Some(t) if self.is_secret() => kind_of(t).to_string(),
            Some(t) => t.describe(),
        };
        Error::Config(format!("{}: expected {expected}, got {got}", self.path))
    }

    /// Whether the value here is a secret, by the last key of its path.
    fn is_secret(&self) -> bool {
        let last = self.path.rsplit(['.', '[']).next().unwrap_or("");
        is_secret_key(last)
    }

    pub fn missing(&self, expected: &str) -> Error {
        Error::Config(format!("{}: required, expected {expected}", self.path))
    }

    pub fn string(&self) -> Result<Option<String>> {
        self.term
            .map(|t| self.text_of(t).ok_or_else(|| self.invalid("a string")))
            .transpose()
    }

    pub fn string_or(&self, default: &str) -> Result<String> {
        Ok(self.string()?.unwrap_or_else(|| default.to_string()))
    }

    pub fn required_string(&self) -> Result<String> {
        self.string()?.ok_or_else(|| self.missing("a string"))
    }

    /// A secret: its value never appears in an error.
    pub fn secret(&self) -> Result<Option<Secret>> {
        match self.term {
            None => Ok(None),
            Some(t) => self.text_of(t).map(|s| Some(Secret(s))).ok_or_else(|| {
                let (expected, got) = match t {
                    Term::Bin(_) => ("UTF-8 text", "a binary that is not valid UTF-8"),
                    other => ("a string", kind_of(other)),
                };
                Error::Config(format!("{}: expected {expected}, got {got}", self.path))
            }),
        }
    }

    pub fn int(&self, min: i64, max: i64) -> Result<Option<i64>> {
        let expected = || match (min, max) {
            (0, i64::MAX) => "a non-negative integer".to_string(),
            (1, i64::MAX) => "a positive integer".to_string(),
            _ => format!("an integer between {min} and {max}"),
        };
        match self.term {
            None => Ok(None),
            Some(Term::Int(i)) if (min..=max).contains(i) => Ok(Some(*i)),
            Some(_) => Err(self.invalid(&expected())),
        }
    }

    pub fn int_or(&self, min: i64, max: i64, default: i64) -> Result<i64> {
        Ok(self.int(min, max)?.unwrap_or(default))
    }

    pub fn bool(&self) -> Result<Option<bool>> {
        match self.term.map(|t| t.as_atom()) {
            None => Ok(None),
            Some(Some("true")) => Ok(Some(true)),
            Some(Some("false")) => Ok(Some(false)),
            Some(_) => Err(self.invalid("a boolean")),
        }
    }

    pub fn bool_or(&self, default: bool) -> Result<bool> {
        Ok(self.bool()?.unwrap_or(default))
    }

    pub fn one_of(&self, allowed: &[&str]) -> Result<Option<String>> {
        let expected = || format!("one of {}", allowed.join(", "));
        match self.term {
            None => Ok(None),
            Some(t) => match self.text_of(t) {
                Some(s) if allowed.contains(&s.as_str()) => Ok(Some(s)),
                _ => Err(self.invalid(&expected())),
            },
        }
    }

    pub fn list(&self) -> Result<Option<Vec<Node<'a>>>> {
        match self.term {
            None => Ok(None),
            Some(Term::List(items)) => Ok(Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, t)| self.beside(format!("{}[{i}]", self.path), t))
                    .collect(),
            )),
            Some(_) => Err(self.invalid("a list")),
        }
    }

    /// Refuses keys outside `allowed`, so a typo is not silently ignored.
    pub fn only_keys(&self, allowed: &[&str]) -> Result<()> {
        for key in self.keys()? {
            if !allowed.contains(&key.as_str()) {
                return Err(Error::Config(format!(
                    "{}.{key}: unknown option; expected one of {}",
                    self.path,
                    allowed.join(", ")
                )));
            }
        }
        Ok(())
    }

    pub fn keys(&self) -> Result<Vec<String>> {
        let key_name = |k: &Term| {
            k.as_text()
                .ok_or_else(|| self.invalid("a map with named keys"))
        };
        match self.term {
            None => Ok(vec![]),
            Some(Term::Map(pairs)) => pairs.iter().map(|(k, _)| key_name(k)).collect(),
            // A TOML array is not a table, even an empty one.
            Some(_) if self.from_toml => Err(self.invalid("a table")),
            Some(Term::List(items)) => items
                .iter()
                .map(|item| match item {
                    Term::Tuple(kv) if kv.len() == 2 => key_name(&kv[0]),
                    _ => Err(self.invalid("a map or a list of {Key, Value} pairs")),
                })
                .collect(),
            Some(_) => Err(self.invalid("a map")),
        }
    }
}

/// A password or key passphrase; prints as `<secret>`.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

fn kind_of(t: &Term) -> &'static str {
    match t {
        Term::Atom(a) if a == "true" || a == "false" => "a boolean",
        Term::Atom(_) => "an atom",
        Term::Int(_) => "an integer",
        Term::Float(_) => "a float",
        Term::Bin(_) => "a string",
        Term::List(_) => "a list",
        Term::Tuple(_) => "a tuple",
        Term::Map(_) => "a map",
        Term::Opaque(_) => "an opaque term",
    }
}

/// The pool types MongooseIM knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolType {
    Redis,
    Http,
    Rdbms,
    Cassandra,
    Elastic,
    Generic,
    Rabbit,
    Ldap,
    Riak,
}

impl PoolType {
    pub const ALL: [PoolType; 9] = [
        PoolType::Redis,
        PoolType::Http,
        PoolType::Rdbms,
        PoolType::Cassandra,
        PoolType::Elastic,
        PoolType::Generic,
        PoolType::Rabbit,
        PoolType::Ldap,
        PoolType::Riak,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PoolType::Redis => "redis",
            PoolType::Http => "http",
            PoolType::Rdbms => "rdbms",
            PoolType::Cassandra => "cassandra",
            PoolType::Elastic => "elastic",
            PoolType::Generic => "generic",
            PoolType::Rabbit => "rabbit",
            PoolType::Ldap => "ldap",
            PoolType::Riak => "riak",
        }
    }

    pub fn parse(name: &str) -> Option<PoolType> {
        PoolType::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The worker-pool options every pool type shares.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub kind: PoolType,
    pub workers: usize,
    pub strategy: Strategy,
    pub call_timeout_ms: u64,
    pub max_worker_queue_len: Option<usize>,
}

const WORKERS: Opt = Opt::int("workers", 1, 100_000);
const STRATEGY: Opt = Opt::one_of("strategy", &Strategy::NAMES);
const CALL_TIMEOUT: Opt = Opt::int("call_timeout", 1, u32::MAX as i64);
const MAX_WORKER_QUEUE_LEN: Opt = Opt::queue_len("max_worker_queue_len");
/// Seed 002's scopes, and MongooseIM 6.x's `host_type` (= `host`).
const SCOPE: Opt = Opt::one_of("scope", &["global", "host", "host_type", "single_host"]);
/// The host a `single_host` pool serves; 6.x-style configs say `host_type`.
const HOST: Opt = Opt::text("host");
const HOST_TYPE: Opt = Opt::text("host_type").alias_of("host");
const CONNECTION: Opt = Opt::shaped(
    "connection",
    "a table of the pool type's connection options",
);

impl PoolSettings {
    pub const OPTIONS: [Opt; 4] = [WORKERS, STRATEGY, CALL_TIMEOUT, MAX_WORKER_QUEUE_LEN];
    /// The keys of a `[outgoing_pools.TYPE.TAG]` section: where the pool
    /// runs, the worker-pool options and the connection section (whose
    /// options are the type's, `registry.rs`).
    pub const SECTION: [Opt; 8] = [
        SCOPE,
        HOST,
        HOST_TYPE,
        WORKERS,
        STRATEGY,
        CALL_TIMEOUT,
        MAX_WORKER_QUEUE_LEN,
        CONNECTION,
    ];

    /// Reads `opts` (a map or proplist) found at `path` (`outgoing_pools.TYPE.TAG`).
    pub fn read(kind: PoolType, opts: &Node) -> Result<PoolSettings> {
        opts.only(&Self::OPTIONS)?;
        let row = kind.kind();
        let workers = opts.opt(&WORKERS).int_or(row.default_workers)?;
        let strategy = opts
            .opt(&STRATEGY)
            .one_of()?
            .map_or(Ok(Strategy::Best), |s| Strategy::parse(&s))?;
        if row.refused.contains(&strategy) {
            return Err(Error::Config(format!(
                "{}.strategy: {} pools do not support {}",
                opts.path(),
                kind.name(),
                strategy.name()
            )));
        }
        let call_timeout = opts
            .opt(&CALL_TIMEOUT)
            .int_or(row.default_call_timeout_ms)?;
        let max_worker_queue_len = opts.opt(&MAX_WORKER_QUEUE_LEN).queue_len()?;
        Ok(PoolSettings {
            kind,
            workers: workers as usize,
            strategy,
            call_timeout_ms: call_timeout as u64,
            max_worker_queue_len,
        })
    }

    pub fn queue_bound(&self) -> usize {
        self.max_worker_queue_len.unwrap_or(DEFAULT_QUEUE_BOUND)
    }
}

/// `toml::Value` as a [`Term`], read through [`Node::toml`]: strings become
/// binaries, booleans atoms, and a date `{toml_datetime, Text}`, which no
/// option takes (so it is not taken for text either).
pub fn toml_to_term(value: &toml::Value) -> Term {
    match value {
        toml::Value::String(s) => Term::from(s.as_str()),
        toml::Value::Integer(i) => Term::Int(*i),
        toml::Value::Float(f) => Term::Float(*f),
        toml::Value::Boolean(b) => Term::from(*b),
        toml::Value::Datetime(d) => {
            Term::tuple(vec![Term::atom("toml_datetime"), Term::from(d.to_string())])
        }
        toml::Value::Array(items) => Term::List(items.iter().map(toml_to_term).collect()),
        toml::Value::Table(t) => Term::Map(
            t.iter()
                .map(|(k, v)| (Term::from(k.as_str()), toml_to_term(v)))
                .collect(),
        ),
    }
}

/// A TOML document, or the syntax error.
pub fn parse_toml(text: &str) -> Result<toml::Table> {
    text.parse()
        .map_err(|e: toml::de::Error| Error::Config(format!("TOML syntax: {}", e.message())))
}

/// Reads the `[outgoing_pools.TYPE.TAG]` sections of a TOML document into the
/// maps MongooseIM's config parser produces:
/// `#{type, scope, tag, opts, conn_opts}`, scope `global`, `host_type` or a
/// host. As MongooseIM's parser, it checks every pool's options (without
/// connecting) on the way, so a bad file is refused whole, each error with
/// its TOML path.
pub fn pools_from_toml(text: &str) -> Result<Vec<Term>> {
    let doc = parse_toml(text)?;
    let Some(pools) = doc.get("outgoing_pools") else {
        return Ok(vec![]);
    };
    let pools = toml_to_term(pools);
    let root = Node::toml("outgoing_pools", &pools);
    let mut out = vec![];
    for type_name in root.keys()? {
        let by_type = root.at(&type_name);
        let Some(kind) = PoolType::parse(&type_name) else {
            let known: Vec<_> = PoolType::ALL.iter().map(|t| t.name()).collect();
            return Err(by_type.invalid(&format!("a pool type, one of {}", known.join(", "))));
        };
        for tag in by_type.keys()? {
            out.push(pool_map_from_toml(kind, &tag, &by_type.at(&tag))?);
        }
    }
    Ok(out)
}

fn pool_map_from_toml(kind: PoolType, tag: &str, pool: &Node) -> Result<Term> {
    pool.only(&PoolSettings::SECTION)?;
    let host = pool.either(&HOST, &HOST_TYPE)?;
    let host_name = host.string()?;
    let scope = match (pool.opt(&SCOPE).one_of()?.as_deref(), host_name) {
        (None, host_name) => host_name.map_or_else(|| Term::atom("global"), Term::from),
        (Some("single_host"), Some(h)) => Term::from(h),
        (Some("single_host"), None) => return Err(host.missing("a host for scope single_host")),
        (Some(scope), Some(_)) => {
            return Err(Error::Config(format!(
                "{}: only used with scope = \"single_host\" (scope is \"{scope}\")",
                host.path()
            )))
        }
        (Some("global"), None) => Term::atom("global"),
        (Some(_), None) => Term::atom("host_type"),
    };
    let given = |o: &Opt| {
        pool.at(o.name)
            .term()
            .map(|v| (Term::atom(o.name), v.clone()))
    };
    let opts: Vec<_> = PoolSettings::OPTIONS.iter().filter_map(given).collect();
    PoolSettings::read(kind, &pool.beside(pool.path(), &Term::Map(opts.clone())))?;
    let empty = Term::Map(vec![]);
    let conn = match pool.at(CONNECTION.name) {
        conn if conn.is_set() => conn,
        unset => pool.beside(unset.path(), &empty),
    };
    registry::validate(kind, &conn)?;
    Ok(Term::Map(vec![
        (Term::atom("type"), Term::atom(kind.name())),
        (Term::atom("scope"), scope),
        (Term::atom("tag"), Term::atom(tag)),
        (
            Term::atom("opts"),
            Term::Map(opts.into_iter().map(strategy_as_atom).collect()),
        ),
        (
            Term::atom("conn_opts"),
            conn.term().cloned().unwrap_or_else(|| Term::Map(vec![])),
        ),
    ]))
}

/// The strategy is an atom in MongooseIM's maps.
fn strategy_as_atom((k, v): (Term, Term)) -> (Term, Term) {
    let is_strategy = k.as_atom() == Some(STRATEGY.name);
    match v {
        Term::Bin(b) if is_strategy => (k, Term::Atom(String::from_utf8_lossy(&b).into_owned())),
        v => (k, v),
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
