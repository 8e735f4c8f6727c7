//! The isolation promise: the p99 of a main-DB-backed endpoint (a page of jobs, the API
//! cache bypassed with `Cache-Control: no-cache`) at idle, against the same while the
//! system carries logged LLM calls at `--llm-rate` (gateway → Redis → llm-log-worker →
//! analytics database) and cv-processor works through CVs.
//!
//! Production shape: the services run on nodes of their own, the main and the analytics
//! databases on servers of their own, and Redis is what they share. Here the API replica
//! the reads go to and the reads' load generator have CPU 0; the LLM side (the simulator,
//! the gateway replica the LLM clients call, the log worker, cv-processor, cache-service,
//! the LLM load generator and a PostgreSQL server of the benchmark's own for the analytics
//! database) has the last CPU; the main database's server and Redis use any. A second
//! measurement sends the LLM calls to the same replica as the reads, to show what sharing
//! the replica's CPU costs on top.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cvs::{company, cpu_placement, synthetic_cv, upload};
use crate::gateway::{Load, Measurement, oha_load_on};
use crate::private_pg::PrivatePostgres;
use crate::{Processes, clear_redis, count, create_database, drop_database, redis_url, wait_http};

const API_PORT: u16 = 18280;
const LLM_GATEWAY_PORT: u16 = 18281;
const CACHE_PORT: u16 = 18282;
const SIMULATOR_PORT: u16 = 18290;
const WORKER_PORT: u16 = 19291;
const PROCESSOR_PORT: u16 = 19292;
const ANALYTICS_PG_PORT: u16 = 15499;
const ADMIN_KEY: &str = "bench-admin-key";
/// Reads of the watched endpoint per second.
const READ_RATE: u32 = 100;

/// An LLM load running in the background (oha), read when it ends.
struct LlmLoad(Child);

impl LlmLoad {
    fn start(url: &str, key: &str, rate: u32, seconds: u64, cpus: Option<&str>) -> anyhow::Result<Self> {
        let body = json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Summarise this candidate's Rust experience in one line."}],
            "temperature": 0.7
        });
        let mut cmd = crate::pinned("oha", cpus);
        cmd.args(["--no-tui", "--output-format", "json", "-z", &format!("{seconds}s"), "-q", &rate.to_string()])
            .args(["-c", "64", "-m", "POST", "-H", "content-type: application/json"])
            .args(["-H", &format!("authorization: Bearer {key}"), "-d", &body.to_string(), url]);
        Ok(Self(cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?))
    }

    /// (calls per second achieved, share answered 200).
    fn finish(self) -> anyhow::Result<(f64, f64)> {
        let output = self.0.wait_with_output()?;
        let report: Value = serde_json::from_slice(&output.stdout)?;
        let codes = report["statusCodeDistribution"].as_object().cloned().unwrap_or_default();
        let all: u64 = codes.values().filter_map(Value::as_u64).sum();
        let ok = codes.get("200").and_then(Value::as_u64).unwrap_or(0);
        let rps = report["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0);
        Ok((rps, if all == 0 { 0.0 } else { ok as f64 / all as f64 }))
    }
}

pub async fn run(llm_rate: u32, seconds: u64, cvs: usize, bin_dir: &Path, model_dir: &Path) -> anyhow::Result<()> {
    println!(
        "== isolation: GET /api/v1/jobs (no cache) at {READ_RATE} req/s, idle vs {llm_rate} logged LLM calls/s + {cvs} CVs, {seconds} s each =="
    );
    let placement = cpu_placement();
    match &placement {
        (Some(api), Some(llm)) => println!(
            "(CPU {api}: the API replica and the reads; CPU {llm}: simulator, the LLM replica, log worker, cv-processor, cache-service, the LLM load, the analytics database's server; the main database's server and Redis on any)"
        ),
        _ => println!("(one CPU or no taskset: every process shares every core)"),
    }
    anyhow::ensure!(model_dir.join("model.safetensors").exists(), "no model in {} (make models)", model_dir.display());
    let (main_url, main_name) = create_database("isolation_main").await?;
    // The analytics database on a server of its own where this machine can start one.
    let analytics_server = match &placement {
        (Some(_), Some(llm)) => PrivatePostgres::start(ANALYTICS_PG_PORT, Some(llm)),
        _ => None,
    };
    let (analytics_url, analytics_name) = match &analytics_server {
        Some(server) => (format!("{}/postgres", server.url()), None),
        None => {
            let (url, name) = create_database("isolation_analytics").await?;
            (url, Some(name))
        }
    };
    let prefix = format!("bench:{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let scratch = std::env::temp_dir().join(format!("{main_name}-data"));
    let outcome = async {
        common_models::db::run_migrations(&main_url, common_models::db::Database::Main).await?;
        let text = |p: &Path| p.to_string_lossy().into_owned();
        let cache_url = format!("http://127.0.0.1:{CACHE_PORT}");
        let env: Vec<(&str, String)> = vec![
            ("DATABASE_URL", main_url.clone()),
            ("ANALYTICS_DATABASE_URL", analytics_url.clone()),
            ("REDIS_URL", redis_url()),
            ("REDIS_KEY_PREFIX", prefix.clone()),
            ("ADMIN_API_KEY", ADMIN_KEY.to_owned()),
            ("LLM_BASE_URL", format!("http://127.0.0.1:{SIMULATOR_PORT}/v1")),
            ("LLM_API_KEY", "sk-simulated".to_owned()),
            ("LOG_LEVEL", "warn".to_owned()),
            ("BIND_HOST", "127.0.0.1".to_owned()),
            // Two replicas cannot share a spool directory; memory only here.
            ("PRODUCER__SPOOL__DIR", String::new()),
            ("LIMITS__DEFAULT_PLAN", "unlimited".to_owned()),
            ("INTERNAL_PORT", "0".to_owned()),
            ("CVS__STORAGE_DIR", text(&scratch.join("files"))),
            ("FILES__STORAGE_DIR", text(&scratch.join("files"))),
            ("VECTORS__DIR", text(&scratch.join("vectors"))),
            ("EMBEDDING__MODEL_DIR", text(model_dir)),
            ("EMBEDDING__CACHE_URL", cache_url.clone()),
            ("CACHE_URL", cache_url.clone()),
            ("CACHE_API_KEY", "bench-cache-credential".to_owned()),
            ("CV_PROCESSOR_URL", format!("http://127.0.0.1:{PROCESSOR_PORT}")),
        ];
        let spawn = |name: &str, port: u16, api_side: bool, args: &[&str]| -> anyhow::Result<Child> {
            let cpus = if api_side { &placement.0 } else { &placement.1 };
            let mut cmd = crate::pinned(bin_dir.join(name), cpus.as_deref());
            cmd.args(args).env("PORT", port.to_string()).env("RAYON_NUM_THREADS", "1");
            for (k, v) in &env {
                cmd.env(k, v);
            }
            Ok(cmd.stdout(Stdio::null()).spawn()?)
        };
        let processes = Processes(vec![
            spawn("llm-simulator", 0, false, &["--bind", &format!("127.0.0.1:{SIMULATOR_PORT}")])?,
            spawn("llm-log-worker", WORKER_PORT, false, &[])?,
            spawn("cache-service", CACHE_PORT, false, &[])?,
            spawn("cv-processor", PROCESSOR_PORT, false, &[])?,
            spawn("api-gateway", LLM_GATEWAY_PORT, false, &[])?,
            spawn("api-gateway", API_PORT, true, &[])?,
        ]);
        for port in [SIMULATOR_PORT, WORKER_PORT, CACHE_PORT, PROCESSOR_PORT, LLM_GATEWAY_PORT, API_PORT] {
            wait_http(&format!("http://127.0.0.1:{port}/healthz")).await?;
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
        let api = format!("http://127.0.0.1:{API_PORT}");
        let key = company(&http, &api, "Isolated").await?;
        for i in 0..50 {
            let job = json!({"title": format!("Backend engineer {i}"), "requirements": ["Rust services", "PostgreSQL"]});
            http.post(format!("{api}/api/v1/jobs")).bearer_auth(&key).json(&job).send().await?;
        }
        let jobs_url = format!("{api}/api/v1/jobs?limit=20");
        let reads = Load {
            method: "GET",
            url: &jobs_url,
            headers: vec![format!("authorization: Bearer {key}"), "cache-control: no-cache".to_owned()],
            body: None,
            expect: 200,
            connections: 16,
        };
        let read = |secs: u64| -> anyhow::Result<Measurement> {
            let m = oha_load_on(&reads, READ_RATE, secs, placement.0.as_deref())?;
            anyhow::ensure!(m.success > 0.99, "the watched endpoint failed: {:.1}% ok", m.success * 100.0);
            Ok(m)
        };
        let llm_url = |port: u16| format!("http://127.0.0.1:{port}/v1/chat/completions");

        println!("idle ...");
        read(2)?;
        let idle = read(seconds)?;

        let files: Vec<(String, Vec<u8>)> =
            (0..cvs).map(|i| (format!("cv{i}.txt"), synthetic_cv(i).into_bytes())).collect();
        upload(&http, &api, &key, &files).await?;
        println!("{llm_rate} LLM calls/s to the LLM replica, CVs processing ...");
        let load = LlmLoad::start(&llm_url(LLM_GATEWAY_PORT), &key, llm_rate, seconds + 4, placement.1.as_deref())?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let busy = read(seconds)?;
        let (llm_rps, llm_ok) = load.finish()?;
        let processed = count(&main_url, "SELECT count(*) AS n FROM cvs WHERE status = 'processed'").await?;

        println!("{llm_rate} LLM calls/s to the same replica as the reads ...");
        let load = LlmLoad::start(&llm_url(API_PORT), &key, llm_rate, seconds + 4, placement.1.as_deref())?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let shared = read(seconds)?;
        let (shared_rps, shared_ok) = load.finish()?;

        println!("after the load (CVs still processing, the log worker catching up) ...");
        let after = read(seconds)?;
        let logged = count(&analytics_url, "SELECT count(*) AS n FROM llm_logs").await.unwrap_or(0);
        let main_writes = count(
            &main_url,
            &format!(
                "SELECT (tup_inserted + tup_updated + tup_deleted)::bigint AS n FROM pg_stat_database WHERE datname = '{main_name}'"
            ),
        )
        .await?;

        let base = idle.p99_ms;
        println!();
        println!("idle       p50 {:.2} ms  p99 {:.2} ms (the baseline)", idle.p50_ms, idle.p99_ms);
        println!(
            "isolated   p50 {:.2} ms  p99 {:.2} ms → {:.2}× idle (target ≤ 1.05×) with {llm_rps:.0} LLM calls/s done of {llm_rate} asked ({:.2}% ok) and {processed} of {cvs} CVs processed",
            busy.p50_ms,
            busy.p99_ms,
            busy.p99_ms / base,
            llm_ok * 100.0
        );
        println!(
            "shared     p50 {:.2} ms  p99 {:.2} ms → {:.2}× idle with {shared_rps:.0} LLM calls/s on the reads' own replica ({:.2}% ok)",
            shared.p50_ms,
            shared.p99_ms,
            shared.p99_ms / base,
            shared_ok * 100.0
        );
        println!(
            "after      p50 {:.2} ms  p99 {:.2} ms → {:.2}× idle once the LLM load stopped, CVs still processing",
            after.p50_ms,
            after.p99_ms,
            after.p99_ms / base
        );
        println!(
            "writes     {logged} llm_logs rows in the analytics database; the main database took {main_writes} row writes in the whole run (jobs, CVs, keys)"
        );
        drop(processes);
        anyhow::Ok(())
    }
    .await;
    clear_redis(&prefix).await?;
    drop_database(&main_name).await?;
    if let Some(name) = analytics_name {
        drop_database(&name).await?;
    }
    drop(analytics_server);
    std::fs::remove_dir_all(&scratch).ok();
    outcome
}
