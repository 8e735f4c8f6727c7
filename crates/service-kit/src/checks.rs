//! Dependency checks: one round trip to a database or a Redis, bounded in time. `/readyz`
//! and the admin health views use the same checks.

use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a check may take before the dependency counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Something a service depends on, which it can probe.
#[derive(Clone)]
pub enum Dependency {
    /// `SELECT 1` through a pool.
    #[cfg(feature = "postgres")]
    Postgres { name: &'static str, pool: crate::db::PgPool },
    /// `PING` through a pool.
    Redis { name: &'static str, pool: crate::redis::Pool },
}

impl Dependency {
    /// PostgreSQL at `url`, checked over a connection of its own: a service pool busy to
    /// its last connection is load, not an outage, and must not fail readiness.
    #[cfg(feature = "postgres")]
    pub fn own_postgres(name: &'static str, url: &str, application: &str) -> anyhow::Result<Self> {
        Ok(Self::Postgres { name, pool: crate::db::build_pool(url, &format!("{application}-probe"), 1)? })
    }

    /// Redis at `url`, checked over a connection of its own (a second's reply limit).
    pub fn own_redis(name: &'static str, url: &str) -> anyhow::Result<Self> {
        let pool = crate::redis::build_pool(url, 1, crate::redis::ReplyTimeout::After(Duration::from_secs(1)))?;
        Ok(Self::Redis { name, pool })
    }
}

/// What one probe found.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub name: &'static str,
    pub reachable: bool,
    /// Round trip time when reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Why not, when not (for logs and the admin view; never in a public answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Dependency {
    pub fn name(&self) -> &'static str {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres { name, .. } => name,
            Self::Redis { name, .. } => name,
        }
    }

    /// One round trip, at most [`CHECK_TIMEOUT`].
    pub async fn probe(&self) -> Probe {
        let started = Instant::now();
        let outcome = tokio::time::timeout(CHECK_TIMEOUT, self.round_trip()).await;
        let (reachable, error) = match outcome {
            Ok(Ok(())) => (true, None),
            Ok(Err(err)) => (false, Some(err)),
            Err(_) => (false, Some(format!("no answer within {} s", CHECK_TIMEOUT.as_secs()))),
        };
        let latency_ms = reachable.then(|| started.elapsed().as_secs_f64() * 1000.0);
        Probe { name: self.name(), reachable, latency_ms, error }
    }

    async fn round_trip(&self) -> Result<(), String> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres { pool, .. } => {
                use diesel_async::RunQueryDsl;
                let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                diesel::sql_query("SELECT 1").execute(&mut conn).await.map(drop).map_err(|e| e.to_string())
            }
            Self::Redis { pool, .. } => {
                let mut conn = pool.get().await.map_err(|e| e.to_string())?;
                redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(|e| e.to_string())
            }
        }
    }
}

/// Probes every dependency at once.
pub async fn probe_all(dependencies: &[Dependency]) -> Vec<Probe> {
    futures_util::future::join_all(dependencies.iter().map(Dependency::probe)).await
}

/// What `/readyz` checks: a service is ready when every `required` dependency answers;
/// `reported` ones are shown but do not take it out of rotation (the gateway keeps
/// serving with Redis down: its log events go to the spool).
#[derive(Clone, Default)]
pub struct Readiness {
    pub required: Vec<Dependency>,
    pub reported: Vec<Dependency>,
}

impl Readiness {
    /// `(ready, {dependency: reachable})`.
    pub async fn check(&self) -> (bool, serde_json::Map<String, serde_json::Value>) {
        let (required, reported) = tokio::join!(probe_all(&self.required), probe_all(&self.reported));
        let ready = required.iter().all(|p| p.reachable);
        for probe in required.iter().filter(|p| !p.reachable) {
            tracing::warn!(dependency = probe.name, error = probe.error.as_deref().unwrap_or(""), "not ready");
        }
        let body = required.iter().chain(&reported).map(|p| (p.name.to_owned(), p.reachable.into())).collect();
        (ready, body)
    }
}
