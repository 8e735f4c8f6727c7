#![allow(dead_code)]

use common_models::events::LogEvent;
use common_models::queue::{LOG_WORKER_GROUP, LogStream};
use diesel_async::RunQueryDsl;
use llm_log_worker::WorkerSettings;
use service_kit::config::{ConnectionUrl, LogFormat};
use task_queue::{Entry, Keys};
use test_support::{Service, TestDb, TestRedis};

pub fn settings(db: &TestDb, redis: &TestRedis) -> WorkerSettings {
    let mut s = WorkerSettings::defaults().unwrap_or_else(|e| panic!("defaults: {e}")).reacting_fast();
    s.database.url = ConnectionUrl::new(&db.url);
    s.redis.url = ConnectionUrl::new(&redis.url);
    s.redis.key_prefix = redis.prefix.clone();
    s.consumer.consumer = format!("{}worker", redis.prefix);
    s.logging.format = LogFormat::Text;
    s
}

pub async fn start(settings: WorkerSettings) -> anyhow::Result<Service> {
    Service::start("llm-log-worker", |l, rx| llm_log_worker::run(settings, l, rx)).await
}

#[allow(unused_imports)]
pub use test_support::fixtures::{llm_event, system_event};

/// Adds events to their streams as a producer would (one pipeline per 500).
pub async fn publish(redis: &TestRedis, events: &[LogEvent]) -> anyhow::Result<()> {
    let keys = Keys::new(redis.prefix.clone());
    let mut conn = redis.connection().await?;
    for chunk in events.chunks(500) {
        let mut pipe = redis::pipe();
        for e in chunk {
            let entry = match e {
                LogEvent::LlmCall(e) => Entry::encode(e)?,
                LogEvent::SystemLog(e) => Entry::encode(e)?,
            };
            pipe.xadd(
                keys.stream(&entry.stream),
                "*",
                &[
                    (task_queue::task::TYPE_FIELD, entry.tag.as_bytes()),
                    (task_queue::task::PAYLOAD_FIELD, &entry.payload[..]),
                ],
            )
            .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(())
}

/// Adds an entry with a valid type tag but `payload` as its payload.
pub async fn publish_raw(redis: &TestRedis, stream: LogStream, payload: &[u8]) -> anyhow::Result<()> {
    let keys = Keys::new(redis.prefix.clone());
    let mut conn = redis.connection().await?;
    let tag = match stream {
        LogStream::LlmLogs => "llm_call.v1",
        LogStream::SystemLogs => "system_log.v1",
    };
    redis::cmd("XADD")
        .arg(keys.stream(stream.name()))
        .arg("*")
        .arg(task_queue::task::TYPE_FIELD)
        .arg(tag)
        .arg(task_queue::task::PAYLOAD_FIELD)
        .arg(payload)
        .query_async::<String>(&mut conn)
        .await?;
    Ok(())
}

pub async fn pending(redis: &TestRedis, stream: LogStream) -> anyhow::Result<usize> {
    let keys = Keys::new(redis.prefix.clone());
    let mut conn = redis.connection().await?;
    let reply: redis::streams::StreamPendingReply =
        redis::cmd("XPENDING").arg(keys.stream(stream.name())).arg(LOG_WORKER_GROUP).query_async(&mut conn).await?;
    Ok(reply.count())
}

/// Entries not yet written and acknowledged: pending plus not yet delivered.
pub async fn unsettled(redis: &TestRedis, stream: LogStream) -> anyhow::Result<usize> {
    let keys = Keys::new(redis.prefix.clone());
    let mut conn = redis.connection().await?;
    let groups: redis::streams::StreamInfoGroupsReply =
        redis::cmd("XINFO").arg("GROUPS").arg(keys.stream(stream.name())).query_async(&mut conn).await?;
    let group = groups
        .groups
        .into_iter()
        .find(|g| g.name == LOG_WORKER_GROUP)
        .ok_or_else(|| anyhow::anyhow!("no consumer group yet"))?;
    Ok(group.pending + group.lag.unwrap_or(usize::MAX))
}

#[derive(diesel::QueryableByName)]
pub struct Snapshot {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub s: String,
}

/// The rollup tables as text, rows sorted: equal snapshots, equal tables.
pub async fn snapshot(db: &TestDb) -> anyhow::Result<String> {
    let mut conn = db.connect().await?;
    let row: Snapshot = diesel::sql_query(
        "SELECT coalesce((SELECT string_agg(t::text, E'\\n' ORDER BY t::text) FROM llm_usage_hourly t), '') \
         || E'\\n--\\n' || coalesce((SELECT string_agg(m::text, E'\\n' ORDER BY m::text) FROM llm_usage_hourly_models m), '') \
         || E'\\n--\\n' || coalesce((SELECT string_agg(g::text, E'\\n' ORDER BY g::text) FROM llm_usage_hourly_grains g), '') \
         || E'\\n--\\n' || coalesce((SELECT string_agg(o::text, E'\\n' ORDER BY o::text) FROM llm_usage_hourly_totals o), '') \
         AS s",
    )
    .get_result(&mut conn)
    .await?;
    Ok(row.s)
}
