//! Test harness shared by the services' integration tests: a fresh PostgreSQL
//! database per test (dropped afterwards) and a Redis key prefix per test (its keys
//! deleted afterwards), so tests run in parallel against the real servers.
//!
//! `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432`) names the server
//! without a database; `TEST_REDIS_URL` (default `redis://127.0.0.1:6379/0`) the Redis.

use std::future::Future;
use std::time::{Duration, Instant};

use common_models::db::{self, Database};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

pub fn postgres_server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A database of its own for one test; dropped (with FORCE) when this value is.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// An empty database.
    pub async fn empty(label: &str) -> anyhow::Result<Self> {
        let name = format!("hh_test_{label}_{}", unique_suffix());
        admin_execute(&format!("CREATE DATABASE \"{name}\"")).await?;
        Ok(Self { url: format!("{}/{name}", postgres_server_url()), name })
    }

    /// A database with `kind`'s migrations applied.
    pub async fn migrated(kind: Database) -> anyhow::Result<Self> {
        let label = match kind {
            Database::Main => "main",
            Database::Analytics => "analytics",
        };
        let test_db = Self::empty(label).await?;
        db::run_migrations(&test_db.url, kind).await?;
        Ok(test_db)
    }

    pub async fn connect(&self) -> anyhow::Result<AsyncPgConnection> {
        Ok(AsyncPgConnection::establish(&self.url).await?)
    }

    /// Refuses (or again accepts) new connections, and ends the open ones: the
    /// database looks down to its clients while the server stays up for other tests.
    pub async fn set_accepting_connections(&self, accept: bool) -> anyhow::Result<()> {
        admin_execute(&format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS {accept}", self.name)).await?;
        if !accept {
            admin_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
                self.name
            ))
            .await?;
        }
        Ok(())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop runs outside any runtime guarantee: use a thread with its own runtime.
        let handle = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                drop(rt.block_on(admin_execute(&sql)));
            }
        });
        drop(handle.join());
    }
}

async fn admin_execute(sql: &str) -> anyhow::Result<()> {
    let mut conn = AsyncPgConnection::establish(&format!("{}/postgres", postgres_server_url())).await?;
    conn.batch_execute(sql).await?;
    Ok(())
}

/// A Redis key prefix of its own for one test; its keys are deleted on drop.
pub struct TestRedis {
    pub prefix: String,
    pub url: String,
}

impl TestRedis {
    pub fn new() -> Self {
        Self { prefix: format!("test:{}:", unique_suffix()), url: redis_url() }
    }

    pub async fn connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.url.as_str())?.get_multiplexed_async_connection().await?)
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.prefix);
        let url = self.url.clone();
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            drop(rt.block_on(async move {
                let client = redis::Client::open(url.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await?;
                if !keys.is_empty() {
                    redis::cmd("DEL").arg(&keys).query_async::<()>(&mut conn).await?;
                }
                anyhow::Ok(())
            }));
        });
        drop(handle.join());
    }
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
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener)
}

#[derive(diesel::QueryableByName)]
struct Scalar {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Runs `sql`, which must return one row with one `bigint` column named `n`.
pub async fn query_count(url: &str, sql: &str) -> anyhow::Result<i64> {
    use diesel_async::RunQueryDsl;
    let mut conn = AsyncPgConnection::establish(url).await?;
    let row: Scalar = diesel::sql_query(sql).get_result(&mut conn).await?;
    Ok(row.n)
}
