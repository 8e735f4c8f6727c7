//! Who is calling: a session (cookie `hh_session`, or a bearer token `hhs_…`) or an
//! API key (bearer `hh_…`). Keys: only their SHA-256 digest is stored; a validated key
//! is trusted for `auth_cache_ttl` without asking the main database again, so
//! authentication costs a hash and a map look-up on the hot path; unknown keys are
//! remembered briefly too, so a client retrying a bad key cannot turn into database
//! load. A revoked key, or any key of a deactivated user, is published on Redis and
//! dropped by every replica at once; `auth_cache_ttl` bounds it only on a replica whose
//! subscription was down (it forgets every key when it resubscribes). Sessions live in
//! Redis (see `sessions`): one round trip, nothing cached here.
//!
//! cv-processor calls the LLM route in a company's name (analyses): it sends the
//! internal service key as its bearer token and names the company (and the person who
//! asked) in [`ON_BEHALF_OF_COMPANY`] / [`ON_BEHALF_OF_USER`]. Such a caller is a
//! recruiter holding only the `llm` scope, and the key is refused (403) on every other
//! route.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use common_models::ids::{ApiKeyId, CompanyId, UserId};
use common_models::schema::main::{api_keys, users};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use service_kit::AppError;
use service_kit::auth::bearer_token;
use service_kit::db::PgPool;
use service_kit::request_log::Requester;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::access::{Action, Role, Scopes, refused, refused_to_key};
use crate::sessions::{self, SessionId, Sessions};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub company_id: CompanyId,
    /// The person: a session's user, or the user a key belongs to.
    pub user_id: Option<UserId>,
    /// The key, when the call carries one.
    pub api_key_id: Option<ApiKeyId>,
    /// The session, when the call carries one.
    pub session: Option<SessionId>,
    pub role: Role,
    /// A key's scopes (`None` for a session).
    pub scopes: Option<Scopes>,
}

impl Caller {
    /// Names the caller in `req`'s log record.
    fn attached_to(self, req: &HttpRequest) -> Self {
        Requester { company_id: Some(self.company_id.0), user_id: self.user_id.map(|u| u.0) }.attach(req);
        self
    }

    /// 403 unless the caller's role allows `action`, and for a key, its scopes.
    pub fn require(&self, action: Action) -> Result<(), AppError> {
        if !self.role.allows(action) {
            return Err(refused(self.role, action));
        }
        match (self.scopes, action.scope()) {
            (None, _) => Ok(()),
            (Some(scopes), Some(scope)) if scopes.contains(scope) => Ok(()),
            (Some(_), _) => Err(refused_to_key(action)),
        }
    }
}

/// A key's row with its user's role and state (NULL for a company key).
type KeyRow = (i64, i64, Option<i64>, Vec<String>, Option<String>, Option<bool>);

/// A key as the cache keeps it.
#[derive(Debug, Clone, Copy)]
struct KeyOwner {
    key_id: ApiKeyId,
    company_id: CompanyId,
    user_id: Option<UserId>,
    role: Role,
    scopes: Scopes,
}

const KEY_PREFIX: &str = "hh_";
/// Characters after the prefix in every key the gateway issues.
const KEY_BODY_LEN: usize = 40;
/// Known keys remembered; when full, the oldest entries go first (by expiry sweep, then
/// wholesale if every entry is fresh).
const KNOWN_LIMIT: usize = 100_000;
/// Unknown keys remembered, apart from the known ones: a flood of random keys fills
/// only this and never pushes a good key out.
const UNKNOWN_LIMIT: usize = 20_000;
const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Client addresses whose failed authentications are counted; when full, expired
/// windows go first.
const THROTTLE_LIMIT: usize = 100_000;
const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

/// The company a service call acts for.
pub const ON_BEHALF_OF_COMPANY: &str = "x-on-behalf-of-company";
/// The person a service call acts for, when a person asked (recorded with the call's
/// log row; the service is trusted to name a person of the company).
pub const ON_BEHALF_OF_USER: &str = "x-on-behalf-of-user";
/// The one route the service key reaches.
const SERVICE_ROUTE: &str = "/v1/chat/completions";

pub struct Authenticator {
    pool: PgPool,
    /// Digest of the internal service key (none configured: no service calls).
    service_key: Option<[u8; 32]>,
    sessions: Sessions,
    ttl: Duration,
    known: RwLock<HashMap<[u8; 32], (KeyOwner, Instant)>>,
    unknown: RwLock<HashMap<[u8; 32], Instant>>,
    /// Failed authentications allowed per client address a minute (0: no limit).
    max_failures: u32,
    /// Client address → failures in the window and when the window began.
    /// Read on every request, written only on a failure.
    failures: RwLock<HashMap<IpAddr, (u32, Instant)>>,
}

impl Authenticator {
    pub fn new(pool: PgPool, sessions: Sessions, ttl: Duration, max_failures: u32, service_key: &str) -> Self {
        Self {
            pool,
            service_key: (!service_key.is_empty()).then(|| hash_key(service_key)),
            sessions,
            ttl,
            known: RwLock::new(HashMap::new()),
            unknown: RwLock::new(HashMap::new()),
            max_failures,
            failures: RwLock::new(HashMap::new()),
        }
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// The caller, if its role allows `action`: 401 without valid credentials, 403
    /// when the role does not reach.
    pub async fn allow(&self, req: &HttpRequest, action: Action) -> Result<Caller, AppError> {
        let caller = self.authenticate(req).await?;
        caller.require(action)?;
        Ok(caller)
    }

    /// Resolves the request's session or key, or 401. An address with too many failed
    /// attempts this minute gets 429 (with `Retry-After`) before anything is looked up.
    pub async fn authenticate(&self, req: &HttpRequest) -> Result<Caller, AppError> {
        let address = req.peer_addr().map(|a| a.ip());
        if let Some(wait) = address.and_then(|ip| self.throttled(ip)) {
            return Err(AppError::too_many_requests(
                "auth_throttled",
                "too many failed authentications from this address; retry later",
                wait.as_secs() + 1,
            ));
        }
        let resolved = self.resolve(req).await;
        if let (Err(err), Some(ip)) = (&resolved, address)
            && err.kind() == service_kit::ErrorKind::Unauthorized
        {
            self.failed(ip);
            self.failed_everywhere(ip).await;
        }
        resolved
    }

    /// Counts the failure in Redis too, so an address failing against several replicas
    /// is throttled by each once the failures of all of them reach the limit (each
    /// learns it at its next failure). Without Redis the count stays per replica.
    async fn failed_everywhere(&self, ip: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        match self.sessions.auth_failed(ip).await {
            Ok((count, left)) if count >= self.max_failures && !left.is_zero() => {
                let since =
                    Instant::now().checked_sub(THROTTLE_WINDOW.saturating_sub(left)).unwrap_or_else(Instant::now);
                if let Ok(mut failures) = self.failures.write() {
                    failures.insert(ip, (count, since));
                }
            }
            Ok(_) => {}
            Err(err) => tracing::debug!(error = %err, "failed authentications not counted in Redis; per replica only"),
        }
    }

    /// How long `ip` must wait, if it is over its failures this minute.
    fn throttled(&self, ip: IpAddr) -> Option<Duration> {
        if self.max_failures == 0 {
            return None;
        }
        let failures = self.failures.read().ok()?;
        let (count, since) = failures.get(&ip)?;
        let elapsed = since.elapsed();
        (*count >= self.max_failures && elapsed < THROTTLE_WINDOW).then(|| THROTTLE_WINDOW - elapsed)
    }

    fn failed(&self, ip: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        if let Ok(mut failures) = self.failures.write() {
            make_room(&mut failures, THROTTLE_LIMIT, |(_, since)| since.elapsed() < THROTTLE_WINDOW);
            let entry = failures.entry(ip).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= THROTTLE_WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    /// The caller of the request's session or key, or 401. A token not shaped like the
    /// ones issued here is refused without a look-up.
    async fn resolve(&self, req: &HttpRequest) -> Result<Caller, AppError> {
        let cookie = req.cookie(sessions::COOKIE);
        let token = match (bearer_token(req), &cookie) {
            (Some(token), _) => token,
            (None, Some(cookie)) => cookie.value(),
            (None, None) => {
                return Err(AppError::unauthorized(
                    "missing credentials: sign in, or send an API key as \"Authorization: Bearer <key>\"",
                ));
            }
        };
        if token.starts_with(sessions::TOKEN_PREFIX) {
            if !well_formed(token, sessions::TOKEN_PREFIX) {
                return Err(ended_session());
            }
            let (id, session) = self.sessions.check(token).await?.ok_or_else(ended_session)?;
            let caller = Caller {
                company_id: CompanyId(session.company_id),
                user_id: Some(UserId(session.user_id)),
                api_key_id: None,
                session: Some(id),
                role: session.role,
                scopes: None,
            };
            return Ok(caller.attached_to(req));
        }
        let digest = hash_key(token);
        if self.service_key == Some(digest) {
            if req.path() != SERVICE_ROUTE {
                return Err(AppError::forbidden("the service key is good for LLM calls in a company's name only")
                    .with_code("insufficient_scope"));
            }
            return Ok(on_behalf_of(req)?.attached_to(req));
        }
        if !well_formed(token, KEY_PREFIX) {
            return Err(unknown_key());
        }
        let owner = match self.cached(&digest) {
            Some(hit) => hit,
            None => {
                let owner = self.look_up(&digest).await?;
                self.remember(digest, owner);
                owner
            }
        };
        let owner = owner.ok_or_else(unknown_key)?;
        let caller = Caller {
            company_id: owner.company_id,
            user_id: owner.user_id,
            api_key_id: Some(owner.key_id),
            session: None,
            role: owner.role,
            scopes: Some(owner.scopes),
        };
        Ok(caller.attached_to(req))
    }

    /// The key's owner: a live key, and when it belongs to a user, an active one.
    async fn look_up(&self, digest: &[u8; 32]) -> Result<Option<KeyOwner>, AppError> {
        let mut conn = self.pool.get().await.map_err(|e| AppError::unavailable("the main database", e))?;
        let found: Option<KeyRow> = api_keys::table
            .left_join(users::table)
            .filter(api_keys::key_hash.eq(digest.as_slice()))
            .filter(api_keys::revoked_at.is_null())
            .select((
                api_keys::id,
                api_keys::company_id,
                api_keys::user_id,
                api_keys::scopes,
                users::role.nullable(),
                users::is_active.nullable(),
            ))
            .first(&mut conn)
            .await
            .optional()?;
        Ok(found.and_then(|(id, company, user, scopes, role, active)| {
            let role = match (user, role, active) {
                (None, _, _) => Role::Recruiter,
                (Some(_), Some(role), Some(true)) => Role::parse(&role)?,
                _ => return None,
            };
            Some(KeyOwner {
                key_id: ApiKeyId(id),
                company_id: CompanyId(company),
                user_id: user.map(UserId),
                role,
                scopes: Scopes::from_names(&scopes),
            })
        }))
    }

    /// Drops what a revocation names from this replica's key cache. Keys remembered as
    /// unknown go too (a reactivated user's key must work at once); that cache only
    /// shields the database from floods and refills by itself.
    pub fn forget(&self, revoked: Revoked) {
        if let Ok(mut unknown) = self.unknown.write() {
            unknown.clear();
        }
        if let Ok(mut known) = self.known.write() {
            known.retain(|_, (owner, _)| match revoked {
                Revoked::Key(id) => owner.key_id.0 != id,
                Revoked::User(id) => owner.user_id.map(|u| u.0) != Some(id),
                Revoked::Everything => false,
            });
        }
    }

    /// `Some(Some(_))` a known key, `Some(None)` a key known to be unknown, `None` not
    /// remembered (or expired).
    fn cached(&self, digest: &[u8; 32]) -> Option<Option<KeyOwner>> {
        if let Some((owner, at)) = self.known.read().ok()?.get(digest)
            && at.elapsed() < self.ttl
        {
            return Some(Some(*owner));
        }
        let unknown = self.unknown.read().ok()?;
        unknown.get(digest).filter(|at| at.elapsed() < NEGATIVE_TTL).map(|_| None)
    }

    fn remember(&self, digest: [u8; 32], owner: Option<KeyOwner>) {
        match owner {
            Some(owner) => {
                if let Ok(mut known) = self.known.write() {
                    make_room(&mut known, KNOWN_LIMIT, |(_, at)| at.elapsed() < self.ttl);
                    known.insert(digest, (owner, Instant::now()));
                }
            }
            None => {
                if let Ok(mut unknown) = self.unknown.write() {
                    make_room(&mut unknown, UNKNOWN_LIMIT, |at| at.elapsed() < NEGATIVE_TTL);
                    unknown.insert(digest, Instant::now());
                }
            }
        }
    }
}

/// Drops expired entries when `map` is full; if all are fresh, empties it.
/// The caller a service call names: a recruiter of the company, `llm` scope only.
fn on_behalf_of(req: &HttpRequest) -> Result<Caller, AppError> {
    let id = |header: &'static str| -> Result<Option<i64>, AppError> {
        let Some(value) = req.headers().get(header) else { return Ok(None) };
        let id = value.to_str().ok().and_then(|v| v.trim().parse::<i64>().ok()).filter(|id| *id > 0);
        id.map(Some).ok_or_else(|| {
            AppError::bad_request(header, "invalid_value", format!("`{header}` must be a positive integer id"))
        })
    };
    let company = id(ON_BEHALF_OF_COMPANY)?.ok_or_else(|| {
        AppError::bad_request(
            ON_BEHALF_OF_COMPANY,
            "missing_header",
            format!("a service call must name the company it acts for in `{ON_BEHALF_OF_COMPANY}`"),
        )
    })?;
    Ok(Caller {
        company_id: CompanyId(company),
        user_id: id(ON_BEHALF_OF_USER)?.map(UserId),
        api_key_id: None,
        session: None,
        role: Role::Recruiter,
        scopes: Some(Scopes::from_names(&[crate::access::Scope::Llm.as_str()])),
    })
}

fn make_room<K, V>(map: &mut HashMap<K, V>, limit: usize, fresh: impl Fn(&V) -> bool) {
    if map.len() >= limit {
        map.retain(|_, v| fresh(v));
        if map.len() >= limit {
            map.clear();
        }
    }
}

/// Shaped like a token issued here: `prefix` and 40 letters or digits.
pub fn well_formed(token: &str, prefix: &str) -> bool {
    token.len() == prefix.len() + KEY_BODY_LEN
        && token.starts_with(prefix)
        && token.bytes().skip(prefix.len()).all(|b| b.is_ascii_alphanumeric())
}

fn unknown_key() -> AppError {
    AppError::unauthorized("invalid API key")
}

fn ended_session() -> AppError {
    AppError::unauthorized("the session has ended or never existed: sign in again").with_code("session_ended")
}

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Key(i64),
    User(i64),
    /// Everything this replica remembers (after a gap in its subscription).
    Everything,
}

impl Revoked {
    fn encode(self) -> String {
        match self {
            Revoked::Key(id) => format!("key:{id}"),
            Revoked::User(id) => format!("user:{id}"),
            Revoked::Everything => "all".to_owned(),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        match text.split_once(':') {
            Some(("key", id)) => id.parse().ok().map(Revoked::Key),
            Some(("user", id)) => id.parse().ok().map(Revoked::User),
            _ => (text == "all").then_some(Revoked::Everything),
        }
    }
}

fn revocation_channel(prefix: &str) -> String {
    format!("{prefix}auth:revoked")
}

/// Tells every replica to drop what `revoked` names. A replica that misses it (its
/// subscription down) forgets every key when it resubscribes.
pub async fn publish_revocation(
    redis: &service_kit::redis::Pool,
    prefix: &str,
    revoked: Revoked,
) -> Result<(), AppError> {
    let mut conn = redis.get().await.map_err(|e| AppError::unavailable("Redis", e))?;
    redis::cmd("PUBLISH")
        .arg(revocation_channel(prefix))
        .arg(revoked.encode())
        .query_async::<()>(&mut *conn)
        .await
        .map_err(|e| AppError::unavailable("Redis", e))
}

/// Follows the revocation channel until `shutdown`.
pub fn follow_revocations(
    auth: Arc<Authenticator>,
    redis_url: &str,
    prefix: &str,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    crate::pubsub::follow(redis_url, revocation_channel(prefix), shutdown, move |message| match message {
        crate::pubsub::Message::Subscribed => auth.forget(Revoked::Everything),
        crate::pubsub::Message::Payload(text) => {
            if let Some(revoked) = Revoked::decode(&text) {
                auth.forget(revoked);
            }
        }
    })
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `prefix` and 40 random letters and digits (about 238 bits).
pub fn random_token(prefix: &str) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = [0u8; KEY_BODY_LEN];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    // 40 bytes mapped onto 62 symbols: the slight modulo bias is irrelevant here.
    let body: String = random.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
    Ok(format!("{prefix}{body}"))
}

/// A new random key: (the key, its display prefix, its digest).
pub fn generate_key() -> anyhow::Result<(String, String, [u8; 32])> {
    let key = random_token(KEY_PREFIX)?;
    let prefix = key[..KEY_PREFIX.len() + 6].to_owned();
    let digest = hash_key(&key);
    Ok((key, prefix, digest))
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_keys_are_unique_and_hash_to_their_digest() {
        let (a, prefix, digest) = generate_key().unwrap();
        let (b, _, _) = generate_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("hh_") && a.len() == 43);
        assert!(well_formed(&a, KEY_PREFIX));
        for bad in
            ["", "hh_", "sk-abc", &a[..42], &format!("{a}x"), &a.replacen('h', "H", 1), &a.replace(&a[5..6], "-")]
        {
            assert!(!well_formed(bad, KEY_PREFIX), "{bad:?}");
        }
        assert!(a.starts_with(&prefix));
        let session = random_token(sessions::TOKEN_PREFIX).unwrap();
        assert!(well_formed(&session, sessions::TOKEN_PREFIX) && !well_formed(&session, KEY_PREFIX));
        for revoked in [Revoked::Key(7), Revoked::User(9), Revoked::Everything] {
            assert_eq!(Revoked::decode(&revoked.encode()), Some(revoked));
        }
        assert_eq!(hash_key(&a), digest);
    }
}
