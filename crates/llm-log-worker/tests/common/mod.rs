#![allow(dead_code)]

use std::time::Duration;

use chrono::Utc;
use common_models::events::{LlmCallEvent, LogEvent, SystemLogEvent, new_event_id};
use common_models::ids::CompanyId;
use common_models::queue::{self, CONSUMER_GROUP, EVENT_FIELD, LogStream, QueueKeys, TYPE_FIELD};
use llm_log_worker::WorkerSettings;
use test_support::{TestDb, TestRedis};
use tokio::sync::watch;

pub struct RunningWorker {
    pub shutdown: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub addr: std::net::SocketAddr,
}

impl RunningWorker {
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.send_replace(true);
        tokio::time::timeout(Duration::from_secs(20), self.task).await???;
        Ok(())
    }
}

pub fn settings(db: &TestDb, redis: &TestRedis) -> WorkerSettings {
    let mut s = WorkerSettings::defaults().unwrap_or_else(|e| panic!("defaults: {e}"));
    s.database_url = db.url.clone();
    s.redis_url = redis.url.clone();
    s.redis_key_prefix = redis.prefix.clone();
    s.consumer_name = format!("{}worker", redis.prefix);
    s.block_ms = 200;
    s.reclaim_idle_ms = 1000;
    s.reclaim_interval_ms = 300;
    s.retry_initial_ms = 50;
    s.retry_max_ms = 300;
    s.heartbeat_interval_ms = 200;
    s.lock_timeout_ms = 500;
    s.migrate_retry_delay_ms = 200;
    s.log_format = "text".into();
    s
}

pub async fn start(settings: WorkerSettings) -> anyhow::Result<RunningWorker> {
    let listener = test_support::local_listener()?;
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(llm_log_worker::run(settings, listener, rx));
    Ok(RunningWorker { shutdown: tx, task, addr })
}

pub fn llm_event(i: usize) -> LlmCallEvent {
    LlmCallEvent {
        event_id: new_event_id(),
        created_at: Utc::now(),
        action: "chat_completion".into(),
        message: Some(format!("call {i}")),
        company_id: Some(CompanyId(7)),
        user_id: None,
        interview_id: None,
        request_id: Some(format!("req-{i}")),
        model: Some("gpt-4o-mini".into()),
        tokens_input: Some(12),
        tokens_output: Some(30),
        tokens_total: Some(42),
        usage_reported: true,
        cost_usd: Some(0.0000198),
        price_table_version: Some("test".into()),
        latency_ms: Some(15),
        time_to_first_token_ms: None,
        streaming: false,
        http_status: Some(200),
        error_type: None,
        error_message: None,
        metadata: Some(serde_json::json!({"i": i})),
        deployment_version: Some("test".into()),
        deployment_environment: Some("test".into()),
        cache_hit: false,
        cost_saved_usd: None,
    }
}

pub fn system_event(i: usize) -> SystemLogEvent {
    SystemLogEvent {
        event_id: new_event_id(),
        created_at: Utc::now(),
        level: "info".into(),
        component: "api".into(),
        message: format!("GET /x/{i}"),
        request_method: Some("GET".into()),
        request_path: Some(format!("/x/{i}")),
        status_code: Some(200),
        latency_ms: Some(0.25),
        company_id: None,
        user_id: None,
        request_id: None,
        error_type: None,
        metadata: None,
    }
}

pub async fn publish(redis: &TestRedis, events: &[LogEvent]) -> anyhow::Result<()> {
    let keys = QueueKeys::new(redis.prefix.clone());
    let mut conn = redis.connection().await?;
    for chunk in events.chunks(500) {
        let mut pipe = redis::pipe();
        for e in chunk {
            let (tag, payload) = queue::encode(e)?;
            pipe.xadd(
                keys.stream(LogStream::of(e)),
                "*",
                &[(TYPE_FIELD, tag.as_bytes()), (EVENT_FIELD, payload.as_slice())],
            )
            .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(())
}

pub async fn publish_raw(redis: &TestRedis, stream: LogStream, payload: &[u8]) -> anyhow::Result<()> {
    let keys = QueueKeys::new(redis.prefix.clone());
    let mut conn = redis.connection().await?;
    let tag = match stream {
        LogStream::LlmLogs => common_models::events::LLM_CALL_V1,
        LogStream::SystemLogs => common_models::events::SYSTEM_LOG_V1,
    };
    redis::cmd("XADD")
        .arg(keys.stream(stream))
        .arg("*")
        .arg(TYPE_FIELD)
        .arg(tag)
        .arg(EVENT_FIELD)
        .arg(payload)
        .query_async::<String>(&mut conn)
        .await?;
    Ok(())
}

pub async fn pending(redis: &TestRedis, stream: LogStream) -> anyhow::Result<usize> {
    let keys = QueueKeys::new(redis.prefix.clone());
    let mut conn = redis.connection().await?;
    let reply: redis::streams::StreamPendingReply =
        redis::cmd("XPENDING").arg(keys.stream(stream)).arg(CONSUMER_GROUP).query_async(&mut conn).await?;
    Ok(reply.count())
}

/// Entries not yet written and acknowledged: pending plus not yet delivered.
pub async fn unsettled(redis: &TestRedis, stream: LogStream) -> anyhow::Result<usize> {
    let keys = QueueKeys::new(redis.prefix.clone());
    let mut conn = redis.connection().await?;
    let groups: redis::streams::StreamInfoGroupsReply =
        redis::cmd("XINFO").arg("GROUPS").arg(keys.stream(stream)).query_async(&mut conn).await?;
    let group = groups
        .groups
        .into_iter()
        .find(|g| g.name == CONSUMER_GROUP)
        .ok_or_else(|| anyhow::anyhow!("no consumer group yet"))?;
    Ok(group.pending + group.lag.unwrap_or(usize::MAX))
}

pub async fn stream_len(redis: &TestRedis, key: &str) -> anyhow::Result<usize> {
    let mut conn = redis.connection().await?;
    Ok(redis::cmd("XLEN").arg(key).query_async(&mut conn).await?)
}

/// (rows, distinct event ids) of a table.
pub async fn counts(db: &TestDb, table: &str) -> anyhow::Result<(i64, i64)> {
    let total = test_support::query_count(&db.url, &format!("SELECT count(*) AS n FROM {table}")).await?;
    let distinct =
        test_support::query_count(&db.url, &format!("SELECT count(DISTINCT event_id) AS n FROM {table}")).await?;
    Ok((total, distinct))
}

/// Waits until `table` holds `expected` rows.
pub async fn wait_rows(db: &TestDb, table: &str, expected: i64, timeout: Duration) -> anyhow::Result<()> {
    test_support::wait_for(timeout, &format!("{expected} rows in {table}"), || async {
        match counts(db, table).await {
            Ok((n, _)) if n >= expected => Some(()),
            _ => None,
        }
    })
    .await
}
