//! Sessions in Redis (seed 003's `session:{id}`): an opaque random token, held by the
//! browser in an `HttpOnly; Secure; SameSite=Lax` cookie or sent as a bearer token.
//! Redis keeps only the token's SHA-256, so a copy of Redis holds no usable session.
//! Each request slides the session's expiry (`GETEX … EX`, one round trip). A user's
//! session ids are also kept in a set, so "sign out everywhere", a deactivation, a role
//! change or a new password ends them all at once, on every replica: no replica keeps
//! sessions of its own.
//!
//! Failed logins are counted here too, per account and per client address, in Redis,
//! so the limits hold across replicas.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use service_kit::AppError;
use sha2::{Digest, Sha256};

use crate::access::Role;

/// Prefix of every session token.
pub const TOKEN_PREFIX: &str = "hhs_";
/// The session cookie's name.
pub const COOKIE: &str = "hh_session";
/// Prefix of the operator's dashboard session tokens, and their cookie (sent to the
/// internal listener's `/admin/` pages only).
pub const OPERATOR_TOKEN_PREFIX: &str = "hho_";
pub const OPERATOR_COOKIE: &str = "hh_operator";
const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

/// One more failure in a window that starts with the first: (failures, ms left).
static COUNT_FAILURE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local count = redis.call('INCR', KEYS[1])
        local left = redis.call('PTTL', KEYS[1])
        if left < 0 then
            redis.call('PEXPIRE', KEYS[1], ARGV[1])
            left = tonumber(ARGV[1])
        end
        return {count, left}
        ",
    )
});

/// What a session stands for. The role is copied in so a request costs no database
/// query; changing a user's role ends their sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user_id: i64,
    pub company_id: i64,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Account,
    Address,
}

/// A session's id: the hex SHA-256 of its token.
pub type SessionId = String;

#[derive(Clone)]
pub struct Sessions {
    redis: crate::hot_redis::HotRedis,
    prefix: String,
    ttl: Duration,
}

fn redis_down(err: impl Into<anyhow::Error>) -> AppError {
    AppError::unavailable("the session store", err)
}

pub fn session_id(token: &str) -> SessionId {
    hex(&Sha256::digest(token.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    pub fn new(redis: crate::hot_redis::HotRedis, prefix: &str, ttl: Duration) -> Self {
        Self { redis, prefix: prefix.to_owned(), ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn key(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }

    fn user_key(&self, user_id: i64) -> String {
        format!("{}user_sessions:{user_id}", self.prefix)
    }

    /// Starts a session; returns its token (shown to the client once) and id.
    pub async fn create(&self, session: &Session) -> Result<(String, SessionId), AppError> {
        let token = crate::auth::random_token(TOKEN_PREFIX).map_err(AppError::internal)?;
        let id = session_id(&token);
        let value = serde_json::to_string(session).map_err(AppError::internal)?;
        let mut conn = self.redis.conn().await.map_err(redis_down)?;
        let user_key = self.user_key(session.user_id);
        // Forget ids of sessions that expired on their own, so the set stays small.
        let known: Vec<String> = conn.smembers(&user_key).await.map_err(redis_down)?;
        let mut pipe = redis::pipe();
        pipe.set_ex(self.key(&id), value, self.ttl.as_secs()).ignore().sadd(&user_key, &id).ignore();
        if !known.is_empty() {
            let keys: Vec<String> = known.iter().map(|k| self.key(k)).collect();
            let alive: Vec<bool> = {
                let mut check = redis::pipe();
                for key in &keys {
                    check.exists(key);
                }
                check.query_async(&mut conn).await.map_err(redis_down)?
            };
            let dead: Vec<&String> = known.iter().zip(alive).filter(|(_, alive)| !alive).map(|(k, _)| k).collect();
            if !dead.is_empty() {
                pipe.srem(&user_key, dead).ignore();
            }
        }
        pipe.query_async::<()>(&mut conn).await.map_err(redis_down)?;
        Ok((token, id))
    }

    /// The session `token` stands for, sliding its expiry; `None` when it has ended.
    pub async fn check(&self, token: &str) -> Result<Option<(SessionId, Session)>, AppError> {
        let id = session_id(token);
        let mut conn = self.redis.conn().await.map_err(redis_down)?;
        let value: Option<String> =
            conn.get_ex(self.key(&id), redis::Expiry::EX(self.ttl.as_secs())).await.map_err(redis_down)?;
        Ok(value.and_then(|v| serde_json::from_str(&v).ok()).map(|s| (id, s)))
    }

    /// Ends one session.
    pub async fn end(&self, id: &str, user_id: i64) -> Result<(), AppError> {
        let mut conn = self.redis.conn().await.map_err(redis_down)?;
        redis::pipe()
            .del(self.key(id))
            .ignore()
            .srem(self.user_key(user_id), id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_down)
    }

    /// Ends every session of `user_id`; returns how many were alive.
    pub async fn end_all(&self, user_id: i64) -> Result<usize, AppError> {
        let mut conn = self.redis.conn().await.map_err(redis_down)?;
        let user_key = self.user_key(user_id);
        let ids: Vec<String> = conn.smembers(&user_key).await.map_err(redis_down)?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.del(self.key(id));
        }
        pipe.del(&user_key).ignore();
        let removed: Vec<usize> = pipe.query_async(&mut conn).await.map_err(redis_down)?;
        Ok(removed.into_iter().sum())
    }

    /// The failure counters of an account (when named) and an address (when known).
    fn failure_keys(&self, email: Option<&str>, address: Option<IpAddr>) -> Vec<(String, Limit)> {
        let account = email.map(|e| {
            let digest = hex(&Sha256::digest(e.trim().to_lowercase().as_bytes()));
            (format!("{}login_failures:account:{digest}", self.prefix), Limit::Account)
        });
        let address = address.map(|ip| (format!("{}login_failures:address:{ip}", self.prefix), Limit::Address));
        account.into_iter().chain(address).collect()
    }

    /// How long to wait, when the account or the address is over its failed logins
    /// this minute (`0` limits are off).
    pub async fn login_throttled(
        &self,
        email: Option<&str>,
        address: Option<IpAddr>,
        per_account: u32,
        per_address: u32,
    ) -> Result<Option<Duration>, AppError> {
        let checks: Vec<(String, u32)> = self
            .failure_keys(email, address)
            .into_iter()
            .map(|(key, limit)| (key, if limit == Limit::Account { per_account } else { per_address }))
            .collect();
        let mut conn = self.redis.conn().await.map_err(redis_down)?;
        let mut pipe = redis::pipe();
        for (key, _) in &checks {
            pipe.get(key).pttl(key);
        }
        let replies: Vec<(Option<u32>, i64)> = pipe.query_async(&mut conn).await.map_err(redis_down)?;
        let wait = checks
            .iter()
            .zip(replies)
            .filter(|((_, limit), (count, _))| *limit > 0 && count.unwrap_or(0) >= *limit)
            .map(|(_, (_, pttl))| Duration::from_millis(u64::try_from(pttl).unwrap_or(1000)))
            .max();
        Ok(wait)
    }

    /// Counts a failed API-key authentication from `address` for every replica; returns
    /// the failures in the address's window and the time left in it. One script, so a
    /// window cannot lapse between the count and its expiry.
    pub async fn auth_failed(&self, address: IpAddr) -> redis::RedisResult<(u32, Duration)> {
        let key = format!("{}auth_failures:address:{address}", self.prefix);
        let mut conn = self.redis.conn().await?;
        let (count, pttl): (u32, i64) =
            COUNT_FAILURE.key(&key).arg(THROTTLE_WINDOW.as_millis() as u64).invoke_async(&mut conn).await?;
        Ok((count, Duration::from_millis(u64::try_from(pttl).unwrap_or(0))))
    }

    /// Counts a failed login against the account and the address.
    pub async fn login_failed(&self, email: Option<&str>, address: Option<IpAddr>) -> Result<(), AppError> {
        let mut conn = self.redis.conn().await.map_err(redis_down)?;
        let mut pipe = redis::pipe();
        for (key, _) in self.failure_keys(email, address) {
            // The window starts with the first failure and is not extended by later ones.
            pipe.cmd("SET").arg(&key).arg(0).arg("EX").arg(THROTTLE_WINDOW.as_secs()).arg("NX").ignore();
            pipe.incr(&key, 1).ignore();
        }
        pipe.query_async::<()>(&mut conn).await.map_err(redis_down)
    }

    fn operator_key(&self, token: &str) -> String {
        format!("{}operator_session:{}", self.prefix, session_id(token))
    }

    /// Starts an operator's dashboard session, bound to the admin key it was opened
    /// with (kept as its SHA-256): once the key changes, the session ends.
    pub async fn create_operator(&self, admin_key: &str) -> Result<String, AppError> {
        let token = crate::auth::random_token(OPERATOR_TOKEN_PREFIX).map_err(AppError::internal)?;
        let mut conn = self.redis.conn().await.map_err(redis_down)?;
        conn.set_ex::<_, _, ()>(self.operator_key(&token), session_id(admin_key), self.ttl.as_secs())
            .await
            .map_err(redis_down)?;
        Ok(token)
    }

    /// Whether `token` is a live operator session opened with the current `admin_key`
    /// (sliding its expiry).
    pub async fn check_operator(&self, token: &str, admin_key: &str) -> Result<bool, AppError> {
        if !crate::auth::well_formed(token, OPERATOR_TOKEN_PREFIX) || admin_key.is_empty() {
            return Ok(false);
        }
        let mut conn = self.redis.conn().await.map_err(redis_down)?;
        let bound: Option<String> =
            conn.get_ex(self.operator_key(token), redis::Expiry::EX(self.ttl.as_secs())).await.map_err(redis_down)?;
        Ok(bound.is_some_and(|b| service_kit::auth::same_secret(&b, &session_id(admin_key))))
    }

    pub async fn end_operator(&self, token: &str) -> Result<(), AppError> {
        let mut conn = self.redis.conn().await.map_err(redis_down)?;
        conn.del::<_, ()>(self.operator_key(token)).await.map_err(redis_down)
    }

    /// A successful login clears the account's failures (not the address's).
    pub async fn login_succeeded(&self, email: &str) -> Result<(), AppError> {
        let keys: Vec<String> = self.failure_keys(Some(email), None).into_iter().map(|(k, _)| k).collect();
        let mut conn = self.redis.conn().await.map_err(redis_down)?;
        conn.del::<_, ()>(keys).await.map_err(redis_down)
    }
}
