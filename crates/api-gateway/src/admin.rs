//! Admin routes, guarded by `ADMIN_API_KEY`: tenant creation and the health view of
//! the logging pipeline (seed 004's `/api/v1/admin/health`).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, TimeZone, Utc};
use common_models::events::LogEvent;
use common_models::queue::LOG_WORKER_GROUP;
use common_models::schema::main::{api_keys, companies};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use service_kit::AppError;
use service_kit::auth::require_admin;
use service_kit::checks::Dependency;
use task_queue::Message;
use task_queue::status::GroupStatus;

use crate::access::Role;
use crate::audit::{Audit, Change};
use crate::auth::generate_key;
use crate::state::AppState;

/// A worker whose last heartbeat is older than this is reported as not alive.
pub(crate) const WORKER_STALE_AFTER: Duration = Duration::from_secs(15);
const COMPANY_NAME_MAX: usize = 200;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/admin/companies", web::post().to(create_company))
        .route("/api/v1/admin/companies/{id}", web::patch().to(update_company))
        .route("/api/v1/company/limits", web::get().to(company_limits))
        .route("/api/v1/company/settings", web::patch().to(company_settings))
        .route("/api/v1/admin/health", web::get().to(health));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCompanyRequest {
    name: Option<Value>,
    /// Invites the company's first owner; the invitation's token is in the answer (and
    /// the email in the outbox).
    owner_email: Option<String>,
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
) -> Result<HttpResponse, AppError> {
    require_admin(&req, &state.settings.admin_api_key, "ADMIN_API_KEY")?;
    let name = match &body.name {
        Some(Value::String(n)) if !n.trim().is_empty() && n.trim().chars().count() <= COMPANY_NAME_MAX => {
            n.trim().to_owned()
        }
        Some(Value::String(_)) => {
            return Err(AppError::bad_request(
                "name",
                "invalid_value",
                format!("`name` must be 1-{COMPANY_NAME_MAX} characters, not blank"),
            ));
        }
        Some(_) => return Err(AppError::bad_request("name", "invalid_type", "`name` must be a string")),
        None => return Err(AppError::bad_request("name", "missing_field", "`name` is required")),
    };
    let owner = body.owner_email.as_deref().map(|e| crate::accounts::normalise_email("owner_email", e)).transpose()?;
    let (key, prefix, digest) = generate_key().map_err(AppError::internal)?;

    let audit = Audit::operator(&req);
    let st = state.clone();
    let mut conn = state.db.get().await.map_err(|e| AppError::unavailable("the main database", e))?;
    let (company, key_id, invitation) = conn
        .transaction::<_, AppError, _>(async move |conn| {
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
            let invitation = match &owner {
                Some(email) => {
                    let (row, token) =
                        crate::people::create_invitation(conn, &st, company.0, email, Role::Owner, None).await?;
                    let mut view = row.view();
                    view["token"] = json!(token);
                    view["accept_url"] = json!(format!("{}{token}", st.settings.accounts.invitation_url));
                    Some(view)
                }
                None => None,
            };
            let change = Change {
                action: "company.create",
                object_type: "company",
                object_id: Some(company.0),
                before: None,
                after: Some(json!({"name": company.1, "api_key_id": key_id, "owner_email": owner})),
            };
            audit.for_company(company.0).write(conn, change).await?;
            Ok((company, key_id, invitation))
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
        },
        "owner_invitation": invitation,
    })))
}

async fn health(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    require_admin(&req, &state.settings.admin_api_key, "ADMIN_API_KEY")?;
    let analytics = Dependency::Postgres { name: "analytics_db", pool: state.analytics.clone() };
    let (analytics, queue) = tokio::join!(analytics.probe(), queue_status(&state));
    let (queues, worker, last_write, redis_ok) = match queue {
        Ok(status) => {
            let now_ms = Utc::now().timestamp_millis();
            let stale_ms = i64::try_from(WORKER_STALE_AFTER.as_millis()).unwrap_or(i64::MAX);
            let latest = status.latest_heartbeat_ms();
            let queues: serde_json::Map<String, Value> = status
                .streams
                .iter()
                .map(|s| {
                    (
                        s.stream.clone(),
                        json!({
                            "depth": s.length,
                            "pending": s.pending,
                            "lag": s.lag,
                            "consumers": s.consumers,
                            "dead_letter": s.dead_letters,
                        }),
                    )
                })
                .collect();
            let workers: Vec<Value> = status
                .heartbeats
                .iter()
                .map(|(name, at)| json!({"name": name, "last_heartbeat": ms_to_time(*at), "alive": now_ms - at <= stale_ms}))
                .collect();
            let worker = json!({
                "alive": latest.is_some_and(|at| now_ms - at <= stale_ms),
                "last_heartbeat": latest.map(ms_to_time),
                "seconds_since_heartbeat": latest.map(|at| (now_ms - at) as f64 / 1000.0),
                "workers": workers,
            });
            (Value::Object(queues), worker, json!(status.last_success_ms.map(ms_to_time)), true)
        }
        Err(err) => {
            let unknown = json!({"error": format!("redis unreachable: {err}")});
            (unknown.clone(), unknown, Value::Null, false)
        }
    };
    let worker_ok = worker["alive"] == Value::Bool(true);
    let status = if analytics.reachable && redis_ok && worker_ok { "ok" } else { "degraded" };
    let producer = state.producer.metrics();
    Ok(HttpResponse::Ok().json(json!({
        "status": status,
        "analytics_db": analytics,
        "redis": {"reachable": redis_ok},
        "queues": queues,
        "worker": worker,
        "last_analytics_write": last_write,
        "producer": {
            "buffered_events": producer.buffered_entries.get(),
            "buffered_bytes": producer.buffered_bytes.get(),
            "buffer_max_bytes": state.settings.producer.buffer_max_bytes,
            "spooled_events": producer.spool_entries.get(),
            "spool_bytes": producer.spool_bytes.get(),
        },
    })))
}

async fn queue_status(state: &AppState) -> anyhow::Result<GroupStatus> {
    let mut conn = state.redis.get().await?;
    let streams = LogEvent::streams();
    Ok(task_queue::status::group_status(&mut *conn, &state.keys, LOG_WORKER_GROUP, &streams).await?)
}

fn ms_to_time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompanyUpdate {
    plan: Option<String>,
    /// `null` goes back to the plan's budget.
    #[serde(default, deserialize_with = "crate::jobs::present")]
    llm_budget_usd: Option<Option<f64>>,
    /// The models the company may call; `null` goes back to every priced model.
    #[serde(default, deserialize_with = "crate::jobs::present")]
    allowed_models: Option<Option<Vec<String>>>,
    /// The IANA timezone the company's analytics are cut in (`Europe/Berlin`).
    timezone: Option<String>,
    /// The spend of one of the company's local days that raises a spend alert; `null`:
    /// no daily alert.
    #[serde(default, deserialize_with = "crate::jobs::present")]
    daily_spend_alert_usd: Option<Option<f64>>,
}

/// Most models one company's list may name.
const ALLOWED_MODELS_MAX: usize = 100;

/// Refuses a model list that is empty, too long, or names a model the gateway does not
/// serve (one without a price, unless unpriced models are allowed), naming the entry.
fn check_models(models: &[String], settings: &crate::settings::GatewaySettings) -> Result<(), AppError> {
    if models.is_empty() || models.len() > ALLOWED_MODELS_MAX {
        return Err(AppError::bad_request(
            "allowed_models",
            "invalid_value",
            format!("`allowed_models` takes 1 to {ALLOWED_MODELS_MAX} model names, or null for every served model"),
        ));
    }
    for (i, model) in models.iter().enumerate() {
        let field = format!("allowed_models[{i}]");
        crate::jobs::check_len("allowed_models", model, 1, 200).map_err(|e| e.with_param(field.clone()))?;
        if !settings.allow_unpriced_models && !settings.pricing.prices(model) {
            let served = settings.pricing.names();
            return Err(AppError::bad_request(
                field,
                "invalid_value",
                format!("model `{model}` is not served here; these are: {}", served.join(", ")),
            ));
        }
    }
    Ok(())
}

/// The operator sets a company's plan, monthly LLM budget and allowed models (`PATCH
/// /api/v1/admin/companies/{id}`); every replica applies it within
/// `limits::COMPANY_TTL`.
async fn update_company(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<CompanyUpdate>,
) -> Result<HttpResponse, AppError> {
    require_admin(&req, &state.settings.admin_api_key, "ADMIN_API_KEY")?;
    let id = crate::jobs::parse_id(&id, "company")?;
    let update = body.into_inner();
    check_settings(&state, &update.timezone, update.daily_spend_alert_usd).await?;
    if let Some(Some(models)) = &update.allowed_models {
        check_models(models, &state.settings)?;
    }
    if let Some(plan) = &update.plan
        && state.settings.limits.plan(plan).is_none()
    {
        let names: Vec<&str> = state.settings.limits.plans.iter().map(|p| p.name.as_str()).collect();
        return Err(AppError::bad_request(
            "plan",
            "invalid_value",
            format!("`plan` must be one of {}, not {plan:?}", names.join(", ")),
        ));
    }
    if let Some(Some(budget)) = update.llm_budget_usd
        && !(budget.is_finite() && budget >= 0.0)
    {
        return Err(AppError::bad_request("llm_budget_usd", "invalid_value", "`llm_budget_usd` must be ≥ 0"));
    }
    let audit = Audit::operator(&req).for_company(id);
    let updated = change_company(&state, audit, id, "company.update", update, |(plan, budget, models, tz, alert)| {
        json!({"plan": plan, "llm_budget_usd": budget, "allowed_models": models, "timezone": tz,
               "daily_spend_alert_usd": alert})
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "id": id,
        "plan": updated.0,
        "llm_budget_usd": updated.1,
        "allowed_models": updated.2,
        "timezone": updated.3,
        "daily_spend_alert_usd": updated.4
    })))
}

/// A company's row as its PATCH routes change it: plan, budget, models, timezone, daily
/// alert.
type CompanyRow = (Option<String>, Option<f64>, Option<Vec<String>>, String, Option<f64>);

/// Applies `update` to company `id` in one transaction: the row locked, changed, and
/// audited as `action` with `view` of it before and after; this replica's limits
/// forgotten. An empty update changes nothing, writes no audit row, and returns the row
/// as it is (an UPDATE without a column is an error). Both PATCH routes come here.
async fn change_company(
    state: &AppState,
    audit: Audit,
    id: i64,
    action: &'static str,
    update: CompanyUpdate,
    view: fn(&CompanyRow) -> Value,
) -> Result<CompanyRow, AppError> {
    let CompanyUpdate { plan, llm_budget_usd, allowed_models, timezone, daily_spend_alert_usd } = update;
    let mut conn = state.db.get().await?;
    let updated = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let columns = (
                companies::plan,
                companies::llm_budget_usd,
                companies::allowed_models,
                companies::timezone,
                companies::daily_spend_alert_usd,
            );
            let before: CompanyRow = companies::table
                .find(id)
                .select(columns)
                .for_update()
                .first(conn)
                .await
                .optional()?
                .ok_or_else(|| crate::jobs::not_found("company", id))?;
            let nothing = plan.is_none()
                && llm_budget_usd.is_none()
                && allowed_models.is_none()
                && timezone.is_none()
                && daily_spend_alert_usd.is_none();
            if nothing {
                return Ok(before);
            }
            let after: CompanyRow = diesel::update(companies::table.find(id))
                .set((
                    plan.map(|p| companies::plan.eq(p)),
                    llm_budget_usd.map(|b| companies::llm_budget_usd.eq(b)),
                    allowed_models.map(|m| companies::allowed_models.eq(m)),
                    timezone.map(|tz| companies::timezone.eq(tz)),
                    daily_spend_alert_usd.map(|a| companies::daily_spend_alert_usd.eq(a)),
                ))
                .returning(columns)
                .get_result(conn)
                .await?;
            let change = Change {
                action,
                object_type: "company",
                object_id: Some(id),
                before: Some(view(&before)),
                after: Some(view(&after)),
            };
            audit.write(conn, change).await?;
            Ok(after)
        })
        .await?;
    state.limits.forget(id);
    Ok(updated)
}

/// 400 naming the field unless `timezone` is one PostgreSQL knows and the daily alert
/// is above 0 (or `null`: none).
async fn check_settings(
    state: &AppState,
    timezone: &Option<String>,
    alert: Option<Option<f64>>,
) -> Result<(), AppError> {
    if let Some(tz) = timezone {
        let mut conn = state.db.get().await?;
        crate::analytics::check_timezone(&mut conn, "timezone", tz).await?;
    }
    if let Some(Some(alert)) = alert
        && !(alert.is_finite() && alert > 0.0)
    {
        return Err(AppError::bad_request(
            "daily_spend_alert_usd",
            "invalid_value",
            "`daily_spend_alert_usd` must be above 0, or null for no daily alert",
        ));
    }
    Ok(())
}

/// What a company's owners and admins may set themselves.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    /// The IANA timezone the company's analytics and daily spend are cut in
    /// (`Europe/Berlin`).
    timezone: Option<String>,
    /// The spend of one local day that raises a `daily_spend` alert; `null`: none.
    #[serde(default, deserialize_with = "crate::jobs::present")]
    #[schema(value_type = Option<f64>)]
    daily_spend_alert_usd: Option<Option<f64>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SettingsView {
    timezone: String,
    daily_spend_alert_usd: Option<f64>,
}

/// Sets the company's timezone and daily spend alert (owners and admins, signed in);
/// audited. Every replica applies it within `limits::COMPANY_TTL`.
#[utoipa::path(patch, path = "/api/v1/company/settings", tag = "audit", request_body = SettingsUpdate,
    responses((status = 200, description = "The settings now.", body = SettingsView)))]
async fn company_settings(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<SettingsUpdate>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, crate::access::Action::ManageSettings).await?;
    let SettingsUpdate { timezone, daily_spend_alert_usd } = body.into_inner();
    check_settings(&state, &timezone, daily_spend_alert_usd).await?;
    let audit = Audit::of(&req, &caller);
    let update =
        CompanyUpdate { plan: None, llm_budget_usd: None, allowed_models: None, timezone, daily_spend_alert_usd };
    let (_, _, _, timezone, alert) = change_company(
        &state,
        audit,
        caller.company_id.0,
        "company.settings",
        update,
        |(_, _, _, tz, alert)| json!({"timezone": tz, "daily_spend_alert_usd": alert}),
    )
    .await?;
    Ok(HttpResponse::Ok().json(SettingsView { timezone, daily_spend_alert_usd: alert }))
}

/// `GET /api/v1/company/limits`: the caller's plan, its limits and the month's LLM
/// spend (owners and admins).
#[utoipa::path(get, path = "/api/v1/company/limits", tag = "audit",
    responses((status = 200, description = "The plan, its limits and the month's LLM spend.", body = crate::limits::LimitsView)))]
async fn company_limits(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, crate::access::Action::ReadAudit).await?;
    Ok(HttpResponse::Ok().json(state.limits.describe(caller.company_id.0).await?))
}
