//! The worker's own HTTP endpoints: `/metrics`, `/healthz`, `/readyz`. No public traffic.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use common_models::telemetry::{METRICS_CONTENT_TYPE, render_metrics};
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::consumer::Shared;

pub fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) -> std::io::Result<Server> {
    let data = web::Data::from(shared);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?
    .run())
}

async fn metrics(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().content_type(METRICS_CONTENT_TYPE).body(render_metrics(&shared.metrics.registry))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when both Redis and the analytics database answer.
async fn readyz(shared: web::Data<Shared>) -> HttpResponse {
    let redis_ok = async {
        let mut conn = shared.redis.get().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut *conn).await.ok()
    };
    let db_ok = async {
        let mut conn = shared.writer.pool().get().await.ok()?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await.ok()
    };
    let limit = Duration::from_secs(2);
    let (redis_ok, db_ok) = tokio::join!(tokio::time::timeout(limit, redis_ok), tokio::time::timeout(limit, db_ok));
    let redis_ok = matches!(redis_ok, Ok(Some(_)));
    let db_ok = matches!(db_ok, Ok(Some(_)));
    let body = json!({"redis": redis_ok, "analytics_db": db_ok});
    if redis_ok && db_ok { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}
