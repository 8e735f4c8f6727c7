//! Hourly rollups kept by the worker: exact under redelivery and late events, and equal
//! to a rebuild from the raw rows (the `rebuild-rollups` command, run as a user would).

mod common;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::*;
use common_models::events::LogEvent;
use common_models::ids::{CompanyId, UserId};
use common_models::queue::LogStream;
use diesel_async::RunQueryDsl;
use test_support::{TestDb, TestRedis};

async fn number(db: &TestDb, sql: &str) -> anyhow::Result<i64> {
    test_support::query_count(&db.url, sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_count_each_call_once_and_match_a_rebuild() -> anyhow::Result<()> {
    let db = TestDb::empty("worker_rollups").await?;
    let redis = TestRedis::new();
    let worker = start(settings(&db, &redis)).await?;

    // A varied hour's traffic: three companies, two models, users, errors without usage,
    // cache hits, a model without a price, streams with a first token, latencies from
    // 0 ms to a minute; plus late events from 3 hours and 40 days ago.
    let now = Utc::now();
    let events: Vec<LogEvent> = (0..600)
        .map(|i| {
            let mut e = llm_event(i);
            e.company_id = Some(CompanyId(1 + (i % 3) as i64));
            e.user_id = (i % 4 == 0).then_some(UserId(100 + (i % 8) as i64));
            e.model = Some(if i % 5 == 0 { "gpt-4o" } else { "gpt-4o-mini" }.into());
            e.latency_ms = Some(((i * 97) % 60_000) as i32);
            e.cost_usd = Some(0.0001 * (1 + i % 7) as f64);
            if i % 11 == 0 {
                (e.error_type, e.http_status, e.usage_reported) = (Some("upstream_error".into()), Some(502), false);
                (e.tokens_input, e.tokens_output, e.tokens_total, e.cost_usd) = (None, None, None, None);
            } else if i % 13 == 0 {
                (e.cache_hit, e.cost_saved_usd, e.cost_usd) = (true, Some(0.002), Some(0.0));
            } else if i % 17 == 0 {
                (e.model, e.cost_usd) = (Some("unpriced-model".into()), None);
            } else if i % 2 == 0 {
                (e.streaming, e.time_to_first_token_ms) = (true, Some((i % 900) as i32));
            }
            if i % 50 == 1 {
                e.created_at = now - TimeDelta::hours(3);
            }
            if i % 100 == 2 {
                e.created_at = now - TimeDelta::days(40);
            }
            LogEvent::LlmCall(e)
        })
        .collect();
    publish(&redis, &events[..400]).await?;
    db.wait_rows("llm_logs", 400, Duration::from_secs(30)).await?;
    // A redelivery of stored events mixed with new ones (the INSERT path), then every
    // event once more (a producer replaying its spool).
    publish(&redis, &events[300..]).await?;
    db.wait_rows("llm_logs", 600, Duration::from_secs(30)).await?;
    publish(&redis, &events).await?;
    test_support::wait_for(Duration::from_secs(20), "the redeliveries to be settled", || async {
        (unsettled(&redis, LogStream::LlmLogs).await.ok()? == 0).then_some(())
    })
    .await?;
    assert_eq!(db.counts("llm_logs").await?, (600, 600));
    test_support::wait_for(Duration::from_secs(120), "the rollups to take every row", || async {
        (number(&db, "SELECT (raw_rows + pending_rows)::int8 AS n FROM llm_usage_backlog").await.ok()? == 0)
            .then_some(())
    })
    .await?;

    // Each call counted once, in its own UTC hour, with its figures.
    assert_eq!(number(&db, "SELECT sum(calls)::bigint AS n FROM llm_usage_hourly").await?, 600);
    assert_eq!(number(&db, "SELECT sum(calls)::bigint AS n FROM llm_usage_hourly_models").await?, 600);
    let per_hour_mismatches = number(
        &db,
        "SELECT count(*) AS n FROM (SELECT date_trunc('hour', created_at, 'UTC') AS hour, company_id, count(*) AS calls, \
         sum(cost_usd) AS cost FROM llm_logs GROUP BY 1, 2) raw FULL JOIN (SELECT hour, company_id, sum(calls) AS calls, \
         sum(cost_usd) AS cost FROM llm_usage_hourly GROUP BY 1, 2) r USING (hour, company_id) \
         WHERE raw.calls IS DISTINCT FROM r.calls OR coalesce(raw.cost, 0) IS DISTINCT FROM r.cost",
    )
    .await?;
    assert_eq!(per_hour_mismatches, 0, "rollup hours and companies disagree with the raw rows");
    let hours = number(&db, "SELECT count(DISTINCT hour) AS n FROM llm_usage_hourly").await?;
    assert!(hours >= 3, "the late events have hours of their own: {hours} hours");
    let errors =
        number(&db, "SELECT sum(calls)::bigint AS n FROM llm_usage_hourly WHERE error_type = 'upstream_error'");
    assert_eq!(errors.await?, (0..600).filter(|i| i % 11 == 0).count() as i64);
    let unpriced = number(&db, "SELECT sum(unpriced_calls)::bigint AS n FROM llm_usage_hourly").await?;
    assert_eq!(unpriced, (0..600).filter(|i| i % 11 != 0 && i % 13 != 0 && i % 17 == 0).count() as i64);
    let hits = number(&db, "SELECT sum(cache_hits)::bigint AS n FROM llm_usage_hourly").await?;
    assert_eq!(hits, (0..600).filter(|i| i % 11 != 0 && i % 13 == 0).count() as i64);
    // Every latency landed in exactly one histogram bucket.
    let counted =
        number(&db, "SELECT sum(b)::bigint AS n FROM llm_usage_hourly, unnest(latency_ms_histogram) AS b").await?;
    assert_eq!(counted, 600);
    let first_tokens =
        number(&db, "SELECT sum(b)::bigint AS n FROM llm_usage_hourly, unnest(ttft_ms_histogram) AS b").await?;
    assert_eq!(first_tokens, number(&db, "SELECT count(time_to_first_token_ms) AS n FROM llm_logs").await?);

    // Histograms are stored trimmed to their counted buckets, in every rollup table.
    for table in ["llm_usage_hourly", "llm_usage_hourly_models", "llm_usage_hourly_grains"] {
        let untrimmed = number(
            &db,
            &format!(
                "SELECT count(*) AS n FROM {table}, LATERAL (VALUES (latency_ms_histogram), (ttft_ms_histogram)) AS v(h) \
                 WHERE h[array_lower(h, 1)] = 0 OR h[array_upper(h, 1)] = 0"
            ),
        )
        .await?;
        assert_eq!(untrimmed, 0, "{table} holds histograms with empty end buckets");
    }

    // Every small grain holds every call, its errors and its latencies (the per-user
    // grain keeps no histograms), and per company and hour the same cost as the raw rows.
    for grain in common_models::usage::GRAINS {
        let id = grain.id();
        let of = |what: &str| format!("SELECT {what} AS n FROM llm_usage_hourly_grains WHERE grain = {id}");
        assert_eq!(number(&db, &of("sum(calls)::bigint")).await?, 600, "grain {grain:?}");
        assert_eq!(number(&db, &of("sum(errors)::bigint")).await?, (0..600).filter(|i| i % 11 == 0).count() as i64);
        let timed = number(
            &db,
            &format!("SELECT coalesce(sum(b), 0)::bigint AS n FROM llm_usage_hourly_grains, unnest(latency_ms_histogram) AS b WHERE grain = {id}"),
        )
        .await?;
        assert_eq!(timed, if grain.histograms { 600 } else { 0 }, "grain {grain:?}");
    }
    let per_company = common_models::usage::Grain::covering(&["company_id"], true).map(|g| g.id());
    let company_hours_off = number(
        &db,
        &format!("SELECT count(*) AS n FROM (SELECT date_trunc('hour', created_at, 'UTC') AS hour, company_id, count(*) AS calls, \
         coalesce(sum(cost_usd), 0) AS cost FROM llm_logs GROUP BY 1, 2) raw FULL JOIN (SELECT hour, company_id, calls, \
         cost_usd AS cost FROM llm_usage_hourly_grains WHERE grain = {}) g USING (hour, company_id) \
         WHERE raw.calls IS DISTINCT FROM g.calls OR raw.cost IS DISTINCT FROM g.cost", per_company.unwrap_or_default()),
    )
    .await?;
    assert_eq!(company_hours_off, 0, "the per-company grain disagrees with the raw rows");
    // The totals hold the all-company grains' sums, row for row, and nothing else.
    let columns = "grain, hour, company_id, action, model, errors, calls, calls_without_usage, unpriced_calls, \
        tokens_input, tokens_output, cost_usd, cache_hits, cost_saved_usd, streaming_calls, latency_ms_sum, \
        tokens_cached_input, tokens_reasoning";
    let grains = format!("SELECT {columns} FROM llm_usage_hourly_grains WHERE grain IN (7, 13, 14)");
    let totals = format!("SELECT {columns} FROM llm_usage_hourly_totals");
    let totals_off = number(
        &db,
        &format!(
            "SELECT count(*) AS n FROM (({grains} EXCEPT ALL {totals}) UNION ALL ({totals} EXCEPT ALL {grains})) d"
        ),
    )
    .await?;
    assert_eq!(totals_off, 0, "the totals disagree with the all-company grains");
    assert!(number(&db, "SELECT count(*) AS n FROM llm_usage_hourly_totals").await? > 0);

    // A rebuild of the whole range from the raw rows gives the same table, twice.
    let incremental = snapshot(&db).await?;
    let from = (now - TimeDelta::days(41)).format("%Y-%m-%d").to_string();
    let to = (now + TimeDelta::hours(2)).to_rfc3339();
    for _ in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-log-worker"))
            .env_clear()
            .env("DATABASE_URL", &db.url)
            .env("LOG_FORMAT", "text")
            .args(["rebuild-rollups", "--from", &from, "--to", &to])
            .output()?;
        assert!(out.status.success(), "rebuild failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("rebuilding rollups: day 1/"), "no progress shown");
        assert_eq!(snapshot(&db).await?, incremental, "the rebuild differs from the incremental rollups");
    }
    worker.stop().await
}

/// A migrated analytics database, and a batch writer for it.
async fn database_and_writer() -> anyhow::Result<(TestDb, llm_log_worker::writer::AnalyticsWriter)> {
    let db = TestDb::migrated(common_models::db::Database::Analytics).await?;
    let pool = service_kit::db::build_pool(&db.url, "rollup-test", 2)?;
    Ok((db, llm_log_worker::writer::AnalyticsWriter::new(pool, Duration::from_secs(5), Duration::from_secs(30))))
}

/// The calls the finest rollup holds.
const CALLS: &str = "SELECT coalesce(sum(calls), 0)::int8 AS n FROM llm_usage_hourly";

/// Raw rows as a writer's batch stores them (its transaction id in `inserted_by`), `n`
/// of them, in a transaction `conn` leaves open.
async fn open_batch(conn: &mut diesel_async::AsyncPgConnection, company: i64, n: i64) -> anyhow::Result<()> {
    use diesel_async::SimpleAsyncConnection;
    conn.batch_execute(&format!(
        "BEGIN; INSERT INTO llm_logs (event_id, created_at, action, company_id, model, usage_reported, tokens_input, \
           tokens_output, cost_usd, latency_ms, inserted_by) \
         SELECT gen_random_uuid(), now() - i * interval '1 second', 'chat', {company}, 'gpt-4o-mini', true, 100, 10, \
           0.0001, 100 + i, pg_current_xact_id() FROM generate_series(1, {n}) AS i"
    ))
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_commits_late_is_rolled_up_once_and_one_rolled_back_never() -> anyhow::Result<()> {
    use diesel_async::SimpleAsyncConnection;
    use llm_log_worker::rollup;
    let (db, writer) = database_and_writer().await?;
    let raw_backlog = "SELECT raw_rows AS n FROM llm_usage_backlog";
    let write = async |range: std::ops::Range<usize>| {
        let events: Vec<_> = range.map(llm_event).collect();
        let refs: Vec<_> = events.iter().collect();
        writer.write(&refs, &[]).await
    };
    let mut conn = db.connect().await?;
    let mut folder = rollup::Folder::new(&db.url);

    // Folded as usual.
    write(0..100).await?;
    assert!(folder.catch_up(Duration::from_secs(120)).await?, "the rollups lag");
    assert_eq!(number(&db, CALLS).await?, 100);

    // A slow batch and a doomed one stay open while a later batch commits: the later
    // rows wait (nothing past the open batches is folded), and a rebuild meanwhile
    // leaves them to the folding too.
    let (mut late, mut doomed) = (db.connect().await?, db.connect().await?);
    open_batch(&mut late, 7007, 50).await?;
    open_batch(&mut doomed, 8008, 30).await?;
    write(100..320).await?;
    folder.step_all().await?;
    assert_eq!(number(&db, CALLS).await?, 100, "rows past an open batch were folded");
    assert_eq!(number(&db, raw_backlog).await?, 220);
    let (from, to) = (Utc::now() - TimeDelta::days(1), Utc::now() + TimeDelta::hours(1));
    rollup::rebuild(&mut conn, from, to, |_, _| {}).await?;
    assert_eq!(number(&db, CALLS).await?, 100, "the rebuild took rows the folding will take");

    doomed.batch_execute("ROLLBACK").await?;
    late.batch_execute("COMMIT").await?;
    assert!(folder.catch_up(Duration::from_secs(120)).await?, "the rollups lag");
    assert_eq!(number(&db, CALLS).await?, 370);
    assert_eq!(number(&db, "SELECT sum(calls)::int8 AS n FROM llm_usage_hourly WHERE company_id = 7007").await?, 50);
    assert_eq!(number(&db, "SELECT count(*) AS n FROM llm_usage_hourly WHERE company_id = 8008").await?, 0);

    // Rows of the previous version's writers (no transaction id, their figures added to
    // llm_usage_pending by the batch) are counted once too.
    conn.batch_execute(&format!(
        "INSERT INTO llm_logs (event_id, created_at, action, company_id, model, usage_reported, latency_ms) \
         SELECT gen_random_uuid(), now(), 'chat', 9009, 'gpt-4o', false, 50 FROM generate_series(1, 10); \
         INSERT INTO llm_usage_pending (hour, company_id, user_id, interview_id, action, model, error_type, calls, \
           calls_without_usage, unpriced_calls, tokens_input, tokens_output, cost_usd, cache_hits, cost_saved_usd, \
           streaming_calls, latency_ms_sum, tokens_cached_input, tokens_reasoning, latency_ms_histogram, \
           ttft_ms_histogram) \
         SELECT date_trunc('hour', created_at, 'UTC'), company_id, user_id, interview_id, action, model, error_type, \
           {}, llm_histogram(latency_ms), llm_histogram(time_to_first_token_ms) \
         FROM llm_logs WHERE company_id = 9009 GROUP BY 1, 2, 3, 4, 5, 6, 7",
        common_models::llm_usage_sums!()
    ))
    .await?;
    assert!(folder.catch_up(Duration::from_secs(120)).await?, "the rollups lag");
    assert_eq!(number(&db, CALLS).await?, 380);

    // And all of it equals a rebuild from the raw rows.
    let folded = snapshot(&db).await?;
    rollup::rebuild(&mut conn, from, to, |_, _| {}).await?;
    assert_eq!(snapshot(&db).await?, folded, "the rebuild differs from the folded rollups");
    Ok(())
}

/// A step of the worker follows the writes: a batch that commits while the step reads
/// is folded by that step, not left to the next one; a step that does not follow leaves
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_step_folds_the_batches_that_commit_while_it_reads() -> anyhow::Result<()> {
    use diesel_async::SimpleAsyncConnection;
    use llm_log_worker::rollup;
    let (db, writer) = database_and_writer().await?;

    // An open batch holds everything after it back: a later batch has committed, but
    // no row past the open one can be folded yet.
    writer.ensure_partitions_ahead(Utc::now()).await?;
    let mut late = db.connect().await?;
    open_batch(&mut late, 7007, 50).await?;
    let events: Vec<_> = (0..100).map(llm_event).collect();
    writer.write(&events.iter().collect::<Vec<_>>(), &[]).await?;
    let step = rollup::Folder::new(&db.url).step().await?;
    assert_eq!(step.calls, 0, "a step folded rows past an open batch");

    // A following step starts while the batch is open; the batch commits while the
    // step waits for it. That one step folds both batches.
    let mut folder = rollup::Folder::new(&db.url).following(Duration::from_secs(5), Duration::from_secs(3));
    let step = tokio::spawn(async move { folder.step().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!step.is_finished(), "the step did not wait for the open batch");
    late.batch_execute("COMMIT").await?;
    let step = step.await??;
    assert_eq!((step.calls, step.more), (150, false), "the step did not fold what committed while it read");
    assert_eq!(number(&db, CALLS).await?, 150);
    assert_eq!(number(&db, "SELECT raw_rows AS n FROM llm_usage_backlog").await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_rebuild_refuses_an_empty_range_and_an_unreadable_time() -> anyhow::Result<()> {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_llm-log-worker"))
            .env_clear()
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
            .arg("rebuild-rollups")
            .args(args)
            .output()
    };
    let backwards = run(&["--from", "2026-11-02", "--to", "2026-11-01"])?;
    assert!(!backwards.status.success());
    assert!(String::from_utf8_lossy(&backwards.stderr).contains("--from must be before --to"));
    let unreadable = run(&["--from", "last tuesday"])?;
    assert!(!unreadable.status.success());
    assert!(String::from_utf8_lossy(&unreadable.stderr).contains("neither YYYY-MM-DD nor an RFC 3339 time"));
    Ok(())
}

/// `histogram_bucket` (Rust) and `llm_latency_bucket` (SQL) put every latency in the same
/// bucket: both are monotone, and their bucket boundaries agree up to the last bucket's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_sql_agree_on_every_latency_bucket() -> anyhow::Result<()> {
    #[derive(diesel::QueryableByName)]
    struct Boundary {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        bucket: i32,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        first: i32,
    }
    let db = TestDb::migrated(common_models::db::Database::Analytics).await?;
    let mut conn = db.connect().await?;
    let boundaries: Vec<Boundary> = diesel::sql_query(
        "SELECT llm_latency_bucket(g) AS bucket, min(g) AS first FROM generate_series(-10, 600000) g \
         GROUP BY 1 ORDER BY 1",
    )
    .load(&mut conn)
    .await?;
    // Whole milliseconds skip some narrow low buckets; the last one is reached.
    assert_eq!(boundaries.last().map(|b| b.bucket), Some(common_models::usage::HISTOGRAM_BUCKETS as i32));
    let rust = |ms: i32| common_models::usage::histogram_bucket(f64::from(ms)) as i32;
    for pair in boundaries.windows(2) {
        let (before, b) = (&pair[0], &pair[1]);
        assert_eq!(rust(b.first), b.bucket, "{} ms", b.first);
        assert_eq!(rust(b.first - 1), before.bucket, "{} ms", b.first - 1);
    }
    assert_eq!(rust(i32::MAX), common_models::usage::HISTOGRAM_BUCKETS as i32);
    Ok(())
}

/// Adding two stored histograms gives the histogram of both sets of latencies: spans
/// apart, touching, overlapping, nested, equal, empty; also sums with a bucket that is
/// NULL or zeros at an end (not as the fold stores them), which are trimmed.
#[tokio::test]
async fn adding_two_histograms_counts_both_sets_of_latencies() -> anyhow::Result<()> {
    let db = TestDb::migrated(common_models::db::Database::Analytics).await?;
    // Sets of latencies (id, first, count, step), each added to each.
    let differing = number(
        &db,
        "WITH s(id, first, n, step) AS (VALUES (0, 0, 0, 1), (1, 0, 1, 1), (2, 300, 1, 1), (3, 5, 40, 7), \
               (4, 200, 50, 3), (5, 1000, 3, 20000), (6, 0, 9, 1)), \
           v AS (SELECT id, first + i * step AS ms FROM s, generate_series(0, n - 1) AS i), \
           h AS (SELECT id, llm_histogram(ms) AS h FROM s LEFT JOIN v USING (id) GROUP BY id) \
         SELECT count(*) AS n FROM h a, h b \
         WHERE llm_histogram_add(a.h, b.h)::text IS DISTINCT FROM (SELECT llm_histogram(ms) \
           FROM (SELECT ms FROM v WHERE id = a.id UNION ALL SELECT ms FROM v WHERE id = b.id) AS both_sets)::text",
    )
    .await?;
    assert_eq!(differing, 0, "histogram sums that differ from the histogram of both sets");
    let odd = [
        ("'[3:4]={1,NULL}'", "'[30:31]={5,6}'", "[3:31]={1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,5,6}"),
        ("'[2:4]={0,1,0}'", "'[5:6]={2,0}'", "[3:5]={1,0,2}"),
        ("'{}'", "'[7:8]={0,4}'", "[8:8]={4}"),
        ("'[7:9]={1,2,3}'", "NULL", "[7:9]={1,2,3}"),
    ];
    let mut conn = db.connect().await?;
    for (a, b, sum) in odd {
        let got: Snapshot = diesel::sql_query(format!("SELECT llm_histogram_add({a}::int8[], {b}::int8[])::text AS s"))
            .get_result(&mut conn)
            .await?;
        assert_eq!(got.s, sum, "{a} + {b}");
    }
    Ok(())
}

#[tokio::test]
async fn a_watermark_from_another_cluster_stops_the_folding_and_says_why() -> anyhow::Result<()> {
    use diesel_async::SimpleAsyncConnection;
    let db = TestDb::migrated(common_models::db::Database::Analytics).await?;
    let mut conn = db.connect().await?;
    conn.batch_execute("UPDATE llm_usage_watermark SET rolled_up_to = '9000000000000000000'").await?;
    let refused = llm_log_worker::rollup::Folder::new(&db.url).step().await;
    let why = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(why.contains("restored into another cluster"), "{why}");
    assert_eq!(
        number(&db, "SELECT rolled_up_to::text::int8 AS n FROM llm_usage_watermark").await?,
        9_000_000_000_000_000_000
    );
    Ok(())
}

/// A backlog is folded in steps of about the step size, cut between two batches. A
/// step that has caught up and follows the writes is not cut at that size: it folds
/// what commits while it follows, up to twice the size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_step_goes_past_its_size_with_what_commits_while_it_follows() -> anyhow::Result<()> {
    use diesel_async::SimpleAsyncConnection;
    use llm_log_worker::rollup;
    let (db, writer) = database_and_writer().await?;
    writer.ensure_partitions_ahead(Utc::now()).await?;
    let mut conn = db.connect().await?;
    for company in 1..=4 {
        open_batch(&mut conn, company, 60).await?;
        conn.batch_execute("COMMIT").await?;
    }
    let mut folder =
        rollup::Folder::new(&db.url).step_rows(100).following(Duration::from_secs(10), Duration::from_secs(3));

    // 240 calls waiting: the first step stops at the first batch past 100 calls.
    test_support::wait_for(Duration::from_secs(120), "older transactions in the cluster to end", || async {
        let unsettled =
            "SELECT count(*) AS n FROM llm_logs WHERE inserted_by >= pg_snapshot_xmin(pg_current_snapshot())";
        (number(&db, unsettled).await.ok()? == 0).then_some(())
    })
    .await?;
    let step = folder.step().await?;
    assert_eq!((step.calls, step.more), (120, true), "a backlog was not cut at the step size");

    // The next step catches up (120 calls, past 100 already), then two more batches
    // commit while it follows: it folds them too, up to 200 calls and one batch past.
    let step = tokio::spawn(async move { folder.step().await });
    for company in 5..=6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        open_batch(&mut conn, company, 60).await?;
        conn.batch_execute("COMMIT").await?;
    }
    let step = step.await??;
    assert_eq!((step.calls, step.more), (240, false), "the following step stopped at the step size");
    assert_eq!(number(&db, CALLS).await?, 360);
    assert_eq!(number(&db, "SELECT raw_rows AS n FROM llm_usage_backlog").await?, 0);
    Ok(())
}
