#![allow(dead_code)]

pub mod team;

use std::time::Duration;

use api_gateway::GatewaySettings;
use common_models::db::Database;
use llm_simulator::{Behaviour, Simulator};
use serde_json::{Value, json};
use service_kit::config::{ConnectionUrl, LogFormat, Secret};
use test_support::{Service, TempDir, TestDb, TestRedis};

pub const ADMIN_KEY: &str = "test-admin-key";

/// A gateway with its own main and analytics databases, Redis prefix, spool and
/// simulator; optionally the log worker and a cache-service too.
pub struct Stack {
    pub url: String,
    pub main_db: TestDb,
    pub analytics_db: TestDb,
    pub redis: TestRedis,
    pub sim: Simulator,
    pub http: reqwest::Client,
    pub spool: TempDir,
    /// CV uploads.
    pub files: TempDir,
    gateway: Service,
    worker: Option<Service>,
    pub cache: Option<Service>,
}

/// cache-service's credential in these tests.
pub const CACHE_API_KEY: &str = "test-cache-credential";

pub struct Options {
    pub with_worker: bool,
    /// Run a cache-service (own key prefix) and point the gateway at it.
    pub with_cache: bool,
    /// The Redis to use (a test's own `RedisServer`); default: the shared test Redis.
    pub redis_url: Option<String>,
    pub tweak: Box<dyn FnOnce(&mut GatewaySettings)>,
}

impl Default for Options {
    fn default() -> Self {
        Self { with_worker: true, with_cache: false, redis_url: None, tweak: Box::new(|_| {}) }
    }
}

/// Gateway settings for a test: its databases, Redis prefix, spool and simulator.
pub fn gateway_settings(
    main_db: &TestDb,
    analytics_db: &TestDb,
    redis: &TestRedis,
    spool: &TempDir,
    files: &TempDir,
    sim: &Simulator,
) -> anyhow::Result<GatewaySettings> {
    let mut s = GatewaySettings::defaults()?;
    s.database.url = ConnectionUrl::new(&main_db.url);
    s.analytics_database.url = ConnectionUrl::new(&analytics_db.url);
    s.redis.url = ConnectionUrl::new(&redis.url);
    s.redis.key_prefix = redis.prefix.clone();
    if let Some(spool_config) = s.producer.spool.as_mut() {
        spool_config.dir = spool.path.clone();
    }
    s.cvs.storage_dir = files.path.clone();
    s.llm_base_url = sim.base_url();
    s.llm_api_key = Secret::new("sk-simulated");
    s.admin_api_key = Secret::new(ADMIN_KEY);
    s.server.workers = 2;
    s.logging.format = LogFormat::Text;
    // Never a cache-service that happens to run on this machine.
    s.cache_url = String::new();
    // Tests send bursts; the limits have tests of their own.
    s.limits.default_plan = "unlimited".to_owned();
    // One listener: tests reach the admin routes and metrics on it (the split has its
    // own test).
    s.internal_port = 0;
    Ok(s)
}

pub fn worker_settings(analytics_db: &TestDb, redis: &TestRedis) -> anyhow::Result<llm_log_worker::WorkerSettings> {
    let mut w = llm_log_worker::WorkerSettings::defaults()?.reacting_fast();
    w.analytics_database.url = ConnectionUrl::new(&analytics_db.url);
    w.redis.url = ConnectionUrl::new(&redis.url);
    w.redis.key_prefix = redis.prefix.clone();
    w.consumer.consumer = format!("{}worker", redis.prefix);
    w.logging.format = LogFormat::Text;
    // Tests write fixed past dates; retention has its own test.
    w.raw_retention = Duration::ZERO;
    Ok(w)
}

impl Stack {
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let main_db = TestDb::migrated(Database::Main).await?;
        let analytics_db = TestDb::empty("analytics").await?;
        let redis = options.redis_url.map_or_else(TestRedis::new, TestRedis::on);
        let sim = Simulator::start(test_support::local_listener()?, Behaviour::default())?;
        let spool = TempDir::new("spool")?;
        let files = TempDir::new("files")?;
        let mut settings = gateway_settings(&main_db, &analytics_db, &redis, &spool, &files, &sim)?;
        let cache = if options.with_cache {
            let mut c = cache_service::CacheSettings::defaults()?;
            c.redis.url = ConnectionUrl::new(&redis.url);
            c.redis.key_prefix = format!("{}cache:", redis.prefix);
            c.server.workers = 1;
            c.logging.format = LogFormat::Text;
            c.cache_api_key = Secret::new(CACHE_API_KEY);
            let cache = Service::start("cache-service", |l, rx| cache_service::run(c, l, rx)).await?;
            settings.cache_url = cache.url.clone();
            settings.cache_api_key = Secret::new(CACHE_API_KEY);
            settings.llm_cache_seal_key = Secret::new("test-seal-key");
            settings.cache_timeout = Duration::from_secs(1);
            Some(cache)
        } else {
            None
        };
        (options.tweak)(&mut settings);
        let gateway = Service::start("api-gateway", |l, rx| api_gateway::run(settings, l, rx)).await?;
        let worker = if options.with_worker {
            let w = worker_settings(&analytics_db, &redis)?;
            Some(Service::start("llm-log-worker", |l, rx| llm_log_worker::run(w, l, rx)).await?)
        } else {
            None
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(Self {
            url: gateway.url.clone(),
            main_db,
            analytics_db,
            redis,
            sim,
            http,
            spool,
            files,
            gateway,
            worker,
            cache,
        })
    }

    /// Stops everything; with a worker, first lets it consume what the gateway sent.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.gateway.stop().await?;
        if let Some(worker) = self.worker {
            if self.redis.expects_settled() {
                let (url, prefix) = (self.redis.url.clone(), self.redis.prefix.clone());
                test_support::wait_for(Duration::from_secs(30), "the worker to consume every event", || async {
                    test_support::unsettled_entries(&url, &prefix).await.ok().filter(Vec::is_empty)
                })
                .await?;
            }
            worker.stop().await?;
        }
        if let Some(cache) = self.cache {
            cache.stop().await?;
        }
        self.sim.stop().await;
        Ok(())
    }

    /// A second gateway on the same databases and Redis (its own spool).
    pub async fn another_gateway(&self) -> anyhow::Result<(Service, TempDir)> {
        self.another_gateway_with(|_| {}).await
    }

    /// A second gateway, its settings changed by `tweak`.
    pub async fn another_gateway_with(
        &self,
        tweak: impl FnOnce(&mut GatewaySettings),
    ) -> anyhow::Result<(Service, TempDir)> {
        let spool = TempDir::new("spool-2")?;
        let mut settings =
            gateway_settings(&self.main_db, &self.analytics_db, &self.redis, &spool, &self.files, &self.sim)?;
        tweak(&mut settings);
        let gateway = Service::start("api-gateway-2", |l, rx| api_gateway::run(settings, l, rx)).await?;
        Ok((gateway, spool))
    }

    /// An interview of `company` (with the job, CV and application it hangs on),
    /// written straight to the main database; returns its id.
    pub async fn create_interview(&self, company: i64) -> anyhow::Result<i64> {
        let sql = format!(
            "WITH j AS (INSERT INTO jobs (company_id, title) VALUES ({company}, 'Interviewed for') RETURNING id), \
             c AS (INSERT INTO cvs (company_id, file_name, content_type, size_bytes, content_hash, storage_key) \
                   VALUES ({company}, 'cv.txt', 'text/plain', 1, sha256(random()::text::bytea), 'none') RETURNING id), \
             a AS (INSERT INTO applications (company_id, job_id, cv_id) SELECT {company}, j.id, c.id FROM j, c RETURNING id) \
             INSERT INTO interviews (company_id, application_id, scheduled_at) SELECT {company}, a.id, now() FROM a \
             RETURNING id AS n"
        );
        test_support::query_count(&self.main_db.url, &sql).await
    }

    /// Creates a company through the admin API; returns (company id, API key).
    pub async fn create_company(&self, name: &str) -> anyhow::Result<(i64, String)> {
        test_support::create_company(&self.http, &self.url, ADMIN_KEY, name).await
    }

    pub fn chat(&self, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}/v1/chat/completions", self.url)).bearer_auth(key).json(body)
    }

    pub async fn llm_rows(&self) -> anyhow::Result<i64> {
        test_support::query_count(&self.analytics_db.url, "SELECT count(*) AS n FROM llm_logs").await
    }

    /// Counts rows without waiting for locks; `None` when the table is locked.
    pub async fn llm_rows_nowait(&self) -> Option<i64> {
        let url = format!("{}?options=-c%20lock_timeout%3D100", self.analytics_db.url);
        test_support::query_count(&url, "SELECT count(*) AS n FROM llm_logs").await.ok()
    }

    pub async fn wait_llm_rows(&self, n: i64) -> anyhow::Result<()> {
        self.analytics_db.wait_rows("llm_logs", n, Duration::from_secs(60)).await
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.http.get(format!("{}/metrics", self.url)).send().await?.text().await?)
    }
}

/// The value of a metric line (labels included, as in the text format), summed when
/// `name` matches several lines by prefix.
pub fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    metrics.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

pub fn chat_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Summarise this candidate's experience with Rust."}],
        "stream": stream,
        "temperature": 0
    })
}
#[derive(Debug, diesel::QueryableByName)]
pub struct LlmRow {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub company_id: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    pub tokens_input: Option<i32>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    pub tokens_output: Option<i32>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    pub tokens_used: Option<i32>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub usage_reported: bool,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
    pub cost: Option<f64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub price_table_version: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub streaming: bool,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    pub latency_ms: Option<i32>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    pub time_to_first_token_ms: Option<i32>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::SmallInt>)]
    pub http_status: Option<i16>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub error_type: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub error_message: Option<String>,
    /// `metadata.usage_estimated`.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub usage_estimated: bool,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub model: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub action: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub interview_id: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub request_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub cache_hit: bool,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
    pub cost_saved: Option<f64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    pub tokens_cached_input: Option<i32>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    pub tokens_reasoning: Option<i32>,
}

pub async fn llm_rows(db: &TestDb) -> anyhow::Result<Vec<LlmRow>> {
    use diesel_async::RunQueryDsl;
    let mut conn = db.connect().await?;
    Ok(diesel::sql_query(
        "SELECT company_id, tokens_input, tokens_output, tokens_used, usage_reported, cost_usd::float8 AS cost,
                price_table_version, streaming, latency_ms, time_to_first_token_ms, http_status, error_type,
                error_message, COALESCE((metadata->>'usage_estimated')::boolean, false) AS usage_estimated,
                model, action, interview_id, request_id, cache_hit, cost_saved_usd::float8 AS cost_saved,
                tokens_cached_input, tokens_reasoning
         FROM llm_logs ORDER BY created_at",
    )
    .load(&mut conn)
    .await?)
}

/// The api-gateway binary as a process (CACHE_URL empty, two workers).
pub struct GatewayProcess;

impl GatewayProcess {
    pub async fn start(
        env: &[(&str, String)],
        log: std::path::PathBuf,
    ) -> anyhow::Result<test_support::ServiceProcess> {
        let mut env = env.to_vec();
        let files = std::env::temp_dir().join("hh-test-gateway-files").display().to_string();
        env.extend([
            ("WORKERS", "2".to_owned()),
            ("CACHE_URL", String::new()),
            ("CVS__STORAGE_DIR", files),
            ("INTERNAL_PORT", "0".to_owned()),
            ("LIMITS__DEFAULT_PLAN", "unlimited".to_owned()),
        ]);
        test_support::ServiceProcess::start(std::path::Path::new(env!("CARGO_BIN_EXE_api-gateway")), &env, log).await
    }
}
