//! Matching, as the company sees it: `GET /api/v1/jobs/{id}/matches` (the company's
//! best CVs for a job) and `GET /api/v1/cvs/{id}/matches` (a CV's best open jobs). The
//! gateway checks the company owns the job or CV, reads what matching needs from the
//! main database, and asks cv-processor (which holds the vectors). Each (CV, job)
//! result is cached as `match:{cv_id}:{job_id}` for 30 minutes, stamped with the job's
//! and the company's CVs' versions: a changed job, or a CV added, processed again or
//! deleted, makes the stamp differ and the entry is not used.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use common_models::schema::main::{cvs, jobs};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use service_kit::AppError;

use crate::access::Action;
use crate::jobs::{Job, not_found, parse_id};
use crate::state::AppState;

pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 100;
/// Open jobs a CV is matched against, newest first.
pub const MAX_JOBS: i64 = 200;
const NAMESPACE: &str = "match";
const TTL: Duration = Duration::from_secs(30 * 60);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/jobs/{id}/matches", web::get().to(cvs_for_job))
        .route("/api/v1/cvs/{id}/matches", web::get().to(jobs_for_cv));
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct MatchQuery {
    /// Results, 1-100 (default 10).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `hybrid` (default), `dense` (embeddings only) or `keywords` (BM25 only).
    #[param(pattern = "^(hybrid|dense|keywords)$")]
    mode: Option<String>,
}

impl MatchQuery {
    fn resolve(&self) -> Result<(usize, &str), AppError> {
        let limit = match &self.limit {
            None => DEFAULT_LIMIT,
            Some(raw) => raw.parse::<usize>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                AppError::bad_request(
                    "limit",
                    "invalid_value",
                    format!("`limit` must be an integer from 1 to {MAX_LIMIT}"),
                )
            })?,
        };
        let mode = self.mode.as_deref().unwrap_or("hybrid");
        if !["hybrid", "dense", "keywords"].contains(&mode) {
            return Err(AppError::bad_request("mode", "invalid_value", "`mode` must be hybrid, dense or keywords"));
        }
        Ok((limit, mode))
    }
}

/// One (CV, job) result as cv-processor computes it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
struct CvMatch {
    cv_id: i64,
    job_id: i64,
    score: f32,
    requirements_met: usize,
    requirements_total: usize,
    /// Per requirement: whether the CV meets it and the passage that shows it.
    requirements: Value,
}

/// The CV beside a job's result.
#[derive(Serialize, utoipa::ToSchema)]
struct CvCard {
    id: i64,
    file_name: String,
    summary: Option<String>,
}

/// The job beside a CV's result.
#[derive(Serialize, utoipa::ToSchema)]
struct JobCard {
    id: i64,
    title: String,
    location: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct MatchedCv {
    #[serde(flatten)]
    result: CvMatch,
    cv: CvCard,
}

#[derive(Serialize, utoipa::ToSchema)]
struct MatchedJob {
    #[serde(flatten)]
    result: CvMatch,
    job: JobCard,
}

/// A job's best CVs, best first.
#[derive(Serialize, utoipa::ToSchema)]
struct CvsForJob {
    job_id: i64,
    mode: String,
    data: Vec<MatchedCv>,
}

/// A CV's best open jobs, best first.
#[derive(Serialize, utoipa::ToSchema)]
struct JobsForCv {
    cv_id: i64,
    mode: String,
    data: Vec<MatchedJob>,
}

#[derive(Serialize, Deserialize)]
struct Cached {
    stamp: String,
    result: Option<CvMatch>,
}

fn job_spec(job: &Job) -> Value {
    json!({"id": job.id, "title": job.title, "description": job.description, "requirements": job.requirements})
}

/// The company's CV set, as a version: changes when a CV is added, processed or deleted.
async fn cv_generation(state: &AppState, company: i64) -> Result<String, AppError> {
    let mut conn = state.db.get().await?;
    let (count, latest): (i64, Option<DateTime<Utc>>) = cvs::table
        .filter(cvs::company_id.eq(company))
        .select((diesel::dsl::count_star(), diesel::dsl::max(cvs::updated_at)))
        .first(&mut conn)
        .await?;
    Ok(format!("{count}.{}", latest.map_or(0, |t| t.timestamp_micros())))
}

fn stamp(job: &Job, generation: &str, mode: &str) -> String {
    format!("{mode}.{}.{generation}", job.updated_at.timestamp_micros())
}

async fn ask_processor(state: &AppState, body: Value) -> Result<Vec<CvMatch>, AppError> {
    let url = format!("{}/internal/v1/match", state.settings.cv_processor_url.trim_end_matches('/'));
    let mut req = state.http.post(url).timeout(state.settings.match_timeout).json(&body);
    if !state.settings.internal_api_key.expose().is_empty() {
        req = req.bearer_auth(state.settings.internal_api_key.expose());
    }
    let res = req.send().await.map_err(|e| AppError::unavailable("cv-processor", e))?;
    if !res.status().is_success() {
        let status = res.status();
        let detail = res.text().await.unwrap_or_default();
        return Err(AppError::unavailable("cv-processor", anyhow::anyhow!("answered {status}: {detail}")));
    }
    let answer: Value = res.json().await.map_err(|e| AppError::unavailable("cv-processor", e))?;
    serde_json::from_value(answer["data"].clone()).map_err(|e| AppError::unavailable("cv-processor", e))
}

async fn remember(state: &AppState, entries: Vec<(String, Cached)>) {
    let Some(cache) = &state.cache else { return };
    let encoded: Vec<(String, Vec<u8>)> =
        entries.iter().filter_map(|(k, v)| Some((k.clone(), serde_json::to_vec(v).ok()?))).collect();
    let refs: Vec<(&str, &[u8])> = encoded.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    if !refs.is_empty() {
        cache.put_many(NAMESPACE, &refs, Some(TTL)).await;
    }
}

fn key(cv: i64, job: i64) -> String {
    format!("{cv}:{job}")
}

/// File name, status and summary of the CVs, to show beside their scores.
async fn cv_cards(state: &AppState, company: i64, ids: &[i64]) -> Result<Vec<(i64, String, Option<String>)>, AppError> {
    let mut conn = state.db.get().await?;
    Ok(cvs::table
        .filter(cvs::company_id.eq(company).and(cvs::id.eq_any(ids)))
        .select((cvs::id, cvs::file_name, cvs::summary))
        .load(&mut conn)
        .await?)
}

/// The company's best CVs for a job, with the evidence per requirement.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/matches", tag = "matches", params(("id" = i64, Path, minimum = 1, example = 1, description = "The job's id."), MatchQuery),
    responses((status = 200, description = "The best CVs.", body = CvsForJob)))]
async fn cvs_for_job(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let query: MatchQuery = crate::page::query(&req)?;
    let (limit, mode) = query.resolve()?;
    let company = caller.company_id.0;
    let id = parse_id(&id, "job")?;
    let job = {
        let mut conn = state.db.get().await?;
        jobs::table
            .filter(jobs::id.eq(id).and(jobs::company_id.eq(company)))
            .select(Job::as_select())
            .first(&mut conn)
            .await
            .optional()?
            .ok_or_else(|| not_found("job", id))?
    };
    let generation = cv_generation(&state, company).await?;
    let results =
        ask_processor(&state, json!({"company_id": company, "jobs": [job_spec(&job)], "limit": limit, "mode": mode}))
            .await?;
    let stamp = stamp(&job, &generation, mode);
    remember(
        &state,
        results
            .iter()
            .map(|m| (key(m.cv_id, job.id), Cached { stamp: stamp.clone(), result: Some(m.clone()) }))
            .collect(),
    )
    .await;
    let ids: Vec<i64> = results.iter().map(|m| m.cv_id).collect();
    let cards = cv_cards(&state, company, &ids).await?;
    // A CV deleted since its vectors were searched has no card: it is left out.
    let data: Vec<MatchedCv> = results
        .into_iter()
        .filter_map(|m| {
            let (_, file_name, summary) = cards.iter().find(|(id, _, _)| *id == m.cv_id)?;
            let cv = CvCard { id: m.cv_id, file_name: file_name.clone(), summary: summary.clone() };
            Some(MatchedCv { result: m, cv })
        })
        .collect();
    Ok(HttpResponse::Ok().json(CvsForJob { job_id: job.id, mode: mode.to_owned(), data }))
}

/// A CV's best open jobs, with the evidence per requirement.
#[utoipa::path(get, path = "/api/v1/cvs/{id}/matches", tag = "matches", params(("id" = i64, Path, minimum = 1, example = 1, description = "The CV's id."), MatchQuery),
    responses((status = 200, description = "The best open jobs.", body = JobsForCv)))]
async fn jobs_for_cv(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let query: MatchQuery = crate::page::query(&req)?;
    let (limit, mode) = query.resolve()?;
    let company = caller.company_id.0;
    let id = parse_id(&id, "CV")?;
    let open_jobs: Vec<Job> = {
        let mut conn = state.db.get().await?;
        let exists: Option<i64> = cvs::table
            .filter(cvs::id.eq(id).and(cvs::company_id.eq(company)))
            .select(cvs::id)
            .first(&mut conn)
            .await
            .optional()?;
        exists.ok_or_else(|| not_found("CV", id))?;
        jobs::table
            .filter(jobs::company_id.eq(company).and(jobs::status.eq("open")))
            .order(jobs::id.desc())
            .limit(MAX_JOBS)
            .select(Job::as_select())
            .load(&mut conn)
            .await?
    };
    if open_jobs.is_empty() {
        return Ok(HttpResponse::Ok().json(JobsForCv { cv_id: id, mode: mode.to_owned(), data: Vec::new() }));
    }
    let generation = cv_generation(&state, company).await?;
    let keys: Vec<String> = open_jobs.iter().map(|j| key(id, j.id)).collect();
    let cached: Vec<Option<Cached>> = match &state.cache {
        Some(cache) => {
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            cache
                .get_many(NAMESPACE, &refs)
                .await
                .into_iter()
                .map(|v| v.and_then(|b| serde_json::from_slice(&b).ok()))
                .collect()
        }
        None => vec![],
    };
    let mut results: Vec<CvMatch> = Vec::new();
    let mut missing: Vec<&Job> = Vec::new();
    for (i, job) in open_jobs.iter().enumerate() {
        match cached.get(i).and_then(Option::as_ref) {
            Some(entry) if entry.stamp == stamp(job, &generation, mode) => results.extend(entry.result.clone()),
            _ => missing.push(job),
        }
    }
    let hits = open_jobs.len() - missing.len();
    state.metrics.match_cache.with_label_values(&["hit"]).inc_by(hits as u64);
    state.metrics.match_cache.with_label_values(&["miss"]).inc_by(missing.len() as u64);
    if !missing.is_empty() {
        let specs: Vec<Value> = missing.iter().map(|j| job_spec(j)).collect();
        let fresh = ask_processor(
            &state,
            json!({"company_id": company, "cv_id": id, "jobs": specs, "limit": crate::matches::MAX_LIMIT, "mode": mode}),
        )
        .await?;
        // A job the CV has no chunk for is remembered as no match.
        let entries = missing
            .iter()
            .map(|job| {
                let result = fresh.iter().find(|m| m.job_id == job.id).cloned();
                (key(id, job.id), Cached { stamp: stamp(job, &generation, mode), result })
            })
            .collect();
        remember(&state, entries).await;
        results.extend(fresh);
    }
    results.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.job_id.cmp(&b.job_id)));
    results.truncate(limit);
    let data: Vec<MatchedJob> = results
        .into_iter()
        .filter_map(|m| {
            let job = open_jobs.iter().find(|j| j.id == m.job_id)?;
            let card = JobCard { id: job.id, title: job.title.clone(), location: job.location.clone() };
            Some(MatchedJob { result: m, job: card })
        })
        .collect();
    Ok(HttpResponse::Ok().json(JobsForCv { cv_id: id, mode: mode.to_owned(), data }))
}
