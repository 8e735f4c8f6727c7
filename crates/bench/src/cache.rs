//! cache-service GET against Redis GET on the same Redis, at the same concurrency, in
//! one run: a hot key (served by L1) and a cold path (L1 off: every GET goes to Redis).
//!
//! Like for like on two cores: the servers on core 0 (a redis-server started for the
//! benchmark, and cache-service with one worker, as Redis has one thread), one
//! single-threaded client at a time on core 1. Each server is loaded by its standard
//! tool (redis-benchmark, `wrk -t1`) and by `headhunter-bench load`, which speaks both
//! protocols and so measures both with one meaning of latency. Rounds interleave the
//! measurements and the figures are medians over rounds, because this machine's speed
//! drifts by tens of percent within a minute. A sweep over concurrency follows.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::loadgen::{Protocol, Report};
use crate::{Processes, wait_http};

const VALUE_BYTES: usize = 1536; // a 384-d f32 embedding
/// The key redis-benchmark's GET reads (it substitutes nothing without `-r`).
const REDIS_KEY: &str = "key:__rand_int__";
const HOT_PATH: &str = "/v1/cache/embedding/hot";
const SWEEP: [u32; 5] = [1, 8, 32, 64, 128];

/// One measurement: throughput, latency, and requests in flight (throughput × mean).
#[derive(Debug, Clone, Copy)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    in_flight: f64,
}

impl From<Report> for Sample {
    fn from(r: Report) -> Self {
        Self { rps: r.rps, p50_ms: r.p50_ms, p99_ms: r.p99_ms, in_flight: r.in_flight }
    }
}

/// Where the servers and the clients run: cores 0 and 1 when `taskset` and two cores
/// are there, anywhere otherwise.
#[derive(Clone, Copy)]
struct Placement {
    server: Option<&'static str>,
    client: Option<&'static str>,
}

impl Placement {
    fn detect() -> Self {
        let pinned = Command::new("taskset").arg("-V").output().is_ok_and(|o| o.status.success())
            && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
        if pinned { Self { server: Some("0"), client: Some("1") } } else { Self { server: None, client: None } }
    }

    fn command(core: Option<&str>, program: impl AsRef<OsStr>) -> Command {
        crate::pinned(program, core)
    }

    fn server(&self, program: impl AsRef<OsStr>) -> Command {
        Self::command(self.server, program)
    }

    fn client(&self, program: impl AsRef<OsStr>) -> Command {
        Self::command(self.client, program)
    }
}

/// redis-benchmark GET, `requests` of them.
fn redis_benchmark(at: Placement, port: u16, connections: u32, requests: u64) -> anyhow::Result<Sample> {
    let out = at
        .client("redis-benchmark")
        .args(["-p", &port.to_string(), "-c", &connections.to_string(), "-n", &requests.to_string()])
        .args(["-t", "get", "-d", &VALUE_BYTES.to_string(), "--csv", "-q"])
        .output()?;
    anyhow::ensure!(out.status.success(), "redis-benchmark failed: {}", String::from_utf8_lossy(&out.stderr));
    parse_redis_benchmark(&String::from_utf8_lossy(&out.stdout))
}

/// redis-benchmark's CSV GET line: rps, avg, min, p50, p95, p99, max.
fn parse_redis_benchmark(text: &str) -> anyhow::Result<Sample> {
    let line = text.lines().find(|l| l.starts_with("\"GET\"")).ok_or_else(|| anyhow::anyhow!("no GET line: {text}"))?;
    let f: Vec<f64> = line.split(',').skip(1).filter_map(|f| f.trim_matches('"').parse().ok()).collect();
    anyhow::ensure!(f.len() >= 6, "short GET line: {line}");
    Ok(Sample { rps: f[0], p50_ms: f[3], p99_ms: f[5], in_flight: f[0] * f[1] / 1000.0 })
}

/// `wrk -t1`: one load-generating thread, as redis-benchmark has.
fn wrk(at: Placement, url: &str, connections: u32, seconds: u64) -> anyhow::Result<Sample> {
    let out = at
        .client("wrk")
        .args(["-t1", "-c", &connections.to_string(), "-d", &format!("{seconds}s"), "--latency", url])
        .output()?;
    anyhow::ensure!(out.status.success(), "wrk failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |prefix: &str| text.lines().map(str::trim).find_map(|l| l.strip_prefix(prefix)).map(str::trim);
    let non_2xx = line("Non-2xx or 3xx responses:").unwrap_or("0");
    anyhow::ensure!(non_2xx == "0", "wrk saw {non_2xx} failed answers from {url}");
    let rps = line("Requests/sec:").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let mean_ms = line("Latency").and_then(|v| v.split_whitespace().next()).map_or(f64::NAN, millis);
    Ok(Sample {
        rps,
        p50_ms: line("50%").map_or(f64::NAN, millis),
        p99_ms: line("99%").map_or(f64::NAN, millis),
        in_flight: rps * mean_ms / 1000.0,
    })
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

/// `headhunter-bench load` on the client core.
fn same_client(
    at: Placement,
    port: u16,
    protocol: Protocol,
    target: &str,
    connections: u32,
    seconds: u64,
) -> anyhow::Result<Sample> {
    let protocol = match protocol {
        Protocol::Redis => "redis",
        Protocol::Http => "http",
    };
    let out = at
        .client(std::env::current_exe()?)
        .args(["load", "--addr", &format!("127.0.0.1:{port}"), "--protocol", protocol, "--target", target])
        .args(["--connections", &connections.to_string(), "--seconds", &seconds.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "the load client failed against {protocol} port {port}");
    Ok(serde_json::from_slice::<Report>(&out.stdout)?.into())
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn median_sample(samples: &[Sample]) -> Sample {
    Sample {
        rps: median(samples.iter().map(|s| s.rps)),
        p50_ms: median(samples.iter().map(|s| s.p50_ms)),
        p99_ms: median(samples.iter().map(|s| s.p99_ms)),
        in_flight: median(samples.iter().map(|s| s.in_flight)),
    }
}

fn print_sample(label: &str, s: &Sample) {
    println!(
        "  {label:<34} {:>9.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  in flight {:>5.1}",
        s.rps, s.p50_ms, s.p99_ms, s.in_flight
    );
}

/// The rows of the main comparison, in the order they are measured each round.
const ROWS: [&str; 6] = [
    "Redis GET, redis-benchmark",
    "Redis GET, same client",
    "hot key (L1), wrk -t1",
    "hot key (L1), same client",
    "cold (Redis), wrk -t1",
    "cold (Redis), same client",
];

pub async fn run(connections: u32, seconds: u64, rounds: u32, bin_dir: &Path) -> anyhow::Result<()> {
    let at = Placement::detect();
    let port = free_port()?;
    let redis = at
        .server("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()?;
    let _redis = Processes(vec![redis]);
    let redis_url = format!("redis://127.0.0.1:{port}/0");
    let client = redis::Client::open(redis_url.as_str())?;
    let started = Instant::now();
    let mut conn = loop {
        match client.get_multiplexed_async_connection().await {
            Ok(conn) => break conn,
            Err(e) => anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "redis-server did not start: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    redis::cmd("SET").arg(REDIS_KEY).arg(vec![7u8; VALUE_BYTES]).query_async::<()>(&mut conn).await?;

    let (hot_port, cold_port) = (free_port()?, free_port()?);
    let spawn = |port: u16, l1_bytes: &str| {
        at.server(bin_dir.join("cache-service"))
            .env("PORT", port.to_string())
            .env("BIND_HOST", "127.0.0.1")
            .env("WORKERS", "1")
            .env("REDIS_URL", &redis_url)
            .env("L1_MAX_BYTES", l1_bytes)
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .spawn()
    };
    let _services = Processes(vec![spawn(hot_port, "67108864")?, spawn(cold_port, "0")?]);
    wait_http(&format!("http://127.0.0.1:{hot_port}/healthz")).await?;
    wait_http(&format!("http://127.0.0.1:{cold_port}/healthz")).await?;
    let url = |p: u16, path: &str| format!("http://127.0.0.1:{p}{path}");
    let put = reqwest::Client::new().put(url(hot_port, HOT_PATH)).body(vec![7u8; VALUE_BYTES]).send().await?;
    anyhow::ensure!(put.status().is_success(), "PUT failed: {}", put.status());

    match at.server {
        Some(_) => {
            println!("servers on core 0 (redis-server; cache-service with one worker), clients one at a time on core 1")
        }
        None => println!("unpinned (no taskset or one core): servers and clients share the cores"),
    }
    println!(
        "== cache GET: {VALUE_BYTES}-byte values, {connections} connections, {rounds} interleaved rounds of {seconds} s =="
    );
    let mut table: Vec<Vec<Sample>> = vec![Vec::new(); ROWS.len()];
    let mut redis_rps = 100_000.0;
    for round in 1..=rounds {
        println!("round {round}");
        let requests = (redis_rps * seconds as f64) as u64;
        let samples = [
            redis_benchmark(at, port, connections, requests)?,
            same_client(at, port, Protocol::Redis, REDIS_KEY, connections, seconds)?,
            wrk(at, &url(hot_port, HOT_PATH), connections, seconds)?,
            same_client(at, hot_port, Protocol::Http, HOT_PATH, connections, seconds)?,
            wrk(at, &url(cold_port, HOT_PATH), connections, seconds)?,
            same_client(at, cold_port, Protocol::Http, HOT_PATH, connections, seconds)?,
        ];
        redis_rps = samples[0].rps;
        for ((label, sample), column) in ROWS.iter().zip(samples).zip(&mut table) {
            print_sample(label, &sample);
            column.push(sample);
        }
    }
    let m: Vec<Sample> = table.iter().map(|c| median_sample(c)).collect();
    println!("medians over {rounds} rounds");
    for (label, sample) in ROWS.iter().zip(&m) {
        print_sample(label, sample);
    }
    // What any answer costs on this server and client: the HTTP floor under the cache.
    print_sample("HTTP floor: /healthz, wrk -t1", &wrk(at, &url(hot_port, "/healthz"), connections, seconds)?);
    let floor = same_client(at, hot_port, Protocol::Http, "/healthz", connections, seconds)?;
    print_sample("HTTP floor: /healthz, same client", &floor);

    println!();
    println!("concurrency sweep, same client for both, {} s each", seconds.min(3));
    println!("  {:>5}  {:>24}  {:>24}  {:>6}", "conns", "Redis GET  req/s  p99 ms", "hot key  req/s  p99 ms", "ratio");
    for c in SWEEP {
        let r = same_client(at, port, Protocol::Redis, REDIS_KEY, c, seconds.min(3))?;
        let h = same_client(at, hot_port, Protocol::Http, HOT_PATH, c, seconds.min(3))?;
        println!(
            "  {c:>5}  {:>14.0} {:>9.3}  {:>14.0} {:>9.3}  {:>5.2}×",
            r.rps,
            r.p99_ms,
            h.rps,
            h.p99_ms,
            h.rps / r.rps
        );
    }

    let (rb, redis_same, hot_wrk, hot_same, cold_wrk, cold_same) = (m[0], m[1], m[2], m[3], m[4], m[5]);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!(
        "cache    target (hot key ≥ 1.0× redis-benchmark GET at {connections} connections, p99 ≤ 1 ms): {} \
         (wrk -t1 {:.2}×, p99 {:.3} ms; same client {:.2}× redis-benchmark, p99 {:.3} ms)",
        verdict(hot_wrk.rps >= rb.rps && hot_wrk.p99_ms <= 1.0),
        hot_wrk.rps / rb.rps,
        hot_wrk.p99_ms,
        hot_same.rps / rb.rps,
        hot_same.p99_ms
    );
    println!(
        "cache    redis-benchmark kept {:.0} of {connections} requests in flight, wrk {:.0}: it is bound by its own \
         loop, so the same client on both sides gives the per-core cost:",
        rb.in_flight, hot_wrk.in_flight
    );
    println!(
        "cache    same client: hot {:.2}× Redis GET (p99 {:.3} vs {:.3} ms); cold {:.2}× (p99 {:.3} ms; wrk {:.2}× \
         redis-benchmark)",
        hot_same.rps / redis_same.rps,
        hot_same.p99_ms,
        redis_same.p99_ms,
        cold_same.rps / redis_same.rps,
        cold_same.p99_ms,
        cold_wrk.rps / rb.rps
    );
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
