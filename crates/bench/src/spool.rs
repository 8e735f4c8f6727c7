//! The spool: how fast the gateway's producer writes events to it while Redis is away,
//! and replays them once Redis is back, beside how fast it sends the same events
//! straight to Redis, all in one run.

use std::time::{Duration, Instant};

use service_kit::redis::{ReplyTimeout, build_pool};
use task_queue::{Keys, Producer, ProducerMetrics};

use crate::ingest::{event, gateway_producer};
use crate::{clear_redis, redis_url};

/// Publishes every event, then waits until `done` (read from the metrics) reaches `n`.
async fn timed(
    n: usize,
    redis: &str,
    keys: &Keys,
    dir: &std::path::Path,
    publish: bool,
    done: impl Fn(&ProducerMetrics) -> u64,
) -> anyhow::Result<f64> {
    let metrics = ProducerMetrics::register(&prometheus::Registry::new())?;
    let pool = build_pool(redis, 4, ReplyTimeout::After(Duration::from_secs(2)))?;
    let started = Instant::now();
    let (producer, task) = Producer::start(pool, keys.clone(), gateway_producer(dir, n)?, metrics.clone()).await?;
    if publish {
        for i in 0..n {
            producer.publish(&event(i, 1));
        }
    }
    while done(&metrics) < n as u64 {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "stalled at {} of {n}", done(&metrics));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let dropped: u64 = metrics.dropped.with_label_values(&["llm_logs", "spool_full"]).get()
        + metrics.dropped.with_label_values(&["llm_logs", "buffer_full"]).get();
    anyhow::ensure!(dropped == 0, "{dropped} events dropped");
    task.shutdown().await;
    Ok(n as f64 / secs)
}

pub async fn run(n: usize) -> anyhow::Result<()> {
    println!("== spool: {n} llm_logs events through the gateway's producer ==");
    let prefix = format!("bench:{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let keys = Keys::new(prefix.clone());
    let root = std::env::temp_dir().join(format!("hh-bench-spool-{}", &prefix[6..14]));
    let (direct_dir, spool_dir) = (root.join("direct"), root.join("spool"));
    let dead = format!("redis://127.0.0.1:{}/0", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());

    let direct =
        timed(n, &redis_url(), &keys, &direct_dir, true, |m| m.published.with_label_values(&["llm_logs"]).get())
            .await?;
    println!("  straight to Redis            {direct:>9.0} events/s");
    let written =
        timed(n, &dead, &keys, &spool_dir, true, |m| m.spooled.with_label_values(&["llm_logs"]).get()).await?;
    let on_disk: u64 = std::fs::read_dir(&spool_dir)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    println!(
        "  into the spool (Redis away)  {written:>9.0} events/s   ({:.1} MiB on disk)",
        on_disk as f64 / 1048576.0
    );
    let replayed =
        timed(n, &redis_url(), &keys, &spool_dir, false, |m| m.replayed.with_label_values(&["llm_logs"]).get()).await?;
    println!("  replayed into Redis          {replayed:>9.0} events/s   (opening and checking the spool included)");

    let mut conn = redis::Client::open(redis_url())?.get_multiplexed_async_connection().await?;
    let len: u64 = redis::cmd("XLEN").arg(keys.stream("llm_logs")).query_async(&mut conn).await?;
    anyhow::ensure!(len == 2 * n as u64, "the stream holds {len} entries, expected {}", 2 * n);
    println!();
    println!(
        "spool    written {written:>8.0} events/s ({:.2}× straight to Redis)   replayed {replayed:>8.0} events/s ({:.2}×)",
        written / direct,
        replayed / direct
    );
    clear_redis(&prefix).await?;
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}
