//! The HTTP API. Values are raw bytes (`application/octet-stream`) both ways.
//!
//! - `GET /v1/cache/{namespace}/{key}`: 200 with the value (header `x-cache-tier`:
//!   `l1` or `redis`), 404 on a miss.
//! - `PUT /v1/cache/{namespace}/{key}?ttl=SECONDS`: stores the body; 204.
//! - `DELETE /v1/cache/{namespace}/{key}`: 204.
//! - `POST /v1/cache/{namespace}/_batch/get` with `{"keys": [...]}`: the values framed
//!   as in `common_models::cache_wire`, in request order, misses marked.
//! - `POST /v1/cache/{namespace}/_batch/put?ttl=SECONDS` with a framed body; 204.
//! - `DELETE /v1/cache/{namespace}` (admin key): flushes the namespace everywhere.
//!
//! With `cache_api_key` set, every route above but the flush wants it as a bearer token
//! (401 without): whoever can reach the port cannot read or plant values.
//! - `GET /v1/stats`, `/metrics`, `/healthz`, `/readyz`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use common_models::cache_wire;
use serde::Deserialize;
use serde_json::json;
use service_kit::AppError;
use service_kit::auth::require_admin;
use service_kit::telemetry::{METRICS_CONTENT_TYPE, render_metrics};

use crate::settings::CacheSettings;
use crate::store::CacheStore;

/// Header names and values built once, not parsed per response.
const X_CACHE_TIER: HeaderName = HeaderName::from_static("x-cache-tier");
const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

pub struct AppState {
    pub store: Arc<CacheStore>,
    pub settings: Arc<CacheSettings>,
    pub registry: prometheus::Registry,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    // Everything under /v1/cache is dispatched by hand: actix matches `{segment}`
    // patterns with regular expressions, which cost more than the L1 look-up itself.
    cfg.service(web::scope("/v1/cache").default_service(web::to(dispatch)))
        .route("/v1/stats", web::get().to(stats))
        .route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

#[derive(Deserialize)]
struct TtlQuery {
    ttl: Option<String>,
}

impl AppState {
    /// The namespace's default TTL, or 404 naming the known ones.
    fn namespace_ttl(&self, namespace: &str) -> Result<u64, AppError> {
        self.settings.namespaces.get(namespace).map(Duration::as_secs).ok_or_else(|| {
            let known: Vec<&str> = self.settings.namespaces.keys().map(String::as_str).collect();
            AppError::not_found(format!("unknown namespace `{namespace}`; known: {}", known.join(", ")))
                .with_param("namespace")
        })
    }

    fn check_key(&self, key: &str) -> Result<(), AppError> {
        if key.is_empty() || key.len() > self.settings.max_key_bytes {
            return Err(AppError::bad_request(
                "key",
                "invalid_key",
                format!("keys are 1-{} bytes", self.settings.max_key_bytes),
            ));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
            return Err(AppError::bad_request(
                "key",
                "invalid_key",
                "keys are visible ASCII characters other than `/`",
            ));
        }
        // URL parsers fold these path segments away, so no HTTP client could reach them.
        if key == "." || key == ".." {
            return Err(AppError::bad_request("key", "invalid_key", "`.` and `..` cannot be keys"));
        }
        Ok(())
    }

    /// A batch get body holds at most `max_batch_keys` JSON strings of `max_key_bytes`
    /// (each escape doubling a character at most); anything longer is refused unread.
    fn batch_get_body_limit(&self) -> usize {
        self.settings.max_batch_keys * (2 * self.settings.max_key_bytes + 3) + 64
    }

    fn ttl(&self, namespace: &str, query: &TtlQuery) -> Result<Duration, AppError> {
        let default = self.namespace_ttl(namespace)?;
        let secs = match &query.ttl {
            None => default,
            Some(raw) => match raw.parse::<u64>() {
                Ok(t) if (1..=self.settings.max_ttl_secs()).contains(&t) => t,
                _ => {
                    return Err(AppError::bad_request(
                        "ttl",
                        "invalid_ttl",
                        format!("`ttl` must be whole seconds between 1 and {}", self.settings.max_ttl_secs()),
                    ));
                }
            },
        };
        Ok(Duration::from_secs(secs))
    }
}

/// Reads a body of at most `limit` bytes; errors name `param`.
async fn read_limited(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    param: &'static str,
) -> Result<Bytes, AppError> {
    let deadline = service_kit::body::DEFAULT_DEADLINE;
    service_kit::body::read_limited(req, payload, limit, deadline).await.map_err(|e| match e {
        service_kit::body::BodyError::TooLarge { limit } => AppError::too_large(Some(param), limit),
        slow @ service_kit::body::BodyError::TooSlow { .. } => AppError::from(slow),
        other => AppError::bad_request(param, "invalid_body", other.to_string()),
    })
}

/// Routes `/v1/cache/{namespace}[/{key} | /_batch/get | /_batch/put]` by method.
async fn dispatch(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    use actix_web::http::Method;
    // Only writes take a query (`ttl`); reads do not pay for parsing one.
    let query = || {
        web::Query::<TtlQuery>::from_query(req.query_string())
            .map(web::Query::into_inner)
            .map_err(|e| AppError::bad_request("ttl", "invalid_query", e.to_string()))
    };
    let rest = req.path().strip_prefix("/v1/cache/").unwrap_or_default();
    // At most three segments are meaningful; a fourth marks the path as unknown.
    let mut segments = [""; 4];
    let mut count = 0;
    for segment in rest.split('/') {
        if count == segments.len() {
            return Err(service_kit::error::no_route(&req));
        }
        segments[count] = segment;
        count += 1;
    }
    let method = req.method().clone();
    // A flush answers to the admin key alone; everything else to the service credential.
    if !(count == 1 && method == Method::DELETE) {
        service_kit::auth::require_service_key(&req, &state.settings.cache_api_key, "CACHE_API_KEY")?;
    }
    match (&segments[..count], method) {
        ([namespace, "_batch", "get"], Method::POST) => batch_get(&req, &state, namespace, payload).await,
        ([namespace, "_batch", "put"], Method::POST) => batch_put(&req, &state, namespace, &query()?, payload).await,
        ([namespace, key], Method::GET) => get(&state, namespace, &percent_decode(key)?).await,
        ([namespace, key], Method::PUT) => {
            put(&req, &state, namespace, percent_decode(key)?.into_owned(), &query()?, payload).await
        }
        ([namespace, key], Method::DELETE) => delete(&state, namespace, &percent_decode(key)?).await,
        ([namespace], Method::DELETE) => flush(&req, &state, namespace).await,
        ([_] | [_, _] | [_, "_batch", _], _) => Err(AppError::new(
            service_kit::ErrorKind::MethodNotAllowed,
            format!("method not allowed: {} {}", req.method(), req.path()),
        )
        .with_code("method_not_allowed")),
        _ => Err(service_kit::error::no_route(&req)),
    }
}

/// Decodes `%XX` escapes in a key taken from the path.
fn percent_decode(raw: &str) -> Result<Cow<'_, str>, AppError> {
    if !raw.contains('%') {
        return Ok(Cow::Borrowed(raw));
    }
    let bad = || AppError::bad_request("key", "invalid_key", "the key's percent-encoding is malformed");
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map(Cow::Owned).map_err(|_| bad())
}

async fn get(state: &AppState, namespace: &str, key: &str) -> Result<HttpResponse, AppError> {
    state.namespace_ttl(namespace)?;
    state.check_key(key)?;
    match state.store.get(namespace, key).await {
        Some((bytes, tier)) => Ok(HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, OCTET_STREAM))
            .insert_header((X_CACHE_TIER, HeaderValue::from_static(tier.as_str())))
            .body(bytes)),
        None => Err(AppError::not_found(format!("`{namespace}:{key}` is not cached"))),
    }
}

async fn put(
    req: &HttpRequest,
    state: &AppState,
    namespace: &str,
    key: String,
    query: &TtlQuery,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let ttl = state.ttl(namespace, query)?;
    state.check_key(&key)?;
    let value = read_limited(req, payload, state.settings.max_value_bytes, "body").await?;
    state.store.put_many(namespace, vec![(key, value)], ttl).await;
    Ok(HttpResponse::NoContent().finish())
}

async fn delete(state: &AppState, namespace: &str, key: &str) -> Result<HttpResponse, AppError> {
    state.namespace_ttl(namespace)?;
    state.check_key(key)?;
    state.store.delete(namespace, key).await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct BatchGet {
    keys: Vec<String>,
}

async fn batch_get(
    req: &HttpRequest,
    state: &AppState,
    namespace: &str,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    state.namespace_ttl(namespace)?;
    let body = read_limited(req, payload, state.batch_get_body_limit(), "body").await?;
    let request: BatchGet = serde_json::from_slice(&body)
        .map_err(|e| AppError::bad_request("keys", "invalid_body", format!("expected {{\"keys\": [...]}}: {e}")))?;
    if request.keys.len() > state.settings.max_batch_keys {
        return Err(AppError::bad_request(
            "keys",
            "too_many_keys",
            format!("at most {} keys per batch", state.settings.max_batch_keys),
        ));
    }
    for key in &request.keys {
        state.check_key(key)?;
    }
    let keys: Vec<&str> = request.keys.iter().map(String::as_str).collect();
    let found = state.store.get_many(namespace, &keys).await;
    let values: Vec<Option<Bytes>> = found.into_iter().map(|f| f.map(|(b, _)| b)).collect();
    let framed = cache_wire::encode_values(&values).map_err(AppError::internal)?;
    Ok(HttpResponse::Ok().insert_header((CONTENT_TYPE, OCTET_STREAM)).body(framed))
}

async fn batch_put(
    req: &HttpRequest,
    state: &AppState,
    namespace: &str,
    query: &TtlQuery,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let ttl = state.ttl(namespace, query)?;
    let body = read_limited(req, payload, state.settings.max_batch_bytes, "body").await?;
    let entries = cache_wire::decode_entries(&body, state.settings.max_batch_keys).map_err(|e| match e {
        cache_wire::FrameError::TooManyEntries(max) => {
            AppError::bad_request("body", "too_many_keys", format!("at most {max} entries per batch"))
        }
        other => AppError::bad_request("body", "invalid_frame", other.to_string()),
    })?;
    let mut owned = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        state.check_key(&key)?;
        if value.len() > state.settings.max_value_bytes {
            return Err(AppError::new(
                service_kit::ErrorKind::PayloadTooLarge,
                format!("the value of `{key}` exceeds the limit of {} bytes", state.settings.max_value_bytes),
            )
            .with_param("body")
            .with_code("too_large"));
        }
        // A copy, not a slice: a slice would keep the whole body alive in L1 while
        // L1 counts only the value's bytes.
        owned.push((key, Bytes::copy_from_slice(value)));
    }
    state.store.put_many(namespace, owned, ttl).await;
    Ok(HttpResponse::NoContent().finish())
}

async fn flush(req: &HttpRequest, state: &AppState, namespace: &str) -> Result<HttpResponse, AppError> {
    require_admin(req, &state.settings.cache_admin_api_key, "CACHE_ADMIN_API_KEY")?;
    state.namespace_ttl(namespace)?;
    let removed =
        state.store.flush(namespace).await.map_err(|e| AppError::unavailable("the cache Redis", anyhow::anyhow!(e)))?;
    Ok(HttpResponse::Ok().json(json!({"namespace": namespace, "removed": removed})))
}

/// Reads Redis INFO into the gauges; `None` when Redis does not answer.
async fn refresh_redis_gauges(store: &CacheStore) -> Option<String> {
    let info = async {
        let mut conn = store.conn().await.ok()?;
        redis::cmd("INFO").arg("memory").arg("stats").query_async::<String>(&mut conn).await.ok()
    };
    let info = tokio::time::timeout(Duration::from_secs(1), info).await.ok().flatten()?;
    let field = |name: &str| service_kit::redis::info_field(&info, name);
    let number = |name: &str| field(name).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    store.metrics.redis_used_memory.set(number("used_memory"));
    store.metrics.redis_maxmemory.set(number("maxmemory"));
    store.metrics.redis_evicted_keys.set(number("evicted_keys"));
    field("maxmemory_policy").map(str::to_owned)
}

fn refresh_l1_gauges(store: &CacheStore) {
    let (entries, bytes) = store.l1_size();
    store.metrics.l1_entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
    store.metrics.l1_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

async fn stats(state: web::Data<AppState>) -> HttpResponse {
    let store = &state.store;
    refresh_l1_gauges(store);
    let policy = refresh_redis_gauges(store).await;
    let m = &store.metrics;
    let count = |ns: &str, tier: &str, result: &str| m.lookups.with_label_values(&[ns, tier, result]).get();
    let mut namespaces = serde_json::Map::new();
    for (ns, ttl) in &state.settings.namespaces {
        let (l1_hits, l1_misses) = (count(ns, "l1", "hit"), count(ns, "l1", "miss"));
        let (redis_hits, redis_misses) = (count(ns, "redis", "hit"), count(ns, "redis", "miss"));
        let lookups = l1_hits + l1_misses.max(redis_hits + redis_misses);
        let hits = l1_hits + redis_hits;
        namespaces.insert(
            ns.clone(),
            json!({
                "default_ttl_secs": ttl,
                "l1": {"hits": l1_hits, "misses": l1_misses},
                "redis": {"hits": redis_hits, "misses": redis_misses},
                "hit_rate": if lookups == 0 { None } else { Some(hits as f64 / lookups as f64) },
            }),
        );
    }
    HttpResponse::Ok().json(json!({
        "namespaces": namespaces,
        "l1": {
            "entries": m.l1_entries.get(),
            "bytes": m.l1_bytes.get(),
            "max_bytes": state.settings.l1_max_bytes,
            "max_ttl_secs": state.settings.l1_max_ttl.as_secs(),
        },
        "redis": {
            "reachable": policy.is_some(),
            "used_memory": m.redis_used_memory.get(),
            "maxmemory": m.redis_maxmemory.get(),
            "maxmemory_policy": policy,
            "evicted_keys": m.redis_evicted_keys.get(),
        },
        "fallback_active": store.is_degraded(),
        "fallback_writes_pending": m.fallback_writes_pending.get(),
    }))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    refresh_l1_gauges(&state.store);
    refresh_redis_gauges(&state.store).await;
    HttpResponse::Ok().content_type(METRICS_CONTENT_TYPE).body(render_metrics(&state.registry))
}

async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let status = if state.store.is_degraded() { "degraded" } else { "ok" };
    HttpResponse::Ok().json(json!({"status": status, "fallback_active": state.store.is_degraded()}))
}

/// Always ready: with Redis down, L1 still serves (and health says degraded).
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"ready": true, "redis": !state.store.is_degraded()}))
}
