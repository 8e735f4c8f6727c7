//! PostgreSQL pools: explicit timeouts, and `application_name` on every connection so a
//! DBA can tell the services apart in `pg_stat_activity`.

use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::Pool;

use crate::config::postgres_url_for;

/// A pool of diesel-async PostgreSQL connections.
pub type PgPool = Pool<AsyncPgConnection>;

/// Builds a pool; no connection is opened here: a database that is down at start-up
/// shows as errors on use (and in readiness), not as a crash.
pub fn build_pool(url: &str, application_name: &str, max_size: usize) -> anyhow::Result<PgPool> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(postgres_url_for(url, application_name));
    let pool = Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()?;
    Ok(pool)
}
