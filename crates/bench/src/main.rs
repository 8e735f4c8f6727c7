//! `headhunter-bench`: the benchmarks behind `make bench`. Figures are printed as
//! ratios of two things measured side by side in one run, because absolute times
//! on a shared machine are noisy.
//!
//! - `ingest`: log events from the gateway's publisher through Redis and the worker to
//!   committed rows, against a raw `COPY` of the same rows into the same schema.
//! - `gateway`: chat completions through api-gateway (logging on) against the upstream
//!   simulator alone, at the same fixed request rate, measured with oha.
//! - `cache`: cache-service GET against redis-benchmark GET on the same Redis.

mod cache;
mod gateway;
mod ingest;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publisher → Redis → worker → committed rows, vs raw COPY.
    Ingest {
        #[arg(long, default_value_t = 200_000)]
        events: usize,
    },
    /// Added latency of the gateway at a fixed rate, and the highest rate it sustains.
    Gateway {
        /// Requests per second for the side-by-side comparison.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Where the release binaries are.
        #[arg(long, default_value = "target/release")]
        bin_dir: std::path::PathBuf,
        /// Skip the search for the highest sustained rate.
        #[arg(long)]
        no_max_rate: bool,
    },
    /// cache-service GET (hot key in L1, and cold through Redis) vs redis-benchmark GET.
    Cache {
        #[arg(long, default_value_t = 64)]
        connections: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value = "target/release")]
        bin_dir: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ingest { events } => ingest::run(events).await,
        Command::Gateway { rate, seconds, bin_dir, no_max_rate } => {
            gateway::run(rate, seconds, &bin_dir, !no_max_rate).await
        }
        Command::Cache { connections, seconds, bin_dir } => cache::run(connections, seconds, &bin_dir).await,
    }
}

/// The PostgreSQL server the benchmarks create their databases on.
pub fn postgres_server_url() -> String {
    std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

pub fn redis_url() -> String {
    std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// A scratch database, dropped by [`drop_database`].
pub async fn create_database(label: &str) -> anyhow::Result<(String, String)> {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let name = format!("hh_bench_{label}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut admin = AsyncPgConnection::establish(&format!("{}/postgres", postgres_server_url())).await?;
    admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await?;
    Ok((format!("{}/{name}", postgres_server_url()), name))
}

pub async fn drop_database(name: &str) -> anyhow::Result<()> {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let mut admin = AsyncPgConnection::establish(&format!("{}/postgres", postgres_server_url())).await?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await?;
    Ok(())
}

/// Runs a query returning one `bigint` column `n`.
pub use test_support::query_count as count;

/// Deletes every Redis key under `prefix`.
pub async fn clear_redis(prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(&keys).query_async::<()>(&mut conn).await?;
    }
    Ok(())
}
