//! Gateway overhead: the same chat completion at the same fixed rate, straight to the
//! upstream simulator and through api-gateway (auth, validation, logging on, the log
//! worker writing), measured by oha in one run; then rising rates through the gateway
//! until its p99 doubles.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Processes, clear_redis, count, create_database, drop_database, redis_url, wait_http};

const SIMULATOR_PORT: u16 = 18090;
const GATEWAY_PORT: u16 = 18080;
const WORKER_PORT: u16 = 19091;
const ADMIN_KEY: &str = "bench-admin-key";

pub struct Measurement {
    pub rate: u32,
    pub achieved_rps: f64,
    pub success: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Answers with the expected status.
    pub requests: u64,
}

/// A request for oha: method, headers, body, and the status that counts as success.
pub struct Load<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: Vec<String>,
    pub body: Option<String>,
    pub expect: u16,
    pub connections: u32,
}

/// Runs oha at `rate` requests a second for `seconds` (latency-corrected).
pub fn oha_load(load: &Load<'_>, rate: u32, seconds: u64) -> anyhow::Result<Measurement> {
    oha_load_on(load, rate, seconds, None)
}

/// [`oha_load`] with oha itself kept to `cpus` (`taskset -c`) when given.
pub fn oha_load_on(load: &Load<'_>, rate: u32, seconds: u64, cpus: Option<&str>) -> anyhow::Result<Measurement> {
    let mut cmd = crate::pinned("oha", cpus);
    cmd.args(["--no-tui", "--latency-correction", "--output-format", "json", "-z", &format!("{seconds}s")]).args([
        "-q",
        &rate.to_string(),
        "-c",
        &load.connections.to_string(),
        "-m",
        load.method,
    ]);
    for header in &load.headers {
        cmd.args(["-H", header]);
    }
    if let Some(body) = &load.body {
        cmd.args(["-d", body]);
    }
    let output = cmd.arg(load.url).stderr(Stdio::inherit()).output()?;
    anyhow::ensure!(output.status.success(), "oha failed");
    let report: Value = serde_json::from_slice(&output.stdout)?;
    let secs = |v: &Value| v.as_f64().unwrap_or(f64::NAN) * 1000.0;
    let requests: u64 =
        report["statusCodeDistribution"].as_object().map(|m| m.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
    let ok: u64 = report["statusCodeDistribution"][load.expect.to_string()].as_u64().unwrap_or(0);
    Ok(Measurement {
        rate,
        achieved_rps: report["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        success: if requests == 0 { 0.0 } else { ok as f64 / requests as f64 },
        p50_ms: secs(&report["latencyPercentiles"]["p50"]),
        p99_ms: secs(&report["latencyPercentiles"]["p99"]),
        requests: ok,
    })
}

fn oha(url: &str, key: &str, rate: u32, seconds: u64) -> anyhow::Result<Measurement> {
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Rate this candidate's Rust experience from 1 to 5."}],
        "temperature": 0
    });
    let load = Load {
        method: "POST",
        url,
        headers: vec!["content-type: application/json".into(), format!("authorization: Bearer {key}")],
        body: Some(body.to_string()),
        expect: 200,
        connections: 64,
    };
    oha_load(&load, rate, seconds)
}

pub fn print(label: &str, m: &Measurement) {
    println!(
        "  {label:<28} {:>6} req/s asked {:>8.0} done  ok {:>6.2}%  p50 {:>7.3} ms  p99 {:>7.3} ms",
        m.rate,
        m.achieved_rps,
        m.success * 100.0,
        m.p50_ms,
        m.p99_ms
    );
}

pub async fn run(rate: u32, seconds: u64, bin_dir: &Path, find_max: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        Command::new("oha").arg("--version").output().is_ok(),
        "oha is not installed (cargo install oha --locked)"
    );
    println!("== gateway overhead: {rate} req/s for {seconds} s each, oha with 64 connections ==");
    let (main_url, main_name) = create_database("main").await?;
    let (analytics_url, analytics_name) = create_database("analytics").await?;
    let prefix = format!("bench:{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let spool_dir = std::env::temp_dir().join(format!("{analytics_name}-spool"));
    // Whatever happens in the run, its databases, keys and spool go afterwards.
    let outcome = async {
        common_models::db::run_migrations(&main_url, common_models::db::Database::Main).await?;

        let spool_dir_text = spool_dir.to_string_lossy().into_owned();
        let env = [
            ("PRODUCER__SPOOL__DIR", spool_dir_text.as_str()),
            ("DATABASE_URL", main_url.as_str()),
            ("ANALYTICS_DATABASE_URL", analytics_url.as_str()),
            ("REDIS_KEY_PREFIX", prefix.as_str()),
            ("ADMIN_API_KEY", ADMIN_KEY),
            ("LLM_API_KEY", "sk-simulated"),
            ("LOG_LEVEL", "warn"),
            ("BIND_HOST", "127.0.0.1"),
            // The proxy's own overhead: no LLM results cache answering in its place.
            ("CACHE_URL", ""),
            // The rate limiter runs (its cost is part of the overhead) with room to spare.
            ("LIMITS__DEFAULT_PLAN", "enterprise"),
            // The admin route the bench creates its company with, on the same port.
            ("INTERNAL_PORT", "0"),
        ];
        let redis = redis_url();
        let spawn = |name: &str, port: u16, args: &[&str]| -> anyhow::Result<Child> {
            let mut cmd = Command::new(bin_dir.join(name));
            cmd.args(args).env("PORT", port.to_string()).env("REDIS_URL", &redis);
            cmd.env("LLM_BASE_URL", format!("http://127.0.0.1:{SIMULATOR_PORT}/v1"));
            for (k, v) in env {
                cmd.env(k, v);
            }
            Ok(cmd.stdout(Stdio::null()).spawn()?)
        };
        let processes = Processes(vec![
            spawn("llm-simulator", 0, &["--bind", &format!("127.0.0.1:{SIMULATOR_PORT}")])?,
            spawn("llm-log-worker", WORKER_PORT, &[])?,
            spawn("api-gateway", GATEWAY_PORT, &[])?,
        ]);
        wait_http(&format!("http://127.0.0.1:{SIMULATOR_PORT}/healthz")).await?;
        wait_http(&format!("http://127.0.0.1:{WORKER_PORT}/healthz")).await?;
        wait_http(&format!("http://127.0.0.1:{GATEWAY_PORT}/healthz")).await?;

        let created: Value = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{GATEWAY_PORT}/api/v1/admin/companies"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"name": "Bench Co"}))
            .send()
            .await?
            .json()
            .await?;
        let key = created["api_key"]["key"].as_str().ok_or_else(|| anyhow::anyhow!("no key: {created}"))?.to_owned();

        let direct_url = format!("http://127.0.0.1:{SIMULATOR_PORT}/v1/chat/completions");
        let gateway_url = format!("http://127.0.0.1:{GATEWAY_PORT}/v1/chat/completions");
        println!("warming up ...");
        oha(&gateway_url, &key, rate, 3)?;
        oha(&direct_url, &key, rate, 2)?;

        let direct = oha(&direct_url, &key, rate, seconds)?;
        print("simulator alone", &direct);
        let via = oha(&gateway_url, &key, rate, seconds)?;
        print("through api-gateway", &via);
        let direct_again = oha(&direct_url, &key, rate, seconds)?;
        print("simulator alone (again)", &direct_again);
        let base_p50 = (direct.p50_ms + direct_again.p50_ms) / 2.0;
        let base_p99 = (direct.p99_ms + direct_again.p99_ms) / 2.0;
        println!();
        println!(
            "gateway  added p50 {:.3} ms   added p99 {:.3} ms   (target: added p99 ≤ 1 ms) at {rate} req/s",
            via.p50_ms - base_p50,
            via.p99_ms - base_p99
        );

        let mut gateway_ok: u64 = via.requests;
        if find_max {
            println!();
            println!("highest rate through the gateway before its p99 doubles (from {:.3} ms):", via.p99_ms);
            let mut best = rate;
            for step in [2, 3, 4, 6, 8, 10, 12, 16] {
                let r = rate * step;
                let m = oha(&gateway_url, &key, r, seconds.min(10))?;
                print(&format!("through api-gateway ×{step}"), &m);
                gateway_ok += m.requests;
                let sustained = m.success >= 0.999 && m.achieved_rps >= f64::from(r) * 0.97 && m.p99_ms <= via.p99_ms * 2.0;
                if !sustained {
                    break;
                }
                best = r;
            }
            println!("gateway  sustains {best} req/s on this machine with p99 within 2× of its {rate} req/s p99");
        }

        // Every answered call must become a row.
        let warmup_calls =
            u64::try_from(count(&analytics_url, "SELECT count(*) AS n FROM llm_logs").await.unwrap_or(0)).unwrap_or(0);
        let started = Instant::now();
        let mut rows = 0;
        while started.elapsed() < Duration::from_secs(120) {
            rows = count(&analytics_url, "SELECT count(*) AS n FROM llm_logs WHERE http_status = 200").await.unwrap_or(0);
            if u64::try_from(rows).unwrap_or(0) >= gateway_ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!(
            "logging  {rows} llm_logs rows for ≥ {gateway_ok} measured successful calls through the gateway (warm-up included: {warmup_calls} seen mid-way)"
        );
        drop(processes);
        anyhow::Ok(())
    }
    .await;
    std::fs::remove_dir_all(&spool_dir).ok();
    clear_redis(&prefix).await?;
    drop_database(&main_name).await?;
    drop_database(&analytics_name).await?;
    outcome
}
