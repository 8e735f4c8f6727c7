//! Admin routes, guarded by `ADMIN_API_KEY`: tenant creation and the health view of
//! the logging pipeline (seed 004's `/api/v1/admin/health`).

use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, TimeZone, Utc};
use common_models::queue::{CONSUMER_GROUP, LogStream};
use common_models::schema::main::{api_keys, companies};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use redis::AsyncCommands;
use redis::streams::StreamInfoGroupsReply;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{generate_key, require_admin};
use crate::error::ApiError;
use crate::state::AppState;

/// A worker whose last heartbeat is older than this is reported as not alive.
const WORKER_STALE_AFTER: Duration = Duration::from_secs(15);
const COMPANY_NAME_MAX: usize = 200;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/admin/companies", web::post().to(create_company))
        .route("/api/v1/admin/health", web::get().to(health));
}

#[derive(Deserialize)]
struct NewCompanyRequest {
    name: Option<Value>,
}

#[derive(Serialize)]
struct CompanyView {
    id: i64,
    name: String,
    created_at: DateTime<Utc>,
}

async fn create_company(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<NewCompanyRequest>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.settings.admin_api_key)?;
    let name = match &body.name {
        Some(Value::String(n)) if !n.trim().is_empty() && n.trim().chars().count() <= COMPANY_NAME_MAX => {
            n.trim().to_owned()
        }
        Some(Value::String(_)) => {
            return Err(ApiError::bad_request(
                "name",
                "invalid_value",
                format!("`name` must be 1-{COMPANY_NAME_MAX} characters, not blank"),
            ));
        }
        Some(_) => return Err(ApiError::bad_request("name", "invalid_type", "`name` must be a string")),
        None => return Err(ApiError::bad_request("name", "missing_field", "`name` is required")),
    };
    let (key, prefix, digest) = generate_key().map_err(ApiError::Internal)?;

    let mut conn = state.db.get().await?;
    let (company, key_id) = conn
        .transaction::<_, diesel::result::Error, _>(async move |conn| {
            let company: (i64, String, DateTime<Utc>) = diesel::insert_into(companies::table)
                .values(companies::name.eq(&name))
                .returning((companies::id, companies::name, companies::created_at))
                .get_result(conn)
                .await?;
            let key_id: i64 = diesel::insert_into(api_keys::table)
                .values((
                    api_keys::company_id.eq(company.0),
                    api_keys::name.eq("default"),
                    api_keys::key_prefix.eq(&prefix),
                    api_keys::key_hash.eq(digest.as_slice()),
                ))
                .returning(api_keys::id)
                .get_result(conn)
                .await?;
            Ok((company, key_id))
        })
        .await?;
    Ok(HttpResponse::Created().json(json!({
        "company": CompanyView { id: company.0, name: company.1, created_at: company.2 },
        "api_key": {
            "id": key_id,
            "name": "default",
            "prefix": &key[..9],
            "key": key,
            "note": "store this key now: it is shown only once"
        }
    })))
}

async fn health(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state.settings.admin_api_key)?;
    let (analytics, redis_view) = tokio::join!(analytics_status(&state), redis_status(&state));
    let analytics_ok = analytics["reachable"] == Value::Bool(true);
    let (queues, worker, last_write, redis_ok) = match redis_view {
        Ok(view) => (view.queues, view.worker, view.last_write, true),
        Err(err) => {
            let unknown = json!({"error": format!("redis unreachable: {err}")});
            (unknown.clone(), unknown, Value::Null, false)
        }
    };
    let worker_ok = worker["alive"] == Value::Bool(true);
    let status = if analytics_ok && redis_ok && worker_ok { "ok" } else { "degraded" };
    Ok(HttpResponse::Ok().json(json!({
        "status": status,
        "analytics_db": analytics,
        "redis": {"reachable": redis_ok},
        "queues": queues,
        "worker": worker,
        "last_analytics_write": last_write,
        "publisher": {
            "buffered": state.metrics.log_events_buffered.get(),
            "capacity": state.settings.log_buffer_capacity,
        },
    })))
}

async fn analytics_status(state: &AppState) -> Value {
    let started = Instant::now();
    let probe = async {
        let mut conn = state.analytics.get().await.map_err(|e| e.to_string())?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(_)) => json!({"reachable": true, "latency_ms": started.elapsed().as_secs_f64() * 1000.0}),
        Ok(Err(err)) => json!({"reachable": false, "error": err}),
        Err(_) => json!({"reachable": false, "error": "no answer within 2 s"}),
    }
}

struct RedisView {
    queues: Value,
    worker: Value,
    last_write: Value,
}

async fn redis_status(state: &AppState) -> anyhow::Result<RedisView> {
    let mut conn = state.redis.get().await?;
    let mut queues = serde_json::Map::new();
    for stream in LogStream::ALL {
        let key = state.keys.stream(stream);
        let depth: u64 = conn.xlen(&key).await?;
        let dead: u64 = conn.xlen(state.keys.dead_letter(stream)).await?;
        let groups: redis::RedisResult<StreamInfoGroupsReply> = conn.xinfo_groups(&key).await;
        let group = groups.ok().and_then(|g| g.groups.into_iter().find(|g| g.name == CONSUMER_GROUP));
        queues.insert(
            stream.name().to_owned(),
            json!({
                "depth": depth,
                "pending": group.as_ref().map(|g| g.pending),
                "lag": group.as_ref().and_then(|g| g.lag),
                "consumers": group.as_ref().map(|g| g.consumers),
                "dead_letter": dead,
            }),
        );
    }
    let beats: Vec<(String, i64)> = conn.zrange_withscores(state.keys.heartbeats(), 0, -1).await?;
    let now_ms = Utc::now().timestamp_millis();
    let stale_ms = i64::try_from(WORKER_STALE_AFTER.as_millis()).unwrap_or(i64::MAX);
    let latest = beats.iter().map(|(_, at)| *at).max();
    let consumers: Vec<Value> = beats
        .iter()
        .map(|(name, at)| json!({"name": name, "last_heartbeat": ms_to_time(*at), "alive": now_ms - at <= stale_ms}))
        .collect();
    let worker = json!({
        "alive": latest.is_some_and(|at| now_ms - at <= stale_ms),
        "last_heartbeat": latest.map(ms_to_time),
        "seconds_since_heartbeat": latest.map(|at| (now_ms - at) as f64 / 1000.0),
        "workers": consumers,
    });
    let last_write: Option<i64> = conn.get(state.keys.last_write_at()).await?;
    Ok(RedisView { queues: Value::Object(queues), worker, last_write: json!(last_write.map(ms_to_time)) })
}

fn ms_to_time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}
