//! Per-request middleware (inside the request-id layer): measures the request and emits
//! one `system_logs` event per API request. Probes (`/healthz`, `/readyz`, `/metrics`)
//! are counted in metrics but not logged, or they would drown the table.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use common_models::events::{SystemLogEvent, new_event_id};
use service_kit::request_id::RequestId;

use crate::auth::Caller;
use crate::logged::{MAX_PATH_BYTES, cut};
use crate::state::AppState;

const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let started = Instant::now();
    let created_at = common_models::events::event_time();
    let method = req.method().to_string();
    let path = cut(req.path(), MAX_PATH_BYTES);
    let state = req.app_data::<web::Data<AppState>>().cloned();

    let res = next.call(req).await?;

    let Some(state) = state else { return Ok(res) };
    let status = res.status();
    let elapsed = started.elapsed();
    let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    state.metrics.http_requests.with_label_values(&[&method, &route, status.as_str()]).inc();
    state.metrics.http_duration.with_label_values(&[&route]).observe(elapsed.as_secs_f64());
    if PROBES.contains(&path.as_str()) {
        return Ok(res);
    }
    let caller = res.request().extensions().get::<Caller>().copied();
    let request_id = RequestId::of(res.request());
    let (level, error_type) = match status.as_u16() {
        500.. => ("error", Some("server_error".to_owned())),
        400..=499 => ("warning", Some("client_error".to_owned())),
        _ => ("info", None),
    };
    state.producer.publish(&SystemLogEvent {
        event_id: new_event_id(),
        created_at,
        level: level.to_owned(),
        component: "api-gateway".to_owned(),
        message: format!("{method} {path} {}", status.as_u16()),
        request_method: Some(method),
        request_path: Some(path),
        status_code: i16::try_from(status.as_u16()).ok(),
        latency_ms: Some(elapsed.as_secs_f64() * 1000.0),
        company_id: caller.map(|c| c.company_id),
        user_id: caller.and_then(|c| c.user_id),
        request_id,
        error_type,
        metadata: None,
    });
    Ok(res)
}
