//! API key authentication. Keys look like `hh_<43 base62-ish chars>`; only their
//! SHA-256 digest is stored. A validated key is trusted for `auth_cache_ttl_secs`
//! without asking the main database again, so authentication costs a hash and a map
//! look-up on the hot path; unknown keys are remembered briefly too, so a client
//! retrying a bad key cannot turn into database load.

use std::collections::HashMap;
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
/// Cache entries beyond this are cleared wholesale (a crude bound, enough for keys).
const CACHE_LIMIT: usize = 100_000;
const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Key digest → the caller it resolved to (`None`: unknown key) and when.
type KeyCache = HashMap<[u8; 32], (Option<Caller>, Instant)>;

pub struct Authenticator {
    pool: PgPool,
    ttl: Duration,
    cache: RwLock<KeyCache>,
}

impl Authenticator {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self { pool, ttl, cache: RwLock::new(HashMap::new()) }
    }

    /// Resolves the request's bearer key, or 401.
    pub async fn authenticate(&self, req: &HttpRequest) -> Result<Caller, AppError> {
        let key = bearer_token(req)
            .ok_or_else(|| AppError::unauthorized("missing API key: send it as \"Authorization: Bearer <key>\""))?;
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

    fn cached(&self, digest: &[u8; 32]) -> Option<Option<Caller>> {
        let cache = self.cache.read().ok()?;
        let (caller, at) = cache.get(digest)?;
        let ttl = if caller.is_some() { self.ttl } else { NEGATIVE_TTL };
        (at.elapsed() < ttl).then_some(*caller)
    }

    fn remember(&self, digest: [u8; 32], caller: Option<Caller>) {
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(digest, (caller, Instant::now()));
        }
    }
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
    let mut random = [0u8; 40];
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
        assert!(a.starts_with(&prefix));
        assert_eq!(hash_key(&a), digest);
    }
}
