//! The internal route the gateway calls to match: `POST /internal/v1/match`. The
//! gateway has already checked the caller's company and read the job(s) from the main
//! database; this side searches the vectors, scoped to that company.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use service_kit::AppError;
use service_kit::config::Secret;
use service_kit::request_log::Requester;

use crate::handler::Context;
use crate::matching::{self, JobSpec, MatchSettings, Mode};

/// Most results a match request returns.
pub const MAX_LIMIT: usize = 100;
/// Most jobs one request ranks a CV against.
pub const MAX_JOBS: usize = 200;

pub struct ApiState {
    pub ctx: Arc<Context>,
    pub matching: MatchSettings,
    pub key: Secret,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/internal/v1/match", web::post().to(match_route));
}

/// Either the company's best CVs for one job (`cv_id` absent), or one CV's match with
/// each of the jobs given, best first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRequest {
    pub company_id: i64,
    pub jobs: Vec<JobSpec>,
    #[serde(default)]
    pub cv_id: Option<i64>,
    #[serde(default)]
    pub mode: Mode,
    pub limit: usize,
}

async fn match_route(
    req: HttpRequest,
    state: web::Data<ApiState>,
    body: web::Json<MatchRequest>,
) -> Result<HttpResponse, AppError> {
    service_kit::auth::require_service_key(&req, &state.key, "INTERNAL_API_KEY")?;
    let request = body.into_inner();
    Requester { company_id: Some(request.company_id), user_id: None }.attach(&req);
    if request.limit == 0 || request.limit > MAX_LIMIT {
        return Err(AppError::bad_request("limit", "invalid_value", format!("`limit` must be 1 to {MAX_LIMIT}")));
    }
    if request.jobs.is_empty() || request.jobs.len() > MAX_JOBS {
        return Err(AppError::bad_request("jobs", "invalid_value", format!("`jobs` must hold 1 to {MAX_JOBS} jobs")));
    }
    let ctx = &state.ctx;
    let mut results = Vec::new();
    for job in &request.jobs {
        let ranked =
            matching::rank(&*ctx.vectors, &ctx.embedder, &state.matching, request.company_id, job, request.mode)
                .await
                .map_err(|e| AppError::unavailable("the vector store", e))?;
        match request.cv_id {
            None => results.extend(ranked.into_iter().take(request.limit)),
            Some(cv) => results.extend(ranked.into_iter().filter(|m| m.cv_id == cv)),
        }
    }
    let direction = if request.cv_id.is_some() { "cv_to_jobs" } else { "job_to_cvs" };
    ctx.metrics.matches.with_label_values(&[direction]).inc();
    if request.cv_id.is_some() {
        results.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.job_id.cmp(&b.job_id)));
        results.truncate(request.limit);
    }
    Ok(HttpResponse::Ok().json(json!({ "data": results })))
}
