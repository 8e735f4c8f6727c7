//! `headhunter-bench`: the benchmarks behind `make bench`. Figures are printed as
//! ratios of two things measured side by side in one run, because absolute times
//! on a shared machine are noisy.
//!
//! - `ingest`: log events from the gateway's publisher through Redis and the worker to
//!   committed rows, against a raw `COPY` of the same rows into the same schema.
//! - `gateway`: chat completions through api-gateway (logging on) against the upstream
//!   simulator alone, at the same fixed request rate, measured with oha.
//! - `spool`: the gateway's producer writing to its disk spool while Redis is away, and
//!   replaying it, against sending straight to Redis.
//! - `cache`: cache-service GET against Redis GET on the same Redis, at the same
//!   concurrency (redis-benchmark, wrk and one client that speaks both).
//! - `load`: that client, alone (the `cache` benchmark runs it pinned to a core).
//! - `cvs`: CVs per minute end to end with a cold and a warm embedding cache, the
//!   p99 of a main-DB endpoint while CVs process against idle, and upload speed.
//! - `isolation`: the p99 of a main-DB endpoint (cache bypassed) idle against the same
//!   under thousands of logged LLM calls a second and CV processing.

mod access;
mod analytics;
mod cache;
mod cvs;
mod gateway;
mod ingest;
mod isolation;
mod legacy;
mod loadgen;
mod private_pg;
mod spool;

use std::process::{Child, Command as Process};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

/// The allocator: mimalloc (version 2), as in every service but cv-processor (see the
/// README's ingest benchmark; under mimalloc, cv-processor's sandbox test bomb no longer
/// ended at the extraction child's address-space limit), keeping freed memory for a
/// second ([`service_kit::allocator`]).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Calls each interview makes (every fourth call belongs to an interview); 1:
        /// every such call an interview of its own, the most rows the finest rollup
        /// can take.
        #[arg(long, default_value_t = 1)]
        calls_per_interview: usize,
        /// Rounds of raw COPY then pipeline, each into new databases (figures are medians;
        /// the ratio of one round moves by a tenth between runs on a shared machine).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// Events/s into the producer's spool (Redis away) and replayed from it, vs straight to Redis.
    Spool {
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
    /// What the session check and the rate limiter add to a request.
    Access {
        #[arg(long, default_value_t = 2000)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        #[arg(long, default_value = "target/release")]
        bin_dir: std::path::PathBuf,
    },
    /// cache-service GET (hot key in L1, and cold through Redis) vs Redis GET.
    Cache {
        /// Connections of every client in the main comparison.
        #[arg(long, default_value_t = 64)]
        connections: u32,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Interleaved rounds of the main comparison (figures are medians).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        #[arg(long, default_value = "target/release")]
        bin_dir: std::path::PathBuf,
    },
    /// CVs end to end (cold and warm embedding cache), main-DB p99 while they process,
    /// and how fast uploads are answered.
    Cvs {
        /// Distinct CVs processed cold, then again warm.
        #[arg(long, default_value_t = 200)]
        cvs: usize,
        /// CVs uploaded for the upload-speed figure.
        #[arg(long, default_value_t = 1000)]
        uploads: usize,
        #[arg(long, default_value = "target/release")]
        bin_dir: std::path::PathBuf,
        /// The embedding model (make models).
        #[arg(long, default_value = ".models/all-minilm-l6-v2")]
        model_dir: std::path::PathBuf,
    },
    /// A main-DB endpoint's p99 idle vs under logged LLM calls and CV processing.
    Isolation {
        /// LLM calls per second asked of the gateway.
        #[arg(long, default_value_t = 5000)]
        llm_rate: u32,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// CVs uploaded before the loaded measurements.
        #[arg(long, default_value_t = 300)]
        cvs: usize,
        #[arg(long, default_value = "target/release")]
        bin_dir: std::path::PathBuf,
        #[arg(long, default_value = ".models/all-minilm-l6-v2")]
        model_dir: std::path::PathBuf,
    },
    /// The dashboard's queries over a month of raw rows: from the rollups vs from raw.
    Analytics {
        /// Raw llm_logs rows generated over 30 days.
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        /// Runs of each query (each from both sides).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Leave the generated database behind (to look at plans).
        #[arg(long)]
        keep: bool,
        /// Measure again on a database a `--keep` run left (no generation).
        #[arg(long)]
        reuse: Option<String>,
    },
    /// The legacy move (old-layout rows from a main database into llm_logs) vs raw COPY.
    Legacy {
        #[arg(long, default_value_t = 1_000_000)]
        rows: i64,
        #[arg(long, default_value_t = 5_000)]
        batch: i64,
    },
    /// Closed-loop GETs over RESP or HTTP/1.1 from one thread; prints a JSON report.
    Load {
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long, value_enum)]
        protocol: loadgen::Protocol,
        /// The Redis key, or the HTTP path.
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 64)]
        connections: u32,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Seconds run before measuring.
        #[arg(long, default_value_t = 1)]
        warmup_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    service_kit::allocator::keep_freed_memory();
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    match Cli::parse().command {
        Command::Ingest { events, calls_per_interview, rounds } => {
            runtime()?.block_on(ingest::run_rounds(events, calls_per_interview, rounds))
        }
        Command::Spool { events } => runtime()?.block_on(spool::run(events)),
        Command::Gateway { rate, seconds, bin_dir, no_max_rate } => {
            runtime()?.block_on(gateway::run(rate, seconds, &bin_dir, !no_max_rate))
        }
        Command::Access { rate, seconds, rounds, bin_dir } => {
            runtime()?.block_on(access::run(rate, seconds, rounds, &bin_dir))
        }
        Command::Cache { connections, seconds, rounds, bin_dir } => {
            runtime()?.block_on(cache::run(connections, seconds, rounds, &bin_dir))
        }
        Command::Cvs { cvs, uploads, bin_dir, model_dir } => {
            runtime()?.block_on(cvs::run(cvs, uploads, &bin_dir, &model_dir))
        }
        Command::Isolation { llm_rate, seconds, cvs, bin_dir, model_dir } => {
            runtime()?.block_on(isolation::run(llm_rate, seconds, cvs, &bin_dir, &model_dir))
        }
        Command::Analytics { rows, rounds, keep, reuse } => {
            runtime()?.block_on(analytics::run(rows, rounds, keep, reuse))
        }
        Command::Legacy { rows, batch } => runtime()?.block_on(legacy::run(rows, batch)),
        Command::Load { addr, protocol, target, connections, seconds, warmup_secs } => {
            // Its own single-threaded runtime: the client must not spread over cores.
            let report = loadgen::run(
                addr,
                protocol,
                &target,
                connections,
                Duration::from_secs(warmup_secs),
                Duration::from_secs(seconds),
            )?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}

/// `program`, kept to `cpus` (a `taskset -c` list) when given.
pub fn pinned(program: impl AsRef<std::ffi::OsStr>, cpus: Option<&str>) -> Process {
    match cpus {
        Some(cpus) => {
            let mut cmd = Process::new("taskset");
            cmd.arg("-c").arg(cpus).arg(program);
            cmd
        }
        None => Process::new(program),
    }
}

/// Child processes, stopped (SIGTERM, then waited for) when the benchmark ends, however
/// it ends.
pub struct Processes(pub Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            drop(Process::new("kill").arg("-TERM").arg(child.id().to_string()).status());
        }
        for child in &mut self.0 {
            drop(child.wait());
        }
    }
}

/// Waits up to 30 s for `url` to answer 2xx.
pub async fn wait_http(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    while !client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
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
