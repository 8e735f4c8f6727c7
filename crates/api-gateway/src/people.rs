//! People in a company and the invitations that bring them in (seed 004's
//! `user_invitations`).
//!
//! - `GET /api/v1/users`, `GET /api/v1/users/{id}`: everyone in the company may look.
//! - `PATCH /api/v1/users/{id}` `{role?, is_active?, full_name?}`: owners and admins;
//!   only an owner gives or takes the owner role; nobody changes their own role or
//!   deactivates themselves (so a company always keeps an owner). A new role or a
//!   deactivation ends the user's sessions and drops their keys on every replica.
//! - `POST /api/v1/invitations` `{email, role}`, `GET /api/v1/invitations`,
//!   `POST /api/v1/invitations/{id}/resend`, `DELETE /api/v1/invitations/{id}`.
//! - `POST /api/v1/invitations/accept` `{token, password, full_name?}`: no credentials;
//!   creates the account and signs it in.
//!
//! An invitation token (`hhi_` + 40 random letters and digits, about 238 bits) is
//! stored as its SHA-256 only, works once, for `accounts.invitation_ttl` (7 days), and a
//! resend replaces it. Where mail would go out, a row is written to `email_outbox`.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use common_models::schema::main::{companies, email_outbox, user_invitations, users};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use service_kit::AppError;

use crate::access::{Action, Role};
use crate::accounts::{UserView, account_changed_everywhere, lower, normalise_email, signed_in};
use crate::audit::{Audit, Change};
use crate::auth::{hash_key, random_token, well_formed};
use crate::jobs::{check_len, parse_id};
use crate::page::{Page, PageQuery};
use crate::password;
use crate::sessions::Session;
use crate::state::AppState;

pub const INVITATION_PREFIX: &str = "hhi_";
const FULL_NAME_MAX: usize = 200;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/users", web::get().to(list_users))
        .route("/api/v1/users/{id}", web::get().to(read_user))
        .route("/api/v1/users/{id}", web::patch().to(update_user))
        // Before `/invitations/{id}` routes could read "accept" as an id.
        .route("/api/v1/invitations/accept", web::post().to(accept))
        .route("/api/v1/invitations", web::post().to(invite))
        .route("/api/v1/invitations", web::get().to(list_invitations))
        .route("/api/v1/invitations/{id}/resend", web::post().to(resend))
        .route("/api/v1/invitations/{id}", web::delete().to(revoke));
}

fn user_not_found(id: impl std::fmt::Display) -> AppError {
    crate::jobs::not_found("user", id)
}

/// The company's people, newest first.
#[utoipa::path(get, path = "/api/v1/users", tag = "people", params(PageQuery),
    responses((status = 200, description = "A page of people.", body = Page<UserView>)))]
async fn list_users(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let query: PageQuery = crate::page::query(&req)?;
    let (limit, after) = query.resolve()?;
    let mut q = users::table.filter(users::company_id.eq(caller.company_id.0)).into_boxed();
    if let Some(after) = after {
        q = q.filter(users::id.lt(after));
    }
    let mut conn = state.db.get().await?;
    let rows: Vec<UserView> =
        q.order(users::id.desc()).limit(limit + 1).select(UserView::as_select()).load(&mut conn).await?;
    Ok(HttpResponse::Ok().json(Page::of(rows, limit, |u| u.id)))
}

/// A person of the company.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "people", params(("id" = i64, Path, minimum = 1, example = 1, description = "The user's id.")),
    responses((status = 200, description = "The person.", body = UserView)))]
async fn read_user(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let id = parse_id(&id, "user")?;
    let mut conn = state.db.get().await?;
    let user: UserView = users::table
        .filter(users::id.eq(id).and(users::company_id.eq(caller.company_id.0)))
        .select(UserView::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(|| user_not_found(id))?;
    Ok(HttpResponse::Ok().json(user))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    /// `owner`, `admin`, `recruiter` or `viewer`; only an owner gives or takes `owner`.
    #[schema(value_type = Option<Role>)]
    role: Option<String>,
    is_active: Option<bool>,
    /// At most 200 characters; empty clears it.
    #[schema(max_length = 200)]
    full_name: Option<String>,
}

/// Changes a person's role, state or name (owners and admins). A new role or a
/// deactivation ends their sessions; nobody changes their own role or deactivates
/// themselves.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "people", params(("id" = i64, Path, minimum = 1, example = 1, description = "The user's id.")), request_body = UserUpdate,
    responses((status = 200, description = "The person as changed.", body = UserView)))]
async fn update_user(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<UserUpdate>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::ManagePeople).await?;
    let id = parse_id(&id, "user")?;
    let UserUpdate { role, is_active, full_name } = body.into_inner();
    let role = role.map(|r| Role::from_input("role", &r)).transpose()?;
    let full_name = full_name.map(|n| n.trim().to_owned());
    if let Some(name) = &full_name {
        check_len("full_name", name, 0, FULL_NAME_MAX)?;
    }
    if caller.user_id.map(|u| u.0) == Some(id) && (role.is_some() || is_active.is_some()) {
        return Err(AppError::forbidden(
            "nobody changes their own role or deactivates themselves: ask another owner or admin",
        )
        .with_code("own_account"));
    }
    if let Some(role) = role
        && !caller.role.may_manage(role)
    {
        return Err(AppError::forbidden("only an owner gives the owner role").with_code("insufficient_role"));
    }
    let (company, actor) = (caller.company_id.0, caller.role);
    let audit = Audit::of(&req, &caller);
    let sessions = state.auth.sessions().clone();
    let mut conn = state.db.get().await?;
    let (updated, account_changed) = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let before: UserView = users::table
                .filter(users::id.eq(id).and(users::company_id.eq(company)))
                .select(UserView::as_select())
                .for_update()
                .first(conn)
                .await
                .optional()?
                .ok_or_else(|| user_not_found(id))?;
            let current = Role::parse(&before.role).unwrap_or(Role::Owner);
            if !actor.may_manage(current) {
                return Err(
                    AppError::forbidden("only an owner changes an owner's account").with_code("insufficient_role")
                );
            }
            let after: UserView = diesel::update(users::table.find(id))
                .set((
                    role.map(|r| users::role.eq(r.as_str())),
                    is_active.map(|a| users::is_active.eq(a)),
                    full_name.map(|n| users::full_name.eq((!n.is_empty()).then_some(n))),
                    users::updated_at.eq(diesel::dsl::now),
                ))
                .returning(UserView::as_returning())
                .get_result(conn)
                .await?;
            // A new role or a deactivation ends the sessions (they carry the role); any
            // change of role or state drops the user's cached keys everywhere.
            let ends = after.role != before.role || (before.is_active && !after.is_active);
            let account_changed = after.role != before.role || after.is_active != before.is_active;
            let change = Change {
                action: "user.update",
                object_type: "user",
                object_id: Some(id),
                before: Some(user_fields(&before)),
                after: Some(user_fields(&after)),
            };
            audit.write(conn, change).await?;
            if ends {
                sessions.end_all(id).await?;
            }
            Ok((after, account_changed))
        })
        .await?;
    if account_changed {
        account_changed_everywhere(&state, id).await;
    }
    Ok(HttpResponse::Ok().json(updated))
}

fn user_fields(u: &UserView) -> Value {
    json!({"role": u.role, "is_active": u.is_active, "full_name": u.full_name})
}

#[derive(Clone, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = user_invitations)]
struct InvitationRow {
    id: i64,
    email: String,
    role: String,
    invited_by: Option<i64>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    accepted_at: Option<DateTime<Utc>>,
    accepted_user: Option<i64>,
    revoked_at: Option<DateTime<Utc>>,
}

impl InvitationRow {
    fn status(&self) -> &'static str {
        if self.accepted_at.is_some() {
            "accepted"
        } else if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at <= Utc::now() {
            "expired"
        } else {
            "pending"
        }
    }

    fn view(&self) -> Value {
        serde_json::to_value(InvitationView { invitation: self.clone(), status: self.status() }).unwrap_or(Value::Null)
    }
}

/// An invitation as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
struct InvitationView {
    #[serde(flatten)]
    invitation: InvitationRow,
    /// `pending`, `accepted`, `revoked` or `expired`.
    status: &'static str,
}

fn token_digest(token: &str) -> Vec<u8> {
    hash_key(token).to_vec()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewInvitation {
    email: String,
    /// Only an owner invites owners.
    #[schema(value_type = Role)]
    role: String,
}

/// A new invitation in `company` (a fresh token, the outbox row), inside the caller's
/// transaction. Returns the row and the token.
pub async fn create_invitation(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    company: i64,
    email: &str,
    role: Role,
    invited_by: Option<i64>,
) -> Result<(InvitationRowOut, String), AppError> {
    let taken: i64 = users::table.filter(lower(users::email).eq(email)).count().get_result(conn).await?;
    if taken > 0 {
        return Err(AppError::conflict("already_a_user", format!("{email} already has an account")).with_param("email"));
    }
    let token = random_token(INVITATION_PREFIX).map_err(AppError::internal)?;
    let expires = Utc::now() + state.settings.accounts.invitation_ttl;
    let row: InvitationRow = diesel::insert_into(user_invitations::table)
        .values((
            user_invitations::company_id.eq(company),
            user_invitations::email.eq(email),
            user_invitations::role.eq(role.as_str()),
            user_invitations::token_hash.eq(token_digest(&token)),
            user_invitations::invited_by.eq(invited_by),
            user_invitations::expires_at.eq(expires),
        ))
        .on_conflict_do_nothing()
        .returning(InvitationRow::as_returning())
        .get_result(conn)
        .await
        .optional()?
        .ok_or_else(|| {
            AppError::conflict("already_invited", format!("{email} has an open invitation: resend it instead"))
                .with_param("email")
        })?;
    queue_email(conn, state, company, &row, &token).await?;
    Ok((InvitationRowOut(row), token))
}

/// An invitation as created, for callers outside this module.
pub struct InvitationRowOut(InvitationRow);

impl InvitationRowOut {
    pub fn id(&self) -> i64 {
        self.0.id
    }

    pub fn view(&self) -> Value {
        self.0.view()
    }
}

/// The invitation email, to the outbox (no mail server runs here; a mailer delivers
/// the rows), and a log line without the token.
async fn queue_email(
    conn: &mut AsyncPgConnection,
    state: &AppState,
    company: i64,
    invitation: &InvitationRow,
    token: &str,
) -> Result<(), AppError> {
    let company_name: String = companies::table.find(company).select(companies::name).first(conn).await?;
    let link = format!("{}{token}", state.settings.accounts.invitation_url);
    let body = format!(
        "You are invited to join {company_name} on headhunter as {role}.\n\nAccept by {expires}: {link}\n\n\
         If you did not expect this, ignore this message.\n",
        role = invitation.role,
        expires = invitation.expires_at.format("%Y-%m-%d %H:%M UTC"),
    );
    let outbox_id: i64 = diesel::insert_into(email_outbox::table)
        .values((
            email_outbox::company_id.eq(company),
            email_outbox::recipient.eq(&invitation.email),
            email_outbox::subject.eq(format!("Join {company_name} on headhunter")),
            email_outbox::body.eq(body),
        ))
        .returning(email_outbox::id)
        .get_result(conn)
        .await?;
    tracing::info!(
        outbox_id,
        invitation_id = invitation.id,
        company_id = company,
        "invitation email queued in the outbox"
    );
    Ok(())
}

/// Invites someone into the company (owners and admins); the invitation email goes to
/// the outbox.
#[utoipa::path(post, path = "/api/v1/invitations", tag = "people", request_body = NewInvitation,
    responses(
        (status = 201, description = "The invitation.", body = InvitationView),
        (status = 409, description = "The address has an account (`already_a_user`) or an open invitation (`already_invited`).", body = crate::openapi::ErrorBody),
    ))]
async fn invite(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<NewInvitation>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::ManagePeople).await?;
    let NewInvitation { email, role } = body.into_inner();
    let email = normalise_email("email", &email)?;
    let role = Role::from_input("role", &role)?;
    if !caller.role.may_manage(role) {
        return Err(AppError::forbidden("only an owner invites owners").with_code("insufficient_role"));
    }
    let audit = Audit::of(&req, &caller);
    let (company, inviter) = (caller.company_id.0, caller.user_id.map(|u| u.0));
    let st = state.clone();
    let mut conn = state.db.get().await?;
    let view = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let (row, _token) = create_invitation(conn, &st, company, &email, role, inviter).await?;
            let change = Change {
                action: "invitation.create",
                object_type: "invitation",
                object_id: Some(row.id()),
                before: None,
                after: Some(json!({"email": email, "role": role})),
            };
            audit.write(conn, change).await?;
            Ok(row.view())
        })
        .await?;
    Ok(HttpResponse::Created().json(view))
}

/// The company's invitations, newest first.
#[utoipa::path(get, path = "/api/v1/invitations", tag = "people", params(PageQuery),
    responses((status = 200, description = "A page of invitations.", body = Page<InvitationView>)))]
async fn list_invitations(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::ManagePeople).await?;
    let query: PageQuery = crate::page::query(&req)?;
    let (limit, after) = query.resolve()?;
    let mut q = user_invitations::table.filter(user_invitations::company_id.eq(caller.company_id.0)).into_boxed();
    if let Some(after) = after {
        q = q.filter(user_invitations::id.lt(after));
    }
    let mut conn = state.db.get().await?;
    let rows: Vec<InvitationRow> = q
        .order(user_invitations::id.desc())
        .limit(limit + 1)
        .select(InvitationRow::as_select())
        .load(&mut conn)
        .await?;
    let page = Page::of(rows, limit, |r| r.id);
    Ok(HttpResponse::Ok().json(json!({
        "data": page.data.iter().map(InvitationRow::view).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

/// The company's invitation `id`, locked, with a role the caller may manage.
async fn own_invitation(
    conn: &mut AsyncPgConnection,
    company: i64,
    id: i64,
    actor: Role,
) -> Result<InvitationRow, AppError> {
    let row: InvitationRow = user_invitations::table
        .filter(user_invitations::id.eq(id).and(user_invitations::company_id.eq(company)))
        .select(InvitationRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| crate::jobs::not_found("invitation", id))?;
    if !actor.may_manage(Role::parse(&row.role).unwrap_or(Role::Owner)) {
        return Err(AppError::forbidden("only an owner manages invitations of owners").with_code("insufficient_role"));
    }
    if row.accepted_at.is_some() {
        return Err(AppError::conflict("invitation_accepted", "this invitation was accepted already"));
    }
    Ok(row)
}

/// Sends an invitation again with a new token (the old link stops working) and a new
/// expiry.
#[utoipa::path(post, path = "/api/v1/invitations/{id}/resend", tag = "people", params(("id" = i64, Path, minimum = 1, example = 1, description = "The invitation's id.")),
    responses(
        (status = 200, description = "The invitation.", body = InvitationView),
        (status = 409, description = "Accepted or revoked already.", body = crate::openapi::ErrorBody),
    ))]
async fn resend(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::ManagePeople).await?;
    let id = parse_id(&id, "invitation")?;
    let (company, actor) = (caller.company_id.0, caller.role);
    let audit = Audit::of(&req, &caller);
    let st = state.clone();
    let mut conn = state.db.get().await?;
    let view = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let before = own_invitation(conn, company, id, actor).await?;
            if before.revoked_at.is_some() {
                return Err(AppError::conflict("invitation_revoked", "this invitation was revoked: invite again"));
            }
            // A new token: the old link stops working.
            let token = random_token(INVITATION_PREFIX).map_err(AppError::internal)?;
            let row: InvitationRow = diesel::update(user_invitations::table.find(id))
                .set((
                    user_invitations::token_hash.eq(token_digest(&token)),
                    user_invitations::expires_at.eq(Utc::now() + st.settings.accounts.invitation_ttl),
                ))
                .returning(InvitationRow::as_returning())
                .get_result(conn)
                .await?;
            queue_email(conn, &st, company, &row, &token).await?;
            let change = Change {
                action: "invitation.resend",
                object_type: "invitation",
                object_id: Some(id),
                before: Some(json!({"expires_at": before.expires_at})),
                after: Some(json!({"expires_at": row.expires_at})),
            };
            audit.write(conn, change).await?;
            Ok(row.view())
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Revokes an invitation.
#[utoipa::path(delete, path = "/api/v1/invitations/{id}", tag = "people", params(("id" = i64, Path, minimum = 1, example = 1, description = "The invitation's id.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 409, description = "Accepted or revoked already.", body = crate::openapi::ErrorBody),
    ))]
async fn revoke(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::ManagePeople).await?;
    let id = parse_id(&id, "invitation")?;
    let (company, actor) = (caller.company_id.0, caller.role);
    let audit = Audit::of(&req, &caller);
    let mut conn = state.db.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        let before = own_invitation(conn, company, id, actor).await?;
        if before.revoked_at.is_some() {
            return Err(AppError::conflict("invitation_revoked", "this invitation was revoked already"));
        }
        diesel::update(user_invitations::table.find(id))
            .set(user_invitations::revoked_at.eq(diesel::dsl::now))
            .execute(conn)
            .await?;
        let change = Change {
            action: "invitation.revoke",
            object_type: "invitation",
            object_id: Some(id),
            before: Some(json!({"status": before.status()})),
            after: Some(json!({"status": "revoked"})),
        };
        Ok(audit.write(conn, change).await?)
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Acceptance {
    token: String,
    password: String,
    full_name: Option<String>,
}

fn invalid_invitation() -> AppError {
    AppError::bad_request("token", "invalid_invitation", "this invitation is unknown, used, revoked or expired")
}

/// Accepts an invitation (no credentials): creates the account with this password and
/// signs it in.
#[utoipa::path(post, path = "/api/v1/invitations/accept", tag = "people", request_body = Acceptance,
    responses(
        (status = 201, description = "The account exists and is signed in.", body = crate::accounts::SessionGrant,
            headers(("Set-Cookie" = String, description = "The `hh_session` cookie."))),
        (status = 409, description = "The address has an account already (`already_a_user`).", body = crate::openapi::ErrorBody),
    ))]
async fn accept(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<Acceptance>,
) -> Result<HttpResponse, AppError> {
    let Acceptance { token, password, full_name } = body.into_inner();
    let full_name = full_name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if let Some(name) = &full_name {
        check_len("full_name", name, 0, FULL_NAME_MAX)?;
    }
    password::check_new("password", &password)?;
    // Guessing tokens counts against the address like failed logins do.
    let address = req.peer_addr().map(|a| a.ip());
    let sessions = state.auth.sessions().clone();
    let per_address = state.settings.accounts.login_failures_per_address;
    if let Some(wait) = sessions.login_throttled(None, address, 0, per_address).await? {
        return Err(AppError::too_many_requests(
            "login_throttled",
            "too many failed attempts from this address; retry later",
            wait.as_secs() + 1,
        ));
    }
    if !well_formed(&token, INVITATION_PREFIX) {
        sessions.login_failed(None, address).await?;
        return Err(invalid_invitation());
    }
    let hash = state.passwords.hash(password).await?;
    let digest = token_digest(&token);
    let audit = Audit::anonymous(&req, None);
    let mut conn = state.db.get().await?;
    let accepted = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let Some(invitation): Option<(i64, i64, String, String)> = user_invitations::table
                .filter(user_invitations::token_hash.eq(&digest))
                .filter(user_invitations::accepted_at.is_null())
                .filter(user_invitations::revoked_at.is_null())
                .filter(user_invitations::expires_at.gt(diesel::dsl::now))
                .select((
                    user_invitations::id,
                    user_invitations::company_id,
                    user_invitations::email,
                    user_invitations::role,
                ))
                .for_update()
                .first(conn)
                .await
                .optional()?
            else {
                return Ok(None);
            };
            let (invitation_id, company, email, role) = invitation;
            let taken: i64 = users::table.filter(lower(users::email).eq(&email)).count().get_result(conn).await?;
            if taken > 0 {
                return Err(AppError::conflict("already_a_user", format!("{email} already has an account")));
            }
            let user: UserView = diesel::insert_into(users::table)
                .values((
                    users::company_id.eq(company),
                    users::email.eq(&email),
                    users::full_name.eq(full_name),
                    users::role.eq(&role),
                    users::password_hash.eq(hash),
                    users::password_changed_at.eq(diesel::dsl::now),
                ))
                .returning(UserView::as_returning())
                .get_result(conn)
                .await?;
            diesel::update(user_invitations::table.find(invitation_id))
                .set((user_invitations::accepted_at.eq(diesel::dsl::now), user_invitations::accepted_user.eq(user.id)))
                .execute(conn)
                .await?;
            let change = Change {
                action: "invitation.accept",
                object_type: "invitation",
                object_id: Some(invitation_id),
                before: None,
                after: Some(json!({"user_id": user.id, "email": email, "role": role})),
            };
            audit.as_user(company, user.id).write(conn, change).await?;
            Ok(Some((company, user)))
        })
        .await?;
    let Some((company, user)) = accepted else {
        sessions.login_failed(None, address).await?;
        return Err(invalid_invitation());
    };
    let role = Role::parse(&user.role).unwrap_or(Role::Viewer);
    let session = Session { user_id: user.id, company_id: company, role, created_at: Utc::now() };
    let (token, _) = sessions.create(&session).await?;
    Ok(signed_in(&state, token, session, HttpResponse::Created()))
}
