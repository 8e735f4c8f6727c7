//! CV processing end to end, through the real binaries (api-gateway, cv-processor,
//! cache-service): a batch of distinct CVs with a cold embedding cache, then the same
//! files again from another company (every chunk a cache hit); the p99 of a
//! main-DB-backed endpoint while the batch processes vs idle; and how fast 1,000 CV
//! uploads are answered next to how fast CVs are processed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Processes, clear_redis, count, create_database, drop_database, redis_url, wait_http};

const GATEWAY_PORT: u16 = 18180;
const PROCESSOR_PORT: u16 = 19192;
const CACHE_PORT: u16 = 18181;
const ADMIN_KEY: &str = "bench-admin-key";
const FILES_PER_UPLOAD: usize = 50;

/// A small deterministic generator, so every run makes the same CVs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const FIRST: &[&str] =
    &["Ana", "Kwame", "Mei", "Oskar", "Priya", "Tomás", "Yara", "Lukas", "Amara", "Hiro", "Sofia", "Idris"];
const LAST: &[&str] =
    &["Okafor", "Lindqvist", "Tanaka", "Moreau", "Haddad", "Novak", "Reyes", "Singh", "Kowalski", "Brennan"];
const ROLES: &[&str] = &[
    "Backend Engineer",
    "Data Scientist",
    "Staff Nurse",
    "Financial Accountant",
    "Marketing Manager",
    "UX Designer",
    "Logistics Coordinator",
    "Teacher",
    "Recruiter",
    "Support Lead",
];
const VERBS: &[&str] =
    &["Led", "Built", "Designed", "Ran", "Rebuilt", "Introduced", "Automated", "Scaled", "Audited", "Launched"];
const THINGS: &[&str] = &[
    "the billing pipeline",
    "a patient triage rota",
    "the month-end close",
    "a paid search programme",
    "the design system",
    "a warehouse slotting plan",
    "the onboarding flow",
    "a forecasting model",
    "the support knowledge base",
    "a Kafka event bus",
];
const TOOLS: &[&str] = &[
    "Rust",
    "Go",
    "Python",
    "SQL",
    "Figma",
    "Excel",
    "SAP",
    "PostgreSQL",
    "Kubernetes",
    "Tableau",
    "Salesforce",
    "AWS",
];
const OUTCOMES: &[&str] = &[
    "cutting costs by",
    "raising conversion by",
    "reducing errors by",
    "saving",
    "growing revenue by",
    "shortening waits by",
];

/// A distinct CV of about 350 words: numbers and word choices vary per sentence, so its
/// chunks are new to the embedding cache.
pub(crate) fn synthetic_cv(i: usize) -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let name = format!("{} {}", rng.pick(FIRST), rng.pick(LAST));
    let sentence = |rng: &mut Rng| {
        format!(
            "{} {} with {} and {} for {} teams, {} {}% over {} months.",
            rng.pick(VERBS),
            rng.pick(THINGS),
            rng.pick(TOOLS),
            rng.pick(TOOLS),
            2 + rng.below(40),
            rng.pick(OUTCOMES),
            3 + rng.below(60),
            2 + rng.below(30)
        )
    };
    let mut cv = format!("{name}\ncandidate{i}@example.com | +44 7700 9{:05}\n\nSummary\n", rng.below(100_000));
    for _ in 0..3 {
        cv.push_str(&sentence(&mut rng));
        cv.push(' ');
    }
    cv.push_str("\n\nExperience\n");
    let mut year = 2025 - rng.below(3) as i64;
    for _ in 0..4 {
        let start = year - 1 - rng.below(4) as i64;
        cv.push_str(&format!("{}, Company {} | {start} - {year}\n", rng.pick(ROLES), rng.below(10_000)));
        for _ in 0..3 {
            cv.push_str(&sentence(&mut rng));
            cv.push('\n');
        }
        year = start;
    }
    cv.push_str(&format!("\nEducation\nBSc, University {} ({})\n\nSkills\n", rng.below(500), year - 1));
    let skills: Vec<&str> = (0..6).map(|_| rng.pick(TOOLS)).collect();
    cv.push_str(&skills.join(", "));
    cv
}

struct Latency {
    p50_ms: f64,
    p99_ms: f64,
}

fn oha_get(url: &str, key: &str, rate: u32, seconds: u64) -> anyhow::Result<Latency> {
    let output = Command::new("oha")
        .args(["--no-tui", "--latency-correction", "--output-format", "json", "-z", &format!("{seconds}s")])
        .args(["-q", &rate.to_string(), "-c", "16", "-H", &format!("authorization: Bearer {key}"), url])
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(output.status.success(), "oha failed");
    let report: Value = serde_json::from_slice(&output.stdout)?;
    let ok = report["statusCodeDistribution"]["200"].as_u64().unwrap_or(0);
    anyhow::ensure!(ok > 0, "no 200 answers from {url}: {}", report["statusCodeDistribution"]);
    let ms = |v: &Value| v.as_f64().unwrap_or(f64::NAN) * 1000.0;
    Ok(Latency { p50_ms: ms(&report["latencyPercentiles"]["p50"]), p99_ms: ms(&report["latencyPercentiles"]["p99"]) })
}

pub(crate) async fn company(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<String> {
    let created: Value = http
        .post(format!("{base}/api/v1/admin/companies"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": name}))
        .send()
        .await?
        .json()
        .await?;
    Ok(created["api_key"]["key"].as_str().ok_or_else(|| anyhow::anyhow!("no key: {created}"))?.to_owned())
}

/// Uploads the files in requests of [`FILES_PER_UPLOAD`]; returns each request's time.
pub(crate) async fn upload(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    files: &[(String, Vec<u8>)],
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::new();
    for batch in files.chunks(FILES_PER_UPLOAD) {
        let mut form = reqwest::multipart::Form::new();
        for (name, bytes) in batch {
            form = form.part("file", reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone()));
        }
        let started = Instant::now();
        let res = http.post(format!("{base}/api/v1/cvs")).bearer_auth(key).multipart(form).send().await?;
        anyhow::ensure!(res.status() == 202, "upload answered {}", res.status());
        times.push(started.elapsed());
    }
    Ok(times)
}

async fn wait_processed(db: &str, expected: i64, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let done = count(db, "SELECT count(*) AS n FROM cvs WHERE status IN ('processed', 'failed')").await?;
        if done >= expected {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < timeout, "{done} of {expected} CVs processed after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn metric(http: &reqwest::Client, prefix: &str) -> f64 {
    let Ok(res) = http.get(format!("http://127.0.0.1:{PROCESSOR_PORT}/metrics")).send().await else { return 0.0 };
    let text = res.text().await.unwrap_or_default();
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// CPU lists (for `taskset -c`) for the API side and the processing side: the last
/// core for processing, the rest for the API; `None` with one core or no `taskset`.
pub(crate) fn cpu_placement() -> (Option<String>, Option<String>) {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let taskset = Command::new("taskset").arg("--version").output().is_ok_and(|o| o.status.success());
    if cores < 2 || !taskset {
        return (None, None);
    }
    let api = if cores == 2 { "0".to_owned() } else { format!("0-{}", cores - 2) };
    (Some(api), Some((cores - 1).to_string()))
}

fn percentile(times: &mut [Duration], p: f64) -> f64 {
    times.sort_unstable();
    let i = ((times.len() as f64 - 1.0) * p).round() as usize;
    times.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

pub async fn run(cvs: usize, uploads: usize, bin_dir: &Path, model_dir: &Path) -> anyhow::Result<()> {
    println!("== CVs: {cvs} distinct CVs end to end (cold embedding cache), then again (warm), {uploads} uploads ==");
    match cpu_placement() {
        (Some(api), Some(processing)) => println!(
            "(CPUs {api}: api-gateway; CPU {processing}: cv-processor with one model thread and cache-service, as on nodes of their own; PostgreSQL shared)"
        ),
        _ => println!("(one CPU or no taskset: every process shares every core)"),
    }
    anyhow::ensure!(model_dir.join("model.safetensors").exists(), "no model in {} (make models)", model_dir.display());
    let (db_url, db_name) = create_database("cvs").await?;
    common_models::db::run_migrations(&db_url, common_models::db::Database::Main).await?;
    let prefix = format!("bench:{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let scratch = std::env::temp_dir().join(format!("{db_name}-data"));
    let (files_dir, vectors_dir) = (scratch.join("files"), scratch.join("vectors"));
    // Whatever happens in the run, its database, keys and files go afterwards.
    let outcome = async {
        let text = |p: &Path| p.to_string_lossy().into_owned();
        let cache_url = format!("http://127.0.0.1:{CACHE_PORT}");
        let env: Vec<(&str, String)> = vec![
            ("DATABASE_URL", db_url.clone()),
            ("ANALYTICS_DATABASE_URL", db_url.clone()),
            ("REDIS_URL", redis_url()),
            ("REDIS_KEY_PREFIX", prefix.clone()),
            ("ADMIN_API_KEY", ADMIN_KEY.to_owned()),
            ("LOG_LEVEL", "warn".to_owned()),
            ("BIND_HOST", "127.0.0.1".to_owned()),
            ("PRODUCER__SPOOL__DIR", String::new()),
            // A thousand uploads at once are the point here, not a plan's burst.
            ("LIMITS__DEFAULT_PLAN", "enterprise".to_owned()),
            ("INTERNAL_PORT", "0".to_owned()),
            ("CVS__STORAGE_DIR", text(&files_dir)),
            ("FILES__STORAGE_DIR", text(&files_dir)),
            ("VECTORS__DIR", text(&vectors_dir)),
            ("EMBEDDING__MODEL_DIR", text(model_dir)),
            ("EMBEDDING__CACHE_URL", cache_url.clone()),
            ("CACHE_URL", cache_url.clone()),
            ("CACHE_API_KEY", "bench-cache-credential".to_owned()),
            ("CV_PROCESSOR_URL", format!("http://127.0.0.1:{PROCESSOR_PORT}")),
        ];
        // In production the processor (and the cache it fills) run on CPUs of their own
        // (their own pods and nodes); the main database is what they share with the API.
        // Here: the last core for cv-processor and cache-service, the others for the
        // gateway, PostgreSQL free to use any; the processor with one model thread.
        let placement = cpu_placement();
        let spawn = |name: &str, port: u16| -> anyhow::Result<Child> {
            let side = if matches!(name, "cv-processor" | "cache-service") { &placement.1 } else { &placement.0 };
            let mut cmd = crate::pinned(bin_dir.join(name), side.as_deref());
            if name == "cv-processor" {
                cmd.env("RAYON_NUM_THREADS", "1");
            }
            cmd.env("PORT", port.to_string());
            for (k, v) in &env {
                cmd.env(k, v);
            }
            Ok(cmd.stdout(Stdio::null()).spawn()?)
        };
        let processes = Processes(vec![
            spawn("cache-service", CACHE_PORT)?,
            spawn("cv-processor", PROCESSOR_PORT)?,
            spawn("api-gateway", GATEWAY_PORT)?,
        ]);
        let base = format!("http://127.0.0.1:{GATEWAY_PORT}");
        wait_http(&format!("{cache_url}/healthz")).await?;
        wait_http(&format!("http://127.0.0.1:{PROCESSOR_PORT}/healthz")).await?;
        wait_http(&format!("{base}/healthz")).await?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
        let (cold_key, warm_key, upload_key) = (
            company(&http, &base, "Cold").await?,
            company(&http, &base, "Warm").await?,
            company(&http, &base, "Uploads").await?,
        );
        // The endpoint watched for the main database's health: a page of jobs.
        let job = json!({"title": "Backend engineer", "requirements": ["Rust services", "PostgreSQL"]});
        http.post(format!("{base}/api/v1/jobs")).bearer_auth(&cold_key).json(&job).send().await?;
        let jobs_url = format!("{base}/api/v1/jobs?limit=20");

        println!("idle: GET /api/v1/jobs at 100 req/s ...");
        oha_get(&jobs_url, &cold_key, 100, 2)?;
        let idle = oha_get(&jobs_url, &cold_key, 100, 30)?;

        let files: Vec<(String, Vec<u8>)> =
            (0..cvs).map(|i| (format!("cv{i}.txt"), synthetic_cv(i).into_bytes())).collect();
        let started = Instant::now();
        upload(&http, &base, &cold_key, &files).await?;
        println!("processing {cvs} CVs; GET /api/v1/jobs at 100 req/s meanwhile ...");
        let busy = oha_get(&jobs_url, &cold_key, 100, 30)?;
        wait_processed(&db_url, cvs as i64, Duration::from_secs(3600)).await?;
        let cold_total = started.elapsed();
        let computed = metric(&http, "headhunter_cv_processor_embeddings_total{source=\"computed\"}").await;
        let embed_seconds = metric(&http, "headhunter_cv_processor_stage_duration_seconds_sum{stage=\"embed\"}").await;
        let chunks = metric(&http, "headhunter_cv_processor_chunks_total").await;

        let started = Instant::now();
        upload(&http, &base, &warm_key, &files).await?;
        wait_processed(&db_url, 2 * cvs as i64, Duration::from_secs(3600)).await?;
        let warm_total = started.elapsed();
        let computed_warm = metric(&http, "headhunter_cv_processor_embeddings_total{source=\"computed\"}").await - computed;

        let many: Vec<(String, Vec<u8>)> =
            (0..uploads).map(|i| (format!("u{i}.txt"), synthetic_cv(1_000_000 + i).into_bytes())).collect();
        let started = Instant::now();
        let mut upload_times = upload(&http, &base, &upload_key, &many).await?;
        let upload_total = started.elapsed();

        let per_min = |n: usize, d: Duration| n as f64 / d.as_secs_f64() * 60.0;
        println!();
        println!(
            "cold     {cvs} CVs in {:.1} s: {:.0} CVs/min; {chunks:.0} chunks, {computed:.0} embedded by the model, model time {:.1} ms per chunk",
            cold_total.as_secs_f64(),
            per_min(cvs, cold_total),
            embed_seconds / computed.max(1.0) * 1000.0
        );
        println!(
            "warm     the same {cvs} files from another company in {:.1} s: {:.0} CVs/min, {computed_warm:.0} model calls → {:.1}× faster (target ≥ 10×)",
            warm_total.as_secs_f64(),
            per_min(cvs, warm_total),
            cold_total.as_secs_f64() / warm_total.as_secs_f64()
        );
        println!(
            "main DB  GET /api/v1/jobs p99 {:.2} ms while CVs process vs {:.2} ms idle → {:.2}× (target ≤ 1.2×); p50 {:.2} vs {:.2} ms",
            busy.p99_ms,
            idle.p99_ms,
            busy.p99_ms / idle.p99_ms,
            busy.p50_ms,
            idle.p50_ms
        );
        println!(
            "uploads  {uploads} CVs answered 202 in {:.2} s ({:.0} CVs/s; per request of {FILES_PER_UPLOAD}: p50 {:.1} ms, p99 {:.1} ms) vs {:.1} CVs/s processed",
            upload_total.as_secs_f64(),
            uploads as f64 / upload_total.as_secs_f64(),
            percentile(&mut upload_times, 0.5),
            percentile(&mut upload_times, 0.99),
            cvs as f64 / cold_total.as_secs_f64()
        );
        drop(processes);
        anyhow::Ok(())
    }
    .await;
    clear_redis(&prefix).await?;
    drop_database(&db_name).await?;
    std::fs::remove_dir_all(&scratch).ok();
    outcome
}
