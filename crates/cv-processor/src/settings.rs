//! The processor's settings; defaults and their meaning are in `config/default.toml`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common_models::cv::CV_PROCESSOR_GROUP;
use serde::Deserialize;
use service_kit::config::{DatabaseSection, LoggingSection, RedisSection, ServerSection};
use task_queue::{ConsumerConfig, ProducerConfig};

use crate::analysis::AnalysisSettings;
use crate::embed::EmbeddingSettings;
use crate::matching::MatchSettings;
use crate::sandbox::SandboxConfig;
use crate::sweep::SweepSettings;

/// The documented defaults, embedded.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct ProcessorSettings {
    pub server: ServerSection,
    pub redis: RedisSection,
    /// The main database (status, counts, facts, summary).
    pub database: DatabaseSection,
    pub logging: LoggingSection,
    pub files: FilesSection,
    pub sandbox: SandboxConfig,
    pub consumer: ConsumerConfig,
    /// Sends the service's request log to `system_logs`.
    pub producer: ProducerConfig,
    pub chunk_words: usize,
    pub embedding: EmbeddingSettings,
    pub vectors: VectorsSection,
    pub matching: MatchSettings,
    pub sweep: SweepSettings,
    pub analysis: AnalysisSettings,
    /// Guards the internal matching route, and is sent to the gateway for the LLM calls
    /// of analyses (made in the company's name); empty: unguarded, and analyses fail.
    pub internal_api_key: service_kit::config::Secret,
    /// cache-service's credential (`CACHE_API_KEY`), sent with every embedding lookup.
    pub cache_api_key: service_kit::config::Secret,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VectorsSection {
    /// The embedded engine's directory (when `url` is empty).
    pub dir: PathBuf,
    /// A Qdrant server's gRPC address (`QDRANT_URL`); empty: the embedded engine.
    pub url: String,
    pub api_key: service_kit::config::Secret,
    /// The server's collection.
    pub collection: String,
    #[serde(deserialize_with = "service_kit::config::duration")]
    pub optimize_interval: std::time::Duration,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FilesSection {
    pub storage_dir: PathBuf,
}

impl ProcessorSettings {
    /// Defaults → optional file → `env`, then validated.
    pub fn load(file: Option<&Path>, env: HashMap<String, String>) -> anyhow::Result<Self> {
        let mut settings: Self = service_kit::config::load(DEFAULTS, file, env)?;
        settings.consumer.group = CV_PROCESSOR_GROUP.to_owned();
        settings.consumer = settings.consumer.with_default_name();
        settings.validate()?;
        Ok(settings)
    }

    pub fn defaults() -> anyhow::Result<Self> {
        Self::load(None, HashMap::new())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.consumer.validate()?;
        self.producer.validate()?;
        anyhow::ensure!(self.chunk_words >= 8, "chunk_words must be at least 8");
        anyhow::ensure!(self.sandbox.memory >= 64 << 20, "sandbox.memory must be at least 64MiB");
        anyhow::ensure!(self.database.pool_size >= 1, "database.pool_size must be at least 1");
        anyhow::ensure!(self.embedding.batch_size >= 1, "embedding.batch_size must be at least 1");
        anyhow::ensure!((1..=10_000).contains(&self.matching.pool), "matching.pool must be 1 to 10000");
        anyhow::ensure!(self.matching.rrf_k >= 0.0, "matching.rrf_k must not be negative");
        anyhow::ensure!(self.sweep.batch >= 1, "sweep.batch must be at least 1");
        anyhow::ensure!((1..=10).contains(&self.analysis.max_attempts), "analysis.max_attempts must be 1 to 10");
        anyhow::ensure!(self.analysis.max_cv_chars >= 1_000, "analysis.max_cv_chars must be at least 1000");
        anyhow::ensure!(
            self.sweep.stale_after > self.sandbox.wall,
            "sweep.stale_after must be longer than sandbox.wall (a CV that slow is not stuck)"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shipped_defaults_parse() {
        let s = ProcessorSettings::defaults().unwrap();
        assert_eq!(s.consumer.group, "cv-processor");
        assert_eq!(s.consumer.batch_size, 1);
        assert_eq!(s.sandbox.memory, 1 << 30);
        assert_eq!(s.sandbox.limits.max_pages, 50);
        assert_eq!(s.chunk_words, 40);
    }
}
