//! The API response cache (seed 003 pattern 2): list pages of jobs, CVs and
//! applications, kept 5 minutes in cache-service's `api` namespace. A page is keyed by
//! company, role, the company's list generation and the query, so companies and roles
//! never share one, and any change to the company's jobs, CVs or applications (and
//! every CV status event cv-processor emits) moves the generation on: a stale page is
//! never served. A request with `Cache-Control: no-cache` skips the cache. Without
//! cache-service, or while Redis does not answer, lists come straight from the database.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use common_models::cv::events::api_generation;
use redis::AsyncCommands;
use serde::Serialize;
use service_kit::AppError;
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::state::AppState;

const NAMESPACE: &str = "api";
/// How long the generation outlives the company's last change.
const GENERATION_TTL_MS: i64 = 24 * 3_600 * 1_000;

/// Where a list page is (or would be) cached; `None`: not cached.
pub struct Slot(Option<String>);

/// The cache key for `caller`'s page of `resource` at `req`'s query.
pub async fn slot(state: &AppState, req: &HttpRequest, caller: &Caller, resource: &str) -> Slot {
    if state.cache.is_none() || bypassed(req) {
        return Slot(None);
    }
    let generation: redis::RedisResult<Option<u64>> = async {
        let mut conn = state.hot_redis.conn().await?;
        conn.get(api_generation(state.keys.prefix(), caller.company_id)).await
    }
    .await;
    let Ok(generation) = generation else {
        state.metrics.api_cache.with_label_values(&["bypassed"]).inc();
        return Slot(None);
    };
    let query = crate::sessions::hex(&Sha256::digest(req.query_string().as_bytes()));
    Slot(Some(format!(
        "{}:{}:{}:{resource}:{}",
        caller.company_id,
        generation.unwrap_or(0),
        caller.role.as_str(),
        &query[..32]
    )))
}

fn bypassed(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|d| matches!(d.trim(), "no-cache" | "no-store")))
}

impl Slot {
    /// The cached page, answered as it was stored.
    pub async fn hit(&self, state: &AppState) -> Option<HttpResponse> {
        let (key, cache) = (self.0.as_ref()?, state.cache.as_ref()?);
        match cache.get(NAMESPACE, key).await {
            Some(body) => {
                state.metrics.api_cache.with_label_values(&["hit"]).inc();
                Some(HttpResponse::Ok().content_type("application/json").insert_header(("x-cache", "hit")).body(body))
            }
            None => {
                state.metrics.api_cache.with_label_values(&["miss"]).inc();
                None
            }
        }
    }

    /// Answers `page`, keeping it for the next reader.
    pub async fn answer<T: Serialize>(self, state: &AppState, page: &T) -> Result<HttpResponse, AppError> {
        let body = bytes::Bytes::from(serde_json::to_vec(page).map_err(AppError::internal)?);
        if let (Some(key), Some(cache)) = (self.0, state.cache.as_ref()) {
            cache.put(NAMESPACE, &key, body.clone(), None).await;
        }
        Ok(HttpResponse::Ok().content_type("application/json").insert_header(("x-cache", "miss")).body(body))
    }
}

/// Moves `company`'s list generation on after a change, before the change is answered,
/// so the writer's next read is fresh. A failure is logged: pages cached before it may
/// be served until they expire (5 minutes).
pub async fn changed(state: &AppState, company: i64) {
    let key = api_generation(state.keys.prefix(), common_models::ids::CompanyId(company));
    let done: anyhow::Result<()> = async {
        let mut conn = state.hot_redis.conn().await?;
        redis::pipe()
            .incr(&key, 1)
            .ignore()
            .pexpire(&key, GENERATION_TTL_MS)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
    .await;
    if let Err(err) = done {
        tracing::warn!(company_id = company, error = %err, "cached lists could not be invalidated; they lapse within 5 minutes");
    }
}
