//! The worker's settings; defaults and their meaning are in `config/default.toml`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common_models::queue::LOG_WORKER_GROUP;
use serde::Deserialize;
use service_kit::config::{ConnectionUrl, DatabaseSection, LoggingSection, RedisSection, ServerSection, duration};
use task_queue::ConsumerConfig;

/// The documented defaults, embedded.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// The seeds' name for how many loops write logs (sets `consumer.concurrency`).
pub const LOG_THREAD_POOL_SIZE: &str = "LOG_THREAD_POOL_SIZE";

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// Where the probes and metrics are served.
    pub server: ServerSection,
    /// The queue Redis.
    pub redis: RedisSection,
    /// The main database, used only when no analytics database is set.
    pub database: DatabaseSection,
    /// The analytics database, the only one written.
    pub analytics_database: DatabaseSection,
    pub logging: LoggingSection,
    /// The consumer runtime.
    pub consumer: ConsumerConfig,
    /// Start-up migration attempts, and the pause between two.
    pub migrate_attempts: u32,
    #[serde(deserialize_with = "duration")]
    pub migrate_retry_delay: Duration,
    /// Per-transaction `lock_timeout` and `statement_timeout`.
    #[serde(deserialize_with = "duration")]
    pub lock_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub statement_timeout: Duration,
    /// How often this month's and next month's partitions are checked.
    #[serde(deserialize_with = "duration")]
    pub partition_check_interval: Duration,
    /// How often committed raw rows are folded into the hourly rollups (at once again
    /// while a backlog is folded in steps).
    #[serde(deserialize_with = "duration")]
    pub rollup_interval: Duration,
    /// Raw partitions whose whole month is older than this are dropped; 0: kept forever.
    #[serde(deserialize_with = "duration")]
    pub raw_retention: Duration,
    /// How often retention runs (and the partition metrics are refreshed).
    #[serde(deserialize_with = "duration")]
    pub retention_interval: Duration,
}

impl WorkerSettings {
    /// Defaults → optional file → `env`, then validated.
    pub fn load(file: Option<&Path>, mut env: HashMap<String, String>) -> anyhow::Result<Self> {
        // The seeds' name for how many loops write logs.
        if let Some(n) = env.get(LOG_THREAD_POOL_SIZE).cloned() {
            env.entry("CONSUMER__CONCURRENCY".to_owned()).or_insert(n);
        }
        let mut settings: Self = service_kit::config::load(DEFAULTS, file, env)?;
        settings.consumer.group = LOG_WORKER_GROUP.to_owned();
        settings.consumer = settings.consumer.with_default_name();
        settings.validate()?;
        Ok(settings)
    }

    /// The defaults alone (tests start from these and change what they need).
    pub fn defaults() -> anyhow::Result<Self> {
        Self::load(None, HashMap::new())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.consumer.validate()?;
        anyhow::ensure!(!self.analytics_url().is_empty(), "analytics_database.url (or database.url) must be set");
        anyhow::ensure!(self.analytics_database.pool_size >= 1, "analytics_database.pool_size must be at least 1");
        Ok(())
    }

    /// The same settings reacting within a fraction of a second (short block, retry,
    /// reclaim and heartbeat times), for tests and benchmarks that start a worker next to
    /// their own databases and Redis prefix.
    pub fn reacting_fast(mut self) -> Self {
        self.consumer = self.consumer.reacting_fast();
        self.lock_timeout = Duration::from_millis(500);
        self.rollup_interval = Duration::from_millis(100);
        self.migrate_retry_delay = Duration::from_millis(200);
        self
    }

    /// The analytics database, falling back to the main one.
    pub fn analytics_url(&self) -> &ConnectionUrl {
        self.analytics_database.url.or(&self.database.url)
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shipped_defaults_parse_and_fall_back_to_the_main_database() {
        let s = WorkerSettings::defaults().unwrap();
        assert_eq!(s.server.port, 9091);
        assert_eq!(s.analytics_url(), &s.database.url);
        assert_eq!(s.consumer.group, "llm-log-worker");
        let env = HashMap::from([
            ("LOGS_DATABASE_URL".to_owned(), "postgres://x/logs".to_owned()),
            ("LOG_THREAD_POOL_SIZE".to_owned(), "2".to_owned()),
        ]);
        let s = WorkerSettings::load(None, service_kit::config::resolve_aliases(env)).unwrap();
        assert_eq!(s.analytics_url().expose(), "postgres://x/logs");
        assert_eq!(s.consumer.concurrency, 2);
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let env = HashMap::from([("CONSUMER__RECLAIM_IDLE".to_owned(), "1s".to_owned())]);
        let err = WorkerSettings::load(None, env).unwrap_err().to_string();
        assert!(err.contains("reclaim_idle"), "{err}");
    }
}
