//! The audit trail: who (a user, a key, the operator), what (action, object type and
//! id, before and after), when and from where (address, user agent, request id).
//! Every state-changing route writes exactly one row, in the same transaction as the
//! change, so a change that fails leaves none. The table refuses UPDATE, DELETE and
//! TRUNCATE (a trigger), whatever the application's role may do elsewhere.
//! `GET /api/v1/audit` lists a company's trail for its owners and admins.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use common_models::schema::main::audit_log;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use service_kit::AppError;
use service_kit::request_id::RequestId;

use crate::access::Action;
use crate::auth::Caller;
use crate::page::{Page, PageQuery};
use crate::state::AppState;

const USER_AGENT_MAX: usize = 300;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/audit", web::get().to(list));
}

/// Who made a change and from where: everything of a row but the change itself.
#[derive(Debug, Clone)]
pub struct Audit {
    company_id: Option<i64>,
    actor_user_id: Option<i64>,
    actor_key_id: Option<i64>,
    actor_kind: &'static str,
    ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
}

/// One change.
pub struct Change {
    pub action: &'static str,
    pub object_type: &'static str,
    pub object_id: Option<i64>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl Audit {
    /// `caller`'s changes through `req`.
    pub fn of(req: &HttpRequest, caller: &Caller) -> Self {
        let kind = if caller.session.is_some() { "user" } else { "api_key" };
        Self {
            company_id: Some(caller.company_id.0),
            actor_user_id: caller.user_id.map(|u| u.0),
            actor_key_id: caller.api_key_id.map(|k| k.0),
            actor_kind: kind,
            ..Self::anonymous(req, None)
        }
    }

    /// Changes by the operator's admin key.
    pub fn operator(req: &HttpRequest) -> Self {
        Self { actor_kind: "admin", ..Self::anonymous(req, None) }
    }

    /// Changes by someone not signed in (accepting an invitation, signing in), in
    /// `company`.
    pub fn anonymous(req: &HttpRequest, company: Option<i64>) -> Self {
        let user_agent = req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| service_kit::request_log::cut(ua, USER_AGENT_MAX));
        Self {
            company_id: company,
            actor_user_id: None,
            actor_key_id: None,
            actor_kind: "anonymous",
            ip: req.peer_addr().map(|a| a.ip().to_string()),
            user_agent,
            request_id: RequestId::of(req),
        }
    }

    /// The same actor, in `company`.
    pub fn for_company(mut self, company: i64) -> Self {
        self.company_id = Some(company);
        self
    }

    /// The same origin, acting as `user` of `company` (a user who has just signed in).
    pub fn as_user(mut self, company: i64, user: i64) -> Self {
        self.company_id = Some(company);
        self.actor_user_id = Some(user);
        self.actor_kind = "user";
        self
    }

    /// Writes `change`'s row on `conn`, inside the caller's transaction.
    pub async fn write(&self, conn: &mut AsyncPgConnection, change: Change) -> QueryResult<()> {
        diesel::insert_into(audit_log::table)
            .values((
                audit_log::company_id.eq(self.company_id),
                audit_log::actor_user_id.eq(self.actor_user_id),
                audit_log::actor_key_id.eq(self.actor_key_id),
                audit_log::actor_kind.eq(self.actor_kind),
                audit_log::action.eq(change.action),
                audit_log::object_type.eq(change.object_type),
                audit_log::object_id.eq(change.object_id),
                audit_log::before.eq(change.before),
                audit_log::after.eq(change.after),
                audit_log::ip.eq(&self.ip),
                audit_log::user_agent.eq(&self.user_agent),
                audit_log::request_id.eq(&self.request_id),
            ))
            .execute(conn)
            .await
            .map(|_| ())
    }
}

/// One change in the trail.
#[derive(Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = audit_log)]
struct Row {
    id: i64,
    /// `user`, `api_key`, `admin` (the operator) or `anonymous`.
    actor_kind: String,
    actor_user_id: Option<i64>,
    actor_key_id: Option<i64>,
    action: String,
    object_type: String,
    object_id: Option<i64>,
    before: Option<Value>,
    after: Option<Value>,
    ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    created_at: DateTime<Utc>,
}

/// Numbers arrive as text: `flatten` hands serde strings only.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this action (`job.create`, `session.create`, …).
    action: Option<String>,
    /// Only changes to this kind of object (`job`, `user`, …).
    object_type: Option<String>,
    /// Only changes to this object.
    #[param(value_type = Option<i64>)]
    object_id: Option<String>,
    /// Only changes by this user.
    #[param(value_type = Option<i64>)]
    actor_user_id: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// The company's audit trail, newest first (owners and admins signed in).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(ListQuery, PageQuery),
    responses((status = 200, description = "A page of changes.", body = Page<Row>)))]
async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::ReadAudit).await?;
    let query: ListQuery = crate::page::query(&req)?;
    let (limit, after) = query.page.resolve()?;
    let mut q = audit_log::table.filter(audit_log::company_id.eq(caller.company_id.0)).into_boxed();
    if let Some(action) = query.action {
        crate::jobs::storable("action", &action)?;
        q = q.filter(audit_log::action.eq(action));
    }
    if let Some(object_type) = query.object_type {
        crate::jobs::storable("object_type", &object_type)?;
        q = q.filter(audit_log::object_type.eq(object_type));
    }
    if let Some(object_id) = query.object_id {
        q = q.filter(audit_log::object_id.eq(crate::page::integer("object_id", &object_id)?));
    }
    if let Some(user) = query.actor_user_id {
        q = q.filter(audit_log::actor_user_id.eq(crate::page::integer("actor_user_id", &user)?));
    }
    if let Some(after) = after {
        q = q.filter(audit_log::id.lt(after));
    }
    let mut conn = state.db.get().await?;
    let rows: Vec<Row> =
        q.order(audit_log::id.desc()).limit(limit + 1).select(Row::as_select()).load(&mut conn).await?;
    Ok(HttpResponse::Ok().json(Page::of(rows, limit, |r| r.id)))
}
