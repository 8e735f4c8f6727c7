//! `cv-processor`: consumes the `cv_jobs` stream. Each CV's file is read in a
//! sandboxed child process ([`sandbox`]), split into sections and chunks
//! ([`structure`]), its plain facts pulled out ([`facts`]) and personal data masked
//! for scoring ([`mask`]); the main database gets back only the CV's status, counts,
//! facts and a short summary.

pub mod extract;
pub mod facts;
pub mod handler;
pub mod mask;
pub mod metrics;
pub mod sandbox;
pub mod settings;
pub mod structure;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, web};
use anyhow::Context as _;
use common_models::cv::ProcessCv;
use common_models::storage::LocalFileStore;
use prometheus::Registry;
use service_kit::checks::{Dependency, Readiness};
use service_kit::probes::{self, Probes};
use service_kit::redis::{ReplyTimeout, build_pool};
use service_kit::server::{ServerOptions, serve};
use task_queue::{Consumer, ConsumerMetrics, Keys};
use tokio::sync::watch;

use crate::handler::{Context, CvHandler};
use crate::metrics::ProcessorMetrics;
pub use crate::settings::ProcessorSettings;

/// Runs the processor until `shutdown` turns true: the consumer of `cv_jobs` and the
/// HTTP endpoints on `listener`. Returns after every loop has finished the CV it had.
pub async fn run(
    settings: ProcessorSettings,
    listener: std::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tracing::info!(main_db = %settings.database.url, redis = %settings.redis.url,
        consumer = %settings.consumer.consumer, files = %settings.files.storage_dir.display(), "cv-processor starting");
    let registry = Registry::new_custom(Some("headhunter_cv_processor".into()), None)?;
    let metrics = ProcessorMetrics::register(&registry)?;
    let queue_metrics = ConsumerMetrics::register(&registry)?;
    // No verifying round trip per checkout: every main-DB statement a CV costs counts
    // (a dropped connection fails one statement, which is retried).
    let db = service_kit::db::build_pool_with(
        settings.database.url.expose(),
        "cv-processor",
        settings.database.pool_size,
        service_kit::db::Checkout::Fast,
    )?;
    // Readers block in XREADGROUP: one connection per loop, plus heartbeat, events and probe.
    let redis = build_pool(settings.redis.url.expose(), settings.consumer.concurrency + 4, ReplyTimeout::Never)?;
    let keys = Keys::new(settings.redis.key_prefix.clone());
    let files = Arc::new(
        LocalFileStore::open(&settings.files.storage_dir)
            .with_context(|| format!("opening the file store at {}", settings.files.storage_dir.display()))?,
    );
    let ctx = Arc::new(Context {
        db: db.clone(),
        redis: redis.clone(),
        key_prefix: keys.prefix().to_owned(),
        files,
        sandbox: settings.sandbox.clone(),
        chunk_words: settings.chunk_words,
        max_attempts: settings.max_attempts,
        metrics,
    });

    let probes = web::Data::new(Probes {
        registry,
        readiness: Readiness {
            required: vec![
                Dependency::Redis { name: "redis", pool: redis.clone() },
                Dependency::Postgres { name: "main_db", pool: db },
            ],
            reported: Vec::new(),
        },
    });
    let options = ServerOptions { workers: settings.server.workers.max(1), shutdown_timeout: Duration::from_secs(5) };
    let server = serve(listener, options, shutdown.clone(), move || {
        App::new().app_data(probes.clone()).configure(probes::routes)
    })?;
    let server = tokio::spawn(server);

    let consumer = Consumer::<ProcessCv>::new(redis, keys, settings.consumer.clone(), queue_metrics);
    let result = consumer.run(|_| CvHandler { ctx: ctx.clone() }, shutdown).await;
    drop(server.await);
    tracing::info!("cv-processor stopped");
    result
}
