//! Applications (a CV applying to a job), their stage, the interviews scheduled on them
//! and the interviewers' feedback. Company-scoped like jobs: another company's ids are
//! 404. Reading takes `read`; changing takes a recruiter (scope `cvs:write` for keys).
//!
//! Stages: `applied` → `screening` → `interview` → `offer` → `hired`, or `rejected`
//! from anywhere; `hired` and `rejected` are final (409 on a change).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use common_models::schema::main::{applications, cvs, interview_feedback, interviews, jobs, users};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use serde_json::json;
use service_kit::AppError;

use crate::access::Action;
use crate::audit::{Audit, Change};
use crate::jobs::{check_len, not_found, parse_id};
use crate::page::{Page, PageQuery};
use crate::state::AppState;

pub const STAGES: [&str; 6] = ["applied", "screening", "interview", "offer", "hired", "rejected"];
const FINAL_STAGES: [&str; 2] = ["hired", "rejected"];
const KINDS: [&str; 4] = ["phone", "video", "onsite", "technical"];
const STATUSES: [&str; 3] = ["scheduled", "completed", "cancelled"];
const RECOMMENDATIONS: [&str; 4] = ["strong_no", "no", "yes", "strong_yes"];
const NOTES_MAX: usize = 20_000;
const PARTICIPANTS_MAX: usize = 20;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/applications", web::post().to(apply))
        .route("/api/v1/applications", web::get().to(list_applications))
        .route("/api/v1/applications/{id}", web::get().to(read_application))
        .route("/api/v1/applications/{id}", web::patch().to(update_application))
        .route("/api/v1/applications/{id}/interviews", web::post().to(schedule))
        .route("/api/v1/applications/{id}/interviews", web::get().to(list_interviews))
        .route("/api/v1/interviews/{id}", web::get().to(read_interview))
        .route("/api/v1/interviews/{id}", web::patch().to(update_interview))
        .route("/api/v1/interviews/{id}/feedback", web::post().to(give_feedback));
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = applications)]
struct Application {
    id: i64,
    job_id: i64,
    cv_id: i64,
    /// `applied`, `screening`, `interview`, `offer`, `hired` or `rejected`.
    stage: String,
    notes: Option<String>,
    created_by: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = interviews)]
struct Interview {
    id: i64,
    application_id: i64,
    scheduled_at: DateTime<Utc>,
    duration_minutes: i32,
    /// `phone`, `video`, `onsite` or `technical`.
    kind: String,
    /// `scheduled`, `completed` or `cancelled`.
    status: String,
    /// User ids.
    participants: Vec<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = interview_feedback)]
struct Feedback {
    id: i64,
    author_id: i64,
    rating: i16,
    recommendation: String,
    comments: String,
    created_at: DateTime<Utc>,
}

fn one_of(field: &'static str, value: &str, allowed: &[&str]) -> Result<(), AppError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(AppError::bad_request(
            field,
            "invalid_value",
            format!("`{field}` must be one of {}, not {value:?}", allowed.join(", ")),
        ))
    }
}

fn check_notes(notes: &Option<String>) -> Result<(), AppError> {
    notes.as_deref().map_or(Ok(()), |n| check_len("notes", n, 0, NOTES_MAX))
}

fn json_of<T: Serialize>(value: &T) -> Result<serde_json::Value, AppError> {
    serde_json::to_value(value).map_err(AppError::internal)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewApplication {
    job_id: i64,
    cv_id: i64,
    #[schema(max_length = 20000)]
    notes: Option<String>,
}

/// A CV applies to a job (stage `applied`).
#[utoipa::path(post, path = "/api/v1/applications", tag = "recruiting", request_body = NewApplication,
    responses(
        (status = 201, description = "The application.", body = Application),
        (status = 409, description = "The CV has an application to the job already (`already_applied`).", body = crate::openapi::ErrorBody),
    ))]
async fn apply(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<NewApplication>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::WriteJobs).await?;
    let NewApplication { job_id, cv_id, notes } = body.into_inner();
    check_notes(&notes)?;
    let (company, author) = (caller.company_id.0, caller.user_id.map(|u| u.0));
    let audit = Audit::of(&req, &caller);
    let mut conn = state.db.get().await?;
    let created = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let job: i64 = jobs::table
                .filter(jobs::id.eq(job_id).and(jobs::company_id.eq(company)))
                .count()
                .get_result(conn)
                .await?;
            let cv: i64 =
                cvs::table.filter(cvs::id.eq(cv_id).and(cvs::company_id.eq(company))).count().get_result(conn).await?;
            if job == 0 {
                return Err(AppError::bad_request("job_id", "invalid_value", format!("no job with id {job_id}")));
            }
            if cv == 0 {
                return Err(AppError::bad_request("cv_id", "invalid_value", format!("no CV with id {cv_id}")));
            }
            let row: Application = diesel::insert_into(applications::table)
                .values((
                    applications::company_id.eq(company),
                    applications::job_id.eq(job_id),
                    applications::cv_id.eq(cv_id),
                    applications::notes.eq(notes),
                    applications::created_by.eq(author),
                ))
                .on_conflict_do_nothing()
                .returning(Application::as_returning())
                .get_result(conn)
                .await
                .optional()?
                .ok_or_else(|| {
                    AppError::conflict("already_applied", format!("CV {cv_id} has an application to job {job_id}"))
                })?;
            let change = Change {
                action: "application.create",
                object_type: "application",
                object_id: Some(row.id),
                before: None,
                after: Some(json_of(&row)?),
            };
            audit.write(conn, change).await?;
            Ok(row)
        })
        .await?;
    crate::api_cache::changed(&state, company).await;
    Ok(HttpResponse::Created().json(created))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ApplicationQuery {
    /// Only applications to this job.
    #[param(value_type = Option<i64>)]
    job_id: Option<String>,
    /// Only applications of this CV.
    #[param(value_type = Option<i64>)]
    cv_id: Option<String>,
    /// Only applications at this stage.
    #[param(pattern = "^(applied|screening|interview|offer|hired|rejected)$")]
    stage: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// The company's applications, newest first.
#[utoipa::path(get, path = "/api/v1/applications", tag = "recruiting", params(ApplicationQuery, PageQuery),
    responses((status = 200, description = "A page of applications.", body = Page<Application>)))]
async fn list_applications(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let query: ApplicationQuery = crate::page::query(&req)?;
    let (limit, after) = query.page.resolve()?;
    let cached = crate::api_cache::slot(&state, &req, &caller, "applications").await;
    if let Some(hit) = cached.hit(&state).await {
        return Ok(hit);
    }
    let mut q = applications::table.filter(applications::company_id.eq(caller.company_id.0)).into_boxed();
    if let Some(job) = &query.job_id {
        q = q.filter(applications::job_id.eq(crate::page::integer("job_id", job)?));
    }
    if let Some(cv) = &query.cv_id {
        q = q.filter(applications::cv_id.eq(crate::page::integer("cv_id", cv)?));
    }
    if let Some(stage) = &query.stage {
        one_of("stage", stage, &STAGES)?;
        q = q.filter(applications::stage.eq(stage.clone()));
    }
    if let Some(after) = after {
        q = q.filter(applications::id.lt(after));
    }
    let mut conn = state.db.get().await?;
    let rows: Vec<Application> =
        q.order(applications::id.desc()).limit(limit + 1).select(Application::as_select()).load(&mut conn).await?;
    drop(conn);
    cached.answer(&state, &Page::of(rows, limit, |a| a.id)).await
}

async fn find_application(
    conn: &mut AsyncPgConnection,
    company: i64,
    id: i64,
    lock: bool,
) -> Result<Application, AppError> {
    let q = applications::table
        .filter(applications::id.eq(id).and(applications::company_id.eq(company)))
        .select(Application::as_select());
    let found = if lock { q.for_update().first(conn).await } else { q.first(conn).await };
    found.optional()?.ok_or_else(|| not_found("application", id))
}

/// An application.
#[utoipa::path(get, path = "/api/v1/applications/{id}", tag = "recruiting", params(("id" = i64, Path, minimum = 1, example = 1, description = "The application's id.")),
    responses((status = 200, description = "The application.", body = Application)))]
async fn read_application(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let id = parse_id(&id, "application")?;
    let mut conn = state.db.get().await?;
    Ok(HttpResponse::Ok().json(find_application(&mut conn, caller.company_id.0, id, false).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ApplicationUpdate {
    /// `applied`, `screening`, `interview`, `offer`, `hired` or `rejected`.
    #[schema(pattern = "^(applied|screening|interview|offer|hired|rejected)$")]
    stage: Option<String>,
    #[schema(max_length = 20000)]
    notes: Option<String>,
}

/// Moves an application to a stage or changes its notes; `hired` and `rejected` are
/// final.
#[utoipa::path(patch, path = "/api/v1/applications/{id}", tag = "recruiting", params(("id" = i64, Path, minimum = 1, example = 1, description = "The application's id.")), request_body = ApplicationUpdate,
    responses(
        (status = 200, description = "The application as changed.", body = Application),
        (status = 409, description = "The application is hired or rejected already (`final_stage`).", body = crate::openapi::ErrorBody),
    ))]
async fn update_application(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<ApplicationUpdate>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::WriteJobs).await?;
    let id = parse_id(&id, "application")?;
    let ApplicationUpdate { stage, notes } = body.into_inner();
    if let Some(stage) = &stage {
        one_of("stage", stage, &STAGES)?;
    }
    check_notes(&notes)?;
    let company = caller.company_id.0;
    let audit = Audit::of(&req, &caller);
    let mut conn = state.db.get().await?;
    let updated = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let before = find_application(conn, company, id, true).await?;
            if let Some(stage) = &stage
                && *stage != before.stage
                && FINAL_STAGES.contains(&before.stage.as_str())
            {
                return Err(AppError::conflict(
                    "final_stage",
                    format!("the application is {}: its stage does not change any more", before.stage),
                )
                .with_param("stage"));
            }
            let after: Application = diesel::update(applications::table.find(id))
                .set((
                    stage.map(|s| applications::stage.eq(s)),
                    notes.map(|n| applications::notes.eq(n)),
                    applications::updated_at.eq(diesel::dsl::now),
                ))
                .returning(Application::as_returning())
                .get_result(conn)
                .await?;
            let change = Change {
                action: "application.update",
                object_type: "application",
                object_id: Some(id),
                before: Some(json!({"stage": before.stage, "notes": before.notes})),
                after: Some(json!({"stage": after.stage, "notes": after.notes})),
            };
            audit.write(conn, change).await?;
            Ok(after)
        })
        .await?;
    crate::api_cache::changed(&state, company).await;
    Ok(HttpResponse::Ok().json(updated))
}

/// Refuses participants who are not active people of `company`, naming the first.
async fn check_participants(conn: &mut AsyncPgConnection, company: i64, ids: &[i64]) -> Result<(), AppError> {
    if ids.len() > PARTICIPANTS_MAX {
        return Err(AppError::bad_request(
            "participants",
            "too_many",
            format!("`participants` takes at most {PARTICIPANTS_MAX} people"),
        ));
    }
    let known: Vec<i64> = users::table
        .filter(users::id.eq_any(ids).and(users::company_id.eq(company)).and(users::is_active))
        .select(users::id)
        .load(conn)
        .await?;
    match ids.iter().position(|id| !known.contains(id)) {
        Some(i) => Err(AppError::bad_request(
            format!("participants[{i}]"),
            "invalid_value",
            format!("user {} is not an active person of this company", ids[i]),
        )),
        None => Ok(()),
    }
}

/// Changes to an interview.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct InterviewInput {
    scheduled_at: Option<DateTime<Utc>>,
    /// 5-480 (default 60).
    #[schema(minimum = 5, maximum = 480)]
    duration_minutes: Option<i32>,
    /// `phone`, `video` (default), `onsite` or `technical`.
    #[schema(pattern = "^(phone|video|onsite|technical)$")]
    kind: Option<String>,
    /// `scheduled` (default), `completed` or `cancelled`.
    #[schema(pattern = "^(scheduled|completed|cancelled)$")]
    status: Option<String>,
    /// Active people of the company (user ids), at most 20.
    #[schema(max_items = 20)]
    participants: Option<Vec<i64>>,
}

/// An interview to schedule.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewInterview {
    scheduled_at: DateTime<Utc>,
    /// 5-480 (default 60).
    #[schema(minimum = 5, maximum = 480)]
    duration_minutes: Option<i32>,
    /// `phone`, `video` (default), `onsite` or `technical`.
    #[schema(pattern = "^(phone|video|onsite|technical)$")]
    kind: Option<String>,
    /// `scheduled` (default), `completed` or `cancelled`.
    #[schema(pattern = "^(scheduled|completed|cancelled)$")]
    status: Option<String>,
    /// Active people of the company (user ids), at most 20.
    #[schema(max_items = 20)]
    participants: Option<Vec<i64>>,
}

impl From<NewInterview> for InterviewInput {
    fn from(new: NewInterview) -> Self {
        Self {
            scheduled_at: Some(new.scheduled_at),
            duration_minutes: new.duration_minutes,
            kind: new.kind,
            status: new.status,
            participants: new.participants,
        }
    }
}

impl InterviewInput {
    fn check(&self) -> Result<(), AppError> {
        if let Some(d) = self.duration_minutes
            && !(5..=480).contains(&d)
        {
            return Err(AppError::bad_request("duration_minutes", "invalid_value", "`duration_minutes` must be 5-480"));
        }
        if let Some(kind) = &self.kind {
            one_of("kind", kind, &KINDS)?;
        }
        if let Some(status) = &self.status {
            one_of("status", status, &STATUSES)?;
        }
        Ok(())
    }
}

/// Schedules an interview on an application.
#[utoipa::path(post, path = "/api/v1/applications/{id}/interviews", tag = "recruiting", params(("id" = i64, Path, minimum = 1, example = 1, description = "The application's id.")), request_body = NewInterview,
    responses((status = 201, description = "The interview.", body = Interview)))]
async fn schedule(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<NewInterview>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::WriteJobs).await?;
    let application = parse_id(&id, "application")?;
    let new = body.into_inner();
    let at = new.scheduled_at;
    let input = InterviewInput::from(new);
    input.check()?;
    let company = caller.company_id.0;
    let audit = Audit::of(&req, &caller);
    let mut conn = state.db.get().await?;
    let created = conn
        .transaction::<_, AppError, _>(async move |conn| {
            find_application(conn, company, application, true).await?;
            let participants = input.participants.unwrap_or_default();
            check_participants(conn, company, &participants).await?;
            let row: Interview = diesel::insert_into(interviews::table)
                .values((
                    interviews::company_id.eq(company),
                    interviews::application_id.eq(application),
                    interviews::scheduled_at.eq(at),
                    interviews::duration_minutes.eq(input.duration_minutes.unwrap_or(60)),
                    interviews::kind.eq(input.kind.unwrap_or_else(|| "video".to_owned())),
                    interviews::status.eq(input.status.unwrap_or_else(|| "scheduled".to_owned())),
                    interviews::participants.eq(participants),
                ))
                .returning(Interview::as_returning())
                .get_result(conn)
                .await?;
            let change = Change {
                action: "interview.create",
                object_type: "interview",
                object_id: Some(row.id),
                before: None,
                after: Some(json_of(&row)?),
            };
            audit.write(conn, change).await?;
            Ok(row)
        })
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// An application's interviews, earliest first.
#[utoipa::path(get, path = "/api/v1/applications/{id}/interviews", tag = "recruiting", params(("id" = i64, Path, minimum = 1, example = 1, description = "The application's id.")),
    responses((status = 200, description = "The interviews.", body = Interviews)))]
async fn list_interviews(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let application = parse_id(&id, "application")?;
    let mut conn = state.db.get().await?;
    find_application(&mut conn, caller.company_id.0, application, false).await?;
    let rows: Vec<Interview> = interviews::table
        .filter(interviews::application_id.eq(application))
        .order(interviews::scheduled_at.asc())
        .select(Interview::as_select())
        .load(&mut conn)
        .await?;
    Ok(HttpResponse::Ok().json(Interviews { data: rows }))
}

/// An application's interviews.
#[derive(Serialize, utoipa::ToSchema)]
struct Interviews {
    data: Vec<Interview>,
}

/// An interview with its feedback.
#[derive(Serialize, utoipa::ToSchema)]
struct InterviewView {
    #[serde(flatten)]
    interview: Interview,
    feedback: Vec<Feedback>,
}

async fn find_interview(
    conn: &mut AsyncPgConnection,
    company: i64,
    id: i64,
    lock: bool,
) -> Result<Interview, AppError> {
    let q = interviews::table
        .filter(interviews::id.eq(id).and(interviews::company_id.eq(company)))
        .select(Interview::as_select());
    let found = if lock { q.for_update().first(conn).await } else { q.first(conn).await };
    found.optional()?.ok_or_else(|| not_found("interview", id))
}

/// An interview, with the interviewers' feedback.
#[utoipa::path(get, path = "/api/v1/interviews/{id}", tag = "recruiting", params(("id" = i64, Path, minimum = 1, example = 1, description = "The interview's id.")),
    responses((status = 200, description = "The interview.", body = InterviewView)))]
async fn read_interview(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let id = parse_id(&id, "interview")?;
    let mut conn = state.db.get().await?;
    let interview = find_interview(&mut conn, caller.company_id.0, id, false).await?;
    let feedback: Vec<Feedback> = interview_feedback::table
        .filter(interview_feedback::interview_id.eq(id))
        .order(interview_feedback::id.asc())
        .select(Feedback::as_select())
        .load(&mut conn)
        .await?;
    Ok(HttpResponse::Ok().json(InterviewView { interview, feedback }))
}

/// Changes an interview.
#[utoipa::path(patch, path = "/api/v1/interviews/{id}", tag = "recruiting", params(("id" = i64, Path, minimum = 1, example = 1, description = "The interview's id.")), request_body = InterviewInput,
    responses((status = 200, description = "The interview as changed.", body = Interview)))]
async fn update_interview(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<InterviewInput>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::WriteJobs).await?;
    let id = parse_id(&id, "interview")?;
    let input = body.into_inner();
    input.check()?;
    let company = caller.company_id.0;
    let audit = Audit::of(&req, &caller);
    let mut conn = state.db.get().await?;
    let updated = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let before = find_interview(conn, company, id, true).await?;
            if let Some(people) = &input.participants {
                check_participants(conn, company, people).await?;
            }
            let after: Interview = diesel::update(interviews::table.find(id))
                .set((
                    input.scheduled_at.map(|v| interviews::scheduled_at.eq(v)),
                    input.duration_minutes.map(|v| interviews::duration_minutes.eq(v)),
                    input.kind.map(|v| interviews::kind.eq(v)),
                    input.status.map(|v| interviews::status.eq(v)),
                    input.participants.map(|v| interviews::participants.eq(v)),
                    interviews::updated_at.eq(diesel::dsl::now),
                ))
                .returning(Interview::as_returning())
                .get_result(conn)
                .await?;
            let change = Change {
                action: "interview.update",
                object_type: "interview",
                object_id: Some(id),
                before: Some(json_of(&before)?),
                after: Some(json_of(&after)?),
            };
            audit.write(conn, change).await?;
            Ok(after)
        })
        .await?;
    Ok(HttpResponse::Ok().json(updated))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FeedbackInput {
    #[schema(minimum = 1, maximum = 5)]
    rating: i16,
    /// `strong_no`, `no`, `yes` or `strong_yes`.
    #[schema(pattern = "^(strong_no|no|yes|strong_yes)$")]
    recommendation: String,
    #[serde(default)]
    #[schema(max_length = 20000)]
    comments: String,
}

/// The signed-in interviewer's feedback on an interview (given again, it replaces theirs).
#[utoipa::path(post, path = "/api/v1/interviews/{id}/feedback", tag = "recruiting", params(("id" = i64, Path, minimum = 1, example = 1, description = "The interview's id.")), request_body = FeedbackInput,
    responses(
        (status = 201, description = "The feedback.", body = Feedback),
        (status = 400, description = "A key without a user (`not_a_user`), or a field out of range.", body = crate::openapi::ErrorBody),
    ))]
async fn give_feedback(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<FeedbackInput>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::WriteJobs).await?;
    let id = parse_id(&id, "interview")?;
    let Some(author) = caller.user_id.map(|u| u.0) else {
        return Err(AppError::bad_body("not_a_user", "feedback is a person's: sign in, or use a key of your own"));
    };
    let FeedbackInput { rating, recommendation, comments } = body.into_inner();
    if !(1..=5).contains(&rating) {
        return Err(AppError::bad_request("rating", "invalid_value", "`rating` must be 1-5"));
    }
    one_of("recommendation", &recommendation, &RECOMMENDATIONS)?;
    check_len("comments", &comments, 0, NOTES_MAX)?;
    let company = caller.company_id.0;
    let audit = Audit::of(&req, &caller);
    let mut conn = state.db.get().await?;
    let saved = conn
        .transaction::<_, AppError, _>(async move |conn| {
            find_interview(conn, company, id, false).await?;
            let row: Feedback = diesel::insert_into(interview_feedback::table)
                .values((
                    interview_feedback::company_id.eq(company),
                    interview_feedback::interview_id.eq(id),
                    interview_feedback::author_id.eq(author),
                    interview_feedback::rating.eq(rating),
                    interview_feedback::recommendation.eq(&recommendation),
                    interview_feedback::comments.eq(&comments),
                ))
                .on_conflict((interview_feedback::interview_id, interview_feedback::author_id))
                .do_update()
                .set((
                    interview_feedback::rating.eq(rating),
                    interview_feedback::recommendation.eq(&recommendation),
                    interview_feedback::comments.eq(&comments),
                    interview_feedback::created_at.eq(diesel::dsl::now),
                ))
                .returning(Feedback::as_returning())
                .get_result(conn)
                .await?;
            let change = Change {
                action: "interview.feedback",
                object_type: "interview",
                object_id: Some(id),
                before: None,
                after: Some(json!({"rating": rating, "recommendation": recommendation})),
            };
            audit.write(conn, change).await?;
            Ok(row)
        })
        .await?;
    Ok(HttpResponse::Created().json(saved))
}

/// Checks the LLM proxy's `X-Interview-Id` against the caller's company, remembering
/// answers per replica so a busy LLM path costs the main database one query per
/// interview and ten minutes, not one per call. An interview deleted meanwhile is
/// still accepted until its entry lapses (it only names the call in the log).
pub struct InterviewCheck {
    known: moka::sync::Cache<(i64, i64), ()>,
    unknown: moka::sync::Cache<(i64, i64), ()>,
}

impl Default for InterviewCheck {
    fn default() -> Self {
        Self {
            known: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(600))
                .build(),
            unknown: moka::sync::Cache::builder()
                .max_capacity(20_000)
                .time_to_live(std::time::Duration::from_secs(30))
                .build(),
        }
    }
}

impl InterviewCheck {
    /// 400 naming the header unless `interview` is one of `company`'s.
    pub async fn require(&self, state: &AppState, company: i64, interview: i64) -> Result<(), AppError> {
        let key = (company, interview);
        let known = if self.known.contains_key(&key) {
            true
        } else if self.unknown.contains_key(&key) {
            false
        } else {
            let mut conn = state.db.get().await?;
            let n: i64 = interviews::table
                .filter(interviews::id.eq(interview).and(interviews::company_id.eq(company)))
                .count()
                .get_result(&mut conn)
                .await?;
            let cache = if n > 0 { &self.known } else { &self.unknown };
            cache.insert(key, ());
            n > 0
        };
        if known {
            Ok(())
        } else {
            Err(AppError::bad_request(
                crate::llm::request::INTERVIEW_ID_HEADER,
                "unknown_interview",
                format!("no interview with id {interview} in your company"),
            ))
        }
    }
}
