//! cache-service GET against `redis-benchmark` GET on the same Redis, at the same
//! concurrency, in one run: a hot key (served by L1) and a cold path (L1 off, every
//! GET goes to Redis).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{clear_redis, redis_url};

const HOT_PORT: u16 = 18081;
const COLD_PORT: u16 = 18082;
const VALUE_BYTES: usize = 1536; // a 384-d f32 embedding

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            drop(Command::new("kill").arg("-TERM").arg(child.id().to_string()).status());
            drop(child.wait());
        }
    }
}

async fn wait_http(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    while !client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// (requests/s, p99 ms) of `redis-benchmark` GET.
fn redis_benchmark(connections: u32, requests: u32) -> anyhow::Result<(f64, f64)> {
    let url = redis_url();
    let host_port = url.trim_start_matches("redis://").split('/').next().unwrap_or("127.0.0.1:6379").to_owned();
    let (host, port) = host_port.split_once(':').unwrap_or(("127.0.0.1", "6379"));
    let out = Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-c", &connections.to_string(), "-n", &requests.to_string()])
        .args(["-t", "set,get", "-d", &VALUE_BYTES.to_string(), "--csv", "-q"])
        .output()?;
    anyhow::ensure!(out.status.success(), "redis-benchmark failed");
    parse_redis_benchmark(&String::from_utf8_lossy(&out.stdout))
}

/// (requests/s, p99 ms) from redis-benchmark's CSV GET line.
fn parse_redis_benchmark(text: &str) -> anyhow::Result<(f64, f64)> {
    let line = text.lines().find(|l| l.starts_with("\"GET\"")).ok_or_else(|| anyhow::anyhow!("no GET line: {text}"))?;
    let fields: Vec<f64> = line.split(',').skip(1).filter_map(|f| f.trim_matches('"').parse().ok()).collect();
    // rps, avg, min, p50, p95, p99, max
    Ok((fields.first().copied().unwrap_or(0.0), fields.get(5).copied().unwrap_or(f64::NAN)))
}

/// (requests/s, p99 ms) of `wrk -t1`: one load-generating thread, as redis-benchmark
/// uses, so neither side of the comparison pays for a multi-threaded client.
fn wrk_get(url: &str, connections: u32, seconds: u64) -> anyhow::Result<(f64, f64)> {
    wrk_get_on(url, connections, seconds, None)
}

/// [`wrk_get`], pinned to `core` when given.
fn wrk_get_on(url: &str, connections: u32, seconds: u64, core: Option<&str>) -> anyhow::Result<(f64, f64)> {
    let mut cmd = match core {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.args(["-c", core, "wrk"]);
            c
        }
        None => Command::new("wrk"),
    };
    let out =
        cmd.args(["-t1", "-c", &connections.to_string(), "-d", &format!("{seconds}s"), "--latency", url]).output()?;
    anyhow::ensure!(out.status.success(), "wrk failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let p99 = text.lines().find_map(|l| l.trim().strip_prefix("99%")).map_or(f64::NAN, |v| millis(v.trim()));
    Ok((rps, p99))
}

/// wrk's durations ("781.00us", "1.20ms", "2.01s") in milliseconds.
fn millis(v: &str) -> f64 {
    let (number, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * scale)
}

/// (requests/s, p99 ms, success ratio) of oha GETs: at full speed, or at `rate`.
fn oha_get(url: &str, connections: u32, seconds: u64) -> anyhow::Result<(f64, f64, f64)> {
    oha_get_at(url, connections, seconds, None)
}

fn oha_get_at(url: &str, connections: u32, seconds: u64, rate: Option<u32>) -> anyhow::Result<(f64, f64, f64)> {
    let mut cmd = Command::new("oha");
    cmd.args(["--no-tui", "--output-format", "json", "-z", &format!("{seconds}s"), "-c", &connections.to_string()]);
    if let Some(rate) = rate {
        cmd.args(["-q", &rate.to_string(), "--latency-correction"]);
    }
    let out = cmd.arg(url).stderr(Stdio::inherit()).output()?;
    anyhow::ensure!(out.status.success(), "oha failed");
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let rps = report["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0);
    let p99 = report["latencyPercentiles"]["p99"].as_f64().unwrap_or(f64::NAN) * 1000.0;
    let ok = report["summary"]["successRate"].as_f64().unwrap_or(0.0);
    Ok((rps, p99, ok))
}

/// Like for like: the server on core 0 and a single-threaded client on core 1, for
/// Redis (own `redis-server`, `redis-benchmark`) and for cache-service (one worker,
/// `wrk -t1`). Both servers then have one core and both clients one core.
async fn pinned_comparison(connections: u32, seconds: u64, bin_dir: &Path) -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let redis = Command::new("taskset")
        .args(["-c", "0", "redis-server", "--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()?;
    let _redis = Processes(vec![redis]);
    let redis_url = format!("redis://127.0.0.1:{port}/0");
    let started = Instant::now();
    while redis::Client::open(redis_url.as_str())?.get_multiplexed_async_connection().await.is_err() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = Command::new("taskset")
        .args(["-c", "1", "redis-benchmark", "-p", &port.to_string(), "-c", &connections.to_string()])
        .args(["-n", "600000", "-t", "set,get", "-d", &VALUE_BYTES.to_string(), "--csv", "-q"])
        .output()?;
    let (redis_rps, redis_p99) = parse_redis_benchmark(&String::from_utf8_lossy(&out.stdout))?;
    println!("  pinned: redis-server core 0, redis-benchmark core 1");
    println!("    Redis GET                    {redis_rps:>9.0} req/s   p99 {redis_p99:>6.3} ms");

    let spawn = |port: u16, l1_bytes: &str| -> anyhow::Result<Child> {
        Ok(Command::new("taskset")
            .args(["-c", "0"])
            .arg(bin_dir.join("cache-service"))
            .env("PORT", port.to_string())
            .env("BIND_HOST", "127.0.0.1")
            .env("WORKERS", "1")
            .env("REDIS_URL", &redis_url)
            .env("L1_MAX_BYTES", l1_bytes)
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .spawn()?)
    };
    let _services = Processes(vec![spawn(HOT_PORT + 10, "67108864")?, spawn(COLD_PORT + 10, "0")?]);
    wait_http(&format!("http://127.0.0.1:{}/healthz", HOT_PORT + 10)).await?;
    wait_http(&format!("http://127.0.0.1:{}/healthz", COLD_PORT + 10)).await?;
    let url = |p: u16| format!("http://127.0.0.1:{p}/v1/cache/embedding/hot");
    let put = reqwest::Client::new().put(url(HOT_PORT + 10)).body(vec![7u8; VALUE_BYTES]).send().await?;
    anyhow::ensure!(put.status().is_success(), "PUT failed: {}", put.status());
    let (hot_rps, hot_p99) = wrk_get_on(&url(HOT_PORT + 10), connections, seconds, Some("1"))?;
    println!("  pinned: cache-service (1 worker) core 0, wrk -t1 core 1");
    println!("    hot key (L1)                 {hot_rps:>9.0} req/s   p99 {hot_p99:>6.3} ms");
    let (cold_rps, cold_p99) = wrk_get_on(&url(COLD_PORT + 10), connections, seconds, Some("1"))?;
    println!("    cold (L1 off; Redis on core 0 too) {cold_rps:>9.0} req/s   p99 {cold_p99:>6.3} ms");
    println!();
    println!(
        "cache    like for like (one server core, one client core): hot {:.2}× Redis GET, p99 {hot_p99:.3} ms vs \
         {redis_p99:.3} ms (targets ≥ 1.0×, ≤ 1 ms); cold {:.2}×, p99 {cold_p99:.3} ms",
        hot_rps / redis_rps,
        cold_rps / redis_rps
    );
    println!();
    Ok(())
}

pub async fn run(connections: u32, seconds: u64, bin_dir: &Path) -> anyhow::Result<()> {
    if Command::new("taskset").arg("-V").output().is_ok()
        && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
    {
        println!("== cache GET, pinned: {VALUE_BYTES}-byte values, {connections} connections ==");
        pinned_comparison(connections, seconds, bin_dir).await?;
    }
    println!("== cache GET, unpinned (shared Redis, clients and servers on any core) ==");
    let prefix = format!("bench:{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let spawn = |port: u16, l1_bytes: &str| -> anyhow::Result<Child> {
        Ok(Command::new(bin_dir.join("cache-service"))
            .env("PORT", port.to_string())
            .env("BIND_HOST", "127.0.0.1")
            .env("REDIS_URL", redis_url())
            .env("REDIS_KEY_PREFIX", &prefix)
            .env("L1_MAX_BYTES", l1_bytes)
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .spawn()?)
    };
    let processes = Processes(vec![spawn(HOT_PORT, "67108864")?, spawn(COLD_PORT, "0")?]);
    wait_http(&format!("http://127.0.0.1:{HOT_PORT}/healthz")).await?;
    wait_http(&format!("http://127.0.0.1:{COLD_PORT}/healthz")).await?;
    let value = vec![7u8; VALUE_BYTES];
    let client = reqwest::Client::new();
    let put = client.put(format!("http://127.0.0.1:{HOT_PORT}/v1/cache/embedding/hot")).body(value).send().await?;
    anyhow::ensure!(put.status().is_success(), "PUT failed: {}", put.status());

    let hot_url = format!("http://127.0.0.1:{HOT_PORT}/v1/cache/embedding/hot");
    let cold_url = format!("http://127.0.0.1:{COLD_PORT}/v1/cache/embedding/hot");
    oha_get(&hot_url, connections, 2)?; // warm-up
    let (redis_rps, redis_p99) = redis_benchmark(connections, 400_000)?;
    println!("  redis-benchmark GET            {redis_rps:>9.0} req/s   p99 {redis_p99:>6.3} ms");
    let (wrk_rps, wrk_p99) = wrk_get(&hot_url, connections, seconds)?;
    println!("  cache-service GET, hot, wrk -t1{wrk_rps:>9.0} req/s   p99 {wrk_p99:>6.3} ms");
    let (wrk_cold_rps, wrk_cold_p99) = wrk_get(&cold_url, connections, seconds)?;
    println!("  cache-service GET, cold, wrk   {wrk_cold_rps:>9.0} req/s   p99 {wrk_cold_p99:>6.3} ms");
    let (hot_rps, hot_p99, hot_ok) = oha_get(&hot_url, connections, seconds)?;
    println!(
        "  cache-service GET, hot (L1)    {hot_rps:>9.0} req/s   p99 {hot_p99:>6.3} ms   ok {:.2}%",
        hot_ok * 100.0
    );
    let (cold_rps, cold_p99, cold_ok) = oha_get(&cold_url, connections, seconds)?;
    println!(
        "  cache-service GET, cold (Redis){cold_rps:>9.0} req/s   p99 {cold_p99:>6.3} ms   ok {:.2}%",
        cold_ok * 100.0
    );
    // At saturation p99 measures the HTTP server and the load generator fighting for
    // two cores (a bare /healthz shows the same); below saturation it measures us.
    let (_, floor_p99, _) = oha_get(&format!("http://127.0.0.1:{HOT_PORT}/healthz"), connections, seconds)?;
    println!("  bare /healthz, same server     (saturated)          p99 {floor_p99:>6.3} ms");
    let rate = u32::try_from((redis_rps * 0.25) as u64).unwrap_or(u32::MAX).max(1000);
    let (hot_fixed_rps, hot_fixed_p99, _) = oha_get_at(&hot_url, connections, seconds, Some(rate))?;
    println!(
        "  cache-service GET, hot, fixed  {hot_fixed_rps:>9.0} req/s   p99 {hot_fixed_p99:>6.3} ms   (asked {rate})"
    );
    let cold_rate = u32::try_from((cold_rps * 0.25) as u64).unwrap_or(u32::MAX).max(1000);
    let (cold_fixed_rps, cold_fixed_p99, _) = oha_get_at(&cold_url, connections, seconds, Some(cold_rate))?;
    println!(
        "  cache-service GET, cold, fixed {cold_fixed_rps:>9.0} req/s   p99 {cold_fixed_p99:>6.3} ms   (asked {cold_rate})"
    );
    println!();
    println!(
        "cache    single-threaded clients (wrk -t1 vs redis-benchmark): hot {:.2}× raw Redis GET, p99 {wrk_p99:.3} ms \
         vs {redis_p99:.3} ms; cold {:.2}×, p99 {wrk_cold_p99:.3} ms",
        wrk_rps / redis_rps,
        wrk_cold_rps / redis_rps
    );
    println!(
        "cache    oha: hot {:.2}×, p99 {hot_p99:.3} ms saturated, {hot_fixed_p99:.3} ms at {rate} req/s; cold {:.2}×, \
         p99 {cold_fixed_p99:.3} ms at {cold_rate} req/s (targets: hot ≥ 1.0×, p99 ≤ 1 ms)",
        hot_rps / redis_rps,
        cold_rps / redis_rps
    );
    drop(processes);
    clear_redis(&prefix).await?;
    Ok(())
}
