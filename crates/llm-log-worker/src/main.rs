use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use clap::{Parser, Subcommand};
use common_models::db::{self, Database};
use common_models::events::LogEvent;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use llm_log_worker::WorkerSettings;
use task_queue::cli::DeadLetterCommand;
use task_queue::{Keys, Message};

/// The allocator: mimalloc (version 2), as in every service but cv-processor (see the
/// README's ingest benchmark; under mimalloc, cv-processor's sandbox test bomb no longer
/// ended at the extraction child's address-space limit), keeping freed memory for a
/// second ([`service_kit::allocator`]).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writes LLM and API logs from the Redis streams to the analytics database.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Settings file (TOML) layered between the defaults and the environment.
    #[arg(long, global = true, env = "HEADHUNTER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the log streams (the default).
    Serve,
    /// Apply the analytics database migrations and exit.
    Migrate,
    /// Exit 0 when this worker's /healthz answers.
    Healthcheck,
    /// Exit 1 naming each environment variable that is not a setting of this service
    /// (misspelt, renamed, or meant for another), 0 when there is none.
    CheckEnv,
    /// Recompute the hourly rollups of the whole UTC hours covering [--from, --to) from the
    /// raw rows, one day per transaction; safe to re-run and to run beside live workers.
    RebuildRollups {
        /// Start: `2026-11-01` (midnight UTC) or an RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        from: DateTime<Utc>,
        /// End (exclusive); now when left out.
        #[arg(long, value_parser = parse_time)]
        to: Option<DateTime<Utc>>,
    },
    /// Price the logged LLM calls of the whole UTC hours covering [--from, --to) again
    /// from a corrected price table, and rebuild the rollups of the days that changed;
    /// one day per transaction, safe to re-run.
    Reprice {
        /// A TOML file with a `[pricing]` table (the gateway's configuration file).
        #[arg(long)]
        prices: PathBuf,
        /// Start: `2026-11-01` (midnight UTC) or an RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        from: DateTime<Utc>,
        /// End (exclusive); now when left out.
        #[arg(long, value_parser = parse_time)]
        to: Option<DateTime<Utc>>,
        /// Only the calls of this model (as requested).
        #[arg(long)]
        model: Option<String>,
        /// Only count what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move the LLM calls the old system logged into the main database's `system_logs`
    /// (component `llm`) into `llm_logs`, in batches, resumable after a kill and
    /// idempotent; then reconcile both sides per UTC day (exit 1 when they differ).
    MoveLegacy {
        /// The main database holding the old `system_logs` table.
        #[arg(long, env = "LEGACY_DATABASE_URL")]
        from_database: String,
        /// Old rows read and written at a time.
        #[arg(long, default_value_t = 5_000)]
        batch: i64,
        /// After an equal reconciliation, delete the moved rows from the main database
        /// in small batches.
        #[arg(long)]
        delete_moved: bool,
    },
    /// Create the old `system_logs` table in a database and fill it with generated LLM
    /// calls (and some API rows), to try and measure `move-legacy`.
    LegacyFixture {
        #[arg(long)]
        database: String,
        #[arg(long, default_value_t = 1_000_000)]
        rows: i64,
        /// Spread over this many days before now.
        #[arg(long, default_value_t = 60)]
        days: i64,
    },
    /// Drop the raw log partitions whose whole month is older than the retention age
    /// (`raw_retention`, 90 days); the rollups stay. One instance at a time.
    Retention {
        /// Only list what would be dropped.
        #[arg(long)]
        dry_run: bool,
        /// The age instead of `raw_retention` (`120d`).
        #[arg(long, value_parser = parse_age)]
        max_age: Option<std::time::Duration>,
    },
    /// List, replay or drop the log streams' dead letters.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let settings = WorkerSettings::load(cli.config.as_deref(), service_kit::config::process_env())?;
    service_kit::telemetry::init_tracing(&settings.logging);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = std::net::TcpListener::bind((settings.server.bind_host.as_str(), settings.server.port))?;
            llm_log_worker::run(settings, listener, service_kit::telemetry::shutdown_signal()).await
        }
        Command::Migrate => {
            let applied = db::run_migrations(settings.analytics_url().expose(), Database::Analytics).await?;
            tracing::info!(versions = ?applied, "analytics migrations applied");
            Ok(())
        }
        Command::Healthcheck => service_kit::telemetry::healthcheck(settings.server.port).await,
        Command::CheckEnv => service_kit::config::check_env(
            llm_log_worker::settings::DEFAULTS,
            &[llm_log_worker::settings::LOG_THREAD_POOL_SIZE, "LEGACY_DATABASE_URL"],
        ),
        Command::RebuildRollups { from, to } => {
            let to = to.unwrap_or_else(Utc::now);
            anyhow::ensure!(from < to, "--from must be before --to");
            let mut conn = AsyncPgConnection::establish(settings.analytics_url().expose()).await?;
            let started = std::time::Instant::now();
            let rows = llm_log_worker::rollup::rebuild(&mut conn, from, to, |done, total| {
                eprint!("\rrebuilding rollups: day {done}/{total}");
            })
            .await?;
            eprintln!();
            println!("{rows} rollup rows written for {from} .. {to} in {:.1} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Command::Reprice { prices, from, to, model, dry_run } => {
            let to = to.unwrap_or_else(Utc::now);
            anyhow::ensure!(from < to, "--from must be before --to");
            let prices = llm_log_worker::reprice::load_prices(&prices)?;
            let mut conn = AsyncPgConnection::establish(settings.analytics_url().expose()).await?;
            let started = std::time::Instant::now();
            let outcome = llm_log_worker::reprice::reprice(
                &mut conn,
                &prices,
                from,
                to,
                model.as_deref(),
                dry_run,
                |done, total, changed| {
                    eprint!("\rrepricing: day {done}/{total}, {changed} calls changed");
                },
            )
            .await?;
            eprintln!();
            let verb = if dry_run { "would change" } else { "changed" };
            println!(
                "{} calls read over {} days, {} {verb} (price table {}); rollups rebuilt for {} days in {:.1} s",
                outcome.calls,
                outcome.days,
                outcome.changed,
                prices.version,
                outcome.days_rebuilt,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::MoveLegacy { from_database, batch, delete_moved } => {
            anyhow::ensure!(batch >= 1, "--batch must be at least 1");
            let mut main = AsyncPgConnection::establish(&from_database).await?;
            let url = settings.analytics_url();
            let mut analytics = AsyncPgConnection::establish(url.expose()).await?;
            let pool = service_kit::db::build_pool(url.expose(), "llm-log-worker-legacy", 1)?;
            let writer =
                llm_log_worker::writer::AnalyticsWriter::new(pool, settings.lock_timeout, settings.statement_timeout);
            let mut copy =
                llm_log_worker::copy::CopyWriter::new(url.expose(), settings.lock_timeout, settings.statement_timeout);
            let mut folder = llm_log_worker::rollup::Folder::new(url.expose());
            let started = std::time::Instant::now();
            let outcome = llm_log_worker::legacy::move_rows(
                &mut main,
                &mut analytics,
                &writer,
                &mut copy,
                &mut folder,
                batch,
                |o, rate| {
                    let share = if o.total > 0 { 100.0 * o.moved.min(o.total) as f64 / o.total as f64 } else { 100.0 };
                    eprint!("\rmoving legacy LLM rows: {}/{} ({share:.1} %), {rate:.0} rows/s   ", o.moved, o.total);
                },
            )
            .await?;
            eprintln!();
            println!(
                "{} old rows read, {} calls inserted by this run, {} moved in all, last old id {}, in {:.1} s",
                outcome.read,
                outcome.inserted,
                outcome.moved,
                outcome.last_id,
                started.elapsed().as_secs_f64()
            );
            if outcome.deleted == 0 {
                let check = llm_log_worker::legacy::reconcile(&mut main, &mut analytics, outcome.last_id).await?;
                if !check.differing.is_empty() {
                    println!(
                        "reconciliation: {} of {} days differ (day: main | analytics):",
                        check.differing.len(),
                        check.days
                    );
                    for (old, new) in &check.differing {
                        let show = |d: &Option<llm_log_worker::legacy::DayFigures>| match d {
                            Some(d) => {
                                format!(
                                    "{} calls, {} in, {} out, ${}",
                                    d.calls, d.tokens_input, d.tokens_output, d.cost_usd
                                )
                            }
                            None => "nothing".to_owned(),
                        };
                        let day = old.as_ref().or(new.as_ref()).map_or("?", |d| d.day.as_str());
                        println!("  {day}: {} | {}", show(old), show(new));
                    }
                    std::process::exit(1);
                }
                println!("reconciliation: equal on all {} days (calls, tokens in and out, cost)", check.days);
            } else {
                println!(
                    "{} moved rows were deleted from the main database: nothing left to reconcile",
                    outcome.deleted
                );
            }
            if delete_moved {
                let deleted =
                    llm_log_worker::legacy::delete_moved(&mut main, &mut analytics, outcome.last_id, 2_000, |n| {
                        eprint!("\rdeleting moved rows from the main database: {n}");
                    })
                    .await?;
                eprintln!();
                println!("{deleted} moved rows deleted from the main database");
            }
            Ok(())
        }
        Command::LegacyFixture { database, rows, days } => {
            anyhow::ensure!(rows >= 1 && days >= 1, "--rows and --days must be at least 1");
            let mut main = AsyncPgConnection::establish(&database).await?;
            llm_log_worker::legacy::generate_fixture(&mut main, rows, days, Utc::now(), |n| {
                eprint!("\rwriting old-layout rows: {n}/{rows}");
            })
            .await?;
            eprintln!();
            println!("{rows} old LLM rows written to system_logs");
            Ok(())
        }
        Command::Retention { dry_run, max_age } => {
            let max_age = max_age.unwrap_or(settings.raw_retention);
            anyhow::ensure!(!max_age.is_zero(), "retention is off (raw_retention = 0d): nothing to drop");
            let mut conn = AsyncPgConnection::establish(settings.analytics_url().expose()).await?;
            let now = Utc::now();
            let all = llm_log_worker::retention::partitions(&mut conn).await?;
            let expired = llm_log_worker::retention::expired(&all, now, max_age);
            eprintln!("{} raw partitions; {} past {} days:", all.len(), expired.len(), max_age.as_secs() / 86_400);
            for p in &expired {
                let rows =
                    if p.rows_estimate < 0 { "not yet counted".to_owned() } else { format!("~{}", p.rows_estimate) };
                eprintln!("  {} ({} .. {}): rows {rows}, {} KiB", p.name, p.month, p.end(), p.bytes >> 10);
            }
            if dry_run {
                println!("dry run: {} partitions would be dropped", expired.len());
                return Ok(());
            }
            let outcome = llm_log_worker::retention::run(&mut conn, now, max_age, settings.lock_timeout, false).await?;
            anyhow::ensure!(outcome.ran, "another instance is running retention; nothing done");
            println!("{} partitions dropped", outcome.dropped.len());
            Ok(())
        }
        Command::DeadLetters(command) => {
            let keys = Keys::new(settings.redis.key_prefix.clone());
            task_queue::cli::run(command, settings.redis.url.expose(), &keys, &LogEvent::streams()).await
        }
    }
}

/// A UTC time from `YYYY-MM-DD` (midnight) or RFC 3339.
fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    service_kit::config::parse_duration(text)
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(day.and_time(NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is neither YYYY-MM-DD nor an RFC 3339 time ({e})"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
