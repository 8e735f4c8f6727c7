//! Jobs: what a company recruits for. Company-scoped: every query filters on the
//! caller's company, so another company's job is simply not found (404, never 403).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use common_models::schema::main::jobs;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use service_kit::AppError;

use crate::access::Action;
use crate::audit::{Audit, Change};
use crate::page::{Page, PageQuery};
use crate::state::AppState;

pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 20_000;
pub const REQUIREMENTS_MAX: usize = 50;
pub const REQUIREMENT_MAX: usize = 500;
pub const LOCATION_MAX: usize = 200;
/// Statuses a client may set; `archived` is reached through the archive route.
const SETTABLE_STATUSES: [&str; 3] = ["draft", "open", "closed"];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/jobs", web::post().to(create))
        .route("/api/v1/jobs", web::get().to(list))
        .route("/api/v1/jobs/{id}", web::get().to(read))
        .route("/api/v1/jobs/{id}", web::patch().to(update))
        .route("/api/v1/jobs/{id}/archive", web::post().to(archive));
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = jobs)]
pub struct Job {
    pub id: i64,
    #[serde(skip)]
    pub company_id: i64,
    pub title: String,
    pub description: String,
    pub requirements: Vec<String>,
    pub location: Option<String>,
    /// `draft`, `open`, `closed` or `archived`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A create or update body; on update, absent fields stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct JobInput {
    /// Required on create; 1-200 characters, not blank.
    #[schema(min_length = 1, max_length = 200)]
    title: Option<String>,
    #[schema(max_length = 20000)]
    description: Option<String>,
    /// At most 50, each 1-500 characters.
    #[schema(max_items = 50)]
    requirements: Option<Vec<String>>,
    /// At most 200 characters; `null` clears it on update.
    #[serde(default, deserialize_with = "present")]
    #[schema(max_length = 200)]
    location: Option<Option<String>>,
    /// `draft`, `open` or `closed` (archive with `POST …/archive`).
    #[schema(pattern = "^(draft|open|closed)$")]
    status: Option<String>,
}

/// `deserialize_with` telling an explicit `null` (Some(None)) from an absent field
/// (None, with `#[serde(default)]`).
pub fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(AsChangeset, Default)]
#[diesel(table_name = jobs)]
struct JobChanges {
    title: Option<String>,
    description: Option<String>,
    requirements: Option<Vec<String>>,
    location: Option<Option<String>>,
    status: Option<String>,
}

impl JobInput {
    fn validate(self) -> Result<JobChanges, AppError> {
        let title = self.title.map(|t| t.trim().to_owned());
        if let Some(t) = &title {
            check_len("title", t, 1, TITLE_MAX)?;
        }
        if let Some(d) = &self.description {
            check_len("description", d, 0, DESCRIPTION_MAX)?;
        }
        let requirements = match self.requirements {
            Some(list) => {
                if list.len() > REQUIREMENTS_MAX {
                    return Err(AppError::bad_request(
                        "requirements",
                        "too_many",
                        format!("`requirements` takes at most {REQUIREMENTS_MAX} items, got {}", list.len()),
                    ));
                }
                let mut cleaned = Vec::with_capacity(list.len());
                for (i, item) in list.into_iter().enumerate() {
                    let item = item.trim().to_owned();
                    check_len(&format!("requirements[{i}]"), &item, 1, REQUIREMENT_MAX)?;
                    cleaned.push(item);
                }
                Some(cleaned)
            }
            None => None,
        };
        let location = match self.location {
            Some(Some(l)) if l.trim().is_empty() => Some(None),
            Some(Some(l)) => {
                check_len("location", l.trim(), 1, LOCATION_MAX)?;
                Some(Some(l.trim().to_owned()))
            }
            other => other,
        };
        if let Some(s) = &self.status
            && !SETTABLE_STATUSES.contains(&s.as_str())
        {
            return Err(AppError::bad_request(
                "status",
                "invalid_value",
                format!("`status` must be one of draft, open, closed (archive with POST …/archive), not {s:?}"),
            ));
        }
        Ok(JobChanges { title, description: self.description, requirements, location, status: self.status })
    }
}

/// 400 `invalid_length` naming `field` unless `value` has `min`-`max` characters; 400
/// `invalid_value` for a NUL character (see [`storable`]).
pub fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<(), AppError> {
    storable(field, value)?;
    let n = value.chars().count();
    if n < min || n > max {
        let what = if min > 0 { format!("1-{max} characters, not blank") } else { format!("at most {max} characters") };
        return Err(AppError::bad_request(field.to_owned(), "invalid_length", format!("`{field}` must be {what}")));
    }
    Ok(())
}

/// 400 `invalid_value` naming `field` when `value` holds a NUL character: PostgreSQL
/// text cannot, so such a value would fail the query (a 500) rather than match or be
/// stored.
pub fn storable(field: &str, value: &str) -> Result<(), AppError> {
    if value.contains('\0') {
        return Err(AppError::bad_request(
            field.to_owned(),
            "invalid_value",
            format!("`{field}` must not contain NUL characters"),
        ));
    }
    Ok(())
}

/// A path id that is not a number names no resource: 404, like an unknown one.
pub fn parse_id(raw: &str, what: &'static str) -> Result<i64, AppError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| not_found(what, raw))
}

pub fn not_found(what: &str, id: impl std::fmt::Display) -> AppError {
    AppError::not_found(format!("no {what} with id {id}")).with_param("id")
}

/// Creates a job (`title` is required; the status is `open` unless given).
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = JobInput,
    responses((status = 201, description = "The new job.", body = Job)))]
async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<JobInput>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::WriteJobs).await?;
    let input = body.into_inner();
    if input.title.is_none() {
        return Err(AppError::bad_request("title", "missing_field", "`title` is required"));
    }
    let changes = input.validate()?;
    let audit = Audit::of(&req, &caller);
    let company = caller.company_id.0;
    let mut conn = state.db.get().await?;
    let job = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let job: Job = diesel::insert_into(jobs::table)
                .values((
                    jobs::company_id.eq(company),
                    jobs::title.eq(changes.title.unwrap_or_default()),
                    jobs::description.eq(changes.description.unwrap_or_default()),
                    jobs::requirements.eq(changes.requirements.unwrap_or_default()),
                    jobs::location.eq(changes.location.flatten()),
                    jobs::status.eq(changes.status.unwrap_or_else(|| "open".to_owned())),
                ))
                .returning(Job::as_returning())
                .get_result(conn)
                .await?;
            let change = Change {
                action: "job.create",
                object_type: "job",
                object_id: Some(job.id),
                before: None,
                after: Some(serde_json::to_value(&job).map_err(AppError::internal)?),
            };
            audit.write(conn, change).await?;
            Ok(job)
        })
        .await?;
    crate::api_cache::changed(&state, company).await;
    Ok(HttpResponse::Created().json(job))
}

/// A job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = i64, Path, minimum = 1, example = 1, description = "The job's id.")),
    responses((status = 200, description = "The job.", body = Job)))]
async fn read(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let id = parse_id(&id, "job")?;
    let mut conn = state.db.get().await?;
    let job = jobs::table
        .filter(jobs::id.eq(id).and(jobs::company_id.eq(caller.company_id.0)))
        .select(Job::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(|| not_found("job", id))?;
    Ok(HttpResponse::Ok().json(job))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only jobs with this status.
    #[param(pattern = "^(draft|open|closed|archived)$")]
    status: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// The company's jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery, PageQuery),
    responses((status = 200, description = "A page of jobs.", body = Page<Job>)))]
async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let query: ListQuery = crate::page::query(&req)?;
    let (limit, after) = query.page.resolve()?;
    let cached = crate::api_cache::slot(&state, &req, &caller, "jobs").await;
    if let Some(hit) = cached.hit(&state).await {
        return Ok(hit);
    }
    let mut q = jobs::table.filter(jobs::company_id.eq(caller.company_id.0)).into_boxed();
    if let Some(status) = &query.status {
        if !SETTABLE_STATUSES.contains(&status.as_str()) && status != "archived" {
            return Err(AppError::bad_request(
                "status",
                "invalid_value",
                "`status` must be one of draft, open, closed, archived",
            ));
        }
        q = q.filter(jobs::status.eq(status.clone()));
    }
    if let Some(after) = after {
        q = q.filter(jobs::id.lt(after));
    }
    let mut conn = state.db.get().await?;
    let rows: Vec<Job> = q.order(jobs::id.desc()).limit(limit + 1).select(Job::as_select()).load(&mut conn).await?;
    drop(conn);
    cached.answer(&state, &Page::of(rows, limit, |j| j.id)).await
}

/// Changes a job; absent fields stay as they are.
#[utoipa::path(patch, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = i64, Path, minimum = 1, example = 1, description = "The job's id.")), request_body = JobInput,
    responses((status = 200, description = "The job as changed.", body = Job)))]
async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<JobInput>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::WriteJobs).await?;
    let id = parse_id(&id, "job")?;
    let changes = body.into_inner().validate()?;
    apply(&state, Audit::of(&req, &caller), caller.company_id.0, id, changes, "job.update").await
}

/// Archives a job.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/archive", tag = "jobs", params(("id" = i64, Path, minimum = 1, example = 1, description = "The job's id.")),
    responses((status = 200, description = "The archived job.", body = Job)))]
async fn archive(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::WriteJobs).await?;
    let id = parse_id(&id, "job")?;
    let changes = JobChanges { status: Some("archived".to_owned()), ..JobChanges::default() };
    apply(&state, Audit::of(&req, &caller), caller.company_id.0, id, changes, "job.archive").await
}

/// Applies `changes` to the company's job `id` and audits it as `action`; 404 when the
/// company has no such job.
async fn apply(
    state: &AppState,
    audit: Audit,
    company: i64,
    id: i64,
    changes: JobChanges,
    action: &'static str,
) -> Result<HttpResponse, AppError> {
    let mut conn = state.db.get().await?;
    let job = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let target = jobs::table.filter(jobs::id.eq(id).and(jobs::company_id.eq(company)));
            let before: Job = target
                .select(Job::as_select())
                .for_update()
                .first(conn)
                .await
                .optional()?
                .ok_or_else(|| not_found("job", id))?;
            let job: Job = diesel::update(target)
                .set((changes, jobs::updated_at.eq(diesel::dsl::now)))
                .returning(Job::as_returning())
                .get_result(conn)
                .await?;
            let json = |j: &Job| serde_json::to_value(j).map_err(AppError::internal);
            let change = Change {
                action,
                object_type: "job",
                object_id: Some(id),
                before: Some(json(&before)?),
                after: Some(json(&job)?),
            };
            audit.write(conn, change).await?;
            Ok(job)
        })
        .await?;
    crate::api_cache::changed(state, company).await;
    Ok(HttpResponse::Ok().json(job))
}
