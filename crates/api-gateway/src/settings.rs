//! The gateway's settings; defaults and their meaning are in `config/default.toml`.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::llm::pricing::PriceTable;

/// The documented defaults, embedded.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct GatewaySettings {
    pub bind_host: String,
    pub port: u16,
    pub workers: usize,
    pub database_url: String,
    pub db_pool_size: usize,
    pub analytics_database_url: String,
    pub redis_url: String,
    pub redis_key_prefix: String,
    pub llm_base_url: String,
    pub llm_api_key: String,
    pub llm_timeout_secs: u64,
    pub llm_connect_timeout_secs: u64,
    pub max_body_bytes: usize,
    pub max_tokens_cap: u64,
    pub cache_url: String,
    pub cache_timeout_ms: u64,
    pub admin_api_key: String,
    pub log_buffer_capacity: usize,
    pub log_batch_size: usize,
    pub log_linger_ms: u64,
    pub auth_cache_ttl_secs: u64,
    pub deployment_version: String,
    pub deployment_environment: String,
    pub log_format: String,
    pub log_level: String,
    pub pricing: PriceTable,
}

impl GatewaySettings {
    /// Defaults → optional file → `env`, then validated.
    pub fn load(file: Option<&Path>, env: HashMap<String, String>) -> anyhow::Result<Self> {
        let settings: Self = common_models::settings::load(DEFAULTS, file, env)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The defaults alone (tests start from these and change what they need).
    pub fn defaults() -> anyhow::Result<Self> {
        Self::load(None, HashMap::new())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.llm_base_url.starts_with("http://") || self.llm_base_url.starts_with("https://"),
            "llm_base_url must be an http(s) URL"
        );
        anyhow::ensure!(self.max_body_bytes >= 1024, "max_body_bytes must be at least 1024");
        anyhow::ensure!(self.log_buffer_capacity >= 1, "log_buffer_capacity must be at least 1");
        anyhow::ensure!(self.log_batch_size >= 1, "log_batch_size must be at least 1");
        anyhow::ensure!(self.db_pool_size >= 1, "db_pool_size must be at least 1");
        self.pricing.validate()?;
        Ok(())
    }

    pub fn analytics_url(&self) -> &str {
        common_models::settings::analytics_url_or_main(&self.analytics_database_url, &self.database_url)
    }

    pub fn chat_completions_url(&self) -> String {
        format!("{}/chat/completions", self.llm_base_url.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shipped_defaults_parse() {
        let s = GatewaySettings::defaults().unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.pricing.version, "2026-11-01");
        assert!(s.pricing.models.iter().any(|m| m.name == "gpt-4.1"));
        assert_eq!(s.chat_completions_url(), "http://127.0.0.1:8090/v1/chat/completions");
    }

    #[test]
    fn environment_overrides_nested_pricing_version() {
        let env =
            HashMap::from([("PRICING__VERSION".to_owned(), "v9".to_owned()), ("PORT".to_owned(), "9000".to_owned())]);
        let s = GatewaySettings::load(None, env).unwrap();
        assert_eq!(s.pricing.version, "v9");
        assert_eq!(s.port, 9000);
    }
}
