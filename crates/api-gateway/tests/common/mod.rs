#![allow(dead_code)]

use std::time::Duration;

use api_gateway::GatewaySettings;
use common_models::db::Database;
use llm_simulator::{Behaviour, Simulator};
use serde_json::{Value, json};
use test_support::{TestDb, TestRedis};
use tokio::sync::watch;

pub const ADMIN_KEY: &str = "test-admin-key";

/// A gateway with its own main and analytics databases, Redis prefix and simulator;
/// optionally the log worker too.
pub struct Stack {
    pub url: String,
    pub main_db: TestDb,
    pub analytics_db: TestDb,
    pub redis: TestRedis,
    pub sim: Simulator,
    pub http: reqwest::Client,
    gateway_stop: watch::Sender<bool>,
    gateway: tokio::task::JoinHandle<anyhow::Result<()>>,
    worker_stop: Option<watch::Sender<bool>>,
    worker: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    cache_stop: Option<watch::Sender<bool>>,
}

pub struct Options {
    pub with_worker: bool,
    /// Run a cache-service (own key prefix) and point the gateway at it.
    pub with_cache: bool,
    pub tweak: Box<dyn FnOnce(&mut GatewaySettings)>,
}

impl Default for Options {
    fn default() -> Self {
        Self { with_worker: true, with_cache: false, tweak: Box::new(|_| {}) }
    }
}

impl Stack {
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let main_db = TestDb::migrated(Database::Main).await?;
        let analytics_db = TestDb::empty("analytics").await?;
        let redis = TestRedis::new();
        let sim = Simulator::start(test_support::local_listener()?, Behaviour::default())?;

        let mut settings = GatewaySettings::defaults()?;
        settings.database_url = main_db.url.clone();
        settings.analytics_database_url = analytics_db.url.clone();
        settings.redis_url = redis.url.clone();
        settings.redis_key_prefix = redis.prefix.clone();
        settings.llm_base_url = sim.base_url();
        settings.llm_api_key = "sk-simulated".into();
        settings.admin_api_key = ADMIN_KEY.into();
        settings.workers = 2;
        settings.log_format = "text".into();
        // Never a cache-service that happens to run on this machine.
        settings.cache_url = String::new();
        let cache_stop = if options.with_cache {
            let mut c = cache_service::CacheSettings::defaults()?;
            c.redis_url = redis.url.clone();
            c.redis_key_prefix = format!("{}cache:", redis.prefix);
            c.workers = 1;
            c.log_format = "text".into();
            let listener = test_support::local_listener()?;
            settings.cache_url = format!("http://{}", listener.local_addr()?);
            settings.cache_timeout_ms = 1000;
            let (tx, rx) = watch::channel(false);
            tokio::spawn(cache_service::run(c, listener, rx));
            Some(tx)
        } else {
            None
        };
        (options.tweak)(&mut settings);

        let listener = test_support::local_listener()?;
        let url = format!("http://{}", listener.local_addr()?);
        let (gateway_stop, rx) = watch::channel(false);
        let gateway = tokio::spawn(api_gateway::run(settings, listener, rx));

        let (worker_stop, worker) = if options.with_worker {
            let mut w = llm_log_worker::WorkerSettings::defaults()?;
            w.analytics_database_url = analytics_db.url.clone();
            w.redis_url = redis.url.clone();
            w.redis_key_prefix = redis.prefix.clone();
            w.consumer_name = format!("{}worker", redis.prefix);
            w.block_ms = 200;
            w.retry_initial_ms = 50;
            w.retry_max_ms = 300;
            w.lock_timeout_ms = 500;
            w.heartbeat_interval_ms = 200;
            w.log_format = "text".into();
            let (tx, rx) = watch::channel(false);
            (Some(tx), Some(tokio::spawn(llm_log_worker::run(w, test_support::local_listener()?, rx))))
        } else {
            (None, None)
        };

        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        let stack = Self {
            url,
            main_db,
            analytics_db,
            redis,
            sim,
            http,
            gateway_stop,
            gateway,
            worker_stop,
            worker,
            cache_stop,
        };
        let health_url = format!("{}/healthz", stack.url);
        test_support::wait_for(Duration::from_secs(10), "the gateway to answer", || async {
            stack.http.get(&health_url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await?;
        if stack.worker.is_some() {
            // The worker has migrated the analytics database once the tables exist.
            test_support::wait_for(Duration::from_secs(20), "the worker to migrate", || async {
                test_support::query_count(
                    &stack.analytics_db.url,
                    "SELECT count(*) AS n FROM pg_tables WHERE tablename = 'llm_logs'",
                )
                .await
                .ok()
                .filter(|n| *n == 1)
            })
            .await?;
        }
        Ok(stack)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.gateway_stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(30), self.gateway).await???;
        if let (Some(tx), Some(task)) = (self.worker_stop, self.worker) {
            tx.send_replace(true);
            tokio::time::timeout(Duration::from_secs(30), task).await???;
        }
        if let Some(tx) = self.cache_stop {
            tx.send_replace(true);
        }
        self.sim.stop().await;
        Ok(())
    }

    /// Creates a company through the admin API; returns (company id, API key).
    pub async fn create_company(&self, name: &str) -> anyhow::Result<(i64, String)> {
        let res = self
            .http
            .post(format!("{}/api/v1/admin/companies", self.url))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"name": name}))
            .send()
            .await?;
        anyhow::ensure!(res.status() == 201, "create company answered {}", res.status());
        let body: Value = res.json().await?;
        let id = body["company"]["id"].as_i64().ok_or_else(|| anyhow::anyhow!("no company id in {body}"))?;
        let key = body["api_key"]["key"].as_str().ok_or_else(|| anyhow::anyhow!("no key in {body}"))?.to_owned();
        Ok((id, key))
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
        test_support::wait_for(Duration::from_secs(30), &format!("{n} llm_logs rows"), || async {
            self.llm_rows().await.ok().filter(|c| *c >= n).map(|_| ())
        })
        .await
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.http.get(format!("{}/metrics", self.url)).send().await?.text().await?)
    }
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
}

pub async fn llm_rows(db: &TestDb) -> anyhow::Result<Vec<LlmRow>> {
    use diesel_async::RunQueryDsl;
    let mut conn = db.connect().await?;
    Ok(diesel::sql_query(
        "SELECT company_id, tokens_input, tokens_output, tokens_used, usage_reported, cost_usd::float8 AS cost,
                price_table_version, streaming, latency_ms, time_to_first_token_ms, http_status, error_type,
                model, action, interview_id, request_id, cache_hit, cost_saved_usd::float8 AS cost_saved
         FROM llm_logs ORDER BY created_at",
    )
    .load(&mut conn)
    .await?)
}
