//! The legacy move's speed: old-layout rows moved from a main database into `llm_logs`
//! (`llm_log_worker::legacy::move_rows`, the command's own code: read by id, mapped,
//! written as the worker writes a batch, with rollups, checkpointed), against a raw
//! `COPY` of the same rows, mapped in SQL, from the old table into a second analytics
//! database with the same schema.

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::Utc;
use common_models::db::{Database, run_migrations};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use llm_log_worker::copy::CopyWriter;
use llm_log_worker::writer::AnalyticsWriter;

use crate::{count, create_database, drop_database};

/// The old rows as `llm_logs` columns, for the raw COPY.
const MAPPED: &str = "SELECT gen_random_uuid(), created_at, coalesce(action, 'legacy'), message, user_id, company_id, \
    interview_id, model, tokens_used, tokens_input, tokens_output, tokens_input IS NOT NULL AND tokens_output IS NOT NULL, \
    cost_usd, CASE WHEN cost_usd IS NOT NULL THEN 'legacy' END, latency_ms, coalesce(streaming, false), status_code, \
    error_type, error_message, \
    coalesce(metadata, '{}'::jsonb) || jsonb_build_object('legacy_system_log_id', id, 'legacy_level', level), \
    deployment_version, deployment_environment FROM system_logs WHERE component = 'llm'";
const COLUMNS: &str = "event_id, created_at, action, message, user_id, company_id, interview_id, model, tokens_used, \
    tokens_input, tokens_output, usage_reported, cost_usd, price_table_version, latency_ms, streaming, http_status, \
    error_type, error_message, metadata, deployment_version, deployment_environment";

pub async fn run(rows: i64, batch: i64) -> anyhow::Result<()> {
    println!("== legacy move: {rows} old-layout rows ==");
    let (main_url, main_name) = create_database("legacy_main").await?;
    let (copy_url, copy_name) = create_database("legacy_copy").await?;
    let (move_url, move_name) = create_database("legacy_move").await?;
    let outcome = measure(&main_url, &copy_url, &move_url, rows, batch).await;
    for name in [&main_name, &copy_name, &move_name] {
        drop_database(name).await?;
    }
    outcome
}

async fn measure(main_url: &str, copy_url: &str, move_url: &str, rows: i64, batch: i64) -> anyhow::Result<()> {
    let mut main = AsyncPgConnection::establish(main_url).await?;
    let started = Instant::now();
    llm_log_worker::legacy::generate_fixture(&mut main, rows, 30, Utc::now(), |n| {
        eprint!("\rold-layout rows: {n}/{rows}");
    })
    .await?;
    eprintln!();
    println!("fixture: {rows} rows in {:.1} s", started.elapsed().as_secs_f64());
    for url in [copy_url, move_url] {
        run_migrations(url, Database::Analytics).await?;
        let mut conn = AsyncPgConnection::establish(url).await?;
        for month in 0..3 {
            conn.batch_execute(&format!(
                "SELECT ensure_monthly_partition('llm_logs', (now() - interval '{month} months')::date)"
            ))
            .await?;
        }
    }

    print!("raw COPY (mapped in SQL, psql to psql) ... ");
    std::io::stdout().flush()?;
    let started = Instant::now();
    let export = std::process::Command::new("psql")
        .arg(main_url)
        .arg("-qc")
        .arg(format!("\\copy ({MAPPED}) TO STDOUT"))
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let import = std::process::Command::new("psql")
        .arg(copy_url)
        .arg("-qc")
        .arg(format!("\\copy llm_logs ({COLUMNS}) FROM STDIN"))
        .stdin(export.stdout.ok_or_else(|| anyhow::anyhow!("no pipe from psql"))?)
        .status()?;
    let copy_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(import.success(), "the raw COPY failed");
    let copied = count(copy_url, "SELECT count(*) AS n FROM llm_logs").await?;
    anyhow::ensure!(copied == rows, "COPY wrote {copied} rows, expected {rows}");
    let copy_rate = rows as f64 / copy_secs;
    println!("{copy_secs:.2} s, {copy_rate:.0} rows/s");

    print!("move-legacy (batches of {batch}, checkpointed, rollups kept) ... ");
    std::io::stdout().flush()?;
    let mut analytics = AsyncPgConnection::establish(move_url).await?;
    let pool = service_kit::db::build_pool(move_url, "bench-legacy", 1)?;
    let writer = AnalyticsWriter::new(pool, Duration::from_secs(5), Duration::from_secs(300));
    let mut copy = CopyWriter::new(move_url, Duration::from_secs(5), Duration::from_secs(300));
    let mut folder = llm_log_worker::rollup::Folder::new(move_url);
    let started = Instant::now();
    let outcome =
        llm_log_worker::legacy::move_rows(&mut main, &mut analytics, &writer, &mut copy, &mut folder, batch, |_, _| {})
            .await?;
    let move_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(outcome.inserted == rows, "moved {} rows, expected {rows}", outcome.inserted);
    let move_rate = rows as f64 / move_secs;
    println!(
        "{move_secs:.2} s, {move_rate:.0} rows/s (reading {:.1} s, writing {:.1} s, folding the rollups {:.1} s)",
        outcome.read_time.as_secs_f64(),
        outcome.write_time.as_secs_f64(),
        outcome.compact_time.as_secs_f64()
    );
    let started = Instant::now();
    let check = llm_log_worker::legacy::reconcile(&mut main, &mut analytics, outcome.last_id).await?;
    anyhow::ensure!(check.differing.is_empty(), "the reconciliation found {} differing days", check.differing.len());
    println!("reconciliation: equal on {} days, in {:.1} s", check.days, started.elapsed().as_secs_f64());
    println!("move / raw COPY: {:.2}", move_rate / copy_rate);
    Ok(())
}
