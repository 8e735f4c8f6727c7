//! `cache-service`: the one owner of cache policy. Namespaces with their TTLs, an
//! in-process L1 in front of Redis with automatic fallback when Redis fails,
//! invalidation across replicas, and the statistics the team watches.

pub mod background;
pub mod fallback;
pub mod generations;
pub mod http;
pub mod link;
pub mod metrics;
pub mod settings;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, web};
use service_kit::server::{ServerOptions, serve};
use tokio::sync::watch;

pub use crate::settings::CacheSettings;
use crate::store::CacheStore;

/// Serves until `shutdown` turns true.
pub async fn run(
    settings: CacheSettings,
    listener: std::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    tracing::info!(addr = %listener.local_addr()?, redis = %settings.redis.url, "cache-service starting");
    let registry = prometheus::Registry::new_custom(Some("headhunter_cache".into()), None)?;
    let store = CacheStore::new(&settings, metrics::CacheMetrics::register(&registry)?)?;
    if let Err(err) = store.conn().await {
        // Serve from L1 alone; the monitor keeps trying.
        store.note_redis_unreachable(&err);
    }
    tokio::spawn(background::invalidation_subscriber(store.clone(), shutdown.clone()));
    tokio::spawn(background::redis_monitor(store.clone(), shutdown.clone()));

    let state = web::Data::new(http::AppState { store, settings: settings.clone(), registry });
    let options = ServerOptions { workers: settings.server.workers, shutdown_timeout: Duration::from_secs(10) };
    // No request-id layer on the hot path: errors here are the caller's (4xx), and the
    // cache's own failures are fallbacks, not errors.
    serve(listener, options, shutdown, move || App::new().app_data(state.clone()).configure(http::routes))?.await?;
    tracing::info!("cache-service stopped");
    Ok(())
}
