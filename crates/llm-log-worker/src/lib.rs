//! `llm-log-worker`: the only writer of the analytics database. It consumes the
//! `llm_logs` and `system_logs` streams (see `common_models::queue`) and writes them in
//! batches, idempotently, acknowledging entries only after their rows are committed.

pub mod consumer;
pub mod copy;
pub mod http;
pub mod metrics;
pub mod settings;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common_models::db::{self, Database};
use common_models::queue::{CONSUMER_GROUP, LogStream, QueueKeys};
use common_models::redis_pool::{self, ReplyTimeout};
use common_models::settings::redact_url;
use redis::AsyncCommands;
use redis::streams::StreamInfoGroupsReply;
use tokio::sync::watch;

use crate::consumer::{ConsumerLoop, Shared, pool_error};
use crate::metrics::WorkerMetrics;
pub use crate::settings::WorkerSettings;
use crate::writer::AnalyticsWriter;

/// Runs the worker until `shutdown` turns true: migrations, partitions, consumer
/// loops, heartbeat and the HTTP endpoints on `listener`. Returns after every loop has
/// finished (and acknowledged) the batch it had in hand.
pub async fn run(
    settings: WorkerSettings,
    listener: std::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let analytics_url = settings.analytics_url().to_owned();
    tracing::info!(analytics_db = %redact_url(&analytics_url), redis = %redact_url(&settings.redis_url),
        consumer = %settings.consumer_name, "llm-log-worker starting");

    let applied = db::run_migrations_with_retries(
        &analytics_url,
        Database::Analytics,
        settings.migrate_attempts,
        Duration::from_millis(settings.migrate_retry_delay_ms),
    )
    .await?;
    if !applied.is_empty() {
        tracing::info!(versions = ?applied, "analytics migrations applied");
    }

    let metrics = WorkerMetrics::new()?;
    let pool = db::build_pool(&analytics_url, "llm-log-worker", settings.write_loops + 2)?;
    let writer = AnalyticsWriter::new(pool, settings.lock_timeout_ms, settings.statement_timeout_ms);
    writer
        .ensure_partitions_ahead(chrono::Utc::now())
        .await
        .context("creating the analytics partitions for this month and the next")?;

    // Readers block in XREADGROUP, so their connections wait as long as the block time;
    // one connection per loop, plus the heartbeat's.
    let redis = redis_pool::build_pool(&settings.redis_url, settings.write_loops + 2, ReplyTimeout::Never)?;
    let keys = QueueKeys::new(settings.redis_key_prefix.clone());
    ensure_groups(&redis, &keys, shutdown.clone()).await?;

    let shared = Arc::new(Shared {
        keys,
        redis,
        writer,
        metrics,
        batch_size: settings.batch_size,
        block: settings.block(),
        reclaim_idle: Duration::from_millis(settings.reclaim_idle_ms),
        reclaim_interval: Duration::from_millis(settings.reclaim_interval_ms),
        retry_initial: Duration::from_millis(settings.retry_initial_ms),
        retry_max: Duration::from_millis(settings.retry_max_ms),
        linger: Duration::from_millis(settings.linger_ms),
        analytics_url: analytics_url.clone(),
        lock_timeout_ms: settings.lock_timeout_ms,
        statement_timeout_ms: settings.statement_timeout_ms,
    });

    let server = http::serve(listener, shared.clone())?;
    let server_handle = server.handle();
    let server_task = tokio::spawn(server);

    let heartbeat = tokio::spawn(heartbeat_loop(
        shared.clone(),
        settings.consumer_name.clone(),
        Duration::from_millis(settings.heartbeat_interval_ms),
        Duration::from_secs(settings.partition_check_interval_secs.max(60)),
        shutdown.clone(),
    ));

    let loops: Vec<_> = (0..settings.write_loops)
        .map(|n| {
            let consumer = format!("{}-{n}", settings.consumer_name);
            tokio::spawn(ConsumerLoop::new(shared.clone(), consumer, shutdown.clone()).run())
        })
        .collect();
    for handle in loops {
        if let Err(err) = handle.await {
            tracing::error!(error = %err, "a consumer loop panicked");
        }
    }
    heartbeat.abort();
    server_handle.stop(true).await;
    drop(server_task.await);
    tracing::info!("llm-log-worker stopped");
    Ok(())
}

/// Creates the consumer group on both streams (and the streams) unless they exist.
/// Waits for Redis if it is not up yet.
async fn ensure_groups(
    redis: &deadpool_redis::Pool,
    keys: &QueueKeys,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        match try_ensure_groups(redis, keys).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                tracing::warn!(error = %err, "cannot create the consumer groups yet, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.wait_for(|s| *s) => anyhow::bail!("shut down before Redis was reachable"),
                }
            }
        }
    }
}

async fn try_ensure_groups(redis: &deadpool_redis::Pool, keys: &QueueKeys) -> redis::RedisResult<()> {
    let mut conn = redis.get().await.map_err(pool_error)?;
    for stream in LogStream::ALL {
        // "0": entries published before the group existed are consumed too.
        let created: redis::RedisResult<()> =
            conn.xgroup_create_mkstream(keys.stream(stream), CONSUMER_GROUP, "0").await;
        match created {
            Ok(()) => {}
            Err(err) if err.code() == Some("BUSYGROUP") => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Announces this worker, refreshes the queue gauges and keeps partitions ahead.
async fn heartbeat_loop(
    shared: Arc<Shared>,
    consumer: String,
    every: Duration,
    partition_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_partition_check = tokio::time::Instant::now();
    loop {
        if let Err(err) = beat(&shared, &consumer).await {
            shared.metrics.redis_errors.inc();
            tracing::warn!(error = %err, "heartbeat failed");
        }
        if last_partition_check.elapsed() >= partition_every {
            last_partition_check = tokio::time::Instant::now();
            if let Err(err) = shared.writer.ensure_partitions_ahead(chrono::Utc::now()).await {
                tracing::warn!(error = %err, "partition maintenance failed, will retry");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

async fn beat(shared: &Shared, consumer: &str) -> redis::RedisResult<()> {
    let mut conn = shared.redis.get().await.map_err(pool_error)?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let heartbeats = shared.keys.heartbeats();
    redis::pipe()
        .zadd(&heartbeats, consumer, now_ms)
        .ignore()
        // Forget workers silent for a day.
        .zrembyscore(&heartbeats, "-inf", now_ms - 86_400_000)
        .ignore()
        .query_async::<()>(&mut *conn)
        .await?;
    for stream in LogStream::ALL {
        let key = shared.keys.stream(stream);
        let len: i64 = conn.xlen(&key).await?;
        let groups: StreamInfoGroupsReply = conn.xinfo_groups(&key).await?;
        let label = [stream.name()];
        shared.metrics.stream_length.with_label_values(&label).set(len);
        if let Some(group) = groups.groups.iter().find(|g| g.name == CONSUMER_GROUP) {
            shared.metrics.pending.with_label_values(&label).set(i64::try_from(group.pending).unwrap_or(i64::MAX));
            if let Some(lag) = group.lag {
                shared.metrics.lag.with_label_values(&label).set(i64::try_from(lag).unwrap_or(i64::MAX));
            }
        }
    }
    Ok(())
}
