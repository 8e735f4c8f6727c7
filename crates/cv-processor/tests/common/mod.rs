#![allow(dead_code, clippy::unwrap_used)]

pub mod hostile;

use std::time::Duration;

use api_gateway::GatewaySettings;
use common_models::db::Database;
use cv_processor::ProcessorSettings;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use service_kit::config::{ConnectionUrl, LogFormat, Secret};
use test_support::{Service, TempDir, TestDb, TestRedis};

pub const ADMIN_KEY: &str = "test-admin-key";

/// api-gateway and cv-processor over the test's own main database, Redis prefix and
/// file directory.
pub struct CvStack {
    pub url: String,
    pub db: TestDb,
    pub redis: TestRedis,
    pub files: TempDir,
    pub vectors: TempDir,
    pub http: reqwest::Client,
    /// The processor's address while one runs in this process.
    pub processor_url: Option<String>,
    pub cache_url: String,
    gateway: Option<Service>,
    processor: Option<Service>,
    cache: Service,
}

/// The embedding model fetched by `make models`.
pub fn model_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.models/all-minilm-l6-v2")
}

pub fn gateway_settings(
    db: &TestDb,
    redis: &TestRedis,
    files: &TempDir,
    cache_url: &str,
) -> anyhow::Result<GatewaySettings> {
    let mut s = GatewaySettings::defaults()?;
    s.database.url = ConnectionUrl::new(&db.url);
    s.analytics_database.url = ConnectionUrl::new(&db.url);
    s.redis.url = ConnectionUrl::new(&redis.url);
    s.redis.key_prefix = redis.prefix.clone();
    s.producer.spool = None;
    s.admin_api_key = Secret::new(ADMIN_KEY);
    s.cache_url = cache_url.to_owned();
    s.cache_timeout = Duration::from_secs(2);
    s.cvs.storage_dir = files.path.clone();
    s.server.workers = 2;
    s.logging.format = LogFormat::Text;
    // The gateway's limits are tested with the gateway.
    s.limits.default_plan = "unlimited".to_owned();
    s.internal_port = 0;
    Ok(s)
}

pub fn processor_settings(
    db: &TestDb,
    redis: &TestRedis,
    files: &TempDir,
    vectors: &TempDir,
    cache_url: &str,
) -> anyhow::Result<ProcessorSettings> {
    let mut s = ProcessorSettings::defaults()?;
    s.database.url = ConnectionUrl::new(&db.url);
    s.redis.url = ConnectionUrl::new(&redis.url);
    s.redis.key_prefix = redis.prefix.clone();
    s.files.storage_dir = files.path.clone();
    s.sandbox.program = Some(env!("CARGO_BIN_EXE_cv-processor").into());
    s.embedding.model_dir = model_dir();
    s.embedding.cache_url = cache_url.to_owned();
    s.embedding.cache_timeout = Duration::from_secs(2);
    s.vectors.dir = vectors.path.clone();
    s.consumer = s.consumer.reacting_fast();
    s.consumer.consumer = format!("{}processor", redis.prefix);
    s.logging.format = LogFormat::Text;
    Ok(s)
}

/// The processor's environment when it runs as a process.
pub fn processor_env(stack: &CvStack) -> Vec<(&'static str, String)> {
    let (db, redis, files) = (&stack.db, &stack.redis, &stack.files);
    vec![
        ("EMBEDDING__MODEL_DIR", model_dir().display().to_string()),
        ("EMBEDDING__CACHE_URL", stack.cache_url.clone()),
        ("VECTORS__DIR", stack.vectors.path.display().to_string()),
        ("DATABASE_URL", db.url.clone()),
        ("REDIS_URL", redis.url.clone()),
        ("REDIS_KEY_PREFIX", redis.prefix.clone()),
        ("FILES__STORAGE_DIR", files.path.display().to_string()),
        ("CONSUMER__NAME", format!("{}processor", redis.prefix)),
        ("CONSUMER__BLOCK", "200ms".into()),
        ("CONSUMER__RECLAIM_IDLE", "1s".into()),
        ("CONSUMER__RECLAIM_INTERVAL", "300ms".into()),
        ("CONSUMER__RETRY_INITIAL", "50ms".into()),
        ("CONSUMER__RETRY_MAX", "300ms".into()),
        ("CONSUMER__HEARTBEAT_INTERVAL", "200ms".into()),
    ]
}

impl CvStack {
    /// Gateway and, with `with_processor`, a processor in this process.
    pub async fn start(with_processor: bool) -> anyhow::Result<Self> {
        let db = TestDb::migrated(Database::Main).await?;
        let redis = TestRedis::new();
        let files = TempDir::new("files")?;
        let vectors = TempDir::new("vectors")?;
        let mut c = cache_service::CacheSettings::defaults()?;
        c.redis.url = ConnectionUrl::new(&redis.url);
        c.redis.key_prefix = format!("{}cache:", redis.prefix);
        c.server.workers = 1;
        c.logging.format = LogFormat::Text;
        let cache = Service::start("cache-service", |l, rx| cache_service::run(c, l, rx)).await?;
        let cache_url = cache.url.clone();
        let mut stack = Self {
            url: String::new(),
            db,
            redis,
            files,
            vectors,
            http: reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?,
            processor_url: None,
            cache_url,
            gateway: None,
            processor: None,
            cache,
        };
        if with_processor {
            stack.start_processor().await?;
        }
        stack.start_gateway().await?;
        Ok(stack)
    }

    /// (Re)starts the gateway, pointed at the processor if one runs here.
    pub async fn start_gateway(&mut self) -> anyhow::Result<()> {
        self.start_gateway_with(|_| {}).await
    }

    /// (Re)starts the gateway with changed settings.
    pub async fn start_gateway_with(&mut self, tweak: impl FnOnce(&mut GatewaySettings)) -> anyhow::Result<()> {
        let mut g = self.gateway_settings()?;
        tweak(&mut g);
        let gateway = Service::start("api-gateway", |l, rx| api_gateway::run(g, l, rx)).await?;
        self.url = gateway.url.clone();
        self.gateway = Some(gateway);
        Ok(())
    }

    /// Settings for a gateway of this stack (another replica can start from these).
    pub fn gateway_settings(&self) -> anyhow::Result<GatewaySettings> {
        let mut g = gateway_settings(&self.db, &self.redis, &self.files, &self.cache_url)?;
        g.cv_processor_url = self.processor_url.clone().unwrap_or_else(|| "http://127.0.0.1:9".to_owned());
        Ok(g)
    }

    pub async fn start_processor(&mut self) -> anyhow::Result<String> {
        self.start_processor_with(|_| {}).await
    }

    /// A processor with changed settings (restart the gateway to point it there).
    pub async fn start_processor_with(&mut self, tweak: impl FnOnce(&mut ProcessorSettings)) -> anyhow::Result<String> {
        let mut p = processor_settings(&self.db, &self.redis, &self.files, &self.vectors, &self.cache_url)?;
        tweak(&mut p);
        let service = Service::start("cv-processor", |l, rx| cv_processor::run(p, l, rx)).await?;
        let url = service.url.clone();
        self.processor_url = Some(url.clone());
        self.processor = Some(service);
        Ok(url)
    }

    pub async fn stop_processor(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.processor.take() {
            p.stop().await?;
        }
        Ok(())
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_processor().await?;
        self.stop_gateway().await?;
        self.cache.stop().await
    }

    pub async fn stop_gateway(&mut self) -> anyhow::Result<()> {
        if let Some(g) = self.gateway.take() {
            g.stop().await?;
        }
        Ok(())
    }

    /// Creates a company through the admin API; returns its API key.
    pub async fn company(&self, name: &str) -> anyhow::Result<String> {
        Ok(test_support::create_company(&self.http, &self.url, ADMIN_KEY, name).await?.1)
    }

    /// Uploads files (name, bytes) in one request; returns (status, body).
    pub async fn upload(&self, key: &str, files: &[(&str, Vec<u8>)]) -> anyhow::Result<(u16, Value)> {
        let mut form = Form::new();
        for (name, bytes) in files {
            form = form.part("file", Part::bytes(bytes.clone()).file_name((*name).to_owned()));
        }
        let res = self.http.post(format!("{}/api/v1/cvs", self.url)).bearer_auth(key).multipart(form).send().await?;
        Ok((res.status().as_u16(), res.json().await?))
    }

    pub async fn get(&self, key: &str, path: &str) -> anyhow::Result<(u16, Value)> {
        let res = self.http.get(format!("{}{path}", self.url)).bearer_auth(key).send().await?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    pub async fn send(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// The sum of the running processor's samples whose line starts with `line_prefix`.
    pub async fn processor_metric(&self, line_prefix: &str) -> f64 {
        let url = self.processor_url.clone().unwrap();
        let text = self.http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with(line_prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until the CV is `processed` or `failed`; returns it.
    pub async fn wait_done(&self, key: &str, id: i64) -> anyhow::Result<Value> {
        test_support::wait_for(Duration::from_secs(60), &format!("CV {id} to finish"), || async {
            let (_, cv) = self.get(key, &format!("/api/v1/cvs/{id}")).await.ok()?;
            matches!(cv["status"].as_str(), Some("processed" | "failed")).then_some(cv)
        })
        .await
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The ids of an upload's answer, in order.
pub fn ids(body: &Value) -> Vec<i64> {
    body["data"].as_array().unwrap().iter().map(|cv| cv["id"].as_i64().unwrap()).collect()
}
