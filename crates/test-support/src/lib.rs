//! Test harness shared by the services' integration tests, against the real servers:
//!
//! - [`TestDb`]: a PostgreSQL database of the test's own, created from a template that
//!   is migrated once per migration set (not once per test), dropped afterwards;
//! - [`TestRedis`]: a Redis key prefix of the test's own, whose keys are deleted
//!   afterwards, after checking that no consumer group was left with work pending;
//! - [`RedisServer`]: a Redis process of the test's own, to kill and restart;
//! - [`Service`]: starts any of our services in-process on a free port and stops it;
//! - [`ServiceProcess`]: runs one of our binaries as a process, to SIGKILL it;
//! - [`browser::Browser`]: headless Chromium through ChromeDriver, for page tests.
//!
//! `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432`) names the server
//! without a database; `TEST_REDIS_URL` (default `redis://127.0.0.1:6379/0`) the Redis.

pub mod browser;
mod db;
pub mod fixtures;
mod process;
mod redis_server;
mod service;
mod test_redis;

use std::future::Future;
use std::time::{Duration, Instant};

pub use db::{TestDb, postgres_server_url, query_count};
pub use process::ServiceProcess;
pub use redis_server::{RedisServer, SentinelGroup};
pub use service::Service;
pub use test_redis::{TestRedis, redis_url, unsettled_entries};

/// A short random tag for names a test makes (prefixes, databases, collections).
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if started.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP listener on a free loopback port.
pub fn local_listener() -> anyhow::Result<std::net::TcpListener> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?)
}

/// Runs a future to completion on a fresh runtime in a thread of its own (for `Drop`,
/// which may run inside or outside a runtime).
fn block_on_side<F: Future<Output = T> + Send + 'static, T: Send + 'static>(future: F) -> Option<T> {
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        Some(rt.block_on(future))
    });
    handle.join().ok().flatten()
}

/// A directory of the test's own, removed with everything in it when dropped.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("hh-test-{label}-{}", unique_suffix()));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        drop(std::fs::remove_dir_all(&self.path));
    }
}

/// Creates a company through a gateway's admin API at `gateway_url`; returns (company
/// id, its first API key).
pub async fn create_company(
    http: &reqwest::Client,
    gateway_url: &str,
    admin_key: &str,
    name: &str,
) -> anyhow::Result<(i64, String)> {
    let res = http
        .post(format!("{gateway_url}/api/v1/admin/companies"))
        .bearer_auth(admin_key)
        .json(&serde_json::json!({"name": name}))
        .send()
        .await?;
    anyhow::ensure!(res.status() == 201, "create company answered {}", res.status());
    let body: serde_json::Value = res.json().await?;
    let id = body["company"]["id"].as_i64().ok_or_else(|| anyhow::anyhow!("no company id in {body}"))?;
    let key = body["api_key"]["key"].as_str().ok_or_else(|| anyhow::anyhow!("no key in {body}"))?.to_owned();
    Ok((id, key))
}
