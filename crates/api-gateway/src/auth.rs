//! API key authentication. Keys look like `hh_<40 base62 chars>`; only their
//! SHA-256 digest is stored. A validated key is trusted for `auth_cache_ttl_secs`
//! without asking the main database again, so authentication costs a hash and a map
//! look-up on the hot path; unknown keys are remembered briefly too, so a client
//! retrying a bad key cannot turn into database load.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use common_models::ids::{ApiKeyId, CompanyId, UserId};
use common_models::schema::main::api_keys;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use service_kit::AppError;
use service_kit::auth::bearer_token;
use service_kit::db::PgPool;
use service_kit::request_log::Requester;
use sha2::{Digest, Sha256};

/// Who is calling: resolved from the API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub api_key_id: ApiKeyId,
    pub company_id: CompanyId,
    pub user_id: Option<UserId>,
}

impl Caller {
    /// Names the caller in `req`'s log record.
    fn attached_to(self, req: &HttpRequest) -> Self {
        Requester { company_id: Some(self.company_id.0), user_id: self.user_id.map(|u| u.0) }.attach(req);
        self
    }
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

pub struct Authenticator {
    pool: PgPool,
    ttl: Duration,
    known: RwLock<HashMap<[u8; 32], (Caller, Instant)>>,
    unknown: RwLock<HashMap<[u8; 32], Instant>>,
    /// Failed authentications allowed per client address a minute (0: no limit).
    max_failures: u32,
    /// Client address → failures in the window and when the window began.
    /// Read on every request, written only on a failure.
    failures: RwLock<HashMap<IpAddr, (u32, Instant)>>,
}

impl Authenticator {
    pub fn new(pool: PgPool, ttl: Duration, max_failures: u32) -> Self {
        Self {
            pool,
            ttl,
            known: RwLock::new(HashMap::new()),
            unknown: RwLock::new(HashMap::new()),
            max_failures,
            failures: RwLock::new(HashMap::new()),
        }
    }

    /// Resolves the request's bearer key, or 401. An address with too many failed
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
        }
        resolved
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

    /// The key's caller, or 401. A key not shaped like the ones issued here is refused
    /// without a database query.
    async fn resolve(&self, req: &HttpRequest) -> Result<Caller, AppError> {
        let key = bearer_token(req)
            .ok_or_else(|| AppError::unauthorized("missing API key: send it as \"Authorization: Bearer <key>\""))?;
        if !well_formed(key) {
            return Err(unknown_key());
        }
        let digest = hash_key(key);
        if let Some(hit) = self.cached(&digest) {
            return hit.map(|caller| caller.attached_to(req)).ok_or_else(unknown_key);
        }
        let mut conn = self.pool.get().await.map_err(|e| AppError::unavailable("the main database", e))?;
        let found: Option<(i64, i64, Option<i64>)> = api_keys::table
            .filter(api_keys::key_hash.eq(digest.as_slice()))
            .filter(api_keys::revoked_at.is_null())
            .select((api_keys::id, api_keys::company_id, api_keys::user_id))
            .first(&mut conn)
            .await
            .optional()?;
        let caller = found.map(|(id, company, user)| Caller {
            api_key_id: ApiKeyId(id),
            company_id: CompanyId(company),
            user_id: user.map(UserId),
        });
        self.remember(digest, caller);
        caller.map(|caller| caller.attached_to(req)).ok_or_else(unknown_key)
    }

    /// `Some(Some(_))` a known key, `Some(None)` a key known to be unknown, `None` not
    /// remembered (or expired).
    fn cached(&self, digest: &[u8; 32]) -> Option<Option<Caller>> {
        if let Some((caller, at)) = self.known.read().ok()?.get(digest)
            && at.elapsed() < self.ttl
        {
            return Some(Some(*caller));
        }
        let unknown = self.unknown.read().ok()?;
        unknown.get(digest).filter(|at| at.elapsed() < NEGATIVE_TTL).map(|_| None)
    }

    fn remember(&self, digest: [u8; 32], caller: Option<Caller>) {
        match caller {
            Some(caller) => {
                if let Ok(mut known) = self.known.write() {
                    make_room(&mut known, KNOWN_LIMIT, |(_, at)| at.elapsed() < self.ttl);
                    known.insert(digest, (caller, Instant::now()));
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
fn make_room<K, V>(map: &mut HashMap<K, V>, limit: usize, fresh: impl Fn(&V) -> bool) {
    if map.len() >= limit {
        map.retain(|_, v| fresh(v));
        if map.len() >= limit {
            map.clear();
        }
    }
}

/// Shaped like a key issued here: the prefix and 40 letters or digits.
fn well_formed(key: &str) -> bool {
    key.len() == KEY_PREFIX.len() + KEY_BODY_LEN
        && key.starts_with(KEY_PREFIX)
        && key.bytes().skip(KEY_PREFIX.len()).all(|b| b.is_ascii_alphanumeric())
}

fn unknown_key() -> AppError {
    AppError::unauthorized("invalid API key")
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new random key: (the key, its display prefix, its digest).
pub fn generate_key() -> anyhow::Result<(String, String, [u8; 32])> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = [0u8; KEY_BODY_LEN];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    // 40 bytes mapped onto 62 symbols: ~238 bits, the slight modulo bias is irrelevant here.
    let body: String = random.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
    let key = format!("{KEY_PREFIX}{body}");
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
        assert!(well_formed(&a));
        for bad in
            ["", "hh_", "sk-abc", &a[..42], &format!("{a}x"), &a.replacen('h', "H", 1), &a.replace(&a[5..6], "-")]
        {
            assert!(!well_formed(bad), "{bad:?}");
        }
        assert!(a.starts_with(&prefix));
        assert_eq!(hash_key(&a), digest);
    }
}
