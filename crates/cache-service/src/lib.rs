//! `cache-service`: the one owner of cache policy. Namespaces with their TTLs, an
//! in-process L1 in front of Redis with automatic fallback when Redis fails,
//! invalidation across replicas, and the statistics the team watches.

pub mod background;
pub mod error;
pub mod fallback;
pub mod generations;
pub mod http;
pub mod link;
pub mod metrics;
pub mod settings;
pub mod store;

use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use common_models::settings::redact_url;
use tokio::sync::watch;

pub use crate::settings::CacheSettings;
use crate::store::CacheStore;

/// Serves until `shutdown` turns true.
pub async fn run(
    settings: CacheSettings,
    listener: std::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let redis_url = settings.cache_redis().to_owned();
    tracing::info!(addr = %listener.local_addr()?, redis = %redact_url(&redis_url), "cache-service starting");
    let store = CacheStore::new(&settings, metrics::CacheMetrics::new()?)?;
    if let Err(err) = store.conn().await {
        // Serve from L1 alone; the monitor keeps trying.
        store.note_redis_unreachable(&err);
    }
    tokio::spawn(background::invalidation_subscriber(store.clone(), redis_url, shutdown.clone()));
    tokio::spawn(background::redis_monitor(store.clone(), shutdown.clone()));

    let server =
        build_server(web::Data::new(http::AppState { store, settings: settings.clone() }), &settings, listener)?;
    let handle = server.handle();
    tokio::spawn(async move {
        drop(shutdown.wait_for(|s| *s).await);
        handle.stop(true).await;
    });
    server.await?;
    tracing::info!("cache-service stopped");
    Ok(())
}

fn build_server(
    state: web::Data<http::AppState>,
    settings: &CacheSettings,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let mut server = HttpServer::new(move || App::new().app_data(state.clone()).configure(http::routes))
        .backlog(4096)
        .disable_signals()
        .shutdown_timeout(10);
    if settings.workers > 0 {
        server = server.workers(settings.workers);
    }
    Ok(server.listen(listener)?.run())
}
