//! Erlang terms to the library's [`Term`] and back.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mongoose_native::Term;
use rustler::env::SavedTerm;
use rustler::types::tuple::{get_tuple, make_tuple};
use rustler::{Atom, Binary, Encoder, Env, MapIterator, NewBinary, OwnedEnv, TermType};

/// Depth past which a term is refused rather than walked (stack safety).
const MAX_DEPTH: usize = 256;

/// What each term counts for on top of its binary's bytes: its size once
/// decoded, so a request's size is about the memory it takes here.
const TERM_COST: usize = std::mem::size_of::<Term>();

/// How large a request may be to decode on a normal scheduler: about a
/// millisecond of work (8,192 terms, or 256 KB of binaries). Anything
/// larger is decoded on a dirty scheduler instead.
const SCHEDULER_BUDGET: usize = 256 * 1024;

/// `max_request_size` when the application environment does not set it.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 128 * 1024 * 1024;

static MAX_REQUEST_SIZE: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_REQUEST_SIZE);

/// Sets the bound past which a request is refused (read once, at load).
pub fn set_max_request_size(bytes: usize) {
    MAX_REQUEST_SIZE.store(bytes, Ordering::Relaxed);
}

pub fn max_request_size() -> usize {
    MAX_REQUEST_SIZE.load(Ordering::Relaxed)
}

/// The budget a request is decoded with on a normal scheduler: past it, the
/// request goes to a dirty one when `max_request_size` allows more, and is
/// refused when it does not.
pub fn scheduler_budget() -> usize {
    SCHEDULER_BUDGET.min(max_request_size())
}

#[derive(Debug)]
pub enum DecodeError {
    /// The term costs more than the budget it was decoded with.
    TooLarge,
    /// The term has a shape the library cannot carry.
    Bad(String),
}

impl From<&str> for DecodeError {
    fn from(why: &str) -> DecodeError {
        DecodeError::Bad(why.to_string())
    }
}

impl DecodeError {
    /// The message a caller gets, for a budget of `budget` bytes.
    pub fn describe(&self, budget: usize) -> String {
        match self {
            DecodeError::TooLarge => {
                format!("larger than {budget} bytes, counting {TERM_COST} per term")
            }
            DecodeError::Bad(why) => why.clone(),
        }
    }
}

/// Decodes a term whose size is not in question (configuration, small
/// arguments): anything past the scheduler budget is refused.
pub fn decode(term: rustler::Term) -> Result<Term, String> {
    decode_within(term, SCHEDULER_BUDGET).map_err(|e| e.describe(SCHEDULER_BUDGET))
}

/// Decodes `term` if it costs at most `budget`; never panics (improper
/// lists, deep nesting and foreign terms are errors).
pub fn decode_within(term: rustler::Term, budget: usize) -> Result<Term, DecodeError> {
    let mut left = budget;
    decode_at(term, 0, &mut left)
}

fn charge(left: &mut usize, cost: usize) -> Result<(), DecodeError> {
    *left = left.checked_sub(cost).ok_or(DecodeError::TooLarge)?;
    Ok(())
}

fn decode_at(term: rustler::Term, depth: usize, left: &mut usize) -> Result<Term, DecodeError> {
    if depth > MAX_DEPTH {
        return Err("term nested too deeply".into());
    }
    charge(left, TERM_COST)?;
    Ok(match term.get_type() {
        TermType::Atom => Term::Atom(term.atom_to_string().map_err(|_| "bad atom")?),
        TermType::Binary => {
            let bin = term
                .decode::<Binary>()
                .map_err(|_| "bitstrings are not supported")?;
            charge(left, bin.len())?;
            Term::Bin(bin.as_slice().to_vec())
        }
        TermType::Integer => Term::Int(
            term.decode::<i64>()
                .map_err(|_| "integer out of 64-bit range")?,
        ),
        TermType::Float => Term::Float(term.decode::<f64>().map_err(|_| "bad float")?),
        TermType::List => {
            let mut items = Vec::new();
            let mut rest = term;
            while let Ok((head, tail)) = rest.list_get_cell() {
                items.push(decode_at(head, depth + 1, left)?);
                rest = tail;
            }
            if !rest.is_empty_list() {
                return Err("improper lists are not supported".into());
            }
            Term::List(items)
        }
        TermType::Tuple => Term::Tuple(
            get_tuple(term)
                .map_err(|_| "bad tuple")?
                .into_iter()
                .map(|t| decode_at(t, depth + 1, left))
                .collect::<Result<_, _>>()?,
        ),
        TermType::Map => {
            let pairs = MapIterator::new(term).ok_or("bad map")?;
            Term::Map(
                pairs
                    .map(|(k, v)| {
                        Ok((
                            decode_at(k, depth + 1, left)?,
                            decode_at(v, depth + 1, left)?,
                        ))
                    })
                    .collect::<Result<_, DecodeError>>()?,
            )
        }
        other => {
            return Err(DecodeError::Bad(format!(
                "{other:?} terms cannot be sent to this pool"
            )))
        }
    })
}

/// Whether `term` costs at most `budget`, counted as `decode_within`
/// counts, for a term kept as it is (generic payloads: pids and funs too,
/// at any depth, walked with a stack of its own). Each term is charged as
/// it is found, so the walk stops within `budget` whatever the term's size.
pub fn fits(term: rustler::Term, budget: usize) -> bool {
    let mut walk = Walk {
        left: budget,
        found: Vec::new(),
    };
    walk.find(term).is_ok() && walk.run().is_ok()
}

/// The terms found and not looked into yet, and what the budget has left.
struct Walk<'a> {
    left: usize,
    found: Vec<rustler::Term<'a>>,
}

impl<'a> Walk<'a> {
    fn find(&mut self, term: rustler::Term<'a>) -> Result<(), DecodeError> {
        self.found.push(term);
        charge(&mut self.left, TERM_COST)
    }

    fn run(&mut self) -> Result<(), DecodeError> {
        while let Some(t) = self.found.pop() {
            match t.get_type() {
                TermType::Binary => {
                    if let Ok(bin) = t.decode::<Binary>() {
                        charge(&mut self.left, bin.len())?;
                    }
                }
                TermType::List => {
                    let mut rest = t;
                    while let Ok((head, tail)) = rest.list_get_cell() {
                        self.find(head)?;
                        rest = tail;
                    }
                    if !rest.is_empty_list() {
                        self.find(rest)?;
                    }
                }
                TermType::Tuple => {
                    for item in get_tuple(t).unwrap_or_default() {
                        self.find(item)?;
                    }
                }
                TermType::Map => {
                    for (k, v) in MapIterator::new(t).into_iter().flatten() {
                        self.find(k)?;
                        self.find(v)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A library term that rustler can encode (for `spawn_answer`'s values).
pub struct Encoded(pub Term);

impl rustler::Encoder for Encoded {
    fn encode<'a>(&self, env: Env<'a>) -> rustler::Term<'a> {
        encode(env, &self.0)
    }
}

pub fn encode<'a>(env: Env<'a>, term: &Term) -> rustler::Term<'a> {
    match term {
        Term::Atom(a) => match atom(env, a) {
            Some(atom) => atom.encode(env),
            None => bytes(env, a.as_bytes()),
        },
        Term::Int(i) => i.encode(env),
        Term::Float(f) => f.encode(env),
        Term::Bin(b) => bytes(env, b),
        Term::List(items) => items
            .iter()
            .map(|t| encode(env, t))
            .collect::<Vec<_>>()
            .encode(env),
        Term::Tuple(items) => {
            let items: Vec<_> = items.iter().map(|t| encode(env, t)).collect();
            make_tuple(env, &items)
        }
        Term::Map(pairs) => {
            let pairs: Vec<_> = pairs
                .iter()
                .map(|(k, v)| (encode(env, k), encode(env, v)))
                .collect();
            rustler::Term::map_from_pairs(env, &pairs).unwrap_or_else(|_| pairs.encode(env))
        }
        Term::Opaque(any) => match any.downcast_ref::<Saved>() {
            Some(saved) => saved.load(env),
            None => rustler::types::atom::undefined().encode(env),
        },
    }
}

/// Atoms this thread has made, up to [`ATOMS_KEPT`]: making one takes the
/// VM's atom table lock (about a tenth of a runtime thread's time at 128
/// callers), and answers name the same few atoms again and again. Atoms are
/// never freed, so a kept one stays valid in every env.
const ATOMS_KEPT: usize = 512;

thread_local! {
    static ATOMS: RefCell<HashMap<Box<str>, Atom>> = RefCell::new(HashMap::new());
}

/// The atom `name`; `None` when it cannot be one (too long).
fn atom(env: Env, name: &str) -> Option<Atom> {
    ATOMS.with_borrow_mut(|kept| {
        if let Some(atom) = kept.get(name) {
            return Some(*atom);
        }
        let atom = Atom::from_str(env, name).ok()?;
        if kept.len() < ATOMS_KEPT {
            kept.insert(name.into(), atom);
        }
        Some(atom)
    })
}

fn bytes<'a>(env: Env<'a>, data: &[u8]) -> rustler::Term<'a> {
    let mut bin = NewBinary::new(env, data.len());
    bin.as_mut_slice().copy_from_slice(data);
    bin.into()
}

/// An Erlang term kept as it is, in an environment of its own (generic pool
/// payloads and results: anything, pids and funs included).
pub struct Saved {
    inner: Mutex<(OwnedEnv, SavedTerm)>,
}

impl Saved {
    pub fn new(term: rustler::Term) -> Arc<Saved> {
        let env = OwnedEnv::new();
        let saved = env.save(term);
        Arc::new(Saved {
            inner: Mutex::new((env, saved)),
        })
    }

    /// Copies the term into `env`.
    pub fn load<'a>(&self, env: Env<'a>) -> rustler::Term<'a> {
        match self.inner.lock() {
            Ok(inner) => {
                let (own, term) = &*inner;
                own.run(|own_env| term.load(own_env).in_env(env))
            }
            Err(_) => rustler::types::atom::undefined().encode(env),
        }
    }
}
