//! The worker against real Redis and PostgreSQL: batched idempotent writes, acks only
//! after commit, dead letters, outages.

mod common;

use std::time::Duration;

use common::*;
use common_models::db::Database;
use common_models::events::LogEvent;
use common_models::queue::LogStream;
use diesel_async::SimpleAsyncConnection;
use task_queue::Keys;
use test_support::{TestDb, TestRedis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_once_and_nothing_stays_pending() -> anyhow::Result<()> {
    let db = TestDb::empty("worker_basic").await?;
    let redis = TestRedis::new();
    let worker = start(settings(&db, &redis)).await?;

    let mut events: Vec<LogEvent> = (0..300).map(|i| LogEvent::LlmCall(llm_event(i))).collect();
    events.extend((0..200).map(|i| LogEvent::SystemLog(system_event(i))));
    // Every llm event a second time: a producer retry must not become a second row.
    let dupes: Vec<LogEvent> = events[..300].to_vec();
    publish(&redis, &events).await?;
    publish(&redis, &dupes).await?;

    db.wait_rows("llm_logs", 300, Duration::from_secs(30)).await?;
    db.wait_rows("system_logs", 200, Duration::from_secs(30)).await?;
    test_support::wait_for(Duration::from_secs(10), "no pending entries", || async {
        let p = pending(&redis, LogStream::LlmLogs).await.ok()? + pending(&redis, LogStream::SystemLogs).await.ok()?;
        (p == 0).then_some(())
    })
    .await?;
    assert_eq!(db.counts("llm_logs").await?, (300, 300));
    assert_eq!(db.counts("system_logs").await?, (200, 200));

    // The row carries what the event said.
    let tokens = test_support::query_count(
        &db.url,
        "SELECT sum(tokens_used)::bigint AS n FROM llm_logs WHERE usage_reported AND company_id = 7",
    )
    .await?;
    assert_eq!(tokens, 300 * 42);

    let metrics = reqwest_text(&format!("http://{}/metrics", worker.addr)).await?;
    assert!(metrics.contains("headhunter_log_worker_rows_written_total{table=\"llm_logs\"} 300"), "{metrics}");
    assert!(metrics.contains("headhunter_log_worker_duplicates_ignored_total{table=\"llm_logs\"} 300"), "{metrics}");
    worker.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_redelivered_after_a_copy_are_not_stored_twice() -> anyhow::Result<()> {
    let db = TestDb::empty("worker_redelivery").await?;
    let redis = TestRedis::new();
    let worker = start(settings(&db, &redis)).await?;
    // Nanosecond timestamps, as any producer may send: both write paths must cut
    // them to the same stored key.
    let events: Vec<LogEvent> = (0..20).map(|i| LogEvent::LlmCall(llm_event(i))).collect();
    publish(&redis, &events).await?;
    db.wait_rows("llm_logs", 20, Duration::from_secs(30)).await?;
    // The same events again, as after a crash between commit and acknowledgement.
    publish(&redis, &events).await?;
    test_support::wait_for(Duration::from_secs(10), "the redelivery to be settled", || async {
        (unsettled(&redis, LogStream::LlmLogs).await.ok()? == 0).then_some(())
    })
    .await?;
    let metrics = reqwest_text(&format!("http://{}/metrics", worker.addr)).await?;
    assert!(metrics.contains("headhunter_log_worker_duplicates_ignored_total{table=\"llm_logs\"} 20"), "{metrics}");
    assert!(metrics.contains("copy_fallbacks_total{reason=\"duplicate\"}"), "{metrics}");
    assert_eq!(db.counts("llm_logs").await?, (20, 20));
    worker.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_are_dead_lettered_and_the_rest_written() -> anyhow::Result<()> {
    let db = TestDb::empty("worker_poison").await?;
    let redis = TestRedis::new();
    let keys = Keys::new(redis.prefix.clone());

    let before: Vec<LogEvent> = (0..50).map(|i| LogEvent::LlmCall(llm_event(i))).collect();
    publish(&redis, &before).await?;
    publish_raw(&redis, LogStream::LlmLogs, b"{not json").await?;
    // Decodes fine, but PostgreSQL refuses a NUL escape inside jsonb.
    let mut refused = llm_event(999);
    refused.metadata = Some(serde_json::json!({"bad": "nul \u{0000} here"}));
    let refused_id = refused.event_id;
    publish(&redis, &[LogEvent::LlmCall(refused)]).await?;
    let after: Vec<LogEvent> = (50..100).map(|i| LogEvent::LlmCall(llm_event(i))).collect();
    publish(&redis, &after).await?;

    let worker = start(settings(&db, &redis)).await?;
    db.wait_rows("llm_logs", 100, Duration::from_secs(30)).await?;
    test_support::wait_for(Duration::from_secs(10), "two dead letters", || async {
        (redis.xlen(&keys.dead_letter(LogStream::LlmLogs.name())).await.ok()? == 2).then_some(())
    })
    .await?;
    test_support::wait_for(Duration::from_secs(10), "no pending entries", || async {
        (pending(&redis, LogStream::LlmLogs).await.ok()? == 0).then_some(())
    })
    .await?;
    assert_eq!(db.counts("llm_logs").await?, (100, 100));
    let refused_rows = test_support::query_count(
        &db.url,
        &format!("SELECT count(*) AS n FROM llm_logs WHERE event_id = '{refused_id}'"),
    )
    .await?;
    assert_eq!(refused_rows, 0);

    // The dead letter keeps the payload and says why.
    let mut conn = redis.connection().await?;
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys.dead_letter(LogStream::LlmLogs.name()))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await?;
    let reasons: Vec<String> = dead.ids.iter().filter_map(|e| e.get::<String>("dead_reason")).collect();
    assert_eq!(reasons, vec!["undecodable".to_owned(), "rejected".to_owned()]);
    let metrics = reqwest_text(&format!("http://{}/metrics", worker.addr)).await?;
    assert!(
        metrics
            .contains("queue_dead_lettered_total{group=\"llm-log-worker\",reason=\"rejected\",stream=\"llm_logs\"} 1"),
        "{metrics}"
    );
    worker.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_refusing_connections_delays_rows_but_loses_none() -> anyhow::Result<()> {
    let db = TestDb::empty("worker_outage").await?;
    let redis = TestRedis::new();
    let worker = start(settings(&db, &redis)).await?;
    let first: Vec<LogEvent> = (0..100).map(|i| LogEvent::LlmCall(llm_event(i))).collect();
    publish(&redis, &first).await?;
    db.wait_rows("llm_logs", 100, Duration::from_secs(30)).await?;

    db.set_accepting_connections(false).await?;
    let during: Vec<LogEvent> = (100..1100).map(|i| LogEvent::LlmCall(llm_event(i))).collect();
    publish(&redis, &during).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Whatever the worker took during the outage it still holds, unacknowledged.
    let held = pending(&redis, LogStream::LlmLogs).await?;
    assert!(held > 0, "the worker read nothing during the outage");

    db.set_accepting_connections(true).await?;
    db.wait_rows("llm_logs", 1100, Duration::from_secs(30)).await?;
    assert_eq!(db.counts("llm_logs").await?, (1100, 1100));
    worker.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_table_delays_rows_but_loses_none() -> anyhow::Result<()> {
    let db = TestDb::empty("worker_lock").await?;
    let redis = TestRedis::new();
    let worker = start(settings(&db, &redis)).await?;
    publish(&redis, &[LogEvent::LlmCall(llm_event(0))]).await?;
    db.wait_rows("llm_logs", 1, Duration::from_secs(30)).await?;

    let mut locker = db.connect().await?;
    locker.batch_execute("BEGIN; LOCK TABLE llm_logs IN ACCESS EXCLUSIVE MODE").await?;
    let during: Vec<LogEvent> = (1..501).map(|i| LogEvent::LlmCall(llm_event(i))).collect();
    publish(&redis, &during).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    locker.batch_execute("COMMIT").await?;

    db.wait_rows("llm_logs", 501, Duration::from_secs(30)).await?;
    assert_eq!(db.counts("llm_logs").await?, (501, 501));
    let metrics = reqwest_text(&format!("http://{}/metrics", worker.addr)).await?;
    assert!(
        metrics.contains("queue_handler_errors_total{group=\"llm-log-worker\",kind=\"transient\"}"),
        "lock timeouts were not retried: {metrics}"
    );
    worker.stop().await
}

/// Up, then down, then up again gives exactly the schema of up alone (as pg_dump prints
/// it), and down leaves nothing of ours behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_migration_folders_go_up_down_and_up_to_the_same_schema() -> anyhow::Result<()> {
    use common_models::db::{revert_migrations, run_migrations};
    for kind in [Database::Main, Database::Analytics] {
        let once = TestDb::empty("schema_once").await?;
        let up = run_migrations(&once.url, kind).await?;
        assert!(!up.is_empty());
        let twice = TestDb::empty("schema_twice").await?;
        run_migrations(&twice.url, kind).await?;
        let down = revert_migrations(&twice.url, kind).await?;
        assert_eq!(down.len(), up.len());
        let left = schema(&twice.url)?;
        let objects: Vec<&str> =
            left.lines().filter(|l| l.starts_with("CREATE ") && !l.contains("__diesel_schema_migrations")).collect();
        assert!(objects.is_empty(), "{kind:?}: down left {objects:?}");
        assert_eq!(run_migrations(&twice.url, kind).await?, up);
        let (a, b) = (schema(&once.url)?, schema(&twice.url)?);
        assert!(a.contains("CREATE TABLE"), "{kind:?}: pg_dump printed no schema: {a}");
        if a != b {
            let first_difference = a.lines().zip(b.lines()).find(|(x, y)| x != y);
            panic!("{kind:?}: up → down → up differs from up; first difference: {first_difference:?}");
        }
    }
    Ok(())
}

/// `pg_dump --schema-only`, without its comments and the per-run `\restrict` keys.
fn schema(url: &str) -> anyhow::Result<String> {
    let out =
        std::process::Command::new("pg_dump").args(["--schema-only", "--no-owner", "--no-privileges", url]).output()?;
    anyhow::ensure!(out.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter(|l| !l.starts_with("--") && !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n"))
}

async fn reqwest_text(url: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = url.trim_start_matches("http://");
    let (host, path) = url.split_once('/').unwrap_or((url, ""));
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

/// Events at the edges of each column type: long, multi-byte and NUL-holding text,
/// costs with more decimals than the column keeps, large and negative numbers, nested
/// and non-ASCII JSON, NULL everywhere it may be.
fn edge_events() -> (Vec<common_models::events::LlmCallEvent>, Vec<common_models::events::SystemLogEvent>) {
    // 0.12345678904999999 rounds to …890 from its text, to …891 from 15 digits.
    let costs = [
        0.12345678904999999,
        0.0000198,
        0.1 + 0.2,
        1234.56789012345,
        0.00000000005,
        0.0,
        99999.9999999999,
        -0.5,
        1e-12,
    ];
    let mut llm: Vec<_> = costs
        .iter()
        .enumerate()
        .map(|(i, &cost)| {
            let mut e = llm_event(i);
            e.cost_usd = Some(cost);
            e.cost_saved_usd = (i % 2 == 0).then_some(cost / 3.0);
            e.created_at += chrono::Duration::nanoseconds(123_456_789 + i as i64);
            e
        })
        .collect();
    let mut odd = llm_event(100);
    odd.action = "é".repeat(150); // cut to 100 characters, not bytes
    odd.message = Some("line \"one\"\nline two,\ttab \\ back\0slash".into());
    odd.model = None;
    odd.request_id = None;
    odd.tokens_input = Some(i32::MAX);
    odd.tokens_output = Some(-1);
    odd.tokens_total = None;
    odd.usage_reported = false;
    odd.cost_usd = None;
    odd.http_status = Some(i16::MIN);
    odd.streaming = true;
    odd.cache_hit = true;
    odd.user_id = Some(common_models::ids::UserId(i64::MAX));
    odd.interview_id = Some(common_models::ids::InterviewId(1));
    odd.error_type = Some("upstream_timeout".into());
    odd.error_message = Some("ünïcode 🚀 and \"quotes\"".into());
    odd.metadata = Some(serde_json::json!({"nested": {"list": [1, 2.5, null, "ß"]}, "empty": {}, "q": "a\"b"}));
    odd.tokens_cached_input = Some(0);
    odd.tokens_reasoning = Some(7);
    llm.push(odd);
    let mut bare = llm_event(101);
    bare.message = None;
    bare.metadata = None;
    bare.deployment_version = None;
    bare.deployment_environment = None;
    bare.price_table_version = None;
    bare.latency_ms = None;
    bare.http_status = None;
    llm.push(bare);
    let mut system: Vec<_> = (0..3).map(system_event).collect();
    system[1].latency_ms = Some(0.1 + 0.2);
    system[1].metadata = Some(serde_json::json!({"path": "/ä?x=1"}));
    system[2].latency_ms = None;
    system[2].status_code = Some(503);
    system[2].level = "warning-and-longer".into();
    (llm, system)
}

/// Each row of `table` as the text of its `columns`, ordered by event id.
async fn stored_text(url: &str, table: &str, columns: &str) -> anyhow::Result<Vec<String>> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let sql = format!("SELECT t::text FROM (SELECT {columns} FROM {table}) t ORDER BY t.event_id");
    Ok(client.query(&sql, &[]).await?.iter().map(|row| row.get(0)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_and_insert_paths_store_identical_rows() -> anyhow::Result<()> {
    use llm_log_worker::copy::CopyWriter;
    use llm_log_worker::writer::{AnalyticsWriter, LLM_COLUMNS, SYSTEM_COLUMNS};

    let (llm, system) = edge_events();
    let llm: Vec<_> = llm.iter().collect();
    let system: Vec<_> = system.iter().collect();
    let (copied, inserted) =
        (TestDb::migrated(Database::Analytics).await?, TestDb::migrated(Database::Analytics).await?);
    let timeout = Duration::from_secs(10);
    for db in [&copied, &inserted] {
        let pool = service_kit::db::build_pool(&db.url, "test", 1)?;
        let writer = AnalyticsWriter::new(pool, timeout, timeout);
        writer.ensure_partitions_for(&llm, &system).await?;
        if std::ptr::eq(db, &copied) {
            let wrote = CopyWriter::new(&db.url, timeout, timeout)
                .write(&llm, &system)
                .await
                .map_err(|e| anyhow::anyhow!("COPY failed: {e:?}"))?;
            assert_eq!((wrote.llm_logs, wrote.system_logs), (llm.len(), system.len()));
        } else {
            let wrote = writer.write(&llm, &system).await?;
            assert_eq!((wrote.llm_logs, wrote.system_logs), (llm.len(), system.len()));
        }
    }
    for (table, columns) in [("llm_logs", LLM_COLUMNS), ("system_logs", SYSTEM_COLUMNS)] {
        let (a, b) =
            (stored_text(&copied.url, table, columns).await?, stored_text(&inserted.url, table, columns).await?);
        assert_eq!(a.len(), if table == "llm_logs" { llm.len() } else { system.len() });
        assert_eq!(a, b, "{table}: COPY and INSERT stored different rows");
    }
    // A cost is the decimal its text says, rounded by the column, as text input would.
    for e in &llm {
        let Some(cost) = e.cost_usd else { continue };
        let same = test_support::query_count(
            &copied.url,
            &format!(
                "SELECT count(*) AS n FROM llm_logs WHERE event_id = '{}' AND cost_usd = '{cost}'::numeric(16, 10)",
                e.event_id
            ),
        )
        .await?;
        assert_eq!(same, 1, "cost {cost} stored otherwise");
    }
    // Each row's inserted_by is its transaction's id.
    let stamped = test_support::query_count(
        &copied.url,
        "SELECT count(DISTINCT inserted_by) AS n FROM llm_logs WHERE inserted_by IS NOT NULL",
    )
    .await?;
    assert_eq!(stamped, 1);
    Ok(())
}

/// A batch the COPY path hands over in memory is folded from there only where the
/// database holds exactly its rows: the rollups then equal those folded from the rows
/// read back (edge values: costs past the column's scale, cut texts, times to the
/// nanosecond). A batch changed after its commit (a re-priced row, a deleted one) is
/// read from the database, and the rollups equal a rebuild from the raw rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_batches_fold_as_their_stored_rows_and_changed_ones_are_read_back() -> anyhow::Result<()> {
    use std::sync::Arc;

    use llm_log_worker::copy::CopyWriter;
    use llm_log_worker::handoff::Handoff;
    use llm_log_worker::rollup::{self, Folder};
    use llm_log_worker::writer::AnalyticsWriter;

    let (mut llm, _) = edge_events();
    let mut edge = llm_event(102);
    edge.model = Some("gpt\0-4o".into());
    let hour = edge.created_at.timestamp().div_euclid(3600) * 3600;
    edge.created_at = chrono::DateTime::from_timestamp(hour, 0).unwrap_or_default() - chrono::Duration::nanoseconds(1);
    llm.push(edge);
    let llm: Vec<_> = llm.iter().collect();
    let n = llm.len() as u64;
    let timeout = Duration::from_secs(10);
    let (handed, read) = (TestDb::migrated(Database::Analytics).await?, TestDb::migrated(Database::Analytics).await?);
    let handoff = Arc::new(Handoff::default());
    let copy_to = async |db: &TestDb, handoff: Option<Arc<Handoff>>| -> anyhow::Result<CopyWriter> {
        let pool = service_kit::db::build_pool(&db.url, "test", 1)?;
        AnalyticsWriter::new(pool, timeout, timeout).ensure_partitions_for(&llm, &[]).await?;
        let copy = CopyWriter::new(&db.url, timeout, timeout);
        Ok(match handoff {
            Some(handoff) => copy.handing(handoff),
            None => copy,
        })
    };
    let copy_failed = |e| anyhow::anyhow!("COPY failed: {e:?}");
    let mut copy = copy_to(&handed, Some(handoff.clone())).await?;
    copy.write(&llm, &[]).await.map_err(copy_failed)?;
    copy_to(&read, None).await?.write(&llm, &[]).await.map_err(copy_failed)?;
    let mut folder = Folder::new(&handed.url).handed(handoff.clone());
    assert_eq!(fold_all(&mut folder).await?, (n, n), "the batch was not folded from memory");
    assert_eq!(fold_all(&mut Folder::new(&read.url)).await?, (n, 0));
    assert_eq!(snapshot(&handed).await?, snapshot(&read).await?, "handed calls fold differently from their rows");

    // Two more batches; after their commits, a row of the first is re-priced and a row
    // of the second deleted. Neither is taken from memory.
    let more: Vec<_> = (200..210)
        .map(|i| {
            let mut e = llm_event(i);
            e.cost_usd = Some(0.001 * i as f64);
            e
        })
        .collect();
    let more: Vec<_> = more.iter().collect();
    copy.write(&more[..5], &[]).await.map_err(copy_failed)?;
    copy.write(&more[5..], &[]).await.map_err(copy_failed)?;
    let mut conn = handed.connect().await?;
    conn.batch_execute(&format!(
        "UPDATE llm_logs SET cost_usd = 0.5 WHERE event_id = '{}'; DELETE FROM llm_logs WHERE event_id = '{}'",
        more[0].event_id, more[5].event_id
    ))
    .await?;
    assert_eq!(fold_all(&mut folder).await?, (9, 0), "a changed batch was folded from memory");
    let folded = snapshot(&handed).await?;
    let now = chrono::Utc::now();
    rollup::rebuild(&mut conn, now - chrono::TimeDelta::days(1), now + chrono::TimeDelta::hours(1), |_, _| ()).await?;
    assert_eq!(snapshot(&handed).await?, folded, "the folded rollups differ from a rebuild of the raw rows");
    Ok(())
}

/// Steps until the rollups hold every committed row (a transaction left open elsewhere
/// in the cluster holds a step back); returns the calls folded, and those from memory.
async fn fold_all(folder: &mut llm_log_worker::rollup::Folder) -> anyhow::Result<(u64, u64)> {
    let (mut calls, mut handed) = (0, 0);
    let started = std::time::Instant::now();
    loop {
        let step = folder.step().await?;
        (calls, handed) = (calls + step.calls, handed + step.handed);
        if folder.backlog().await? == 0 {
            return Ok((calls, handed));
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "the rollups lag");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
