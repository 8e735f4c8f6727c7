//! Ingest throughput: the real publisher, Redis, and the real worker, against a raw
//! `COPY` (psql, CSV) of the same rows into a second database with the same schema.

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::Utc;
use common_models::db::{Database, run_migrations};
use common_models::events::{LlmCallEvent, new_event_id};
use common_models::ids::{CompanyId, InterviewId, UserId};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use service_kit::config::{ConnectionUrl, LogFormat};
use service_kit::redis::{ReplyTimeout, build_pool};
use task_queue::{Keys, Producer, ProducerConfig, ProducerMetrics};

use crate::{clear_redis, count, create_database, drop_database, redis_url};

const COLUMNS: &str = "event_id, created_at, action, message, user_id, company_id, interview_id, request_id, \
    model, tokens_used, tokens_input, tokens_output, usage_reported, cost_usd, price_table_version, latency_ms, \
    time_to_first_token_ms, streaming, http_status, error_type, error_message, metadata, deployment_version, \
    deployment_environment, cache_hit, cost_saved_usd, tokens_cached_input, tokens_reasoning";

/// The `i`-th call: 200 companies, 5,000 users (user `u` of company `(u - 1) % 200 + 1`),
/// every fourth call in an interview, `per_interview` calls to an interview (each made
/// by one user).
pub fn event(i: usize, per_interview: usize) -> LlmCallEvent {
    let models = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"];
    let failed = i.is_multiple_of(50);
    let interview = i.is_multiple_of(4).then(|| i / 4 / per_interview.max(1));
    let user = interview.map_or(i, |k| k * 4) % 5000;
    LlmCallEvent {
        event_id: new_event_id(),
        created_at: Utc::now(),
        action: ["chat_completion", "cv_summary", "match_explain"][i % 3].to_owned(),
        message: None,
        company_id: Some(CompanyId((user % 200) as i64 + 1)),
        user_id: Some(UserId(user as i64 + 1)),
        interview_id: interview.map(|k| InterviewId(k as i64 + 1)),
        request_id: Some(format!("req-{i:08}")),
        model: Some(models[i % models.len()].to_owned()),
        tokens_input: Some(400 + (i % 700) as i32),
        tokens_output: Some(50 + (i % 300) as i32),
        tokens_total: Some(450 + (i % 700) as i32 + (i % 300) as i32),
        usage_reported: true,
        cost_usd: Some(0.000_123 + (i % 97) as f64 * 1e-6),
        price_table_version: Some("2026-11-01".to_owned()),
        latency_ms: Some(200 + (i % 1500) as i32),
        time_to_first_token_ms: i.is_multiple_of(2).then_some(80 + (i % 300) as i32),
        streaming: i.is_multiple_of(2),
        http_status: Some(if failed { 500 } else { 200 }),
        error_type: failed.then(|| "upstream_server_error".to_owned()),
        error_message: failed.then(|| "upstream answered HTTP 500".to_owned()),
        metadata: Some(
            serde_json::json!({"upstream_id": format!("chatcmpl-{i}"), "finish_reason": "stop", "api_key_id": i % 300}),
        ),
        deployment_version: Some("bench".to_owned()),
        deployment_environment: Some("bench".to_owned()),
        cache_hit: false,
        cost_saved_usd: None,
        tokens_cached_input: i.is_multiple_of(3).then_some(200),
        tokens_reasoning: i.is_multiple_of(5).then_some(20),
    }
}

fn csv_text(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn csv_opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn csv_row(e: &LlmCallEvent) -> String {
    let text = |v: &Option<String>| v.as_deref().map(csv_text).unwrap_or_default();
    [
        e.event_id.to_string(),
        e.created_at.to_rfc3339(),
        csv_text(&e.action),
        text(&e.message),
        csv_opt(e.user_id.map(|v| v.0)),
        csv_opt(e.company_id.map(|v| v.0)),
        csv_opt(e.interview_id.map(|v| v.0)),
        text(&e.request_id),
        text(&e.model),
        csv_opt(e.tokens_total),
        csv_opt(e.tokens_input),
        csv_opt(e.tokens_output),
        e.usage_reported.to_string(),
        csv_opt(e.cost_usd),
        text(&e.price_table_version),
        csv_opt(e.latency_ms),
        csv_opt(e.time_to_first_token_ms),
        e.streaming.to_string(),
        csv_opt(e.http_status),
        text(&e.error_type),
        text(&e.error_message),
        e.metadata.as_ref().map(|m| csv_text(&m.to_string())).unwrap_or_default(),
        text(&e.deployment_version),
        text(&e.deployment_environment),
        e.cache_hit.to_string(),
        csv_opt(e.cost_saved_usd),
        csv_opt(e.tokens_cached_input),
        csv_opt(e.tokens_reasoning),
    ]
    .join(",")
}

/// The gateway's producer settings, with a spool in `dir` and a buffer that holds `n`
/// events published at once (the gateway's 64 MiB is meant for a steady flow).
pub fn gateway_producer(dir: &std::path::Path, n: usize) -> anyhow::Result<ProducerConfig> {
    let mut config = api_gateway::GatewaySettings::defaults()?.producer;
    config.buffer_max_bytes = config.buffer_max_bytes.max(n * 1024);
    if let Some(spool) = config.spool.as_mut() {
        spool.dir = dir.to_owned();
        spool.max_bytes = spool.max_bytes.max(n as u64 * 1024);
    }
    Ok(config)
}

async fn prepare(url: &str) -> anyhow::Result<()> {
    run_migrations(url, Database::Analytics).await?;
    let mut conn = AsyncPgConnection::establish(url).await?;
    conn.batch_execute("SELECT ensure_monthly_partition('llm_logs', now()::date)").await?;
    Ok(())
}

/// What one round measured, as fractions of the raw COPY's rate.
struct Round {
    ratio: f64,
    rows_alone: f64,
}

/// `rounds` rounds of the pipeline, each between two raw COPYs of the same number of
/// rows (a round's COPY after is the next round's before), each compared with the mean
/// of the two: on this shared machine the COPY alone moves by a third between minutes,
/// and a drift during a round weighs on both sides alike. Then the medians.
pub async fn run_rounds(n: usize, per_interview: usize, rounds: usize) -> anyhow::Result<()> {
    let rounds = rounds.max(1);
    let mut measured = Vec::new();
    // One set of events for every COPY and pipeline: each goes into a new database.
    let events: Vec<LlmCallEvent> = (0..n).map(|i| event(i, per_interview)).collect();
    println!("== ingest: {n} llm_logs events, {per_interview} per interview, {rounds} rounds ==");
    let mut copy_before = raw_copy(&events).await?;
    for round in 1..=rounds {
        if rounds > 1 {
            println!("-- round {round} of {rounds}");
        }
        let pipe = pipeline(&events).await?;
        let copy_after = raw_copy(&events).await?;
        let copy_secs = (copy_before + copy_after) / 2.0;
        let (copy_rate, pipe_rate) = (n as f64 / copy_secs, n as f64 / pipe.secs);
        let round = Round { ratio: pipe_rate / copy_rate, rows_alone: copy_secs / pipe.committed_secs };
        println!(
            "ingest   raw COPY {copy_rate:>8.0} rows/s (mean of {copy_before:.2} s before and {copy_after:.2} s after)   \
             pipeline {pipe_rate:>8.0} rows/s   ratio {:.2} (target ≥ 0.60; rows alone, before their fold: {:.2})",
            round.ratio, round.rows_alone
        );
        measured.push(round);
        copy_before = copy_after;
    }
    if measured.len() > 1 {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let list = |v: &[f64]| v.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ");
        let ratios: Vec<f64> = measured.iter().map(|r| r.ratio).collect();
        let rows: Vec<f64> = measured.iter().map(|r| r.rows_alone).collect();
        println!(
            "ingest over {} rounds, {per_interview} per interview: ratio median {:.2} ({}; target ≥ 0.60), \
             rows alone median {:.2} ({})",
            measured.len(),
            median(ratios.clone()),
            list(&ratios),
            median(rows.clone()),
            list(&rows)
        );
    }
    Ok(())
}

/// A raw COPY (psql, CSV) of `events` into a new database with the schema; its seconds.
async fn raw_copy(events: &[LlmCallEvent]) -> anyhow::Result<f64> {
    let n = events.len();
    let (copy_url, copy_name) = create_database("copy").await?;
    prepare(&copy_url).await?;
    let csv_path = std::env::temp_dir().join(format!("{copy_name}.csv"));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv_path)?);
        for e in events {
            writeln!(f, "{}", csv_row(e))?;
        }
    }
    print!("raw COPY (psql \\copy, CSV) ... ");
    std::io::stdout().flush()?;
    let started = Instant::now();
    let status = std::process::Command::new("psql")
        .arg(&copy_url)
        .arg("-qc")
        .arg(format!("\\copy llm_logs ({COLUMNS}) FROM '{}' WITH (FORMAT csv)", csv_path.display()))
        .status()?;
    let copy_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "psql \\copy failed");
    std::fs::remove_file(&csv_path).ok();
    let copied = count(&copy_url, "SELECT count(*) AS n FROM llm_logs").await?;
    anyhow::ensure!(copied == n as i64, "COPY wrote {copied} rows, expected {n}");
    println!("{copy_secs:.2} s, {:.0} rows/s", n as f64 / copy_secs);
    drop_database(&copy_name).await?;
    Ok(copy_secs)
}

/// One run of the pipeline: seconds until every call is in the rollups, and until
/// every row was committed.
struct Pipeline {
    secs: f64,
    committed_secs: f64,
}

/// `events` through the gateway's producer, Redis and the worker into a new database,
/// until the rollups hold them all.
async fn pipeline(events: &[LlmCallEvent]) -> anyhow::Result<Pipeline> {
    let n = events.len();
    let (pipe_url, pipe_name) = create_database("pipeline").await?;
    let prefix = format!("bench:{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // Worker tuning (WRITE_LOOPS, BATCH_SIZE, …) can be varied from the environment.
    let mut settings = llm_log_worker::WorkerSettings::load(None, service_kit::config::process_env())?;
    settings.analytics_database.url = ConnectionUrl::new(&pipe_url);
    settings.redis.url = ConnectionUrl::new(redis_url());
    settings.redis.key_prefix = prefix.clone();
    settings.consumer.consumer = format!("{prefix}worker");
    settings.logging.format = LogFormat::Text;
    settings.logging.level = "warn".into();
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let worker_addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(llm_log_worker::run(settings.clone(), listener, stop_rx));
    let http = reqwest::Client::new();
    let ready = Instant::now();
    while http.get(format!("http://{worker_addr}/healthz")).send().await.is_err() {
        anyhow::ensure!(ready.elapsed() < Duration::from_secs(30), "the worker did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let metrics = ProducerMetrics::register(&prometheus::Registry::new())?;
    let redis = build_pool(&redis_url(), 4, ReplyTimeout::After(Duration::from_secs(2)))?;
    let spool_dir = std::env::temp_dir().join(format!("{pipe_name}-spool"));
    let (producer, producer_task) =
        Producer::start(redis, Keys::new(prefix.clone()), gateway_producer(&spool_dir, n)?, metrics.clone()).await?;
    println!(
        "pipeline (the gateway's producer → Redis → llm-log-worker, {} loops, batches of {}) ...",
        settings.consumer.concurrency, settings.consumer.batch_size
    );
    let started = Instant::now();
    for e in events {
        producer.publish(e);
    }
    let publish_secs = started.elapsed().as_secs_f64();
    // Progress is read from the worker's metrics (rows counted after their commit,
    // calls after their fold), which costs the database nothing; the tables are checked
    // at the end.
    let scrape = async || match http.get(format!("http://{worker_addr}/metrics")).send().await {
        Ok(reply) => reply.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let metric = |text: &str, name: &str| -> f64 {
        text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    let mut last_report = Instant::now();
    let mut committed_secs = None;
    loop {
        let text = scrape().await;
        let rows = metric(&text, "headhunter_log_worker_rows_written_total{table=\"llm_logs\"}") as i64;
        let rolled = metric(&text, "headhunter_log_worker_rollup_calls_total") as i64;
        if rows >= n as i64 && committed_secs.is_none() {
            committed_secs = Some(started.elapsed().as_secs_f64());
        }
        if rolled >= n as i64 {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            println!(
                "  {rows}/{n} rows committed, {rolled} in the rollups after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the pipeline stalled at {rows} rows, {rolled} rolled up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pipe_secs = started.elapsed().as_secs_f64();
    let committed_secs = committed_secs.unwrap_or(pipe_secs);
    let pipe_rate = n as f64 / pipe_secs;
    let distinct = count(&pipe_url, "SELECT count(DISTINCT event_id) AS n FROM llm_logs").await?;
    let dropped: u64 = ["buffer_full", "spool_full", "spool_error", "rejected", "encode", "shutdown"]
        .iter()
        .map(|r| metrics.dropped.with_label_values(&["llm_logs", r]).get())
        .sum();
    println!(
        "  all {n} rows committed after {committed_secs:.2} s ({distinct} distinct, {dropped} dropped); \
         publishing itself took {publish_secs:.2} s"
    );
    println!("pipeline, rollups current: {pipe_secs:.2} s, {pipe_rate:.0} rows/s");
    let rolled = count(&pipe_url, "SELECT coalesce(sum(calls), 0)::bigint AS n FROM llm_usage_hourly").await?;
    let groups = count(&pipe_url, "SELECT count(*) AS n FROM llm_usage_hourly").await?;
    let text = scrape().await;
    let (fold_secs, write_secs) = (
        metric(&text, "headhunter_log_worker_rollup_step_seconds_sum"),
        metric(&text, "headhunter_log_worker_write_seconds_sum"),
    );
    let steps = metric(&text, "headhunter_log_worker_rollup_step_seconds_count");
    let handed = metric(&text, "headhunter_log_worker_rollup_calls_handed_total");
    println!(
        "rollups: {rolled} calls in {groups} hourly rows ({handed:.0} folded from the batches handed over), \
         folded in {steps:.0} steps taking {fold_secs:.2} s (the batch writes took {write_secs:.2} s)"
    );
    anyhow::ensure!(rolled == n as i64, "the rollups hold {rolled} calls, expected {n}");
    println!();
    producer_task.shutdown().await;
    std::fs::remove_dir_all(&spool_dir).ok();
    stop_tx.send_replace(true);
    worker.await??;
    clear_redis(&prefix).await?;
    drop_database(&pipe_name).await?;
    Ok(Pipeline { secs: pipe_secs, committed_secs })
}
