//! The gateway's settings; defaults and their meaning are in `config/default.toml`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use service_kit::config::{
    ConnectionUrl, DatabaseSection, LoggingSection, RedisSection, Secret, ServerSection, bytes, duration,
};
use task_queue::ProducerConfig;

use common_models::pricing::PriceTable;

/// The documented defaults, embedded.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct GatewaySettings {
    pub server: ServerSection,
    /// Main database: tenants and keys.
    pub database: DatabaseSection,
    /// Analytics database, for the admin health view (and the analytics reads when
    /// `analytics_read_database` has no URL).
    pub analytics_database: DatabaseSection,
    /// Where the analytics API reads: a replica of the analytics database; empty URL:
    /// the analytics database itself.
    pub analytics_read_database: DatabaseSection,
    /// Longest an analytics read may run (the database cancels it; 503 to the caller).
    #[serde(deserialize_with = "duration")]
    pub analytics_query_timeout: Duration,
    /// The queue Redis.
    pub redis: RedisSection,
    pub logging: LoggingSection,
    /// How log events reach the queue, and the spool they wait in while Redis is away.
    pub producer: ProducerConfig,
    /// The upstream OpenAI-compatible base URL.
    pub llm_base_url: String,
    /// Sent upstream as a bearer token; empty: none.
    pub llm_api_key: Secret,
    /// Whole-call limit of an upstream call, streams included.
    #[serde(deserialize_with = "duration")]
    pub llm_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub llm_connect_timeout: Duration,
    /// Largest accepted request body.
    #[serde(deserialize_with = "bytes")]
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive (408 beyond).
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
    /// Largest accepted `max_tokens` / `max_completion_tokens`.
    pub max_tokens_cap: u64,
    /// Largest accepted `n` (choices a call asks for; each is billed).
    pub max_choices: u64,
    /// Largest upstream answer (not streamed) relayed; beyond it the call fails with 502.
    #[serde(deserialize_with = "bytes")]
    pub max_upstream_response_bytes: usize,
    /// cache-service for the LLM results cache; empty: no cache.
    pub cache_url: String,
    /// cache-service's credential (`CACHE_API_KEY`).
    pub cache_api_key: Secret,
    /// Seals the cached LLM answers (`LLM_CACHE_SEAL_KEY`, the same on every replica);
    /// empty: a random key per process.
    pub llm_cache_seal_key: Secret,
    /// A cache slower than this is a miss.
    #[serde(deserialize_with = "duration")]
    pub cache_timeout: Duration,
    /// Guards `/api/v1/admin/*`; empty: the admin API is off (403).
    pub admin_api_key: Secret,
    /// Port of the internal listener serving `/metrics` and `/api/v1/admin/*` (and the
    /// probes), which the public one then does not serve; 0: everything on `port`.
    pub internal_port: u16,
    /// Failed authentications allowed per client address a minute, per replica (0: no
    /// limit); beyond them 429 until the minute is over.
    pub auth_failures_per_minute: u32,
    /// How long a validated API key is trusted without asking the database.
    #[serde(deserialize_with = "duration")]
    pub auth_cache_ttl: Duration,
    /// Recorded with every LLM log row.
    pub deployment_version: String,
    pub deployment_environment: String,
    pub pricing: PriceTable,
    /// Whether models without a price (`pricing.models`) may be called; their calls are
    /// logged with cost NULL.
    pub allow_unpriced_models: bool,
    /// CV uploads.
    pub cvs: CvUploadSettings,
    /// cv-processor, asked for matches.
    pub cv_processor_url: String,
    /// Sent to cv-processor as a bearer token, and accepted from it for LLM calls it
    /// makes in a company's name (analyses; see `auth`). Empty: none either way.
    pub internal_api_key: Secret,
    /// Longest a match may take.
    #[serde(deserialize_with = "duration")]
    pub match_timeout: Duration,
    /// Sign-in, sessions and invitations.
    pub accounts: AccountSettings,
    /// Rate limits, LLM concurrency and budgets per plan.
    pub limits: crate::limits::LimitSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AccountSettings {
    /// A session ends after this long without a request.
    #[serde(deserialize_with = "duration")]
    pub session_ttl: Duration,
    /// Failed logins allowed per account a minute (across replicas).
    pub login_failures_per_account: u32,
    /// Failed logins allowed per client address a minute (across replicas).
    pub login_failures_per_address: u32,
    #[serde(deserialize_with = "duration")]
    pub invitation_ttl: Duration,
    /// The invitation link; the token is appended.
    pub invitation_url: String,
    /// The session cookie's `Secure` attribute.
    pub cookie_secure: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CvUploadSettings {
    /// Where original files are kept (shared with cv-processor).
    pub storage_dir: std::path::PathBuf,
    /// Largest file accepted (413 beyond).
    #[serde(deserialize_with = "bytes")]
    pub max_file_bytes: usize,
    /// Most files in one upload request (413 beyond).
    pub max_files: usize,
}

impl GatewaySettings {
    /// Defaults → optional file → `env`, then validated.
    pub fn load(file: Option<&Path>, env: HashMap<String, String>) -> anyhow::Result<Self> {
        let settings: Self = service_kit::config::load(DEFAULTS, file, env)?;
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
        anyhow::ensure!(self.max_body_bytes >= 1024, "max_body_bytes must be at least 1KiB");
        anyhow::ensure!(self.max_choices >= 1, "max_choices must be at least 1");
        anyhow::ensure!(
            self.internal_port == 0 || self.internal_port != self.server.port,
            "internal_port must differ from port (or be 0)"
        );
        anyhow::ensure!(!self.body_timeout.is_zero(), "body_timeout must be longer than 0");
        anyhow::ensure!(self.max_upstream_response_bytes >= 1024, "max_upstream_response_bytes must be at least 1KiB");
        anyhow::ensure!(self.database.pool_size >= 1, "database.pool_size must be at least 1");
        anyhow::ensure!(self.cvs.max_files >= 1, "cvs.max_files must be at least 1");
        anyhow::ensure!(self.cvs.max_file_bytes >= 1, "cvs.max_file_bytes must be at least 1 byte");
        anyhow::ensure!(
            self.accounts.session_ttl >= Duration::from_secs(60),
            "accounts.session_ttl must be at least 1m"
        );
        anyhow::ensure!(!self.accounts.invitation_ttl.is_zero(), "accounts.invitation_ttl must be longer than 0");
        self.producer.validate()?;
        self.pricing.validate()?;
        self.limits.validate()?;
        Ok(())
    }

    pub fn analytics_url(&self) -> &ConnectionUrl {
        self.analytics_database.url.or(&self.database.url)
    }

    /// Where the analytics API reads.
    pub fn analytics_read_url(&self) -> &ConnectionUrl {
        self.analytics_read_database.url.or(self.analytics_url())
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
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.pricing.version, "2026-11-01");
        assert!(s.pricing.models.iter().any(|m| m.name == "gpt-4.1"));
        assert_eq!(s.chat_completions_url(), "http://127.0.0.1:8090/v1/chat/completions");
        assert_eq!(s.max_body_bytes, 4 << 20);
        assert!(s.producer.spool.is_some());
    }

    #[test]
    fn environment_overrides_nested_and_flat_names() {
        let env = HashMap::from([
            ("PRICING__VERSION".to_owned(), "v9".to_owned()),
            ("PORT".to_owned(), "9000".to_owned()),
            ("LLM_TIMEOUT".to_owned(), "90s".to_owned()),
            ("PRODUCER__SPOOL__DIR".to_owned(), String::new()),
        ]);
        let s = GatewaySettings::load(None, service_kit::config::resolve_aliases(env)).unwrap();
        assert_eq!(s.pricing.version, "v9");
        assert_eq!(s.server.port, 9000);
        assert_eq!(s.llm_timeout, Duration::from_secs(90));
        assert!(s.producer.spool.is_none());
    }
}
