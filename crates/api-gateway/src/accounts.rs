//! Signing in and out, and one's own account.
//!
//! - `POST /api/v1/auth/login` `{email, password}` → a session: its token in the body
//!   and in the `hh_session` cookie. A wrong password, an unknown address and a
//!   deactivated account get the same 401 after the same work (an Argon2id check
//!   against a decoy hash). The 11th failed login for an account within a minute, or
//!   the address's limit, gets 429 with `Retry-After`, right password or not.
//! - `POST /api/v1/auth/logout` ends this session; `POST /api/v1/auth/logout-all` ends
//!   every session of the user.
//! - `GET /api/v1/me`; `POST /api/v1/me/password` `{current_password, new_password}`
//!   ends every session of the user (sign in again with the new one).
//!
//! Session starts and ends are audited. Their audit row and the Redis change commit
//! together: the row is written in a transaction that commits only once Redis has
//! done its part.

use std::net::IpAddr;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use common_models::schema::main::users;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use serde_json::json;
use service_kit::AppError;

use crate::access::{Action, Role};
use crate::audit::{Audit, Change};
use crate::auth::{Caller, Revoked};
use crate::password;
use crate::sessions::{COOKIE, Session};
use crate::state::AppState;

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/auth/login", web::post().to(login))
        .route("/api/v1/auth/logout", web::post().to(logout))
        .route("/api/v1/auth/logout-all", web::post().to(logout_all))
        .route("/api/v1/me", web::get().to(me))
        .route("/api/v1/me/password", web::post().to(change_password));
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = users)]
pub struct UserView {
    pub id: i64,
    pub email: String,
    pub full_name: Option<String>,
    /// `owner`, `admin`, `recruiter` or `viewer`.
    pub role: String,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: String,
    /// 1-1024 bytes.
    #[schema(min_length = 1)]
    password: String,
}

/// A new session: the token is also set as the `hh_session` cookie.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionGrant {
    /// `hhs_…`: send it as a bearer token (or rely on the cookie).
    token: String,
    /// `session`.
    token_type: &'static str,
    /// Seconds the session lasts without a request.
    expires_in: u64,
    user_id: i64,
    company_id: i64,
    role: Role,
}

/// The user row a login needs.
#[derive(Queryable)]
struct Credentials {
    id: i64,
    company_id: i64,
    role: String,
    is_active: bool,
    password_hash: Option<String>,
    password_changed_at: Option<DateTime<Utc>>,
}

fn invalid_credentials() -> AppError {
    AppError::unauthorized("invalid email or password").with_code("invalid_credentials")
}

pub fn normalise_email(field: &'static str, raw: &str) -> Result<String, AppError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 320
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && email.matches('@').count() == 1
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(AppError::bad_request(field, "invalid_value", format!("`{field}` must be an email address")))
    }
}

/// Signs in with an email and password: a session, its token in the body and in the
/// `hh_session` cookie. Repeated failures for an account or from an address get 429.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "accounts", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in.", body = SessionGrant,
            headers(("Set-Cookie" = String, description = "The `hh_session` cookie."))),
        (status = 401, description = "Wrong email or password, or a deactivated account (`invalid_credentials`).", body = crate::openapi::ErrorBody),
    ))]
async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, AppError> {
    let LoginRequest { email, password } = body.into_inner();
    let (token, session) = sign_in(&req, &state, email, password).await?;
    Ok(signed_in(&state, token, session, HttpResponse::Ok()))
}

/// Checks an email and password and starts a session: (its token, the session). The
/// API's login and the dashboard's sign-in form both come here.
pub async fn sign_in(
    req: &HttpRequest,
    state: &AppState,
    email: String,
    password: String,
) -> Result<(String, Session), AppError> {
    if email.trim().is_empty() {
        return Err(AppError::bad_request("email", "missing_field", "`email` is required"));
    }
    crate::jobs::storable("email", &email)?;
    if password.is_empty() || password.len() > password::MAX_BYTES {
        return Err(AppError::bad_request(
            "password",
            "invalid_length",
            format!("`password` must be 1-{} bytes", password::MAX_BYTES),
        ));
    }
    let email = email.trim().to_lowercase();
    let address = req.peer_addr().map(|a| a.ip());
    let sessions = state.auth.sessions();
    refuse_when_throttled(state, &email, address).await?;
    let mut conn = state.db.get().await?;
    let found: Option<Credentials> = users::table
        .filter(lower(users::email).eq(&email))
        .select((
            users::id,
            users::company_id,
            users::role,
            users::is_active,
            users::password_hash,
            users::password_changed_at,
        ))
        .first(&mut conn)
        .await
        .optional()?;
    drop(conn);
    let stored = found.as_ref().filter(|u| u.is_active).and_then(|u| u.password_hash.clone());
    let verified = state.passwords.verify(password, stored).await?;
    let (Some(user), true) = (found, verified) else {
        sessions.login_failed(Some(&email), address).await?;
        return Err(invalid_credentials());
    };
    sessions.login_succeeded(&email).await?;
    let role = Role::parse(&user.role).ok_or_else(|| AppError::internal(anyhow::anyhow!("unknown role in users")))?;
    let session = Session { user_id: user.id, company_id: user.company_id, role, created_at: Utc::now() };
    let (token, id) = sessions.create(&session).await?;

    // Audited, and checked once more: an account deactivated (or a password changed)
    // while this login ran has had its sessions ended already, this one perhaps not.
    let audit = Audit::anonymous(req, Some(user.company_id)).as_user(user.company_id, user.id);
    let mut conn = state.db.get().await?;
    let (user_id, changed_at) = (user.id, user.password_changed_at);
    let still_valid = conn
        .transaction::<_, AppError, _>(async move |conn| {
            let now: Option<(bool, Option<DateTime<Utc>>)> = users::table
                .find(user_id)
                .select((users::is_active, users::password_changed_at))
                .for_share()
                .first(conn)
                .await
                .optional()?;
            if now != Some((true, changed_at)) {
                return Ok(false);
            }
            let change = Change {
                action: "session.create",
                object_type: "user",
                object_id: Some(user_id),
                before: None,
                after: Some(json!({"via": "password"})),
            };
            audit.write(conn, change).await?;
            Ok(true)
        })
        .await;
    if !matches!(still_valid, Ok(true)) {
        sessions.end(&id, user.id).await?;
        still_valid?;
        return Err(invalid_credentials());
    }
    Ok((token, session))
}

/// 429 when `email`'s account or `address` is over its failed logins this minute.
async fn refuse_when_throttled(state: &AppState, email: &str, address: Option<IpAddr>) -> Result<(), AppError> {
    let limits = &state.settings.accounts;
    let throttled = state
        .auth
        .sessions()
        .login_throttled(Some(email), address, limits.login_failures_per_account, limits.login_failures_per_address)
        .await?;
    match throttled {
        Some(wait) => Err(AppError::too_many_requests(
            "login_throttled",
            "too many failed logins for this account or from this address; retry later",
            wait.as_secs() + 1,
        )),
        None => Ok(()),
    }
}

/// The answer to a successful sign-in: the token in the body and in the cookie.
pub fn signed_in(
    state: &AppState,
    token: String,
    session: Session,
    mut response: actix_web::HttpResponseBuilder,
) -> HttpResponse {
    let ttl = state.auth.sessions().ttl();
    response.cookie(session_cookie(state, COOKIE, token.clone(), "/")).json(SessionGrant {
        token,
        token_type: "session",
        expires_in: ttl.as_secs(),
        user_id: session.user_id,
        company_id: session.company_id,
        role: session.role,
    })
}

/// A session cookie (`HttpOnly`, `SameSite=Lax`, `Secure` unless configured off) living
/// as long as a session does.
pub fn session_cookie(state: &AppState, name: &'static str, token: String, path: &'static str) -> Cookie<'static> {
    let ttl = state.auth.sessions().ttl();
    Cookie::build(name, token)
        .http_only(true)
        .secure(state.settings.accounts.cookie_secure)
        .same_site(SameSite::Lax)
        .path(path)
        .max_age(actix_web::cookie::time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(3600)))
        .finish()
}

/// An answer that also clears the session cookie.
fn signed_out(state: &AppState) -> HttpResponse {
    let mut cookie = Cookie::build(COOKIE, "")
        .http_only(true)
        .secure(state.settings.accounts.cookie_secure)
        .same_site(SameSite::Lax)
        .path("/")
        .finish();
    cookie.make_removal();
    HttpResponse::NoContent().cookie(cookie).finish()
}

/// The session a sign-out ends, or 400 for a key.
fn session_of(caller: &Caller) -> Result<(String, i64), AppError> {
    match (&caller.session, caller.user_id) {
        (Some(id), Some(user)) => Ok((id.clone(), user.0)),
        _ => {
            Err(AppError::bad_body("not_a_session", "this call carries an API key, not a session: nothing to sign out"))
        }
    }
}

/// Ends this session (and clears the cookie).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "accounts",
    responses(
        (status = 204, description = "Signed out.", headers(("Set-Cookie" = String, description = "Clears `hh_session`."))),
        (status = 400, description = "The call carries an API key, not a session (`not_a_session`).", body = crate::openapi::ErrorBody),
    ))]
async fn logout(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    end_session(&req, &state).await?;
    Ok(signed_out(&state))
}

/// Ends the request's session, audited (`session.end`); 401 without one, 400 for a
/// key. The API's logout and the dashboard's sign-out both come here.
pub async fn end_session(req: &HttpRequest, state: &AppState) -> Result<(), AppError> {
    let caller = state.auth.authenticate(req).await?;
    let (id, user) = session_of(&caller)?;
    let audit = Audit::of(req, &caller);
    let sessions = state.auth.sessions().clone();
    let mut conn = state.db.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        let change =
            Change { action: "session.end", object_type: "user", object_id: Some(user), before: None, after: None };
        audit.write(conn, change).await?;
        sessions.end(&id, user).await
    })
    .await
}

/// Ends every session of the signed-in user.
#[utoipa::path(post, path = "/api/v1/auth/logout-all", tag = "accounts",
    responses(
        (status = 204, description = "Signed out everywhere.", headers(("Set-Cookie" = String, description = "Clears `hh_session`."))),
        (status = 400, description = "The call carries an API key, not a session (`not_a_session`).", body = crate::openapi::ErrorBody),
    ))]
async fn logout_all(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let caller = state.auth.authenticate(&req).await?;
    let (_, user) = session_of(&caller)?;
    let audit = Audit::of(&req, &caller);
    let sessions = state.auth.sessions().clone();
    let mut conn = state.db.get().await?;
    conn.transaction::<_, AppError, _>(async move |conn| {
        let ended = sessions.end_all(user).await?;
        let change = Change {
            action: "session.end_all",
            object_type: "user",
            object_id: Some(user),
            before: None,
            after: Some(json!({"sessions_ended": ended})),
        };
        audit.write(conn, change).await?;
        Ok(())
    })
    .await?;
    Ok(signed_out(&state))
}

/// Who is calling: the company, the role, the credential and the user (none for a
/// company key).
#[derive(Serialize, utoipa::ToSchema)]
struct Me {
    company_id: i64,
    role: Role,
    /// `session` or `api_key`.
    via: &'static str,
    api_key_id: Option<i64>,
    user: Option<UserView>,
}

/// The caller.
#[utoipa::path(get, path = "/api/v1/me", tag = "accounts",
    responses((status = 200, description = "The caller.", body = Me)))]
async fn me(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let user: Option<UserView> = match caller.user_id {
        Some(id) => {
            let mut conn = state.db.get().await?;
            users::table.find(id.0).select(UserView::as_select()).first(&mut conn).await.optional()?
        }
        None => None,
    };
    Ok(HttpResponse::Ok().json(Me {
        company_id: caller.company_id.0,
        role: caller.role,
        via: if caller.session.is_some() { "session" } else { "api_key" },
        api_key_id: caller.api_key_id.map(|k| k.0),
        user,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes one's password; every session of the user ends (sign in again).
#[utoipa::path(post, path = "/api/v1/me/password", tag = "accounts", request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed; signed out everywhere.", headers(("Set-Cookie" = String, description = "Clears `hh_session`."))),
        (status = 400, description = "A key without a user (`not_a_user`), a wrong current password (`wrong_password`) or a new one too short or long.", body = crate::openapi::ErrorBody),
    ))]
async fn change_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<PasswordChange>,
) -> Result<HttpResponse, AppError> {
    let caller = state.auth.authenticate(&req).await?;
    let Some(user) = caller.user_id.map(|u| u.0) else {
        return Err(AppError::bad_body("not_a_user", "this API key belongs to no user: it has no password"));
    };
    let PasswordChange { current_password, new_password } = body.into_inner();
    password::check_new("new_password", &new_password)?;
    let mut conn = state.db.get().await?;
    let (email, stored): (String, Option<String>) =
        users::table.find(user).select((users::email, users::password_hash)).first(&mut conn).await?;
    drop(conn);
    let sessions = state.auth.sessions().clone();
    let address = req.peer_addr().map(|a| a.ip());
    refuse_when_throttled(&state, &email, address).await?;
    if !state.passwords.verify(current_password, stored).await? {
        sessions.login_failed(Some(&email), address).await?;
        return Err(AppError::bad_request(
            "current_password",
            "wrong_password",
            "`current_password` is not the password",
        ));
    }
    let hash = state.passwords.hash(new_password).await?;
    let audit = Audit::of(&req, &caller);
    let mut conn = state.db.get().await?;
    let ending = sessions.clone();
    conn.transaction::<_, AppError, _>(async move |conn| {
        diesel::update(users::table.find(user))
            .set((
                users::password_hash.eq(hash),
                users::password_changed_at.eq(diesel::dsl::now),
                users::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        let change = Change {
            action: "user.password_change",
            object_type: "user",
            object_id: Some(user),
            before: None,
            after: None,
        };
        audit.write(conn, change).await?;
        ending.end_all(user).await?;
        Ok(())
    })
    .await?;
    account_changed_everywhere(&state, user).await;
    Ok(signed_out(&state))
}

/// After a change to a user's account has committed: ends their sessions (again: a
/// login that read the old row may have started one meanwhile) and tells every replica
/// to drop what it cached of the user's keys.
pub async fn account_changed_everywhere(state: &AppState, user: i64) {
    if let Err(err) = state.auth.sessions().end_all(user).await {
        tracing::warn!(user_id = user, error = %err, "sessions could not be ended after the change");
    }
    crate::keys::revoked_everywhere(state, Revoked::User(user)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses_are_normalised_or_refused() {
        assert_eq!(normalise_email("email", " Ada@Example.COM ").ok().as_deref(), Some("ada@example.com"));
        for bad in ["", "ada", "@example.com", "ada@", "ada@example", "a b@example.com", "a@b@example.com", "ada@.com"]
        {
            assert!(normalise_email("email", bad).is_err(), "{bad:?}");
        }
    }
}
