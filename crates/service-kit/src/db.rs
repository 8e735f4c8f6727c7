//! PostgreSQL pools: explicit timeouts, and `application_name` on every connection so a
//! DBA can tell the services apart in `pg_stat_activity`.

use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::Pool;

use crate::config::postgres_url_for;

/// A pool of diesel-async PostgreSQL connections.
pub type PgPool = Pool<AsyncPgConnection>;

/// What a connection taken from the pool has been through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkout {
    /// A `SELECT 1` round trip first, so a connection the server dropped is replaced
    /// before the caller sees it (one more statement per checkout).
    Verified,
    /// None: a dropped connection fails the caller's statement (and is then discarded).
    /// For callers that retry anyway and count their statements.
    Fast,
}

/// Builds a pool whose connections are verified at each checkout; no connection is
/// opened here: a database that is down at start-up shows as errors on use (and in
/// readiness), not as a crash.
pub fn build_pool(url: &str, application_name: &str, max_size: usize) -> anyhow::Result<PgPool> {
    build_pool_with(url, application_name, max_size, Checkout::Verified)
}

/// [`build_pool`] with the given checkout.
pub fn build_pool_with(
    url: &str,
    application_name: &str,
    max_size: usize,
    checkout: Checkout,
) -> anyhow::Result<PgPool> {
    let mut config = diesel_async::pooled_connection::ManagerConfig::default();
    if checkout == Checkout::Fast {
        config.recycling_method = diesel_async::pooled_connection::RecyclingMethod::Fast;
    }
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        postgres_url_for(url, application_name),
        config,
    );
    let pool = Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()?;
    Ok(pool)
}
