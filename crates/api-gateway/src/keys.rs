//! API key management, for owners and admins signed in (a key cannot manage keys).
//!
//! - `GET /api/v1/api-keys`: the company's keys (never the keys themselves).
//! - `POST /api/v1/api-keys` `{name, scopes?, user_id?}`: a company key, or one acting
//!   as `user_id` with that user's role; `scopes` from `read`, `cvs:write`, `llm` (all by
//!   default). The key is in the answer, once.
//! - `POST /api/v1/api-keys/{id}/rotate`: a new key with the same name, scopes and user;
//!   the old one is revoked in the same transaction.
//! - `DELETE /api/v1/api-keys/{id}`: revokes it.
//!
//! A revoked key stops working on every replica at once (the revocation is published);
//! `auth_cache_ttl` bounds it on a replica that missed the message.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use common_models::schema::main::{api_keys, users};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use serde_json::json;
use service_kit::AppError;

use crate::access::{Action, Role, Scopes};
use crate::audit::{Audit, Change};
use crate::auth::{Revoked, generate_key, publish_revocation};
use crate::jobs::{check_len, not_found, parse_id};
use crate::page::{Page, PageQuery};
use crate::state::AppState;

const NAME_MAX: usize = 100;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/api-keys", web::get().to(list))
        .route("/api/v1/api-keys", web::post().to(create))
        .route("/api/v1/api-keys/{id}/rotate", web::post().to(rotate))
        .route("/api/v1/api-keys/{id}", web::delete().to(revoke));
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = api_keys)]
struct KeyView {
    id: i64,
    name: String,
    /// The key's first characters, to recognise it by.
    #[serde(rename = "prefix")]
    key_prefix: String,
    /// From `read`, `cvs:write`, `llm`.
    scopes: Vec<String>,
    user_id: Option<i64>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

/// The company's keys (never the keys themselves), newest first.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "keys", params(PageQuery),
    responses((status = 200, description = "A page of keys.", body = Page<KeyView>)))]
async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::ManageKeys).await?;
    let query: PageQuery = crate::page::query(&req)?;
    let (limit, after) = query.resolve()?;
    let mut q = api_keys::table.filter(api_keys::company_id.eq(caller.company_id.0)).into_boxed();
    if let Some(after) = after {
        q = q.filter(api_keys::id.lt(after));
    }
    let mut conn = state.db.get().await?;
    let rows: Vec<KeyView> =
        q.order(api_keys::id.desc()).limit(limit + 1).select(KeyView::as_select()).load(&mut conn).await?;
    Ok(HttpResponse::Ok().json(Page::of(rows, limit, |k| k.id)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKey {
    /// 1-100 characters, not blank.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// From `read`, `cvs:write`, `llm` (all by default); at least one.
    #[schema(min_items = 1)]
    scopes: Option<Vec<String>>,
    /// The key acts as this active user of the company, with their role; none: a
    /// company key (a recruiter).
    user_id: Option<i64>,
}

/// A new key, shown once.
#[derive(Serialize, utoipa::ToSchema)]
struct KeyShownOnce {
    #[serde(flatten)]
    view: KeyView,
    /// `hh_…`: store it now, it is shown only once.
    key: String,
    note: &'static str,
}

/// Inserts a new key; returns its row and the key.
async fn insert_key(
    conn: &mut AsyncPgConnection,
    company: i64,
    name: &str,
    scopes: &[&str],
    user: Option<i64>,
) -> Result<(KeyView, String), AppError> {
    let (key, prefix, digest) = generate_key().map_err(AppError::internal)?;
    let row: KeyView = diesel::insert_into(api_keys::table)
        .values((
            api_keys::company_id.eq(company),
            api_keys::user_id.eq(user),
            api_keys::name.eq(name),
            api_keys::key_prefix.eq(prefix),
            api_keys::key_hash.eq(digest.as_slice()),
            api_keys::scopes.eq(scopes.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()),
        ))
        .returning(KeyView::as_returning())
        .get_result(conn)
        .await?;
    Ok((row, key))
}

fn shown_once(row: &KeyView, key: String) -> KeyShownOnce {
    KeyShownOnce { view: row.clone(), key, note: "store this key now: it is shown only once" }
}

/// Makes a key (owners and admins signed in).
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "keys", request_body = NewKey,
    responses((status = 201, description = "The key, shown once.", body = KeyShownOnce)))]
async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<NewKey>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::ManageKeys).await?;
    let NewKey { name, scopes, user_id } = body.into_inner();
    let name = name.trim().to_owned();
    check_len("name", &name, 1, NAME_MAX)?;
    let scopes = match scopes {
        Some(names) => Scopes::from_input("scopes", &names)?,
        None => Scopes::EVERY,
    };
    let (company, actor) = (caller.company_id.0, caller.role);
    let audit = Audit::of(&req, &caller);
    let mut conn = state.db.get().await?;
    let view = conn
        .transaction::<_, AppError, _>(async move |conn| {
            if let Some(user) = user_id {
                let role: String = users::table
                    .filter(users::id.eq(user).and(users::company_id.eq(company)).and(users::is_active))
                    .select(users::role)
                    .first(conn)
                    .await
                    .optional()?
                    .ok_or_else(|| {
                        AppError::bad_request(
                            "user_id",
                            "invalid_value",
                            "`user_id` is not an active user of this company",
                        )
                    })?;
                if !actor.may_manage(Role::parse(&role).unwrap_or(Role::Owner)) {
                    return Err(
                        AppError::forbidden("only an owner makes keys for owners").with_code("insufficient_role")
                    );
                }
            }
            let (row, key) = insert_key(conn, company, &name, &scopes.names(), user_id).await?;
            let change = Change {
                action: "api_key.create",
                object_type: "api_key",
                object_id: Some(row.id),
                before: None,
                after: Some(json!({"name": row.name, "scopes": row.scopes, "user_id": row.user_id})),
            };
            audit.write(conn, change).await?;
            Ok(shown_once(&row, key))
        })
        .await?;
    Ok(HttpResponse::Created().json(view))
}

/// Revokes the company's live key `id` inside the transaction; returns its row.
async fn revoke_in(conn: &mut AsyncPgConnection, company: i64, id: i64) -> Result<KeyView, AppError> {
    let target = api_keys::table.filter(api_keys::id.eq(id).and(api_keys::company_id.eq(company)));
    let row: KeyView = target
        .select(KeyView::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| not_found("API key", id))?;
    if row.revoked_at.is_some() {
        return Err(AppError::conflict("key_revoked", "this key is revoked already"));
    }
    diesel::update(target).set(api_keys::revoked_at.eq(diesel::dsl::now)).execute(conn).await?;
    Ok(row)
}

/// A new key with the same name, scopes and user; the old one is revoked.
#[utoipa::path(post, path = "/api/v1/api-keys/{id}/rotate", tag = "keys", params(("id" = i64, Path, minimum = 1, example = 1, description = "The API key's id.")),
    responses(
        (status = 201, description = "The new key, shown once.", body = KeyShownOnce),
        (status = 409, description = "The key is revoked already (`key_revoked`).", body = crate::openapi::ErrorBody),
    ))]
async fn rotate(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::ManageKeys).await?;
    let id = parse_id(&id, "API key")?;
    let company = caller.company_id.0;
    let audit = Audit::of(&req, &caller);
    let mut conn = state.db.get().await?;
    let view = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let old = revoke_in(conn, company, id).await?;
            let scopes: Vec<&str> = old.scopes.iter().map(String::as_str).collect();
            let (row, key) = insert_key(conn, company, &old.name, &scopes, old.user_id).await?;
            let change = Change {
                action: "api_key.rotate",
                object_type: "api_key",
                object_id: Some(id),
                before: Some(json!({"id": id})),
                after: Some(json!({"id": row.id})),
            };
            audit.write(conn, change).await?;
            Ok(shown_once(&row, key))
        })
        .await?;
    revoked_everywhere(&state, Revoked::Key(id)).await;
    Ok(HttpResponse::Created().json(view))
}

/// Revokes a key, on every replica at once.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "keys", params(("id" = i64, Path, minimum = 1, example = 1, description = "The API key's id.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 409, description = "The key is revoked already (`key_revoked`).", body = crate::openapi::ErrorBody),
    ))]
async fn revoke(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::ManageKeys).await?;
    let id = parse_id(&id, "API key")?;
    let company = caller.company_id.0;
    let audit = Audit::of(&req, &caller);
    let mut conn = state.db.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        let old = revoke_in(conn, company, id).await?;
        let change = Change {
            action: "api_key.revoke",
            object_type: "api_key",
            object_id: Some(id),
            before: Some(json!({"name": old.name})),
            after: None,
        };
        Ok(audit.write(conn, change).await?)
    })
    .await?;
    revoked_everywhere(&state, Revoked::Key(id)).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Drops `revoked` here and tells every other replica to.
pub async fn revoked_everywhere(state: &AppState, revoked: Revoked) {
    state.auth.forget(revoked);
    if let Err(err) = publish_revocation(&state.redis, state.keys.prefix(), revoked).await {
        tracing::warn!(?revoked, error = %err, "a revocation could not be published; other replicas drop it within auth_cache_ttl");
    }
}
