//! `cv-processor`: consumes the `cv_jobs` stream. Each CV's file is read in a
//! sandboxed child process ([`sandbox`]), split into sections and chunks
//! ([`structure`]), its plain facts pulled out ([`facts`]) and personal data masked
//! for scoring ([`mask`]), its chunks embedded through the embedding cache ([`embed`])
//! and stored as vectors ([`vectors`]); the main database gets back only the CV's
//! status, counts, facts and a short summary. It also ranks CVs against jobs
//! ([`matching`]) for the gateway, on an internal route ([`api`]), and runs the LLM
//! analyses of applications ([`analysis`]).

pub mod analysis;
pub mod api;
pub mod embed;
pub mod extract;
pub mod facts;
pub mod handler;
pub mod mask;
pub mod matching;
pub mod metrics;
pub mod sandbox;
pub mod settings;
pub mod structure;
pub mod sweep;
pub mod vectors;

use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, web};
use anyhow::Context as _;
use common_models::cv::CvJob;
use common_models::queue::SystemLogSink;
use common_models::storage::LocalFileStore;
use prometheus::Registry;
use service_kit::checks::{Dependency, Readiness};
use service_kit::probes::{self, Probes};
use service_kit::redis::{ReplyTimeout, build_pool};
use service_kit::request_id;
use service_kit::request_log::{self, RequestLog};
use service_kit::server::{ServerOptions, serve};
use task_queue::{Consumer, ConsumerMetrics, Keys, Producer, ProducerMetrics};
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
    let producer_metrics = ProducerMetrics::register(&registry)?;
    // No verifying round trip per checkout: every main-DB statement a CV costs counts
    // (a dropped connection fails one statement, which is retried).
    let db = service_kit::db::build_pool_with(
        settings.database.url.expose(),
        "cv-processor",
        settings.database.pool_size,
        service_kit::db::Checkout::Fast,
    )?;
    // Readers block in XREADGROUP: one connection per loop, plus heartbeat, events and one to spare.
    let redis = build_pool(settings.redis.url.expose(), settings.consumer.concurrency + 4, ReplyTimeout::Never)?;
    let keys = Keys::new(settings.redis.key_prefix.clone());
    let (producer, producer_task) = {
        // Its own pool, with a reply timeout: a stalled Redis sends the events to the
        // spool (or the drop count) instead of holding them.
        let producer_redis = build_pool(settings.redis.url.expose(), 2, ReplyTimeout::After(Duration::from_secs(1)))?;
        Producer::start(producer_redis, keys.clone(), settings.producer.clone(), producer_metrics).await?
    };
    let request_log = web::Data::new(RequestLog::register(
        &registry,
        Arc::new(SystemLogSink { component: "cv-processor", producer: producer.clone() }),
    )?);
    let files = Arc::new(
        LocalFileStore::open(&settings.files.storage_dir)
            .with_context(|| format!("opening the file store at {}", settings.files.storage_dir.display()))?,
    );
    let model = embed::build(&settings.embedding).await.context("loading the embedding model")?;
    let cache = if settings.embedding.cache_url.trim().is_empty() {
        None
    } else {
        let (url, timeout) = (&settings.embedding.cache_url, settings.embedding.cache_timeout);
        Some(cache_client::CacheClient::new(url, timeout, settings.cache_api_key.expose())?)
    };
    let analyst = analysis::Analyst::new(settings.analysis.clone(), settings.internal_api_key.expose(), cache.clone())?;
    let embedder = embed::CachedEmbedder { model, cache, batch_size: settings.embedding.batch_size };
    let dimension = embedder.model.dimension();
    let (store, edge) = vectors::open(&settings.vectors, dimension).await?;
    tracing::info!(model = embedder.model.model_id(), dimension, embedded = edge.is_some(), "models and vectors ready");
    let ctx = Arc::new(Context {
        embedder,
        vectors: store,
        db: db.clone(),
        redis: redis.clone(),
        key_prefix: keys.prefix().to_owned(),
        files,
        sandbox: settings.sandbox.clone(),
        chunk_words: settings.chunk_words,
        metrics,
        claim_lease: settings.consumer.reclaim_idle / 2,
        analyst,
    });

    let api_state = web::Data::new(api::ApiState {
        ctx: ctx.clone(),
        matching: settings.matching.clone(),
        key: settings.internal_api_key.clone(),
    });
    let probes = web::Data::new(Probes {
        registry,
        readiness: Readiness {
            required: vec![
                Dependency::own_redis("redis", settings.redis.url.expose())?,
                Dependency::own_postgres("main_db", settings.database.url.expose(), "cv-processor")?,
            ],
            reported: Vec::new(),
        },
    });
    let options = ServerOptions { workers: settings.server.workers.max(1), shutdown_timeout: Duration::from_secs(5) };
    let server = serve(listener, options, shutdown.clone(), move || {
        App::new()
            .app_data(probes.clone())
            .app_data(api_state.clone())
            .app_data(request_log.clone())
            .app_data(service_kit::error::json_config(1 << 20))
            .wrap(from_fn(request_log::log_requests))
            .wrap(from_fn(request_id::assign))
            .configure(probes::routes)
            .configure(api::routes)
    })?;
    let server = tokio::spawn(server);
    // The embedded engine has no background optimiser; a server has its own.
    let optimizer =
        edge.map(|edge| tokio::spawn(keep_index_built(edge, settings.vectors.optimize_interval, shutdown.clone())));
    let sweeper = tokio::spawn(sweep::keep_sweeping(ctx.clone(), producer, settings.sweep.clone(), shutdown.clone()));

    let consumer = Consumer::<CvJob>::new(redis, keys, settings.consumer.clone(), queue_metrics);
    let result = consumer.run(|_| CvHandler::new(ctx.clone()), shutdown).await;
    if let Some(optimizer) = optimizer {
        drop(optimizer.await);
    }
    drop(sweeper.await);
    drop(server.await);
    producer_task.shutdown().await;
    tracing::info!("cv-processor stopped");
    result
}

/// Rebuilds the vector index over new chunks now and then (the embedded engine has no
/// background optimiser).
async fn keep_index_built(store: Arc<vectors::EdgeStore>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every.max(Duration::from_secs(1))) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if let Err(err) = store.optimize().await {
            tracing::warn!(error = %format!("{err:#}"), "building the vector index failed; will retry");
        }
    }
}
