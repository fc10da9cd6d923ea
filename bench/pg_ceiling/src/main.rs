//! `pg_ceiling sqlx|pipelined CALLERS SECONDS`: CALLERS tasks run `SELECT
//! $1::int` (prepared) on min(CALLERS, 10) connections for SECONDS, on a
//! 2-thread tokio runtime as the library's; prints the queries per second.
//!
//! `sqlx`: each connection runs one query at a time, as a pool worker's did
//! until 2026-12-01. `pipelined`: tokio-postgres sends the queries that
//! callers of one connection have outstanding together and reads their
//! answers together, as a pool worker's connection does now.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 10;
/// Without TLS, as the pool connects and bench/rdbms_bench.erl runs pgbench.
const URL: &str = "postgres://postgres@127.0.0.1/test?sslmode=disable";
const SQL: &str = "SELECT $1::int";

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = match args.as_slice() {
        [_, client, callers, seconds] => callers
            .parse::<usize>()
            .ok()
            .zip(seconds.parse::<u64>().ok())
            .map(|(c, s)| (client.clone(), c.max(1), Duration::from_secs(s))),
        _ => None,
    };
    let Some((client, callers, length)) = parsed else {
        eprintln!("usage: pg_ceiling sqlx|pipelined CALLERS SECONDS");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let run = runtime.block_on(async {
        match client.as_str() {
            "sqlx" => sqlx_run(callers, length).await,
            "pipelined" => pipelined_run(callers, length).await,
            other => Err(format!("unknown client {other}").into()),
        }
    });
    match run {
        Ok(done) => println!("{}", done / length.as_secs().max(1)),
        Err(e) => {
            eprintln!("pg_ceiling: {e}");
            std::process::exit(1);
        }
    }
}

/// The next parameter, 1..=1000, as pgbench's `random(1, 1000)`.
fn next_param(x: &mut u32) -> i32 {
    *x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
    (*x >> 16) as i32 % 1000 + 1
}

/// Runs `callers` copies of `query` until `length` has passed; the count done.
async fn drive<C, F, Fut>(
    conns: Vec<C>,
    callers: usize,
    length: Duration,
    query: F,
) -> Result<u64, Failure>
where
    C: Clone + Send + 'static,
    F: Fn(C, i32) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + length;
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let (conn, query, done) = (conns[i % conns.len()].clone(), query.clone(), done.clone());
            tokio::spawn(async move {
                let mut seed = i as u32;
                while Instant::now() < end {
                    query(conn.clone(), next_param(&mut seed)).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), Failure>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed))
}

async fn sqlx_run(callers: usize, length: Duration) -> Result<u64, Failure> {
    use sqlx::{Connection, Executor, PgConnection};
    let mut conns = vec![];
    for _ in 0..callers.min(CONNECTIONS) {
        let conn = PgConnection::connect(URL).await?;
        conns.push(Arc::new(tokio::sync::Mutex::new(conn)));
    }
    drive(conns, callers, length, |conn, x| async move {
        let mut conn = conn.lock().await;
        let rows = conn.fetch_all(sqlx::query(SQL).bind(x)).await?;
        check(rows.len())
    })
    .await
}

async fn pipelined_run(callers: usize, length: Duration) -> Result<u64, Failure> {
    let mut conns = vec![];
    for _ in 0..callers.min(CONNECTIONS) {
        let (client, connection) = tokio_postgres::connect(URL, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let statement = client.prepare(SQL).await?;
        conns.push(Arc::new((client, statement)));
    }
    drive(conns, callers, length, |conn, x| async move {
        let rows = conn.0.query(&conn.1, &[&x]).await?;
        check(rows.len())
    })
    .await
}

fn check(rows: usize) -> Result<(), Failure> {
    match rows {
        1 => Ok(()),
        n => Err(format!("{n} rows, expected 1").into()),
    }
}
