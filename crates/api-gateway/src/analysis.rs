//! Analyses of applications (see `common_models::analysis`): requested here, run by
//! cv-processor through this gateway's own LLM route, read back here.
//!
//! - `POST /api/v1/applications/{id}/analysis`: 202 with the queued analysis and its
//!   `Location`; the application's CV must be processed (409 otherwise). Takes the
//!   `llm` permission: an analysis is an LLM call on the company's budget.
//! - `GET /api/v1/analyses/{id}`: from the cache first (a finished analysis is cached
//!   for 7 days, `x-cache: hit`), else the main database (and a finished one is cached).
//! - `GET /api/v1/applications/{id}/analyses`: the application's analyses, newest first.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use common_models::analysis::{
    AnalysisRow, AnalysisStatusEvent, AnalysisView, AnalyzeApplication, CACHE_NAMESPACE, CACHE_TTL, cache_key,
};
use common_models::cv::{CvStatus, StatusEvent};
use common_models::ids::CompanyId;
use common_models::schema::main::{analysis_results, applications, cvs};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::json;
use service_kit::AppError;

use crate::access::Action;
use crate::audit::{Audit, Change};
use crate::jobs::{not_found, parse_id};
use crate::page::{Page, PageQuery};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/applications/{id}/analysis", web::post().to(request))
        .route("/api/v1/applications/{id}/analyses", web::get().to(list))
        .route("/api/v1/analyses/{id}", web::get().to(read));
}

/// An analysis row as the API shows it; a row the schema should have refused is a 500.
fn view_of(row: AnalysisRow) -> Result<AnalysisView, AppError> {
    row.view().map_err(AppError::internal)
}

/// Queues an LLM analysis of the application's CV against its job. The analysis is
/// made through the company's own LLM budget; read it at its `Location`.
#[utoipa::path(post, path = "/api/v1/applications/{id}/analysis", tag = "recruiting",
    params(("id" = i64, Path, minimum = 1, example = 1, description = "The application's id.")),
    responses(
        (status = 202, description = "The analysis, queued; `Location` says where to read it.", body = AnalysisView,
         headers(("Location" = String, description = "`/api/v1/analyses/{id}`"))),
        (status = 409, description = "The application's CV is not processed yet (`cv_not_processed`).", body = crate::openapi::ErrorBody),
    ))]
async fn request(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::UseLlm).await?;
    let application = parse_id(&id, "application")?;
    let (company, user) = (caller.company_id, caller.user_id);
    let audit = Audit::of(&req, &caller);
    let mut conn = state.db.get().await?;
    let row = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let cv_status: Option<String> = applications::table
                .inner_join(cvs::table.on(cvs::id.eq(applications::cv_id)))
                .filter(applications::id.eq(application).and(applications::company_id.eq(company.0)))
                .select(cvs::status)
                .first(conn)
                .await
                .optional()?;
            let cv_status = cv_status.ok_or_else(|| not_found("application", application))?;
            if cv_status != CvStatus::Processed.as_str() {
                return Err(AppError::conflict(
                    "cv_not_processed",
                    format!("the application's CV is {cv_status}; it can be analysed once it is processed"),
                ));
            }
            let row: AnalysisRow = diesel::insert_into(analysis_results::table)
                .values((
                    analysis_results::company_id.eq(company.0),
                    analysis_results::application_id.eq(application),
                    analysis_results::requested_by.eq(user.map(|u| u.0)),
                ))
                .returning(AnalysisRow::as_returning())
                .get_result(conn)
                .await?;
            let change = Change {
                action: "analysis.request",
                object_type: "analysis",
                object_id: Some(row.id),
                before: None,
                after: Some(json!({"application_id": application})),
            };
            audit.write(conn, change).await?;
            Ok(row)
        })
        .await?;
    drop(conn);
    let view = view_of(row)?;
    state.producer.publish(&AnalyzeApplication {
        analysis_id: view.id,
        application_id: application,
        company_id: company,
        requested_by: user,
        queued_at: view.created_at,
    });
    emit(&state, company, &view);
    Ok(HttpResponse::Accepted().insert_header(("location", format!("/api/v1/analyses/{}", view.id))).json(view))
}

/// Tells watching clients about the analysis's status.
fn emit(state: &AppState, company: CompanyId, view: &AnalysisView) {
    state.emit_event(StatusEvent::Analysis(AnalysisStatusEvent {
        analysis_id: view.id,
        application_id: view.application_id,
        company_id: company,
        status: view.status,
        failure_reason: view.failure_reason.clone(),
        at: Utc::now(),
    }));
}

/// An analysis: its status, and once completed its assessment (score, recommendation,
/// summary, strengths, concerns, requirements met).
#[utoipa::path(get, path = "/api/v1/analyses/{id}", tag = "recruiting",
    params(("id" = i64, Path, minimum = 1, example = 1, description = "The analysis's id.")),
    responses((status = 200, description = "The analysis (a finished one from the cache: `x-cache: hit`).", body = AnalysisView,
        headers(("x-cache" = String, description = "`hit` or `miss`")))))]
async fn read(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let id = parse_id(&id, "analysis")?;
    let key = cache_key(caller.company_id, id);
    if let Some(cache) = &state.cache
        && let Some(bytes) = cache.get(CACHE_NAMESPACE, &key).await
        && serde_json::from_slice::<AnalysisView>(&bytes).is_ok()
    {
        state.metrics.analysis_cache.with_label_values(&["hit"]).inc();
        return Ok(HttpResponse::Ok().content_type("application/json").insert_header(("x-cache", "hit")).body(bytes));
    }
    state.metrics.analysis_cache.with_label_values(&["miss"]).inc();
    let mut conn = state.db.get().await?;
    let row = find(&mut conn, caller.company_id, id).await?;
    drop(conn);
    let view = view_of(row)?;
    let body = serde_json::to_vec(&view).map_err(AppError::internal)?;
    if view.status.is_final()
        && let Some(cache) = &state.cache
    {
        cache.put(CACHE_NAMESPACE, &key, body.clone().into(), Some(CACHE_TTL)).await;
    }
    Ok(HttpResponse::Ok().content_type("application/json").insert_header(("x-cache", "miss")).body(body))
}

/// The analyses of the company's applications from CV `cv`.
pub async fn of_cv(conn: &mut AsyncPgConnection, company: i64, cv: i64) -> diesel::QueryResult<Vec<i64>> {
    analysis_results::table
        .inner_join(applications::table.on(applications::id.eq(analysis_results::application_id)))
        .filter(applications::cv_id.eq(cv).and(applications::company_id.eq(company)))
        .select(analysis_results::id)
        .load(conn)
        .await
}

/// Removes deleted analyses from the cache, so a deleted candidate's assessment is not
/// served from there for the rest of its 7 days.
pub async fn forget_cached(state: &AppState, company: CompanyId, ids: &[i64]) {
    let Some(cache) = &state.cache else { return };
    for id in ids {
        if !cache.delete(CACHE_NAMESPACE, &cache_key(company, *id)).await {
            tracing::warn!(analysis_id = id, "a deleted analysis could not be removed from the cache");
        }
    }
}

async fn find(conn: &mut AsyncPgConnection, company: CompanyId, id: i64) -> Result<AnalysisRow, AppError> {
    analysis_results::table
        .filter(analysis_results::id.eq(id).and(analysis_results::company_id.eq(company.0)))
        .select(AnalysisRow::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| not_found("analysis", id))
}

/// The application's analyses, newest first.
#[utoipa::path(get, path = "/api/v1/applications/{id}/analyses", tag = "recruiting",
    params(("id" = i64, Path, minimum = 1, example = 1, description = "The application's id."), PageQuery),
    responses((status = 200, description = "A page of the application's analyses, newest first.", body = Page<AnalysisView>)))]
async fn list(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let application = parse_id(&id, "application")?;
    let query: PageQuery = crate::page::query(&req)?;
    let (limit, after) = query.resolve()?;
    let mut conn = state.db.get().await?;
    let owned: i64 = applications::table
        .filter(applications::id.eq(application).and(applications::company_id.eq(caller.company_id.0)))
        .count()
        .get_result(&mut conn)
        .await?;
    if owned == 0 {
        return Err(not_found("application", application));
    }
    let mut q = analysis_results::table
        .filter(
            analysis_results::application_id.eq(application).and(analysis_results::company_id.eq(caller.company_id.0)),
        )
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(analysis_results::id.lt(after));
    }
    let rows: Vec<AnalysisRow> =
        q.order(analysis_results::id.desc()).limit(limit + 1).select(AnalysisRow::as_select()).load(&mut conn).await?;
    drop(conn);
    let views = rows.into_iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(Page::of(views, limit, |v| v.id)))
}
