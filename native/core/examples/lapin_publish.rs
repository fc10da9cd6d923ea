//! The benchmark's baseline: lapin alone, no Erlang. TASKS tokio tasks
//! publish for SECONDS over 10 connections (one channel each, as a 10-worker
//! pool), each waiting for its publish to be sent (or, with `confirms`,
//! confirmed) before the next. Prints `publishes=N p50_us=N p99_us=N`,
//! publishes per second counted until the broker has taken them all.
//!
//! cargo run --release --example lapin_publish -- TASKS SECONDS [confirms]

use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

const QUEUE: &str = "mn.bench";
const CONNECTIONS: usize = 10;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let tasks: usize = args.get(1).map_or(Ok(16), |a| a.parse())?;
    let seconds: u64 = args.get(2).map_or(Ok(3), |a| a.parse())?;
    let confirms = args.get(3).is_some_and(|a| a == "confirms");
    let mut channels = vec![];
    for _ in 0..CONNECTIONS {
        let conn = Connection::connect(
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            ConnectionProperties::default(),
        )
        .await?;
        let ch = conn.create_channel().await?;
        if confirms {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
        }
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(10_000));
        ch.queue_declare(QUEUE.into(), QueueDeclareOptions::default(), args)
            .await?;
        channels.push((conn, ch));
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut handles = vec![];
    for t in 0..tasks {
        let ch = channels[t % CONNECTIONS].1.clone();
        handles.push(tokio::spawn(async move {
            let mut lats = vec![];
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        QUEUE.into(),
                        BasicPublishOptions::default(),
                        b"payload-of-a-bench-message",
                        BasicProperties::default(),
                    )
                    .await?;
                if confirms {
                    confirm.await?;
                }
                lats.push(t0.elapsed().as_micros() as u64);
            }
            Ok::<_, lapin::Error>(lats)
        }));
    }
    let mut lats = vec![];
    for h in handles {
        lats.extend(h.await??);
    }
    // A synchronous method on each channel returns once the broker has
    // taken every publish before it: without confirms, the honest end.
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    for (_, ch) in &channels {
        ch.queue_declare(QUEUE.into(), passive, FieldTable::default())
            .await?;
    }
    let seconds = start.elapsed().as_secs_f64();
    lats.sort_unstable();
    let n = lats.len();
    let at = |q: usize| {
        lats.get((n * q / 100).min(n.saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "publishes={} p50_us={} p99_us={}",
        (n as f64 / seconds) as u64,
        at(50),
        at(99)
    );
    Ok(())
}
