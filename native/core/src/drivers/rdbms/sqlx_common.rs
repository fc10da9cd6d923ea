//! What the sqlx backend (mysql) is made of beside its types: collecting a
//! result stream, telling an SQL error from a broken connection.

use futures::stream::BoxStream;
use futures::TryStreamExt;
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::Either;

use super::backend::{answer, Failure, Item, Outcome};
use crate::term::Term;

/// The items of a sqlx result stream, rows decoded by `row`.
pub(super) async fn collect<D, R>(
    stream: BoxStream<'_, sqlx::Result<Either<D, R>>>,
    affected: fn(&D) -> u64,
    row: fn(&R) -> Term,
    failure: fn(sqlx::Error) -> Failure,
) -> Outcome<Vec<Item>> {
    let items = stream.map_ok(|e| e.either(|d| Item::Done(affected(&d)), |r| Item::Row(row(&r))));
    items.try_collect().await.map_err(failure)
}

pub(super) fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

/// A failed connect: a refused login names the options to look at
/// (SQLSTATE class 28: PostgreSQL's 28P01 and 28000, MySQL's 1045).
pub(super) fn connect_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("28")) => format!(
            "the server refused the login given in connection.username and \
             connection.password: {}",
            db.message()
        ),
        other => describe(other),
    }
}

/// `fatal` tells whether a database error ended the connection; network and
/// protocol errors always do. A unique-key violation is `{error, duplicate_key}`.
pub(super) fn failure(e: sqlx::Error, fatal: fn(&dyn DatabaseError) -> bool) -> Failure {
    match &e {
        sqlx::Error::Database(db) if fatal(db.as_ref()) => Failure::Broken(describe(&e)),
        sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => {
            Failure::Answer(Term::error(Term::atom("duplicate_key")))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => Failure::Broken(describe(&e)),
        _ => answer(&describe(&e)),
    }
}
