//! The real binary, killed with SIGKILL mid-flow and restarted: nothing lost, nothing twice.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use common_models::events::LogEvent;
use common_models::queue::LogStream;
use diesel_async::SimpleAsyncConnection;
use test_support::{TestDb, TestRedis};
use tokio::process::{Child, Command};

fn spawn_worker(db: &TestDb, redis: &TestRedis, consumer: &str) -> anyhow::Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_llm-log-worker"))
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", &redis.url)
        .env("REDIS_KEY_PREFIX", &redis.prefix)
        .env("CONSUMER__NAME", consumer)
        .env("PORT", "0")
        .env("BIND_HOST", "127.0.0.1")
        .env("CONSUMER__BLOCK", "200ms")
        .env("CONSUMER__BATCH_SIZE", "500")
        .env("CONSUMER__RECLAIM_IDLE", "1s")
        .env("CONSUMER__RECLAIM_INTERVAL", "300ms")
        .env("LOG_FORMAT", "text")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_flow_then_restart_writes_every_event_exactly_once() -> anyhow::Result<()> {
    const TOTAL: usize = 10_000;
    let db = TestDb::migrated(common_models::db::Database::Analytics).await?;
    let redis = TestRedis::new();
    let mut first = spawn_worker(&db, &redis, "crashing")?;

    let events: Vec<LogEvent> = (0..TOTAL).map(|i| LogEvent::LlmCall(llm_event(i))).collect();
    let publisher = {
        let redis = std::sync::Arc::new(redis);
        let shared = redis.clone();
        let task = tokio::spawn(async move {
            for chunk in events.chunks(100) {
                publish(&shared, chunk).await?;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            anyhow::Ok(())
        });
        (redis, task)
    };
    let (redis, publisher) = publisher;

    // Once part of the flow is written, hold the table so the worker is caught with a
    // batch read but not committed, and kill it there, while events still arrive.
    db.wait_rows("llm_logs", 1500, Duration::from_secs(60)).await?;
    let mut locker = db.connect().await?;
    locker.batch_execute("BEGIN; LOCK TABLE llm_logs IN ACCESS EXCLUSIVE MODE").await?;
    test_support::wait_for(Duration::from_secs(30), "a batch in the worker's hands", || async {
        (pending(&redis, LogStream::LlmLogs).await.ok()? > 0).then_some(())
    })
    .await?;
    first.start_kill()?;
    first.wait().await?;
    locker.batch_execute("COMMIT").await?;
    let written_before_restart = db.counts("llm_logs").await?.0;
    let still_publishing = !publisher.is_finished();
    let held_by_dead_worker = pending(&redis, LogStream::LlmLogs).await?;
    eprintln!(
        "killed after {written_before_restart} rows; publisher still running: {still_publishing}; \
         entries pending with the dead consumer: {held_by_dead_worker}"
    );
    assert!(written_before_restart < TOTAL as i64, "the worker finished before it could be killed");
    assert!(held_by_dead_worker > 0, "the kill did not catch a batch in flight");

    publisher.await??;
    // A new consumer name, as a rescheduled pod would have: the dead consumer's
    // pending entries come back through XAUTOCLAIM.
    let mut second = spawn_worker(&db, &redis, "replacement")?;
    db.wait_rows("llm_logs", TOTAL as i64, Duration::from_secs(120)).await?;
    test_support::wait_for(Duration::from_secs(30), "no pending entries", || async {
        (pending(&redis, LogStream::LlmLogs).await.ok()? == 0).then_some(())
    })
    .await?;
    assert_eq!(db.counts("llm_logs").await?, (TOTAL as i64, TOTAL as i64));

    // SIGTERM: a graceful stop.
    let pid = second.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status()?;
    let status = tokio::time::timeout(Duration::from_secs(15), second.wait()).await??;
    assert!(status.success(), "graceful shutdown failed: {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_and_acknowledges_the_batch_in_hand() -> anyhow::Result<()> {
    let db = TestDb::migrated(common_models::db::Database::Analytics).await?;
    let redis = TestRedis::new();
    let mut worker = spawn_worker(&db, &redis, "graceful")?;
    publish(&redis, &[LogEvent::LlmCall(llm_event(0))]).await?;
    db.wait_rows("llm_logs", 1, Duration::from_secs(30)).await?;

    // Catch the worker mid-write: the table is held, so its batch waits on the lock.
    let mut locker = db.connect().await?;
    locker.batch_execute("BEGIN; LOCK TABLE llm_logs IN ACCESS EXCLUSIVE MODE").await?;
    let batch: Vec<LogEvent> = (1..301).map(|i| LogEvent::LlmCall(llm_event(i))).collect();
    publish(&redis, &batch).await?;
    test_support::wait_for(Duration::from_secs(30), "a batch in the worker's hands", || async {
        (pending(&redis, LogStream::LlmLogs).await.ok()? > 0).then_some(())
    })
    .await?;
    let pid = worker.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status()?;
    // The lock goes away well within the worker's lock timeout; the write completes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    locker.batch_execute("COMMIT").await?;

    let status = tokio::time::timeout(Duration::from_secs(15), worker.wait()).await??;
    assert!(status.success(), "graceful shutdown failed: {status}");
    // Everything the worker had taken is committed and acknowledged; anything it had
    // not yet read is still waiting in the stream, not lost.
    assert_eq!(pending(&redis, LogStream::LlmLogs).await?, 0, "the worker left its batch unacknowledged");
    let written = db.counts("llm_logs").await?;
    assert_eq!(written.0, written.1);
    assert_eq!(written.0 as usize + unsettled(&redis, LogStream::LlmLogs).await?, 301);
    // What it had not read yet stays queued for the next worker.
    redis.leaves_work_behind();
    Ok(())
}
