//! cache-service settings; defaults and their meaning are in `config/default.toml`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct CacheSettings {
    pub bind_host: String,
    pub port: u16,
    pub workers: usize,
    pub cache_redis_url: String,
    pub redis_url: String,
    pub redis_key_prefix: String,
    pub redis_timeout_ms: u64,
    pub l1_max_bytes: u64,
    pub l1_max_ttl_secs: u64,
    pub fallback_log_max_bytes: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_ttl_secs: u64,
    pub max_batch_keys: usize,
    pub max_batch_bytes: usize,
    pub admin_api_key: String,
    pub log_format: String,
    pub log_level: String,
    /// Namespace → default TTL in seconds.
    pub namespaces: BTreeMap<String, u64>,
}

impl CacheSettings {
    pub fn load(file: Option<&Path>, env: HashMap<String, String>) -> anyhow::Result<Self> {
        let settings: Self = common_models::settings::load(DEFAULTS, file, env)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn defaults() -> anyhow::Result<Self> {
        Self::load(None, HashMap::new())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.namespaces.is_empty(), "at least one namespace must be configured");
        for (name, ttl) in &self.namespaces {
            anyhow::ensure!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "namespace {name:?} must be lower-case letters, digits or _"
            );
            anyhow::ensure!((1..=self.max_ttl_secs).contains(ttl), "namespace {name}: TTL must be 1..=max_ttl_secs");
        }
        anyhow::ensure!(self.max_value_bytes >= 1, "max_value_bytes must be at least 1");
        anyhow::ensure!(self.max_batch_keys >= 1, "max_batch_keys must be at least 1");
        Ok(())
    }

    /// The cache Redis, falling back to the queue Redis.
    pub fn cache_redis(&self) -> &str {
        if self.cache_redis_url.trim().is_empty() { &self.redis_url } else { &self.cache_redis_url }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shipped_defaults_parse_with_the_seed_namespaces() {
        let s = CacheSettings::defaults().unwrap();
        assert_eq!(s.port, 8081);
        let ttl = |n: &str| s.namespaces.get(n).copied();
        assert_eq!(
            (ttl("embedding"), ttl("match"), ttl("llm"), ttl("analysis"), ttl("session"), ttl("api")),
            (Some(3600), Some(1800), Some(7200), Some(604_800), Some(3600), Some(300))
        );
        assert_eq!(s.cache_redis(), s.redis_url);
        let env = HashMap::from([("CACHE_REDIS_URL".to_owned(), "redis://cache:6379/0".to_owned())]);
        assert_eq!(CacheSettings::load(None, env).unwrap().cache_redis(), "redis://cache:6379/0");
    }
}
