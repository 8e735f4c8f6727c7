//! `llm-log-worker`: the only writer of the analytics database. It consumes the
//! `llm_logs` and `system_logs` streams through the `task-queue` consumer runtime and
//! writes each batch in one transaction, idempotently on the event id; the runtime
//! acknowledges entries only after the commit.

pub mod copy;
pub mod fold;
pub mod handler;
pub mod handoff;
pub mod legacy;
pub mod metrics;
pub mod reprice;
pub mod retention;
pub mod rollup;
pub mod settings;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, web};
use anyhow::Context;
use common_models::db::{self, Database};
use common_models::events::LogEvent;
use prometheus::Registry;
use service_kit::checks::{Dependency, Readiness};
use service_kit::probes::{self, Probes};
use service_kit::redis::{ReplyTimeout, build_pool};
use service_kit::server::{ServerOptions, serve};
use task_queue::{Consumer, ConsumerMetrics, Keys};
use tokio::sync::watch;

use crate::copy::CopyWriter;
use crate::handler::LogWriter;
use crate::metrics::WorkerMetrics;
pub use crate::settings::WorkerSettings;
use crate::writer::AnalyticsWriter;

/// Runs the worker until `shutdown` turns true: migrations, partitions, the consumer
/// and the HTTP endpoints on `listener`. Returns after every loop has finished (and
/// acknowledged) the batch it had in hand.
pub async fn run(
    settings: WorkerSettings,
    listener: std::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let analytics_url = settings.analytics_url().clone();
    tracing::info!(analytics_db = %analytics_url, redis = %settings.redis.url,
        consumer = %settings.consumer.consumer, "llm-log-worker starting");

    let applied = db::run_migrations_with_retries(
        analytics_url.expose(),
        Database::Analytics,
        settings.migrate_attempts,
        settings.migrate_retry_delay,
    )
    .await?;
    if !applied.is_empty() {
        tracing::info!(versions = ?applied, "analytics migrations applied");
    }

    let registry = Registry::new_custom(Some("headhunter_log_worker".into()), None)?;
    let metrics = WorkerMetrics::register(&registry)?;
    let queue_metrics = ConsumerMetrics::register(&registry)?;
    let pool =
        service_kit::db::build_pool(analytics_url.expose(), "llm-log-worker", settings.analytics_database.pool_size)?;
    let writer = Arc::new(AnalyticsWriter::new(pool.clone(), settings.lock_timeout, settings.statement_timeout));
    writer
        .ensure_partitions_ahead(chrono::Utc::now())
        .await
        .context("creating the analytics partitions for this month and the next")?;

    // Readers block in XREADGROUP, so their connections wait as long as the block time:
    // one connection per loop, plus the heartbeat's, and one to spare.
    let redis = build_pool(settings.redis.url.expose(), settings.consumer.concurrency + 3, ReplyTimeout::Never)?;
    let keys = Keys::new(settings.redis.key_prefix.clone());

    let probes = web::Data::new(Probes {
        registry,
        readiness: Readiness {
            required: vec![
                Dependency::own_redis("redis", settings.redis.url.expose())?,
                Dependency::own_postgres("analytics_db", analytics_url.expose(), "llm-log-worker")?,
            ],
            reported: Vec::new(),
        },
    });
    let options = ServerOptions { workers: settings.server.workers.max(1), shutdown_timeout: Duration::from_secs(5) };
    let server = serve(listener, options, shutdown.clone(), move || {
        App::new().app_data(probes.clone()).configure(probes::routes)
    })?;
    let server = tokio::spawn(server);
    let partitions =
        tokio::spawn(keep_partitions_ahead(writer.clone(), settings.partition_check_interval, shutdown.clone()));
    let handoff = Arc::new(handoff::Handoff::default());
    let rollups = tokio::spawn(keep_rollups_current(
        rollup::Folder::new(analytics_url.expose())
            .following(settings.rollup_interval, rollup::FOLLOW_IDLE)
            .handed(handoff.clone()),
        settings.rollup_interval,
        metrics.clone(),
        shutdown.clone(),
    ));
    let retention = tokio::spawn(keep_retention(pool.clone(), settings.clone(), metrics.clone(), shutdown.clone()));

    let consumer = Consumer::<LogEvent>::new(redis, keys, settings.consumer.clone(), queue_metrics);
    let result = consumer
        .run(
            |_| {
                let copy = CopyWriter::new(analytics_url.expose(), settings.lock_timeout, settings.statement_timeout)
                    .handing(handoff.clone());
                LogWriter::new(copy, writer.clone(), metrics.clone())
            },
            shutdown.clone(),
        )
        .await;
    drop(partitions.await);
    drop(rollups.await);
    drop(retention.await);
    drop(server.await);
    tracing::info!("llm-log-worker stopped");
    result
}

/// How often the rollup backlog (a count over the raw rows past the watermark) is
/// read for its metric.
const BACKLOG_READ_EVERY: Duration = Duration::from_secs(5);

/// Folds the committed raw rows into the hourly rollups, a step starting every `every`
/// (at once when the last step took longer, or stopped at its size with more waiting),
/// and once more when asked to stop (what is left after that waits for any other
/// worker, or this one's restart).
async fn keep_rollups_current(
    mut folder: rollup::Folder,
    every: Duration,
    metrics: WorkerMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut more = false;
    let mut next_step = tokio::time::Instant::now() + every;
    let mut backlog_read: Option<std::time::Instant> = None;
    loop {
        let stopping = if more {
            *shutdown.borrow()
        } else {
            tokio::select! {
                () = tokio::time::sleep_until(next_step) => false,
                _ = shutdown.wait_for(|s| *s) => true,
            }
        };
        let started = std::time::Instant::now();
        next_step = tokio::time::Instant::now() + every;
        let step = folder.step().await;
        more = false;
        match step {
            Ok(step) => {
                if step.calls > 0 || step.more {
                    metrics.rollup_step_seconds.observe(started.elapsed().as_secs_f64());
                    metrics.rollup_calls.inc_by(step.calls);
                    metrics.rollup_calls_handed.inc_by(step.handed);
                }
                more = step.more;
            }
            Err(err) => {
                metrics.rollup_step_failures.inc();
                tracing::warn!(error = %err, "folding raw rows into the rollups failed, will retry");
            }
        }
        if stopping || backlog_read.is_none_or(|at| at.elapsed() >= BACKLOG_READ_EVERY) {
            match folder.backlog().await {
                Ok(rows) => metrics.rollup_backlog_rows.set(rows),
                Err(err) => tracing::warn!(error = %err, "reading the rollup backlog failed"),
            }
            backlog_read = Some(std::time::Instant::now());
        }
        if stopping {
            return;
        }
    }
}

/// Every `retention_interval`: drops the raw partitions past `raw_retention` (when set;
/// one worker at a time) and refreshes the partition metrics.
async fn keep_retention(
    pool: service_kit::db::PgPool,
    settings: WorkerSettings,
    metrics: WorkerMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let checked = async {
            let mut conn = pool.get().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let now = chrono::Utc::now();
            if !settings.raw_retention.is_zero() {
                let outcome =
                    retention::run(&mut conn, now, settings.raw_retention, settings.lock_timeout, false).await?;
                for p in &outcome.dropped {
                    metrics.partitions_dropped.with_label_values(&[p.table]).inc();
                }
            }
            let (ahead, oldest) = retention::upkeep(&retention::partitions(&mut conn).await?, now);
            metrics.partition_months_ahead.set(ahead);
            metrics.oldest_partition_age_days.set(oldest.unwrap_or(0));
            anyhow::Ok(())
        }
        .await;
        if let Err(err) = checked {
            tracing::warn!(error = %err, "raw log retention failed, will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.retention_interval.max(Duration::from_secs(1))) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Creates next month's partitions ahead of time (a batch creates any other month it
/// needs as it comes).
async fn keep_partitions_ahead(writer: Arc<AnalyticsWriter>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every.max(Duration::from_secs(60))) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if let Err(err) = writer.ensure_partitions_ahead(chrono::Utc::now()).await {
            tracing::warn!(error = %err, "partition maintenance failed, will retry");
        }
    }
}
