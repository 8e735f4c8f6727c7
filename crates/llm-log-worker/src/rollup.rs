//! Hourly rollups of `llm_logs`: `llm_usage_hourly` (keyed down to user and
//! interview), its coarser grain `llm_usage_hourly_models` (company, action, model,
//! error) and the small grains of `llm_usage_hourly_grains` (per model, action,
//! company, company and model, company and action, company and user), with the sums of
//! the all-company grains once more in the narrow `llm_usage_hourly_totals`; see the
//! analytics migrations that create them.
//!
//! They follow the raw rows: every write path stores its transaction id in
//! `llm_logs.inserted_by`, and [`Folder`] (one worker at a time, under an advisory
//! lock) folds the rows between the watermark and the oldest transaction still running
//! into all of them, then moves the watermark. No row can appear below the watermark
//! later, so each inserted row is counted once: a redelivered event was not inserted,
//! a batch that rolled back left no row, a batch that commits late is folded by a later
//! step, a late event adds to its own (old) hour. The batches themselves do no rollup
//! work. [`rebuild`] recomputes a range from the raw rows below the watermark, for
//! after a repricing or to check the incremental figures; both use the one aggregate
//! below.

use std::sync::LazyLock;

pub use crate::fold::{Compacted, FOLLOW_IDLE, Folder, STEP_ROWS};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use common_models::usage::{GRAIN_KEYS, GRAINS, stored_histogram_sum_sql};
use diesel::sql_query;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// The rollup's columns, in the order the aggregate yields them.
const USAGE_COLUMNS: &str = "hour, company_id, user_id, interview_id, action, model, error_type, calls, \
    calls_without_usage, unpriced_calls, tokens_input, tokens_output, cost_usd, cache_hits, cost_saved_usd, \
    streaming_calls, latency_ms_sum, tokens_cached_input, tokens_reasoning, latency_ms_histogram, ttft_ms_histogram";

/// `llm_logs` rows matching `filter` grouped into rollup rows: the shared sums, and the
/// latency and time-to-first-token histograms (`llm_histogram`, which counts a row into
/// its `llm_latency_bucket`; NULL counts nowhere). Counting every bucket with a `FILTER`
/// instead was slower: 120 conditions a row against two aggregate steps.
fn usage_of(filter: &str) -> String {
    format!(
        "SELECT date_trunc('hour', created_at, 'UTC'), company_id, user_id, interview_id, action, model, error_type, \
           {sums}, llm_histogram(latency_ms), llm_histogram(time_to_first_token_ms) \
         FROM llm_logs WHERE {filter} GROUP BY 1, 2, 3, 4, 5, 6, 7",
        sums = common_models::llm_usage_sums!(),
    )
}

/// The keys a row of `llm_usage_hourly_totals` may carry besides its hour.
const TOTALS_KEYS: [&str; 3] = ["company_id", "action", "model"];

/// The keys of `llm_usage_hourly`, and of its coarser grain `llm_usage_hourly_models`.
const FINE_KEYS: &str = "hour, company_id, user_id, interview_id, action, model, error_type";
const COARSE_KEYS: &str = "hour, company_id, action, model, error_type";

/// Where [`add_to`] adds: a rollup table summed per its keys, every grain of
/// `llm_usage_hourly_grains` at once, or the sums of the all-company grains in
/// `llm_usage_hourly_totals`.
pub(crate) enum Target {
    Table { table: &'static str, keys: &'static str, constraint: &'static str },
    Grains,
    Totals,
}

/// The sums of every rollup table, after its keys.
macro_rules! sums {
    () => {
        "calls, calls_without_usage, unpriced_calls, tokens_input, tokens_output, cost_usd, cache_hits, \
         cost_saved_usd, streaming_calls, latency_ms_sum, tokens_cached_input, tokens_reasoning"
    };
}
/// The figures of every rollup table but `llm_usage_hourly_totals`, after its keys: the
/// sums, then the histograms.
pub(crate) const FIGURES: &str = concat!(sums!(), ", latency_ms_histogram, ttft_ms_histogram");
/// The figures of `llm_usage_hourly_totals`: the sums alone.
pub(crate) const SUMS: &str = sums!();

impl Target {
    fn table(&self) -> &'static str {
        match self {
            Target::Table { table, .. } => table,
            Target::Grains => "llm_usage_hourly_grains",
            Target::Totals => "llm_usage_hourly_totals",
        }
    }

    /// The columns after the keys: [`FIGURES`], or for the totals [`SUMS`].
    pub(crate) fn figures(&self) -> &'static str {
        match self {
            Target::Table { .. } | Target::Grains => FIGURES,
            Target::Totals => SUMS,
        }
    }

    /// The columns before [`FIGURES`]: the keys (for the grains, the grain, its keys and
    /// the error count).
    pub(crate) fn key_columns(&self) -> String {
        match self {
            Target::Table { keys, .. } => (*keys).to_owned(),
            Target::Grains => format!("grain, hour, {}, errors", GRAIN_KEYS.join(", ")),
            Target::Totals => format!("grain, hour, {}, errors", TOTALS_KEYS.join(", ")),
        }
    }

    /// The upsert's `ON CONFLICT` clause: an existing key's figures added to
    /// (histograms bucket by bucket, `llm_histogram_add`; a grain without them stays
    /// without).
    fn on_conflict(&self) -> String {
        let add = |column: &str| format!("llm_histogram_add(t.{column}, EXCLUDED.{column})");
        let histograms =
            |latency: String, ttft: String| format!(", latency_ms_histogram = {latency}, ttft_ms_histogram = {ttft}");
        let (constraint, errors, histograms) = match self {
            Target::Table { constraint, .. } => {
                (*constraint, "", histograms(add("latency_ms_histogram"), add("ttft_ms_histogram")))
            }
            Target::Grains => {
                let add = |column: &str| format!("CASE WHEN t.{column} IS NULL THEN NULL ELSE {} END", add(column));
                (
                    "llm_usage_hourly_grains_key",
                    "errors = t.errors + EXCLUDED.errors, ",
                    histograms(add("latency_ms_histogram"), add("ttft_ms_histogram")),
                )
            }
            Target::Totals => ("llm_usage_hourly_totals_key", "errors = t.errors + EXCLUDED.errors, ", String::new()),
        };
        format!(
            "ON CONFLICT ON CONSTRAINT {constraint} DO UPDATE SET calls = t.calls + EXCLUDED.calls, {errors}\
               calls_without_usage = t.calls_without_usage + EXCLUDED.calls_without_usage, \
               unpriced_calls = t.unpriced_calls + EXCLUDED.unpriced_calls, \
               tokens_input = t.tokens_input + EXCLUDED.tokens_input, \
               tokens_output = t.tokens_output + EXCLUDED.tokens_output, \
               cost_usd = t.cost_usd + EXCLUDED.cost_usd, cache_hits = t.cache_hits + EXCLUDED.cache_hits, \
               cost_saved_usd = t.cost_saved_usd + EXCLUDED.cost_saved_usd, \
               streaming_calls = t.streaming_calls + EXCLUDED.streaming_calls, \
               latency_ms_sum = t.latency_ms_sum + EXCLUDED.latency_ms_sum, \
               tokens_cached_input = t.tokens_cached_input + EXCLUDED.tokens_cached_input, \
               tokens_reasoning = t.tokens_reasoning + EXCLUDED.tokens_reasoning{histograms}"
        )
    }
}

/// Adds the rollup rows of `source` (rows shaped as `llm_usage_hourly`'s) to `target`:
/// a new key is inserted, an existing one added to. Histograms are added bucket by
/// bucket with plain sums, then trimmed. The grains are summed in one pass (`GROUPING SETS`), each
/// row named by its `GROUPING(…)`; errors become a count of their own there.
fn add_to(target: Target, source: &str) -> String {
    let (select, group_by, histograms) = match &target {
        Target::Table { keys, .. } => (
            (*keys).to_owned(),
            (*keys).to_owned(),
            format!(
                ", {}, {}",
                stored_histogram_sum_sql("latency_ms_histogram"),
                stored_histogram_sum_sql("ttft_ms_histogram")
            ),
        ),
        Target::Grains => {
            let keys = GRAIN_KEYS.join(", ");
            let sets: Vec<String> = GRAINS.iter().map(|g| format!("(hour, {})", g.keys.join(", "))).collect();
            let bare: Vec<String> = GRAINS.iter().filter(|g| !g.histograms).map(|g| g.id().to_string()).collect();
            let bare =
                if bare.is_empty() { "FALSE".to_owned() } else { format!("GROUPING({keys}) IN ({})", bare.join(", ")) };
            let sum =
                |column: &str| format!("CASE WHEN {bare} THEN NULL ELSE {} END", stored_histogram_sum_sql(column));
            (
                format!("GROUPING({keys}), hour, {keys}, sum(CASE WHEN error_type IS NULL THEN 0 ELSE calls END)"),
                format!("GROUPING SETS ({})", sets.join(", ")),
                format!(", {}, {}", sum("latency_ms_histogram"), sum("ttft_ms_histogram")),
            )
        }
        Target::Totals => {
            // No user key here, so the grain is named from the grouping of the other
            // three (a bit each for company, action, model summed away).
            let keys = TOTALS_KEYS.join(", ");
            let totals: Vec<_> = GRAINS.iter().filter(|g| g.totals).collect();
            let sets: Vec<String> = totals.iter().map(|g| format!("(hour, {})", g.keys.join(", "))).collect();
            let names: Vec<String> =
                totals.iter().map(|g| format!("WHEN {} THEN {}", g.grouping(&TOTALS_KEYS), g.id())).collect();
            (
                format!(
                    "CASE GROUPING({keys}) {} END, hour, {keys}, sum(CASE WHEN error_type IS NULL THEN 0 ELSE calls END)",
                    names.join(" ")
                ),
                format!("GROUPING SETS ({})", sets.join(", ")),
                String::new(),
            )
        }
    };
    format!(
        "INSERT INTO {} AS t ({}, {}) \
         SELECT {select}, sum(calls), sum(calls_without_usage), sum(unpriced_calls), sum(tokens_input), \
           sum(tokens_output), sum(cost_usd), sum(cache_hits), sum(cost_saved_usd), sum(streaming_calls), \
           sum(latency_ms_sum), sum(tokens_cached_input), sum(tokens_reasoning){histograms} \
         FROM {source} GROUP BY {group_by} {}",
        target.table(),
        target.key_columns(),
        target.figures(),
        target.on_conflict(),
    )
}

/// Adds the rows of `source`, one per key of `target` already (its key columns, then
/// `figures`, the [`FIGURES`] as `source` holds them), to `target`.
pub(crate) fn add_grouped(target: Target, source: &str, figures: &str) -> String {
    let keys = target.key_columns();
    format!(
        "INSERT INTO {} AS t ({keys}, {}) SELECT {keys}, {figures} FROM {source} {}",
        target.table(),
        target.figures(),
        target.on_conflict()
    )
}

pub(crate) const FINE: Target =
    Target::Table { table: "llm_usage_hourly", keys: FINE_KEYS, constraint: "llm_usage_hourly_key" };
pub(crate) const COARSE: Target =
    Target::Table { table: "llm_usage_hourly_models", keys: COARSE_KEYS, constraint: "llm_usage_hourly_models_key" };

/// Moves every pending row (added by the write paths of the version before the
/// watermark) into the rollups; returns the calls moved.
pub(crate) static FOLD_PENDING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH moved AS (DELETE FROM llm_usage_pending RETURNING *), fine AS ({} RETURNING 1), \
         grains AS ({} RETURNING 1), coarse AS ({} RETURNING 1), totals AS ({} RETURNING 1) \
         SELECT coalesce(sum(calls), 0)::int8 FROM moved",
        add_to(FINE, "moved"),
        add_to(Target::Grains, "moved"),
        add_to(COARSE, "moved"),
        add_to(Target::Totals, "moved")
    )
});

/// The rollup tables, in the one order every writer of several takes them
/// ([`Folder::step`](crate::fold::Folder::step) and [`rebuild`]), so that none deadlocks another.
pub(crate) const LOCK_ORDER: &str =
    "llm_usage_pending, llm_usage_hourly, llm_usage_hourly_models, llm_usage_hourly_grains, llm_usage_hourly_totals";

static REBUILD_INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO llm_usage_hourly ({USAGE_COLUMNS}) {}",
        usage_of(
            "created_at >= $1::text::timestamptz AND created_at < $2::text::timestamptz AND \
             (inserted_by IS NULL OR inserted_by < (SELECT rolled_up_to FROM llm_usage_watermark))"
        )
    )
});

/// The coarser grains of a range, from its (just rebuilt) hourly rows.
static REBUILD_COARSE: LazyLock<[String; 3]> = LazyLock::new(|| {
    let source =
        "(SELECT * FROM llm_usage_hourly WHERE hour >= $1::text::timestamptz AND hour < $2::text::timestamptz) AS src";
    [add_to(COARSE, source), add_to(Target::Grains, source), add_to(Target::Totals, source)]
});

/// A timestamp as PostgreSQL reads it back exactly (microseconds, UTC).
pub fn sql_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The whole UTC hours covering [`from`, `to`).
pub fn whole_hours(from: DateTime<Utc>, to: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let hour = TimeDelta::hours(1);
    let start = from.duration_trunc(hour).unwrap_or(from);
    let mut end = to.duration_trunc(hour).unwrap_or(to);
    if end < to {
        end += hour;
    }
    (start, end)
}

/// Recomputes the rollup rows of the whole UTC hours covering [`from`, `to`) from the
/// raw rows, one day per transaction, calling `progress(done, total)` after each day.
/// Safe to re-run and to run while workers write: each day's transaction locks the
/// rollup tables (the fold waits), counts only the raw rows below the watermark (rows
/// past it are the fold's, which adds them on top afterwards) and drops the range's
/// pending rows with its hourly rows, so no batch is counted twice or lost. Returns
/// the rollup rows written.
pub async fn rebuild(
    conn: &mut AsyncPgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<u64> {
    let (start, end) = whole_hours(from, to);
    let day = TimeDelta::days(1);
    let total = usize::try_from((end - start).num_hours().max(0).unsigned_abs().div_ceil(24)).unwrap_or(0);
    let mut written = 0u64;
    let mut at = start;
    let mut done = 0;
    while at < end {
        let until = (at + day).min(end);
        let (lo, hi) = (sql_time(at), sql_time(until));
        written += conn
            .transaction::<u64, diesel::result::Error, _>(async move |conn| {
                lock_for_rebuild(conn).await?;
                rebuild_locked(conn, &lo, &hi).await
            })
            .await?;
        at = until;
        done += 1;
        progress(done, total);
    }
    Ok(written)
}

/// Holds concurrent additions to the rollups back until the transaction ends (taken
/// first in a transaction that rebuilds).
pub async fn lock_for_rebuild(conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
    conn.batch_execute(&format!("LOCK TABLE {LOCK_ORDER} IN SHARE ROW EXCLUSIVE MODE")).await
}

/// Replaces the rollups of the hours in [`lo`, `hi`) (whole UTC hours, as
/// [`sql_time`]) with their recomputation from the raw rows, inside a transaction that
/// took [`lock_for_rebuild`]; returns the fine rows written.
pub async fn rebuild_locked(conn: &mut AsyncPgConnection, lo: &str, hi: &str) -> diesel::QueryResult<u64> {
    for table in [
        "llm_usage_hourly",
        "llm_usage_hourly_models",
        "llm_usage_hourly_grains",
        "llm_usage_hourly_totals",
        "llm_usage_pending",
    ] {
        sql_query(format!("DELETE FROM {table} WHERE hour >= $1::text::timestamptz AND hour < $2::text::timestamptz"))
            .bind::<Text, _>(lo)
            .bind::<Text, _>(hi)
            .execute(conn)
            .await?;
    }
    let n = sql_query(REBUILD_INSERT.as_str()).bind::<Text, _>(lo).bind::<Text, _>(hi).execute(conn).await?;
    for coarser in REBUILD_COARSE.iter() {
        sql_query(coarser.as_str()).bind::<Text, _>(lo).bind::<Text, _>(hi).execute(conn).await?;
    }
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn ranges_widen_to_whole_utc_hours() {
        let at = |h, m| Utc.with_ymd_and_hms(2026, 11, 27, h, m, 0).unwrap();
        assert_eq!(whole_hours(at(10, 15), at(12, 0)), (at(10, 0), at(12, 0)));
        assert_eq!(whole_hours(at(10, 0), at(11, 1)), (at(10, 0), at(12, 0)));
    }

    #[test]
    fn timestamps_keep_their_microseconds() {
        let at = Utc.timestamp_opt(1_764_000_000, 123_456_000).unwrap();
        assert_eq!(sql_time(at), "2025-11-24T16:00:00.123456Z");
    }
}
