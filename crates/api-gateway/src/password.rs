//! Passwords: Argon2id (RFC 9106) with 19 MiB of memory, 2 passes and 1 lane (the
//! OWASP baseline), a 16-byte random salt, stored as a PHC string (`$argon2id$v=19$…`)
//! so the parameters travel with each hash and can be raised later. Hashing runs on the
//! blocking pool, at most `PARALLEL_HASHES` at once, so a burst of logins costs bounded
//! memory and leaves the async workers free.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use service_kit::AppError;
use tokio::sync::Semaphore;

pub const MEMORY_KIB: u32 = 19 * 1024;
pub const PASSES: u32 = 2;
pub const LANES: u32 = 1;
/// Hashes computed at once per replica (each holds `MEMORY_KIB`).
const PARALLEL_HASHES: usize = 4;

/// Shortest and longest password accepted, in characters and bytes.
pub const MIN_CHARS: usize = 12;
pub const MAX_BYTES: usize = 1024;

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// A hash of nothing anyone knows: an unknown account is checked against it, so it
    /// costs what a wrong password costs and the two cannot be told apart.
    decoy: Arc<String>,
}

fn hasher() -> Argon2<'static> {
    // The parameters are constants within Argon2's bounds.
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(hasher().hash_password(password.as_bytes(), &salt).map_err(|e| anyhow::anyhow!("hashing: {e}"))?.to_string())
}

fn verify_now(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| hasher().verify_password(password.as_bytes(), &parsed).is_ok())
}

impl Passwords {
    pub fn new() -> anyhow::Result<Self> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let decoy = hash_now(&format!("{random:?}"))?;
        Ok(Self { permits: Arc::new(Semaphore::new(PARALLEL_HASHES)), decoy: Arc::new(decoy) })
    }

    /// The PHC string for a new password (checked with [`check_new`] first).
    pub async fn hash(&self, password: String) -> Result<String, AppError> {
        let _permit = self.permits.acquire().await.map_err(AppError::internal)?;
        tokio::task::spawn_blocking(move || hash_now(&password))
            .await
            .map_err(AppError::internal)?
            .map_err(AppError::internal)
    }

    /// Whether `password` matches `stored`; with no stored hash (unknown account, or
    /// one that never set a password) the decoy is checked, and the answer is no.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, AppError> {
        let _permit = self.permits.acquire().await.map_err(AppError::internal)?;
        let decoy = self.decoy.clone();
        tokio::task::spawn_blocking(move || match stored {
            Some(stored) => verify_now(&password, &stored),
            None => {
                verify_now(&password, &decoy);
                false
            }
        })
        .await
        .map_err(AppError::internal)
    }
}

/// Refuses a new password that is too short or too long, naming `field`.
pub fn check_new(field: &'static str, password: &str) -> Result<(), AppError> {
    if password.chars().count() < MIN_CHARS {
        return Err(AppError::bad_request(
            field,
            "too_short",
            format!("`{field}` must be at least {MIN_CHARS} characters"),
        ));
    }
    if password.len() > MAX_BYTES {
        return Err(AppError::bad_request(field, "too_long", format!("`{field}` must be at most {MAX_BYTES} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify_only_their_password() {
        let a = hash_now("correct horse battery").unwrap();
        let b = hash_now("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify_now("correct horse battery", &a));
        assert!(!verify_now("correct horse batterz", &a));
        assert!(!verify_now("anything", "not a hash"));
    }
}
