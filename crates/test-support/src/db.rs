//! A database per test, created from a migrated template.
//!
//! Templates are named after a hash of their migration folder's files
//! (`hh_tmpl_main_<hash>`): the first test of a run to need one builds it under a
//! PostgreSQL advisory lock (as `…_building`, renamed when complete, so a crash never
//! leaves a half-migrated template); every other test, in any process, copies it with
//! `CREATE DATABASE … TEMPLATE`, which takes milliseconds where migrating took seconds.
//! Templates of older migration folders are dropped when a new one is built.

use std::path::Path;
use std::time::Duration;

use common_models::db::{self, Database};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use sha2::{Digest, Sha256};

use crate::{block_on_side, unique_suffix};

pub fn postgres_server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A database of its own for one test; dropped (with FORCE) when this value is.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

fn label(kind: Database) -> &'static str {
    match kind {
        Database::Main => "main",
        Database::Analytics => "analytics",
    }
}

impl TestDb {
    /// An empty database.
    pub async fn empty(label: &str) -> anyhow::Result<Self> {
        let name = format!("hh_test_{label}_{}", unique_suffix());
        admin_execute(&format!("CREATE DATABASE \"{name}\"")).await?;
        Ok(Self { url: format!("{}/{name}", postgres_server_url()), name })
    }

    /// A database with `kind`'s migrations applied (copied from the template).
    pub async fn migrated(kind: Database) -> anyhow::Result<Self> {
        let template = template(kind).await?;
        let name = format!("hh_test_{}_{}", label(kind), unique_suffix());
        let sql = format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"");
        // Another process may be creating from the same template at this instant.
        let mut attempt = 0;
        loop {
            match admin_execute(&sql).await {
                Ok(()) => break,
                Err(err) if attempt < 20 && err.to_string().contains("being accessed by other users") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err),
            }
        }
        Ok(Self { url: format!("{}/{name}", postgres_server_url()), name })
    }

    /// (rows, distinct event ids) of a log table.
    pub async fn counts(&self, table: &str) -> anyhow::Result<(i64, i64)> {
        let rows = query_count(&self.url, &format!("SELECT count(*) AS n FROM {table}")).await?;
        let distinct = query_count(&self.url, &format!("SELECT count(DISTINCT event_id) AS n FROM {table}")).await?;
        Ok((rows, distinct))
    }

    /// Waits until `table` holds at least `expected` rows.
    pub async fn wait_rows(&self, table: &str, expected: i64, timeout: Duration) -> anyhow::Result<()> {
        let sql = format!("SELECT count(*) AS n FROM {table}");
        crate::wait_for(timeout, &format!("{expected} rows in {table}"), || async {
            query_count(&self.url, &sql).await.ok().filter(|n| *n >= expected).map(|_| ())
        })
        .await
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
        block_on_side(async move { admin_execute(&sql).await.ok() });
    }
}

async fn admin_connection() -> anyhow::Result<AsyncPgConnection> {
    Ok(AsyncPgConnection::establish(&format!("{}/postgres", postgres_server_url())).await?)
}

async fn admin_execute(sql: &str) -> anyhow::Result<()> {
    admin_connection().await?.batch_execute(sql).await?;
    Ok(())
}

/// A hash of every file of a migration folder (paths and contents).
fn fingerprint(kind: Database) -> anyhow::Result<String> {
    let folder = match kind {
        Database::Main => "migrations-main",
        Database::Analytics => "migrations-analytics",
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(folder);
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() { dirs.push(path) } else { files.push(path) }
        }
    }
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        hash.update(file.strip_prefix(&root)?.to_string_lossy().as_bytes());
        hash.update(std::fs::read(&file)?);
    }
    Ok(hash.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect())
}

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    datname: String,
}

/// The name of `kind`'s template for the current migrations, built if missing.
async fn template(kind: Database) -> anyhow::Result<String> {
    let family = format!("hh_tmpl_{}_", label(kind));
    let name = format!("{family}{}", fingerprint(kind)?);
    let mut admin = admin_connection().await?;
    // One builder at a time, across every test process of the run.
    admin.batch_execute("SELECT pg_advisory_lock(727274)").await?;
    let result = async {
        let existing: Vec<Name> = diesel::sql_query(format!(
            "SELECT datname::text AS datname FROM pg_database WHERE datname LIKE '{family}%'"
        ))
        .load(&mut admin)
        .await?;
        if existing.iter().any(|d| d.datname == name) {
            return anyhow::Ok(());
        }
        // Older migration sets, and a build a crash left behind.
        for stale in &existing {
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", stale.datname)).await?;
        }
        let building = format!("{name}_building");
        admin.batch_execute(&format!("CREATE DATABASE \"{building}\"")).await?;
        db::run_migrations(&format!("{}/{building}", postgres_server_url()), kind).await?;
        admin.batch_execute(&format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\"")).await?;
        Ok(())
    }
    .await;
    admin.batch_execute("SELECT pg_advisory_unlock(727274)").await?;
    result?;
    Ok(name)
}

#[derive(diesel::QueryableByName)]
struct Scalar {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Runs `sql`, which must return one row with one `bigint` column named `n`.
pub async fn query_count(url: &str, sql: &str) -> anyhow::Result<i64> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    let row: Scalar = diesel::sql_query(sql).get_result(&mut conn).await?;
    Ok(row.n)
}
