//! Sealed LLM cache values. The gateway answers a cache hit as if the upstream had
//! said it, so a value planted in cache-service by anyone else (another workload with
//! the cache credential, or a compromised one) must not be served. Each stored value is
//! `HMAC-SHA256(key, cache key ‖ body) ‖ body`; the cache key names the company and the
//! request, so a sealed value moved to another key fails too. A value that does not
//! open is a miss (and counted).

use sha2::{Digest, Sha256};

const TAG_LEN: usize = 32;
const BLOCK: usize = 64;

/// The sealing key (the same on every replica that shares the cache).
#[derive(Clone)]
pub struct Seal {
    key: [u8; BLOCK],
}

impl Seal {
    /// From the configured secret; an empty one gets a random key of this process (the
    /// cache then serves only what this replica stored).
    pub fn new(secret: &str) -> anyhow::Result<Self> {
        let mut key = [0u8; BLOCK];
        if secret.is_empty() {
            getrandom::fill(&mut key[..32]).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        } else if secret.len() > BLOCK {
            key[..32].copy_from_slice(&Sha256::digest(secret.as_bytes()));
        } else {
            key[..secret.len()].copy_from_slice(secret.as_bytes());
        }
        Ok(Self { key })
    }

    fn tag(&self, cache_key: &str, body: &[u8]) -> [u8; TAG_LEN] {
        let pad = |byte: u8| self.key.map(|k| k ^ byte);
        let inner =
            Sha256::new().chain_update(pad(0x36)).chain_update(cache_key.as_bytes()).chain_update(body).finalize();
        Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
    }

    /// The value to store for `body` under `cache_key`.
    pub fn seal(&self, cache_key: &str, body: &[u8]) -> bytes::Bytes {
        let mut out = Vec::with_capacity(TAG_LEN + body.len());
        out.extend_from_slice(&self.tag(cache_key, body));
        out.extend_from_slice(body);
        out.into()
    }

    /// The body of a stored value, if this gateway sealed it for `cache_key`.
    pub fn open(&self, cache_key: &str, stored: &bytes::Bytes) -> Option<bytes::Bytes> {
        if stored.len() < TAG_LEN {
            return None;
        }
        let body = stored.slice(TAG_LEN..);
        let expected = self.tag(cache_key, &body);
        let diff = expected.iter().zip(&stored[..TAG_LEN]).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then_some(body)
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_values_sealed_with_the_key_for_that_cache_key_open() {
        let seal = Seal::new("a shared secret").unwrap();
        let sealed = seal.seal("k1", b"{\"id\":\"x\"}");
        assert_eq!(seal.open("k1", &sealed).unwrap().as_ref(), b"{\"id\":\"x\"}");
        assert!(seal.open("k2", &sealed).is_none(), "moved to another key");
        assert!(Seal::new("another secret").unwrap().open("k1", &sealed).is_none());
        let mut tampered = sealed.to_vec();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(seal.open("k1", &tampered.into()).is_none());
        assert!(seal.open("k1", &bytes::Bytes::from_static(b"{\"planted\":true}")).is_none());
        let long = "k".repeat(200);
        assert!(Seal::new(&long).unwrap().open("k1", &Seal::new(&long).unwrap().seal("k1", b"v")).is_some());
    }
}
