//! `api-gateway`: the public HTTP API. It authenticates tenants against the main
//! database, forwards OpenAI-compatible chat completions to the upstream LLM, and
//! logs every call and request through Redis (`common_models::queue`) without ever
//! waiting for the log to be delivered. It never writes the analytics database.

pub mod admin;
pub mod auth;
pub mod error;
pub mod health;
pub mod llm;
pub mod metrics;
pub mod publisher;
pub mod request_log;
pub mod settings;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use common_models::db;
use common_models::queue::QueueKeys;
use common_models::redis_pool::{self, ReplyTimeout};
use common_models::settings::redact_url;
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::error::ApiError;
use crate::metrics::GatewayMetrics;
use crate::publisher::LogPublisher;
pub use crate::settings::GatewaySettings;
use crate::state::AppState;

/// How long buffered log events may take to reach Redis at shutdown.
const PUBLISHER_FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Serves the API on `listener` until `shutdown` turns true; then stops accepting,
/// lets requests in flight finish, and flushes buffered log events to Redis.
pub async fn run(
    settings: GatewaySettings,
    listener: std::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    tracing::info!(
        addr = %listener.local_addr()?, main_db = %redact_url(&settings.database_url),
        redis = %redact_url(&settings.redis_url), upstream = %settings.llm_base_url,
        "api-gateway starting"
    );
    let metrics = GatewayMetrics::new()?;
    let db = db::build_pool(&settings.database_url, "api-gateway", settings.db_pool_size)?;
    let analytics = db::build_pool(settings.analytics_url(), "api-gateway-health", 2)?;
    let redis = redis_pool::build_pool(&settings.redis_url, 8, ReplyTimeout::After(Duration::from_secs(1)))?;
    let keys = QueueKeys::new(settings.redis_key_prefix.clone());
    let (publisher, publisher_shutdown) = LogPublisher::start(
        redis.clone(),
        keys.clone(),
        metrics.clone(),
        settings.log_buffer_capacity,
        settings.log_batch_size,
        Duration::from_millis(settings.log_linger_ms),
    );
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(settings.llm_connect_timeout_secs))
        .timeout(Duration::from_secs(settings.llm_timeout_secs))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .build()?;
    let llm_cache = if settings.cache_url.trim().is_empty() {
        None
    } else {
        Some(cache_client::CacheClient::new(&settings.cache_url, Duration::from_millis(settings.cache_timeout_ms))?)
    };
    let state = web::Data::new(AppState {
        llm_cache,
        auth: Authenticator::new(db.clone(), Duration::from_secs(settings.auth_cache_ttl_secs)),
        settings: settings.clone(),
        db,
        analytics,
        redis,
        keys,
        http,
        publisher,
        metrics,
    });

    let server = build_server(state, &settings, listener)?;
    let handle = server.handle();
    tokio::spawn(async move {
        drop(shutdown.wait_for(|stop| *stop).await);
        handle.stop(true).await;
    });
    server.await?;
    publisher_shutdown.flush_and_stop(PUBLISHER_FLUSH_DEADLINE).await;
    tracing::info!("api-gateway stopped");
    Ok(())
}

/// Builds the HTTP server (outside any `async` scope: actix's builder is not `Send`).
fn build_server(
    state: web::Data<AppState>,
    settings: &GatewaySettings,
    listener: std::net::TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let max_body = settings.max_body_bytes;
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(error::json_config(max_body))
            .wrap(from_fn(request_log::log_request))
            .configure(llm::routes)
            .configure(admin::routes)
            .configure(health::routes)
            .default_service(web::to(not_found))
    })
    .backlog(4096)
    .disable_signals()
    .shutdown_timeout(30);
    if settings.workers > 0 {
        server = server.workers(settings.workers);
    }
    Ok(server.listen(listener)?.run())
}

async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    let mut res = ApiError::bad_request("path", "not_found", format!("no route for {} {}", req.method(), req.path()))
        .error_response();
    *res.status_mut() = actix_web::http::StatusCode::NOT_FOUND;
    res
}
