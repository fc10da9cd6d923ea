//! mongoose_native: MongooseIM's outgoing pools as plain async Rust.
//!
//! Nothing here needs the Erlang VM; the `mongoose_native_nif` crate turns
//! terms into [`Term`]s, calls in, and sends results back as messages.

pub mod config;
pub mod drivers;
pub mod engine;
pub mod error;
pub mod gd;
pub mod options;
pub mod prometheus;
pub mod registry;
pub mod runtime;
pub mod term;
pub mod tls;
pub mod toml_check;

pub use error::{Error, Result};
pub use term::Term;
