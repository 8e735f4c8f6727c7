//! `api-gateway`: the public HTTP API. It authenticates tenants against the main
//! database, forwards OpenAI-compatible chat completions to the upstream LLM, and
//! logs every call and request through the queue (`task-queue`'s producer, spooling
//! to disk while Redis is away) without ever waiting for the log to be delivered. It
//! never writes the analytics database.

pub mod access;
pub mod accounts;
pub mod admin;
pub mod analysis;
pub mod analytics;
pub mod api_cache;
pub mod audit;
pub mod auth;
pub mod cvs;
pub mod dashboard;
pub mod demo;
pub mod events;
pub mod hot_redis;
pub mod jobs;
pub mod keys;
pub mod limits;
pub mod llm;
pub mod logged;
pub mod logs_search;
pub mod matches;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod password;
pub mod people;
pub mod pubsub;
pub mod recruiting;
pub mod sessions;
pub mod settings;
pub mod spend_alerts;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, web};
use anyhow::Context;
use common_models::queue::SystemLogSink;
use prometheus::Registry;
use service_kit::AppError;
use service_kit::checks::{Dependency, Readiness};
use service_kit::probes::{self, Probes};
use service_kit::redis::{ReplyTimeout, build_pool};
use service_kit::request_id;
use service_kit::request_log::{self, RequestLog};
use service_kit::server::{ServerOptions, serve_all};
use task_queue::{Keys, Producer, ProducerMetrics};
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::metrics::GatewayMetrics;
pub use crate::settings::GatewaySettings;
use crate::state::AppState;

/// Serves the API on `listener` until `shutdown` turns true; then stops accepting,
/// lets requests in flight finish, and sends (or spools) the buffered log events.
pub async fn run(
    settings: GatewaySettings,
    listener: std::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    tracing::info!(
        addr = %listener.local_addr()?, main_db = %settings.database.url, redis = %settings.redis.url,
        upstream = %settings.llm_base_url, "api-gateway starting"
    );
    let registry = Registry::new_custom(Some("headhunter_gateway".into()), None)?;
    let metrics = GatewayMetrics::register(&registry)?;
    let producer_metrics = ProducerMetrics::register(&registry)?;
    let db = service_kit::db::build_pool(settings.database.url.expose(), "api-gateway", settings.database.pool_size)?;
    let analytics = service_kit::db::build_pool(
        settings.analytics_url().expose(),
        "api-gateway-health",
        settings.analytics_database.pool_size,
    )?;
    let analytics_read = service_kit::db::build_pool(
        settings.analytics_read_url().expose(),
        "api-gateway-analytics",
        settings.analytics_read_database.pool_size,
    )?;
    let redis = build_pool(settings.redis.url.expose(), 8, ReplyTimeout::After(Duration::from_secs(1)))?;
    let keys = Keys::new(settings.redis.key_prefix.clone());
    let (producer, producer_task) =
        Producer::start(redis.clone(), keys.clone(), settings.producer.clone(), producer_metrics).await?;
    let request_log = web::Data::new(RequestLog::register(
        &registry,
        Arc::new(SystemLogSink { component: "api-gateway", producer: producer.clone() }),
    )?);
    let http = reqwest::Client::builder()
        .connect_timeout(settings.llm_connect_timeout)
        .timeout(settings.llm_timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1024)
        .build()?;
    let cache = if settings.cache_url.trim().is_empty() {
        None
    } else {
        Some(cache_client::CacheClient::new(
            &settings.cache_url,
            settings.cache_timeout,
            settings.cache_api_key.expose(),
        )?)
    };
    let probes = web::Data::new(Probes {
        registry,
        // Redis being down does not stop the API (log events go to the spool), so it is
        // reported but does not take the gateway out of rotation: that would turn a
        // logging outage into an API outage.
        readiness: Readiness {
            required: vec![Dependency::own_postgres("main_db", settings.database.url.expose(), "api-gateway")?],
            reported: vec![Dependency::Redis { name: "redis", pool: redis.clone() }],
        },
    });
    let files = Arc::new(
        common_models::storage::LocalFileStore::open(&settings.cvs.storage_dir)
            .with_context(|| format!("opening the CV file store at {}", settings.cvs.storage_dir.display()))?,
    );
    let events = events::EventHub::start(settings.redis.url.expose(), &settings.redis.key_prefix, shutdown.clone())?;
    if settings.llm_cache_seal_key.is_empty() && cache.is_some() {
        tracing::warn!("LLM_CACHE_SEAL_KEY is not set: this replica serves only the cached answers it stored itself");
    }
    let seal = llm::seal::Seal::new(settings.llm_cache_seal_key.expose())?;
    let hot_redis = hot_redis::HotRedis::new(settings.redis.url.expose(), Duration::from_secs(1))?;
    let sessions =
        sessions::Sessions::new(hot_redis.clone(), &settings.redis.key_prefix, settings.accounts.session_ttl);
    let auth = Arc::new(Authenticator::new(
        db.clone(),
        sessions,
        settings.auth_cache_ttl,
        settings.auth_failures_per_minute,
        settings.internal_api_key.expose(),
    ));
    auth::follow_revocations(auth.clone(), settings.redis.url.expose(), &settings.redis.key_prefix, shutdown.clone())?;
    let state = web::Data::new(AppState {
        passwords: password::Passwords::new()?,
        interviews: recruiting::InterviewCheck::default(),
        hot_redis: hot_redis.clone(),
        limits: Arc::new(limits::Limits::new(
            hot_redis,
            &settings.redis.key_prefix,
            settings.limits.clone(),
            db.clone(),
            metrics.clone(),
            settings.llm_timeout,
        )),
        seal,
        events,
        files,
        cache,
        auth,
        settings: settings.clone(),
        db,
        analytics,
        analytics_read,
        redis,
        keys,
        http,
        producer,
        metrics,
    });

    let max_body = settings.max_body_bytes;
    let mut listeners = vec![listener];
    if settings.internal_port != 0 {
        let internal = std::net::TcpListener::bind((settings.server.bind_host.as_str(), settings.internal_port))
            .with_context(|| format!("binding the internal port {}", settings.internal_port))?;
        tracing::info!(addr = %internal.local_addr()?, "metrics and admin routes on the internal listener only");
        listeners.push(internal);
    }
    let options = ServerOptions { workers: settings.server.workers, shutdown_timeout: Duration::from_secs(30) };
    let server = serve_all(listeners, options, shutdown, move || {
        App::new()
            .app_data(state.clone())
            .app_data(probes.clone())
            .app_data(request_log.clone())
            .app_data(service_kit::error::json_config(max_body))
            .wrap(from_fn(limits::headers))
            .wrap(from_fn(internal_split))
            .wrap(from_fn(request_log::log_requests))
            .wrap(from_fn(request_id::assign))
            .configure(llm::routes)
            .configure(jobs::routes)
            // Before the CV routes: `/api/v1/cvs/events` would read as a CV id there.
            .configure(events::routes)
            .configure(cvs::routes)
            .configure(matches::routes)
            .configure(accounts::routes)
            .configure(people::routes)
            .configure(audit::routes)
            .configure(keys::routes)
            .configure(recruiting::routes)
            .configure(analysis::routes)
            .configure(analytics::routes)
            .configure(logs_search::routes)
            .configure(spend_alerts::routes)
            .configure(admin::routes)
            .configure(dashboard::routes)
            .configure(openapi::routes)
            .configure(probes::routes)
            .default_service(web::to(not_found))
    })?;
    server.await?;
    producer_task.shutdown().await;
    tracing::info!("api-gateway stopped");
    Ok(())
}

/// Routes only the internal listener serves (when one is configured).
fn internal_route(path: &str) -> bool {
    path == "/metrics"
        || path.starts_with("/api/v1/admin/")
        || path == "/api/v1/admin"
        || path.starts_with("/admin/")
        || path == "/admin"
}

/// With an internal port: the internal listener serves the metrics, the admin routes and
/// the probes, the public one everything else; either answers 404 for the other's.
async fn internal_split(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    let internal_port = req.app_data::<web::Data<AppState>>().map_or(0, |s| s.settings.internal_port);
    if internal_port != 0 {
        let on_internal = req.app_config().local_addr().port() == internal_port;
        let path = req.path();
        let probe = path == "/healthz" || path == "/readyz";
        if !probe && internal_route(path) != on_internal {
            let err = service_kit::error::no_route(req.request());
            return Ok(req.error_response(err).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, AppError> {
    Err(service_kit::error::no_route(&req))
}
