//! The endpoints every service answers for its orchestrator and Prometheus: `/healthz`
//! (the process answers), `/readyz` (it can do its work: its required dependencies
//! answer) and `/metrics` (Prometheus text).

use actix_web::{HttpResponse, web};
use prometheus::Registry;
use serde_json::json;

use crate::checks::Readiness;
use crate::telemetry::{METRICS_CONTENT_TYPE, render_metrics};

/// What the probe endpoints read, shared as `web::Data<Probes>`.
pub struct Probes {
    pub registry: Registry,
    pub readiness: Readiness,
}

/// Adds `/healthz`, `/readyz` and `/metrics`; the app must hold `web::Data<Probes>`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 when every required dependency answers, else 503; both name each dependency.
pub async fn readyz(probes: web::Data<Probes>) -> HttpResponse {
    let (ready, body) = probes.readiness.check().await;
    let mut res = if ready { HttpResponse::Ok() } else { HttpResponse::ServiceUnavailable() };
    res.json(body)
}

pub async fn metrics(probes: web::Data<Probes>) -> HttpResponse {
    HttpResponse::Ok().content_type(METRICS_CONTENT_TYPE).body(render_metrics(&probes.registry))
}
