//! A Redis process of the test's own, on a free port, with its append-only file in a
//! directory of its own: a test can kill it (losing nothing it acknowledged) and start it
//! again on the same port and data, or fill it to its `maxmemory`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::unique_suffix;

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers. `extra` are `redis-server` options
    /// (`["--maxmemory", "2mb"]`).
    pub async fn start(extra: &[&str]) -> anyhow::Result<Self> {
        let port = crate::local_listener()?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("hh-test-redis-{}", unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        let mut server = Self { port, dir, extra: extra.iter().map(|s| (*s).to_owned()).collect(), child: None };
        server.restart().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it (SIGKILL): what it acknowledged is in its append-only file.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again on the same port and data, and waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            &self.dir.to_string_lossy(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(self.extra.iter().cloned());
        let child = Command::new("redis-server").args(&args).stdout(Stdio::null()).kill_on_drop(true).spawn()?;
        self.child = Some(child);
        let url = self.url();
        crate::wait_for(Duration::from_secs(10), "redis-server to answer", || async {
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut conn).await.ok().map(|_| ())
        })
        .await
    }

    pub async fn connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.url())?.get_multiplexed_async_connection().await?)
    }

    /// Sets `maxmemory` to what Redis uses now plus `headroom` bytes.
    pub async fn limit_memory(&self, headroom: u64) -> anyhow::Result<()> {
        let mut conn = self.connection().await?;
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
        let used: u64 = service_kit::redis::info_field(&info, "used_memory")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("INFO memory has no used_memory"))?;
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used + headroom).query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Fills it to its `maxmemory` with small filler keys, until writes are refused;
    /// returns how many it wrote. Small ones: a big value's query buffer is freed after
    /// its refusal, which would bring Redis back under its limit.
    pub async fn fill(&self) -> anyhow::Result<usize> {
        let mut conn = self.connection().await?;
        let mut filled = 0;
        while redis::cmd("SET")
            .arg(format!("filler:{filled}"))
            .arg(vec![0u8; 1024])
            .query_async::<()>(&mut conn)
            .await
            .is_ok()
        {
            filled += 1;
            anyhow::ensure!(filled < 1_000_000, "Redis never refused a write: is maxmemory set?");
        }
        Ok(filled)
    }

    /// Deletes the keys [`RedisServer::fill`] wrote.
    pub async fn free(&self, filled: usize) -> anyhow::Result<()> {
        let mut conn = self.connection().await?;
        let keys: Vec<String> = (0..filled).map(|i| format!("filler:{i}")).collect();
        for chunk in keys.chunks(500) {
            redis::cmd("DEL").arg(chunk).query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            drop(child.start_kill());
        }
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

/// A primary, a replica of it and three Sentinels watching them (quorum 2), each a
/// `redis-server` process of the test's own: the queue Redis of a production
/// deployment in small. The primary writes its AOF with `appendfsync everysec`, as the
/// deployment's does. Sentinels call a primary down after one second without answers.
pub struct SentinelGroup {
    pub primary: RedisServer,
    pub replica: RedisServer,
    sentinels: Vec<(u16, Child)>,
    dir: PathBuf,
}

/// The name the Sentinels know the primary by.
pub const PRIMARY_NAME: &str = "hh-queue";

impl SentinelGroup {
    pub async fn start() -> anyhow::Result<Self> {
        let primary = RedisServer::start(&["--appendfsync", "everysec"]).await?;
        let port = primary.port.to_string();
        let replica = RedisServer::start(&["--appendfsync", "everysec", "--replicaof", "127.0.0.1", &port]).await?;
        let dir = std::env::temp_dir().join(format!("hh-test-sentinel-{}", unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let sentinel_port = crate::local_listener()?.local_addr()?.port();
            let conf = dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {sentinel_port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {PRIMARY_NAME} 127.0.0.1 {port} 2\n\
                     sentinel down-after-milliseconds {PRIMARY_NAME} 1000\n\
                     sentinel failover-timeout {PRIMARY_NAME} 10000\n\
                     sentinel parallel-syncs {PRIMARY_NAME} 1\n",
                    dir = dir.display()
                ),
            )?;
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            sentinels.push((sentinel_port, child));
        }
        let group = Self { primary, replica, sentinels, dir };
        group.wait_watched().await?;
        Ok(group)
    }

    /// `redis+sentinel://` naming every Sentinel.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|(port, _)| format!("127.0.0.1:{port}")).collect();
        format!("redis+sentinel://{}/{PRIMARY_NAME}/0", hosts.join(","))
    }

    async fn sentinel(&self, i: usize) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let port = self.sentinels[i].0;
        Ok(redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_multiplexed_async_connection().await?)
    }

    /// Until every Sentinel knows the replica and the two other Sentinels, and the
    /// replica is in sync: only then can they agree on a failover.
    async fn wait_watched(&self) -> anyhow::Result<()> {
        crate::wait_for(Duration::from_secs(30), "the Sentinels to see the replica and each other", || async {
            for i in 0..self.sentinels.len() {
                let mut conn = self.sentinel(i).await.ok()?;
                let replicas: Vec<redis::Value> =
                    redis::cmd("SENTINEL").arg("REPLICAS").arg(PRIMARY_NAME).query_async(&mut conn).await.ok()?;
                let others: Vec<redis::Value> =
                    redis::cmd("SENTINEL").arg("SENTINELS").arg(PRIMARY_NAME).query_async(&mut conn).await.ok()?;
                if replicas.len() != 1 || others.len() != self.sentinels.len() - 1 {
                    return None;
                }
            }
            let mut replica = self.replica.connection().await.ok()?;
            let info: String = redis::cmd("INFO").arg("replication").query_async(&mut replica).await.ok()?;
            info.contains("master_link_status:up").then_some(())
        })
        .await
    }

    /// What each Sentinel says of itself (`INFO sentinel`: TILT mode among it) and of
    /// the replicas, and the role each server reports: for a test that waited in vain.
    pub async fn describe(&self) -> String {
        let mut out = String::new();
        for i in 0..self.sentinels.len() {
            let Ok(mut conn) = self.sentinel(i).await else {
                out.push_str(&format!("sentinel {i}: unreachable\n"));
                continue;
            };
            let info: String = redis::cmd("INFO").arg("sentinel").query_async(&mut conn).await.unwrap_or_default();
            let replicas: redis::Value = redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg(PRIMARY_NAME)
                .query_async(&mut conn)
                .await
                .unwrap_or(redis::Value::Nil);
            out.push_str(&format!("sentinel {i}: {}\n  replicas: {replicas:?}\n", info.trim().replace("\r\n", "; ")));
        }
        for (name, server) in [("primary", &self.primary), ("replica", &self.replica)] {
            let role = match server.connection().await {
                Ok(mut conn) => redis::cmd("ROLE")
                    .query_async::<redis::Value>(&mut conn)
                    .await
                    .map_or_else(|e| e.to_string(), |v| format!("{v:?}")),
                Err(e) => e.to_string(),
            };
            out.push_str(&format!("{name} (port {}): {role}\n", server.port));
        }
        out
    }

    /// The port of the server the Sentinels name as primary now.
    pub async fn primary_port(&self) -> anyhow::Result<u16> {
        let mut conn = self.sentinel(0).await?;
        let (_, port): (String, u16) =
            redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(PRIMARY_NAME).query_async(&mut conn).await?;
        Ok(port)
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        drop(std::fs::remove_dir_all(&self.dir));
    }
}
