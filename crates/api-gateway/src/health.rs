//! Probes and metrics: `/healthz` (the process answers), `/readyz` (it can serve:
//! the main database answers), `/metrics` (Prometheus text).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use common_models::telemetry::{METRICS_CONTENT_TYPE, render_metrics};
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let db = async {
        let mut conn = state.db.get().await.ok()?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await.ok()
    };
    let redis = async {
        let mut conn = state.redis.get().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut *conn).await.ok()
    };
    let limit = Duration::from_secs(2);
    let (db, redis) = tokio::join!(tokio::time::timeout(limit, db), tokio::time::timeout(limit, redis));
    let (db_ok, redis_ok) = (matches!(db, Ok(Some(_))), matches!(redis, Ok(Some(_))));
    // Redis being down does not stop the API (log events wait in the buffer), so it
    // is reported but does not take the gateway out of rotation: that would turn a
    // logging outage into an API outage.
    let body = json!({"main_db": db_ok, "redis": redis_ok});
    if db_ok { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type(METRICS_CONTENT_TYPE).body(render_metrics(&state.metrics.registry))
}
