//! A Redis key prefix per test. When it is dropped, every stream under it is checked:
//! a consumer group left with entries pending or undelivered fails the test (unless the
//! test said it leaves work behind on purpose); then the prefix's keys are deleted.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{block_on_side, unique_suffix};

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

pub struct TestRedis {
    pub prefix: String,
    pub url: String,
    leaves_work: AtomicBool,
}

impl TestRedis {
    /// A new prefix on the shared test Redis.
    pub fn new() -> Self {
        Self::on(redis_url())
    }

    /// A new prefix on the Redis at `url` (a [`crate::RedisServer`] of the test's own).
    pub fn on(url: String) -> Self {
        Self { prefix: format!("test:{}:", unique_suffix()), url, leaves_work: AtomicBool::new(false) }
    }

    pub async fn connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        connect(&self.url).await
    }

    /// `name` under this test's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Entries in the stream `key` (a full key).
    pub async fn xlen(&self, key: &str) -> anyhow::Result<usize> {
        Ok(redis::cmd("XLEN").arg(key).query_async(&mut self.connection().await?).await?)
    }

    /// The JSON payloads of the stream `key` (a full key), oldest first.
    pub async fn stream_payloads(&self, key: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let reply: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg(key).arg("-").arg("+").query_async(&mut self.connection().await?).await?;
        Ok(reply
            .ids
            .iter()
            .filter_map(|entry| entry.get::<Vec<u8>>("payload"))
            .filter_map(|payload| serde_json::from_slice(&payload).ok())
            .collect())
    }

    /// The test leaves entries pending or undelivered on purpose: do not fail it for that.
    pub fn leaves_work_behind(&self) {
        self.leaves_work.store(true, Ordering::Relaxed);
    }

    pub fn expects_settled(&self) -> bool {
        !self.leaves_work.load(Ordering::Relaxed)
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}

/// A connection to the Redis `url` names: a server, or the primary Sentinel names now.
pub async fn connect(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(service_kit::redis::Endpoint::parse(url)?.primary().await?.get_multiplexed_async_connection().await?)
}

/// Entries some consumer group has not acknowledged (pending or not yet delivered),
/// per stream, under `prefix`; streams without groups do not count.
pub async fn unsettled_entries(url: &str, prefix: &str) -> anyhow::Result<Vec<(String, usize)>> {
    let mut conn = connect(url).await?;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await?;
    let mut unsettled = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await?;
        if kind != "stream" {
            continue;
        }
        let groups: redis::streams::StreamInfoGroupsReply =
            redis::cmd("XINFO").arg("GROUPS").arg(&key).query_async(&mut conn).await?;
        let open: usize = groups.groups.iter().map(|g| g.pending + g.lag.unwrap_or(0)).sum();
        if open > 0 {
            unsettled.push((key, open));
        }
    }
    Ok(unsettled)
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        let check = self.expects_settled() && !std::thread::panicking();
        let unsettled = block_on_side(async move {
            let unsettled = if check { unsettled_entries(&url, &prefix).await.unwrap_or_default() } else { Vec::new() };
            let cleanup = async {
                let mut conn = connect(&url).await?;
                let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await?;
                if !keys.is_empty() {
                    redis::cmd("DEL").arg(&keys).query_async::<()>(&mut conn).await?;
                }
                anyhow::Ok(())
            };
            drop(cleanup.await);
            unsettled
        })
        .unwrap_or_default();
        assert!(
            unsettled.is_empty(),
            "the test left queue work behind (stream, entries pending or undelivered): {unsettled:?}; \
             call leaves_work_behind() if that is intended"
        );
    }
}
