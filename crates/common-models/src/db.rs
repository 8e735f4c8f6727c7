//! Migrations of both databases.

use std::time::Duration;

use diesel::Connection;
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use service_kit::config::{postgres_url_for, redact_url};

/// Migrations of the main (business) database.
pub const MAIN_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations-main");
/// Migrations of the analytics (logs) database.
pub const ANALYTICS_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations-analytics");

/// Which database a migration set belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    Main,
    Analytics,
}

impl Database {
    pub fn migrations(self) -> EmbeddedMigrations {
        match self {
            Self::Main => MAIN_MIGRATIONS,
            Self::Analytics => ANALYTICS_MIGRATIONS,
        }
    }
}

/// Applies every pending migration of `db` at `url`; returns the versions applied.
pub async fn run_migrations(url: &str, db: Database) -> anyhow::Result<Vec<String>> {
    let url = postgres_url_for(url, "headhunter-migrate");
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)?;
        let applied =
            conn.run_pending_migrations(db.migrations()).map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
        Ok(applied.iter().map(ToString::to_string).collect())
    })
    .await?
}

/// Reverts every applied migration of `db` at `url`; returns the versions reverted.
pub async fn revert_migrations(url: &str, db: Database) -> anyhow::Result<Vec<String>> {
    let url = postgres_url_for(url, "headhunter-migrate");
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)?;
        let reverted =
            conn.revert_all_migrations(db.migrations()).map_err(|e| anyhow::anyhow!("migration revert failed: {e}"))?;
        Ok(reverted.iter().map(ToString::to_string).collect())
    })
    .await?
}

/// [`run_migrations`] with retries, for start-up while the database may still be
/// coming up (the seeds' worker: 5 attempts, 2 s apart).
pub async fn run_migrations_with_retries(
    url: &str,
    db: Database,
    attempts: u32,
    delay: Duration,
) -> anyhow::Result<Vec<String>> {
    let attempts = attempts.max(1);
    let mut attempt = 1;
    loop {
        match run_migrations(url, db).await {
            Ok(applied) => return Ok(applied),
            Err(err) if attempt < attempts => {
                tracing::warn!(
                    database = ?db, url = %redact_url(url), attempt, attempts, error = %err,
                    "migrations failed, retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(err) => {
                return Err(err.context(format!("migrations of the {db:?} database failed {attempts} times")));
            }
        }
    }
}
