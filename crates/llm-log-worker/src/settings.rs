//! The worker's settings; defaults and their meaning are in `config/default.toml`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The documented defaults, embedded.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    pub database_url: String,
    pub analytics_database_url: String,
    pub redis_url: String,
    pub redis_key_prefix: String,
    pub bind_host: String,
    pub port: u16,
    pub consumer_name: String,
    pub write_loops: usize,
    pub batch_size: usize,
    pub block_ms: u64,
    pub linger_ms: u64,
    pub reclaim_idle_ms: u64,
    pub reclaim_interval_ms: u64,
    pub migrate_attempts: u32,
    pub migrate_retry_delay_ms: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub lock_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub partition_check_interval_secs: u64,
    pub log_format: String,
    pub log_level: String,
}

impl WorkerSettings {
    /// Defaults → optional file → `env`, then validated.
    pub fn load(file: Option<&Path>, env: HashMap<String, String>) -> anyhow::Result<Self> {
        let mut settings: Self = common_models::settings::load(DEFAULTS, file, env)?;
        if settings.consumer_name.trim().is_empty() {
            settings.consumer_name = std::env::var("HOSTNAME").unwrap_or_else(|_| "llm-log-worker".to_owned());
        }
        settings.validate()?;
        Ok(settings)
    }

    /// The defaults alone (tests start from these and change what they need).
    pub fn defaults() -> anyhow::Result<Self> {
        Self::load(None, HashMap::new())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.write_loops >= 1, "write_loops must be at least 1");
        anyhow::ensure!((1..=10_000).contains(&self.batch_size), "batch_size must be between 1 and 10000");
        anyhow::ensure!(self.block_ms >= 1, "block_ms must be at least 1");
        anyhow::ensure!(!self.analytics_url().is_empty(), "analytics_database_url (or database_url) must be set");
        Ok(())
    }

    /// The analytics database, falling back to the main one.
    pub fn analytics_url(&self) -> &str {
        common_models::settings::analytics_url_or_main(&self.analytics_database_url, &self.database_url)
    }

    pub fn block(&self) -> Duration {
        Duration::from_millis(self.block_ms)
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shipped_defaults_parse_and_fall_back_to_the_main_database() {
        let s = WorkerSettings::defaults().unwrap();
        assert_eq!(s.port, 9091);
        assert_eq!(s.analytics_url(), s.database_url);
        let env = HashMap::from([("LOGS_DATABASE_URL".to_owned(), "postgres://x/logs".to_owned())]);
        let s = WorkerSettings::load(None, common_models::settings::resolve_aliases(env)).unwrap();
        assert_eq!(s.analytics_url(), "postgres://x/logs");
    }
}
