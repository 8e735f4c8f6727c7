//! Retention of the raw log tables: monthly partitions whose whole month is older than
//! the configured age are detached and dropped, never deleted row by row (no dead
//! tuples, no vacuum debt, instant). The hourly rollups are another table and stay.
//! One instance at a time (a session advisory lock); the current and the next month
//! are never touched, whatever the age says. Partitions not named as
//! `ensure_monthly_partition` names them are left alone.

use std::time::Duration;

use chrono::{DateTime, Months, NaiveDate, TimeDelta, Utc};
use diesel::sql_query;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// The raw tables retention applies to.
pub const TABLES: [&str; 2] = ["llm_logs", "system_logs"];

/// One monthly partition of a raw table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub table: &'static str,
    pub name: String,
    /// The month it holds: [`month`, next month).
    pub month: NaiveDate,
    /// The planner's row estimate (-1 before the first ANALYZE) and the size on disk,
    /// for the report.
    pub rows_estimate: i64,
    pub bytes: i64,
}

impl Partition {
    pub fn end(&self) -> NaiveDate {
        self.month.checked_add_months(Months::new(1)).unwrap_or(self.month)
    }
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    parent: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    rows_estimate: i64,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
}

/// Every monthly partition of the raw tables, oldest first.
pub async fn partitions(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<Partition>> {
    let rows: Vec<Row> = sql_query(
        "SELECT p.relname::text AS parent, c.relname::text AS name, c.reltuples::int8 AS rows_estimate, \
                pg_total_relation_size(c.oid) AS bytes \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname IN ('llm_logs', 'system_logs') AND p.relnamespace = current_schema()::regnamespace",
    )
    .load(conn)
    .await?;
    let mut found: Vec<Partition> = rows
        .into_iter()
        .filter_map(|r| {
            let table = TABLES.into_iter().find(|t| *t == r.parent)?;
            let month = month_in_name(table, &r.name)?;
            Some(Partition { table, name: r.name, month, rows_estimate: r.rows_estimate, bytes: r.bytes })
        })
        .collect();
    found.sort_by(|a, b| (a.month, a.table).cmp(&(b.month, b.table)));
    Ok(found)
}

/// `llm_logs_y2026m08` → 2026-08-01.
fn month_in_name(table: &str, name: &str) -> Option<NaiveDate> {
    let rest = name.strip_prefix(table)?.strip_prefix("_y")?;
    let (year, month) = rest.split_once('m')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)
}

/// The partitions past `max_age` at `now`: those whose whole month ended before
/// `now - max_age`, and never the current or the next month.
pub fn expired(all: &[Partition], now: DateTime<Utc>, max_age: Duration) -> Vec<Partition> {
    let cutoff = now - TimeDelta::from_std(max_age).unwrap_or(TimeDelta::MAX);
    let this_month = crate::writer::month_of(now);
    all.iter()
        .filter(|p| p.month < this_month && p.end().and_hms_opt(0, 0, 0).is_some_and(|end| end.and_utc() <= cutoff))
        .cloned()
        .collect()
}

/// What a retention run did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Partitions dropped (or, on a dry run, that would be).
    pub dropped: Vec<Partition>,
    /// False when another instance held the turn; nothing was done.
    pub ran: bool,
}

/// Drops the expired partitions (with `dry_run`, only lists them), holding the
/// retention lock for the run; waits at most `lock_timeout` for each table's lock, so a
/// long query on a partition delays its drop to the next run instead of stalling
/// writers behind it.
pub async fn run(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    max_age: Duration,
    lock_timeout: Duration,
    dry_run: bool,
) -> anyhow::Result<Outcome> {
    #[derive(diesel::QueryableByName)]
    struct Turn {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        mine: bool,
    }
    let turn: Turn =
        sql_query("SELECT pg_try_advisory_lock(hashtext('raw_log_retention')) AS mine").get_result(conn).await?;
    if !turn.mine {
        return Ok(Outcome { dropped: Vec::new(), ran: false });
    }
    let result = drop_expired(conn, now, max_age, lock_timeout, dry_run).await;
    sql_query("SELECT pg_advisory_unlock(hashtext('raw_log_retention'))").execute(conn).await?;
    Ok(Outcome { dropped: result?, ran: true })
}

async fn drop_expired(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    max_age: Duration,
    lock_timeout: Duration,
    dry_run: bool,
) -> anyhow::Result<Vec<Partition>> {
    let expired = expired(&partitions(conn).await?, now, max_age);
    if dry_run {
        return Ok(expired);
    }
    let mut dropped = Vec::new();
    for p in expired {
        // Detach and drop in one transaction: either the month is gone or untouched.
        let sql = format!(
            "BEGIN; SET LOCAL lock_timeout = '{}ms'; ALTER TABLE {} DETACH PARTITION {}; DROP TABLE {}; COMMIT;",
            lock_timeout.as_millis(),
            p.table,
            quote_ident(&p.name),
            quote_ident(&p.name)
        );
        if let Err(err) = conn.batch_execute(&sql).await {
            drop(conn.batch_execute("ROLLBACK").await);
            anyhow::bail!("dropping {} failed (left for the next run): {err}", p.name);
        }
        tracing::info!(partition = %p.name, month = %p.month, rows_estimate = p.rows_estimate, "raw log partition dropped");
        dropped.push(p);
    }
    Ok(dropped)
}

/// A name from the catalog, quoted as an identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Months ahead of `now` whose partition exists for both tables (1: next month's is
/// there; 0: only this month's: the worker's partition upkeep is failing), and the age
/// in days of the oldest partition's month start.
pub fn upkeep(all: &[Partition], now: DateTime<Utc>) -> (i64, Option<i64>) {
    let this_month = crate::writer::month_of(now);
    let mut ahead = -1;
    let mut month = this_month;
    while TABLES.iter().all(|t| all.iter().any(|p| p.table == *t && p.month == month)) {
        ahead += 1;
        match month.checked_add_months(Months::new(1)) {
            Some(next) => month = next,
            None => break,
        }
    }
    let oldest = all.iter().map(|p| p.month).min().map(|m| (now.date_naive() - m).num_days());
    (ahead, oldest)
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use chrono::TimeZone;

    use super::*;

    fn part(table: &'static str, y: i32, m: u32) -> Partition {
        let month = NaiveDate::from_ymd_opt(y, m, 1).unwrap();
        Partition { table, name: format!("{table}_y{y}m{m:02}"), month, rows_estimate: 0, bytes: 0 }
    }

    #[test]
    fn only_whole_months_past_the_age_expire() {
        let all: Vec<Partition> = (1..=12).map(|m| part("llm_logs", 2026, m)).collect();
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        let months = |age_days: u64| -> Vec<u32> {
            use chrono::Datelike;
            expired(&all, now, Duration::from_secs(age_days * 86_400)).iter().map(|p| p.month.month()).collect()
        };
        // 90 days before 28 Nov is 30 Aug: July ended before it, August did not.
        assert_eq!(months(90), [1, 2, 3, 4, 5, 6, 7]);
        // Even with no age at all, this month and next stay.
        assert_eq!(months(0), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(month_in_name("llm_logs", "llm_logs_y2026m08"), NaiveDate::from_ymd_opt(2026, 8, 1));
        assert_eq!(month_in_name("llm_logs", "llm_logs_default"), None);
    }

    #[test]
    fn upkeep_counts_months_ready_ahead() {
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap();
        let mut all = vec![part("llm_logs", 2026, 11), part("system_logs", 2026, 11), part("llm_logs", 2026, 12)];
        assert_eq!(upkeep(&all, now).0, 0, "next month lacks its system_logs partition");
        all.push(part("system_logs", 2026, 12));
        assert_eq!(upkeep(&all, now), (1, Some(27)));
        assert_eq!(upkeep(&[], now).0, -1);
    }
}
