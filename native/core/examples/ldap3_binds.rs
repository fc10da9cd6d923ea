//! The plain-ldap3 side of bench/ldap_bench.erl: user binds per second from
//! CALLERS tokio tasks over CONNECTIONS connections (a task waits for its
//! connection as a pool caller waits for its worker), with no Erlang.
//!
//! cargo run --release --example ldap3_binds -- URL DN PASSWORD CALLERS CONNECTIONS SECONDS
//! prints `binds/s N p50_us N p99_us N`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync};
use tokio::sync::Mutex;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, dn, password, callers, connections, seconds] = args.as_slice() else {
        return Err("usage: URL DN PASSWORD CALLERS CONNECTIONS SECONDS".into());
    };
    let (callers, connections): (usize, usize) = (callers.parse()?, connections.parse()?);
    let duration = Duration::from_secs(seconds.parse()?);
    let mut conns = Vec::new();
    for _ in 0..connections {
        let (io, ldap) = LdapConnAsync::new(url).await?;
        ldap3::drive!(io);
        conns.push(Arc::new(Mutex::new(ldap)));
    }
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let conn: Arc<Mutex<Ldap>> = conns[i % connections].clone();
            let (dn, password) = (dn.clone(), password.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let rc = conn.lock().await.simple_bind(&dn, &password).await?.rc;
                    if rc != 0 {
                        return Err(format!("bind answered {rc}").into());
                    }
                    latencies.push(t0.elapsed().as_micros() as u64);
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?.map_err(|e| e.to_string())?);
    }
    all.sort_unstable();
    let at = |q: usize| all.get(all.len() * q / 100).copied().unwrap_or(0);
    println!(
        "binds/s {} p50_us {} p99_us {}",
        all.len() as u64 / duration.as_secs().max(1),
        at(50),
        at(99)
    );
    Ok(())
}
