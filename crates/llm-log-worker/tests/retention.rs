//! Retention drops whole raw partitions past the age, never the current or the next
//! month, one instance at a time, and the hourly rollups survive it.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common_models::db::Database;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use llm_log_worker::retention;
use test_support::TestDb;

const NINETY_DAYS: Duration = Duration::from_secs(90 * 86_400);

async fn count(db: &TestDb, sql: &str) -> anyhow::Result<i64> {
    test_support::query_count(&db.url, sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_only_whole_months_past_the_age_and_keeps_the_rollups() -> anyhow::Result<()> {
    let db = TestDb::migrated(Database::Analytics).await?;
    let mut conn = db.connect().await?;
    // May to December 2026, both tables, ten calls and ten API log rows in each month.
    let months = ["2026-05", "2026-06", "2026-07", "2026-08", "2026-09", "2026-10", "2026-11", "2026-12"];
    for month in months {
        for table in ["llm_logs", "system_logs"] {
            diesel::sql_query("SELECT ensure_monthly_partition($1, ($2 || '-01')::date)")
                .bind::<Text, _>(table)
                .bind::<Text, _>(month)
                .execute(&mut conn)
                .await?;
        }
        diesel::sql_query(
            "INSERT INTO llm_logs (event_id, created_at, action, company_id, model, usage_reported, latency_ms) \
             SELECT gen_random_uuid(), ($1 || '-10')::timestamptz + i * interval '1 hour', 'chat', 1, 'gpt-4.1', \
                    false, 100 FROM generate_series(1, 10) AS i",
        )
        .bind::<Text, _>(month)
        .execute(&mut conn)
        .await?;
        diesel::sql_query(
            "INSERT INTO system_logs (event_id, created_at, level, component, message) \
             SELECT gen_random_uuid(), ($1 || '-10')::timestamptz + i * interval '1 hour', 'INFO', 'api', 'ok' \
             FROM generate_series(1, 10) AS i",
        )
        .bind::<Text, _>(month)
        .execute(&mut conn)
        .await?;
    }
    let (from, to) =
        (Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap(), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    llm_log_worker::rollup::rebuild(&mut conn, from, to, |_, _| {}).await?;
    let rollup_calls = "SELECT coalesce(sum(calls), 0)::int8 AS n FROM llm_usage_hourly";
    assert_eq!(count(&db, rollup_calls).await?, 80);

    // 28 November: 90 days back is 30 August, so May, June and July are past the age;
    // August ended on 1 September, after it, and stays.
    let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
    let dry = retention::run(&mut conn, now, NINETY_DAYS, Duration::from_secs(5), true).await?;
    let names: Vec<&str> = dry.dropped.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "llm_logs_y2026m05",
            "system_logs_y2026m05",
            "llm_logs_y2026m06",
            "system_logs_y2026m06",
            "llm_logs_y2026m07",
            "system_logs_y2026m07"
        ]
    );
    assert_eq!(count(&db, "SELECT count(*) AS n FROM llm_logs").await?, 80, "a dry run drops nothing");

    // Another instance holding the turn: this one does nothing.
    let mut other = AsyncPgConnection::establish(&db.url).await?;
    diesel::sql_query("SELECT pg_advisory_lock(hashtext('raw_log_retention'))").execute(&mut other).await?;
    let busy = retention::run(&mut conn, now, NINETY_DAYS, Duration::from_secs(5), false).await?;
    assert!(!busy.ran && busy.dropped.is_empty());
    diesel::sql_query("SELECT pg_advisory_unlock(hashtext('raw_log_retention'))").execute(&mut other).await?;

    let done = retention::run(&mut conn, now, NINETY_DAYS, Duration::from_secs(5), false).await?;
    assert!(done.ran);
    assert_eq!(done.dropped, dry.dropped);
    let left: Vec<String> = retention::partitions(&mut conn).await?.into_iter().map(|p| p.name).collect();
    assert_eq!(left.len(), 10, "August to December of both tables: {left:?}");
    assert!(!left.iter().any(|n| n.contains("m05") || n.contains("m06") || n.contains("m07")));
    assert_eq!(count(&db, "SELECT count(*) AS n FROM llm_logs").await?, 50);
    assert_eq!(count(&db, "SELECT count(*) AS n FROM system_logs").await?, 50);
    assert_eq!(count(&db, rollup_calls).await?, 80, "the rollups keep the dropped months");
    assert_eq!(
        count(&db, "SELECT coalesce(sum(calls), 0)::int8 AS n FROM llm_usage_hourly WHERE hour < '2026-08-01'").await?,
        30
    );

    // Again: nothing more to do. With no age at all, this month and next still stay.
    let again = retention::run(&mut conn, now, NINETY_DAYS, Duration::from_secs(5), false).await?;
    assert!(again.dropped.is_empty());
    let all = retention::run(&mut conn, now, Duration::ZERO, Duration::from_secs(5), false).await?;
    let names: Vec<&str> = all.dropped.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 6, "August to October: {names:?}");
    let left: Vec<String> = retention::partitions(&mut conn).await?.into_iter().map(|p| p.name).collect();
    assert_eq!(left, ["llm_logs_y2026m11", "system_logs_y2026m11", "llm_logs_y2026m12", "system_logs_y2026m12"]);
    assert_eq!(retention::upkeep(&retention::partitions(&mut conn).await?, now).0, 1);
    Ok(())
}
