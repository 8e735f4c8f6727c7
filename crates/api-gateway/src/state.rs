//! The state every handler shares.

use std::sync::Arc;

use common_models::cv::{StatusEvent, events};
use common_models::storage::FileStore;
use service_kit::db::PgPool;
use task_queue::{Keys, Producer};

use crate::auth::Authenticator;
use crate::llm::record::CallLogger;
use crate::metrics::GatewayMetrics;
use crate::settings::GatewaySettings;

pub struct AppState {
    pub settings: Arc<GatewaySettings>,
    /// Main database: tenants and keys.
    pub db: PgPool,
    /// Analytics database: read by the admin health view only; never written here.
    pub analytics: PgPool,
    /// Where the analytics API reads (a replica, or the analytics database).
    pub analytics_read: PgPool,
    /// Queue Redis, for the admin health view (short reply timeouts).
    pub redis: service_kit::redis::Pool,
    pub keys: Keys,
    pub http: reqwest::Client,
    /// Log events to the queue; never waits.
    pub producer: Producer,
    pub metrics: GatewayMetrics,
    pub auth: Arc<Authenticator>,
    pub passwords: crate::password::Passwords,
    /// Redis for the per-request checks and the list cache's generations (one
    /// multiplexed connection).
    pub hot_redis: crate::hot_redis::HotRedis,
    /// Rate limits, LLM concurrency, budgets.
    pub limits: Arc<crate::limits::Limits>,
    /// `X-Interview-Id` checks, remembered.
    pub interviews: crate::recruiting::InterviewCheck,
    /// cache-service (LLM results, match results), when configured.
    pub cache: Option<cache_client::CacheClient>,
    /// Seals the LLM answers stored in the cache, and opens them.
    pub seal: crate::llm::seal::Seal,
    /// Original CV files.
    pub files: Arc<dyn FileStore>,
    /// CV status events, for this replica's watching clients.
    pub events: Arc<crate::events::EventHub>,
}

impl AppState {
    /// The caller, if its role (and a key's scopes) allow `action` and its rate limits
    /// have room: 401, 403 or 429 otherwise.
    pub async fn allow(
        &self,
        req: &actix_web::HttpRequest,
        action: crate::access::Action,
    ) -> Result<crate::auth::Caller, service_kit::AppError> {
        let caller = self.auth.allow(req, action).await?;
        self.limits.admit(req, &caller).await?;
        Ok(caller)
    }

    pub fn call_logger(&self) -> CallLogger {
        CallLogger {
            producer: self.producer.clone(),
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
        }
    }

    /// Tells watching clients about a CV's or an analysis's new status, without waiting
    /// for Redis.
    pub fn emit_event(&self, event: StatusEvent) {
        let (redis, prefix) = (self.redis.clone(), self.keys.prefix().to_owned());
        tokio::spawn(async move {
            if let Err(err) = events::emit(&redis, &prefix, &event).await {
                tracing::warn!(company_id = %event.company_id(), error = %err, "a status event could not be published");
            }
        });
    }
}
