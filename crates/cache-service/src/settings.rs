//! cache-service settings; defaults and their meaning are in `config/default.toml`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use service_kit::config::{LoggingSection, RedisSection, Secret, ServerSection, bytes, duration, parse_duration};

pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// The cache Redis's own variable, before `REDIS_URL`.
pub const CACHE_REDIS_URL: &str = "CACHE_REDIS_URL";

#[derive(Debug, Clone, Deserialize)]
pub struct CacheSettings {
    pub server: ServerSection,
    /// The cache Redis (`CACHE_REDIS_URL`, else `REDIS_URL`).
    pub redis: RedisSection,
    pub logging: LoggingSection,
    /// A reply slower than this counts as Redis being down.
    #[serde(deserialize_with = "duration")]
    pub redis_timeout: Duration,
    /// L1 bound in bytes (keys + values); 0: no L1.
    #[serde(deserialize_with = "bytes")]
    pub l1_max_bytes: u64,
    /// The longest an entry also in Redis stays in L1.
    #[serde(deserialize_with = "duration")]
    pub l1_max_ttl: Duration,
    /// Bound of the writes kept for replay while Redis is down.
    #[serde(deserialize_with = "bytes")]
    pub fallback_log_max_bytes: usize,
    #[serde(deserialize_with = "bytes")]
    pub max_key_bytes: usize,
    #[serde(deserialize_with = "bytes")]
    pub max_value_bytes: usize,
    /// Longest TTL a request may ask for.
    #[serde(deserialize_with = "duration")]
    pub max_ttl: Duration,
    pub max_batch_keys: usize,
    #[serde(deserialize_with = "bytes")]
    pub max_batch_bytes: usize,
    /// The credential callers send on every cache route (`CACHE_API_KEY`); empty: open.
    pub cache_api_key: Secret,
    /// Guards namespace flushes; empty: flushing is off.
    pub cache_admin_api_key: Secret,
    /// Namespace → default TTL.
    #[serde(deserialize_with = "ttl_map")]
    pub namespaces: BTreeMap<String, Duration>,
}

fn ttl_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Duration>, D::Error> {
    BTreeMap::<String, String>::deserialize(d)?
        .into_iter()
        .map(|(name, ttl)| {
            parse_duration(&ttl)
                .map(|t| (name.clone(), t))
                .map_err(|e| serde::de::Error::custom(format!("namespace {name}: {e}")))
        })
        .collect()
}

impl CacheSettings {
    pub fn load(file: Option<&Path>, mut env: HashMap<String, String>) -> anyhow::Result<Self> {
        // The cache may have a Redis of its own; else it shares the queue Redis.
        if let Some(url) = env.get(CACHE_REDIS_URL).filter(|u| !u.trim().is_empty()).cloned() {
            env.insert("REDIS__URL".to_owned(), url);
        }
        let settings: Self = service_kit::config::load(DEFAULTS, file, env)?;
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
            anyhow::ensure!(
                *ttl >= Duration::from_secs(1) && *ttl <= self.max_ttl,
                "namespace {name}: TTL must be between 1s and max_ttl"
            );
        }
        anyhow::ensure!(self.max_value_bytes >= 1, "max_value_bytes must be at least 1");
        anyhow::ensure!(self.max_batch_keys >= 1, "max_batch_keys must be at least 1");
        Ok(())
    }

    /// Longest TTL a request may ask for, in whole seconds.
    pub fn max_ttl_secs(&self) -> u64 {
        self.max_ttl.as_secs()
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shipped_defaults_parse_with_the_seed_namespaces() {
        let s = CacheSettings::defaults().unwrap();
        assert_eq!(s.server.port, 8081);
        let ttl = |n: &str| s.namespaces.get(n).map(Duration::as_secs);
        assert_eq!(
            (ttl("embedding"), ttl("match"), ttl("llm"), ttl("analysis"), ttl("session"), ttl("api")),
            (Some(3600), Some(1800), Some(7200), Some(604_800), Some(3600), Some(300))
        );
        let env = HashMap::from([
            ("REDIS__URL".to_owned(), "redis://queue:6379/0".to_owned()),
            ("CACHE_REDIS_URL".to_owned(), "redis://cache:6379/0".to_owned()),
        ]);
        assert_eq!(CacheSettings::load(None, env).unwrap().redis.url.expose(), "redis://cache:6379/0");
        let env = HashMap::from([("NAMESPACES__LLM".to_owned(), "3600".to_owned())]);
        let err = CacheSettings::load(None, env).unwrap_err().to_string();
        assert!(err.contains("namespace llm") && err.contains("needs a unit"), "{err}");
    }
}
