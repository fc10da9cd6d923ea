//! Erlang terms to the library's [`Term`] and back.

use std::sync::{Arc, Mutex};

use mongoose_native::Term;
use rustler::env::SavedTerm;
use rustler::types::tuple::{get_tuple, make_tuple};
use rustler::{
    Atom, Binary, Encoder, Env, ListIterator, MapIterator, NewBinary, OwnedEnv, TermType,
};

/// Depth past which a term is refused rather than walked (stack safety).
const MAX_DEPTH: usize = 256;

pub fn decode(term: rustler::Term) -> Result<Term, String> {
    decode_at(term, 0)
}

fn decode_at(term: rustler::Term, depth: usize) -> Result<Term, String> {
    if depth > MAX_DEPTH {
        return Err("term nested too deeply".into());
    }
    let inner = |t| decode_at(t, depth + 1);
    Ok(match term.get_type() {
        TermType::Atom => Term::Atom(term.atom_to_string().map_err(|_| "bad atom")?),
        TermType::Binary => Term::Bin(
            term.decode::<Binary>()
                .map_err(|_| "bitstrings are not supported")?
                .as_slice()
                .to_vec(),
        ),
        TermType::Integer => Term::Int(
            term.decode::<i64>()
                .map_err(|_| "integer out of 64-bit range")?,
        ),
        TermType::Float => Term::Float(term.decode::<f64>().map_err(|_| "bad float")?),
        TermType::List => {
            let items: ListIterator = term
                .decode()
                .map_err(|_| "improper lists are not supported")?;
            Term::List(items.map(inner).collect::<Result<_, _>>()?)
        }
        TermType::Tuple => Term::Tuple(
            get_tuple(term)
                .map_err(|_| "bad tuple")?
                .into_iter()
                .map(inner)
                .collect::<Result<_, _>>()?,
        ),
        TermType::Map => {
            let pairs = MapIterator::new(term).ok_or("bad map")?;
            Term::Map(
                pairs
                    .map(|(k, v)| Ok((inner(k)?, inner(v)?)))
                    .collect::<Result<_, String>>()?,
            )
        }
        other => return Err(format!("{other:?} terms cannot be sent to this pool")),
    })
}

pub fn encode<'a>(env: Env<'a>, term: &Term) -> rustler::Term<'a> {
    match term {
        Term::Atom(a) => match Atom::from_str(env, a) {
            Ok(atom) => atom.encode(env),
            Err(_) => bytes(env, a.as_bytes()),
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
