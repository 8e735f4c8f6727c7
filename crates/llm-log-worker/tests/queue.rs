//! The worker's streams as an operator sees them: trimmed only below what every group
//! has acknowledged, and dead letters put back with the command-line tool.

mod common;

use std::time::Duration;

use common::*;
use common_models::events::LogEvent;
use common_models::queue::LogStream;
use diesel_async::SimpleAsyncConnection;
use task_queue::Keys;
use test_support::{TestDb, TestRedis};

/// The id of the oldest entry left in a stream.
async fn first_id(redis: &TestRedis, key: &str) -> anyhow::Result<Option<String>> {
    let mut conn = redis.connection().await?;
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(key).arg("-").arg("+").arg("COUNT").arg(1).query_async(&mut conn).await?;
    Ok(reply.ids.first().map(|e| e.id.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_group_on_a_stream_holds_its_trimming_back() -> anyhow::Result<()> {
    let db = TestDb::empty("trim").await?;
    let redis = TestRedis::new();
    let key = Keys::new(redis.prefix.clone()).stream(LogStream::LlmLogs.name());
    let mut conn = redis.connection().await?;
    // An audit consumer that will read the stream too, but has read nothing yet.
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("audit")
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(&mut conn)
        .await?;
    let worker = start(settings(&db, &redis)).await?;
    let events: Vec<LogEvent> = (0..3000).map(|i| LogEvent::LlmCall(llm_event(i))).collect();
    publish(&redis, &events).await?;
    db.wait_rows("llm_logs", 3000, Duration::from_secs(60)).await?;
    test_support::wait_for(Duration::from_secs(10), "the worker's group to settle", || async {
        (unsettled(&redis, LogStream::LlmLogs).await.ok()? == 0).then_some(())
    })
    .await?;
    // Several trims have run since: none removed what the audit group has not read.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(redis.xlen(&key).await?, 3000);

    // The audit group reads 1,000 entries and acknowledges the first 400 of them.
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("audit")
        .arg("auditor")
        .arg("COUNT")
        .arg(1000)
        .arg("STREAMS")
        .arg(&key)
        .arg(">")
        .query_async(&mut conn)
        .await?;
    let ids: Vec<String> = read.keys.iter().flat_map(|k| k.ids.iter().map(|e| e.id.clone())).collect();
    assert_eq!(ids.len(), 1000);
    redis::cmd("XACK").arg(&key).arg("audit").arg(&ids[..400]).query_async::<()>(&mut conn).await?;
    let oldest_unacknowledged = ids[400].clone();
    // Trimming follows, never past the audit group's oldest pending entry.
    test_support::wait_for(Duration::from_secs(10), "a trim below the audit group's pending entries", || async {
        (redis.xlen(&key).await.ok()? < 3000).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let len = redis.xlen(&key).await?;
    let first = first_id(&redis, &key).await?.unwrap_or_default();
    assert!(len >= 2600, "entries the audit group has not acknowledged were trimmed: {len} left");
    let id_order = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    assert!(id_order(&first) <= id_order(&oldest_unacknowledged), "{first} is past {oldest_unacknowledged}");
    redis.leaves_work_behind(); // the audit group keeps its backlog
    worker.stop().await
}

fn dead_letters(redis: &TestRedis, db: &TestDb, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-log-worker"))
        .env_clear()
        .env("REDIS_URL", &redis.url)
        .env("REDIS_KEY_PREFIX", &redis.prefix)
        .env("DATABASE_URL", &db.url)
        .env("LOG_LEVEL", "warn")
        .arg("dead-letters")
        .args(args)
        .output()?;
    anyhow::ensure!(out.status.success(), "dead-letters {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replayed_with_the_tool_becomes_its_row_once() -> anyhow::Result<()> {
    let db = TestDb::migrated(common_models::db::Database::Analytics).await?;
    let redis = TestRedis::new();
    // The database refuses one row, until someone fixes what it checks.
    db.connect().await?.batch_execute("ALTER TABLE llm_logs ADD CONSTRAINT no_probe CHECK (model <> 'probe')").await?;
    let worker = start(settings(&db, &redis)).await?;
    let mut refused = llm_event(7);
    refused.model = Some("probe".into());
    let refused_id = refused.event_id;
    let mut events = vec![LogEvent::LlmCall(refused)];
    events.extend((0..20).map(|i| LogEvent::LlmCall(llm_event(i))));
    publish(&redis, &events).await?;
    db.wait_rows("llm_logs", 20, Duration::from_secs(30)).await?;
    let dead_key = Keys::new(redis.prefix.clone()).dead_letter(LogStream::LlmLogs.name());
    test_support::wait_for(Duration::from_secs(10), "the refused row's dead letter", || async {
        (redis.xlen(&dead_key).await.ok()? == 1).then_some(())
    })
    .await?;

    let listed = dead_letters(&redis, &db, &["list"])?;
    let letter: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap_or_default())?;
    assert_eq!(letter["reason"], "rejected", "{listed}");
    assert!(letter["detail"].as_str().is_some_and(|d| d.contains("no_probe")), "{listed}");
    assert!(letter["payload"].as_str().is_some_and(|p| p.contains(&refused_id.to_string())), "{listed}");

    db.connect().await?.batch_execute("ALTER TABLE llm_logs DROP CONSTRAINT no_probe").await?;
    let replayed = dead_letters(&redis, &db, &["replay", "--all"])?;
    assert!(replayed.contains("llm_logs: 1 dead letters replayed"), "{replayed}");
    let row = format!("SELECT count(*) AS n FROM llm_logs WHERE event_id = '{refused_id}'");
    test_support::wait_for(Duration::from_secs(10), "the replayed row", || async {
        (test_support::query_count(&db.url, &row).await.ok()? == 1).then_some(())
    })
    .await?;

    // Replaying again finds nothing to replay, and the row stays single.
    let again = dead_letters(&redis, &db, &["replay", "--all"])?;
    assert!(again.contains("llm_logs: 0 dead letters replayed"), "{again}");
    let unknown = dead_letters(&redis, &db, &["replay", "--stream", "llm_logs", "--id", "1-1"])?;
    assert!(unknown.contains("llm_logs: 0 dead letters replayed"), "{unknown}");
    test_support::wait_for(Duration::from_secs(10), "everything settled", || async {
        (unsettled(&redis, LogStream::LlmLogs).await.ok()? == 0).then_some(())
    })
    .await?;
    assert_eq!(db.counts("llm_logs").await?, (21, 21));
    assert_eq!(redis.xlen(&dead_key).await?, 0);
    worker.stop().await
}
