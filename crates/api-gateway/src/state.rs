//! The state every handler shares.

use std::sync::Arc;

use common_models::db::PgPool;
use common_models::queue::QueueKeys;
use deadpool_redis::Pool as RedisPool;

use crate::auth::Authenticator;
use crate::llm::record::CallLogger;
use crate::metrics::GatewayMetrics;
use crate::publisher::LogPublisher;
use crate::settings::GatewaySettings;

pub struct AppState {
    pub settings: Arc<GatewaySettings>,
    /// Main database: tenants and keys.
    pub db: PgPool,
    /// Analytics database: read by the admin health view only; never written here.
    pub analytics: PgPool,
    /// Queue Redis, for health and queue statistics (short reply timeouts).
    pub redis: RedisPool,
    pub keys: QueueKeys,
    pub http: reqwest::Client,
    pub publisher: LogPublisher,
    pub metrics: GatewayMetrics,
    pub auth: Authenticator,
    /// The LLM results cache (cache-service), when configured.
    pub llm_cache: Option<cache_client::CacheClient>,
}

impl AppState {
    pub fn call_logger(&self) -> CallLogger {
        CallLogger { publisher: self.publisher.clone(), settings: self.settings.clone(), metrics: self.metrics.clone() }
    }
}

/// The request's id: the client's `X-Request-Id` when usable, else a new one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);
