//! The legacy move: LLM calls logged by the old system into the main database's
//! `system_logs` table (component `llm`, one row per call in the layout of
//! [`LEGACY_TABLE`]) are moved into the analytics database's `llm_logs`.
//!
//! - **In batches, resumable**: rows are read by id; after each batch the last id moved
//!   is kept in the analytics database (`legacy_move_progress`), so a run that is killed
//!   picks up where it stopped.
//! - **Idempotent**: each old row becomes a call whose event id is made from its old id
//!   ([`legacy_event_id`]), written the way the worker writes a batch: COPY, and when
//!   some of it is already stored (a kill between the write and the checkpoint, or a
//!   second run), the idempotent INSERT path; the rollups follow the rows inserted,
//!   so a batch written twice counts once.
//! - **Mapped**: the columns `llm_logs` has are carried over; what it has no column for
//!   (the old id, level, request method and path) goes into `metadata` beside the old
//!   metadata's keys. A cost is kept as the old system computed it
//!   (`price_table_version` `legacy`); tokens without a cost stay unpriced.
//! - **Reconciled**: per UTC day, the calls, input and output tokens and cost on both
//!   sides; equal, or the days that differ are listed.
//! - **Deleted afterwards, optionally**: the moved rows leave the main database in small
//!   batches, only after an equal reconciliation.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common_models::events::{LlmCallEvent, at_stored_precision};
use common_models::ids::{CompanyId, InterviewId, UserId};
use diesel::QueryableByName;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Bool, Double, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use serde_json::{Map, Value, json};

use crate::copy::{CopyFailure, CopyWriter};
use crate::rollup::Folder;
use crate::writer::{AnalyticsWriter, Inserted};

/// The old layout (main database), as the fixture generator creates it.
pub const LEGACY_TABLE: &str = "CREATE TABLE IF NOT EXISTS system_logs ( \
    id BIGSERIAL PRIMARY KEY, \
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(), \
    level VARCHAR(10) NOT NULL DEFAULT 'info', \
    component VARCHAR(50) NOT NULL, \
    action VARCHAR(100), \
    message TEXT, \
    user_id INTEGER, \
    company_id INTEGER, \
    interview_id INTEGER, \
    model VARCHAR(50), \
    tokens_used INTEGER, \
    tokens_input INTEGER, \
    tokens_output INTEGER, \
    cost_usd NUMERIC(10, 6), \
    latency_ms INTEGER, \
    streaming BOOLEAN DEFAULT FALSE, \
    error_type VARCHAR(100), \
    error_message TEXT, \
    request_method VARCHAR(10), \
    request_path VARCHAR(500), \
    status_code INTEGER, \
    metadata JSONB, \
    deployment_version VARCHAR(50), \
    deployment_environment VARCHAR(50)); \
    CREATE INDEX IF NOT EXISTS idx_system_logs_component_created ON system_logs (component, created_at)";

/// The name the progress is kept under.
const SOURCE: &str = "main.system_logs";

/// The event id of the old row `id`: a fixed 8-byte prefix, then the id (UUID version 8).
pub fn legacy_event_id(id: i64) -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(b"hhlegacy");
    bytes[8..].copy_from_slice(&id.to_be_bytes());
    bytes[6] = 0x80 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    uuid::Uuid::from_bytes(bytes)
}

/// The range of event ids the moved rows have.
fn moved_ids() -> (uuid::Uuid, uuid::Uuid) {
    (legacy_event_id(0), legacy_event_id(i64::MAX))
}

#[derive(QueryableByName)]
struct OldRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    level: String,
    #[diesel(sql_type = Nullable<Text>)]
    action: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    message: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    user_id: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    company_id: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    interview_id: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    model: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    tokens_used: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    tokens_input: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    tokens_output: Option<i32>,
    #[diesel(sql_type = Nullable<Double>)]
    cost_usd: Option<f64>,
    #[diesel(sql_type = Nullable<Integer>)]
    latency_ms: Option<i32>,
    #[diesel(sql_type = Nullable<Bool>)]
    streaming: Option<bool>,
    #[diesel(sql_type = Nullable<Text>)]
    error_type: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    error_message: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    request_method: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    request_path: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    status_code: Option<i32>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    metadata: Option<Value>,
    #[diesel(sql_type = Nullable<Text>)]
    deployment_version: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    deployment_environment: Option<String>,
}

const READ_BATCH: &str = "SELECT id, created_at, level, action, message, user_id, company_id, interview_id, model, \
        tokens_used, tokens_input, tokens_output, cost_usd::float8 AS cost_usd, latency_ms, streaming, error_type, \
        error_message, request_method, request_path, status_code, metadata, deployment_version, \
        deployment_environment \
     FROM system_logs WHERE component = 'llm' AND id > $1 ORDER BY id LIMIT $2";

impl OldRow {
    fn into_event(self) -> LlmCallEvent {
        let mut metadata = match self.metadata {
            Some(Value::Object(map)) => map,
            Some(other) => Map::from_iter([("legacy_metadata".to_owned(), other)]),
            None => Map::new(),
        };
        metadata.insert("legacy_system_log_id".into(), json!(self.id));
        metadata.insert("legacy_level".into(), json!(self.level));
        for (key, value) in [("legacy_request_method", self.request_method), ("legacy_request_path", self.request_path)]
        {
            if let Some(v) = value {
                metadata.insert(key.into(), json!(v));
            }
        }
        let usage_reported = self.tokens_input.is_some() && self.tokens_output.is_some();
        LlmCallEvent {
            event_id: legacy_event_id(self.id),
            created_at: at_stored_precision(self.created_at),
            action: self.action.unwrap_or_else(|| "legacy".to_owned()),
            message: self.message,
            company_id: self.company_id.map(|v| CompanyId(i64::from(v))),
            user_id: self.user_id.map(|v| UserId(i64::from(v))),
            interview_id: self.interview_id.map(|v| InterviewId(i64::from(v))),
            request_id: None,
            model: self.model,
            tokens_input: self.tokens_input,
            tokens_output: self.tokens_output,
            tokens_total: self.tokens_used,
            usage_reported,
            cost_usd: self.cost_usd,
            price_table_version: self.cost_usd.map(|_| "legacy".to_owned()),
            latency_ms: self.latency_ms,
            time_to_first_token_ms: None,
            streaming: self.streaming.unwrap_or(false),
            http_status: self.status_code.and_then(|s| i16::try_from(s).ok()),
            error_type: self.error_type,
            error_message: self.error_message,
            metadata: Some(Value::Object(metadata)),
            deployment_version: self.deployment_version,
            deployment_environment: self.deployment_environment,
            cache_hit: false,
            cost_saved_usd: None,
            tokens_cached_input: None,
            tokens_reasoning: None,
        }
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Progress {
    #[diesel(sql_type = BigInt)]
    last_id: i64,
    #[diesel(sql_type = BigInt)]
    moved: i64,
    #[diesel(sql_type = BigInt)]
    deleted: i64,
}

/// Where a move stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MoveOutcome {
    /// Old LLM rows in the main database.
    pub total: i64,
    /// Old rows read by this run.
    pub read: i64,
    /// Calls this run inserted (rows written before are not written again).
    pub inserted: i64,
    /// Old rows stored in the analytics database by every run so far (a batch a
    /// killed run committed but did not record is found stored by the next run, and
    /// counted then).
    pub moved: i64,
    /// The last old id moved.
    pub last_id: i64,
    /// Moved rows deleted from the main database so far (then there is nothing left to
    /// reconcile against).
    pub deleted: i64,
    /// Time this run spent reading old rows and writing calls.
    pub read_time: Duration,
    pub write_time: Duration,
    /// Folding the calls the run wrote into the hourly rollups, at its end.
    pub compact_time: Duration,
}

/// Moves every old LLM row not yet moved, `batch` at a time, calling
/// `progress(outcome, rows per second)` after each batch.
pub async fn move_rows(
    main: &mut AsyncPgConnection,
    analytics: &mut AsyncPgConnection,
    writer: &AnalyticsWriter,
    copy: &mut CopyWriter,
    folder: &mut Folder,
    batch: i64,
    mut progress: impl FnMut(&MoveOutcome, f64),
) -> anyhow::Result<MoveOutcome> {
    let total: Count =
        sql_query("SELECT count(*) AS n FROM system_logs WHERE component = 'llm'").get_result(main).await?;
    let done: Option<Progress> =
        sql_query("SELECT last_id, moved, deleted FROM legacy_move_progress WHERE source = $1")
            .bind::<Text, _>(SOURCE)
            .get_result(analytics)
            .await
            .ok();
    let mut outcome = MoveOutcome {
        total: total.n,
        last_id: done.as_ref().map_or(0, |p| p.last_id),
        moved: done.as_ref().map_or(0, |p| p.moved),
        deleted: done.as_ref().map_or(0, |p| p.deleted),
        ..MoveOutcome::default()
    };
    let started = Instant::now();
    loop {
        let reading = Instant::now();
        let rows: Vec<OldRow> =
            sql_query(READ_BATCH).bind::<BigInt, _>(outcome.last_id).bind::<BigInt, _>(batch).load(main).await?;
        outcome.read_time += reading.elapsed();
        let Some(last) = rows.last().map(|r| r.id) else { break };
        let n = rows.len() as i64;
        let events: Vec<LlmCallEvent> = rows.into_iter().map(OldRow::into_event).collect();
        let refs: Vec<&LlmCallEvent> = events.iter().collect();
        let writing = Instant::now();
        let inserted = write(writer, copy, &refs).await?;
        outcome.write_time += writing.elapsed();
        outcome.read += n;
        outcome.inserted += inserted.llm_logs as i64;
        // Every row of the batch is stored now, by this run or by one killed between
        // its commit and its progress record.
        outcome.moved += n;
        outcome.last_id = last;
        sql_query(
            "INSERT INTO legacy_move_progress (source, last_id, moved) VALUES ($1, $2, $3) \
             ON CONFLICT (source) DO UPDATE SET last_id = EXCLUDED.last_id, moved = EXCLUDED.moved, updated_at = now()",
        )
        .bind::<Text, _>(SOURCE)
        .bind::<BigInt, _>(outcome.last_id)
        .bind::<BigInt, _>(outcome.moved)
        .execute(analytics)
        .await?;
        progress(&outcome, outcome.read as f64 / started.elapsed().as_secs_f64().max(1e-3));
        if n < batch {
            break;
        }
    }
    let compacting = Instant::now();
    if !folder.catch_up(Duration::from_secs(60)).await? {
        tracing::warn!(
            "the rollups do not hold every moved call yet (a long transaction holds them back); the worker folds the rest"
        );
    }
    outcome.compact_time = compacting.elapsed();
    Ok(outcome)
}

/// A batch by COPY, or by the idempotent path when some of it is stored already.
async fn write(writer: &AnalyticsWriter, copy: &mut CopyWriter, calls: &[&LlmCallEvent]) -> anyhow::Result<Inserted> {
    writer.ensure_partitions_for(calls, &[]).await?;
    match copy.write(calls, &[]).await {
        Ok(inserted) => Ok(inserted),
        Err(CopyFailure::Duplicate) => Ok(writer.write(calls, &[]).await?),
        Err(CopyFailure::Rejected(why) | CopyFailure::Transient(why)) => {
            // The idempotent path names the row at fault, or fails the same way.
            tracing::debug!(error = %why, "COPY refused a batch; writing it through the idempotent path");
            Ok(writer.write(calls, &[]).await?)
        }
    }
}

/// One UTC day's figures on one side.
#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
pub struct DayFigures {
    #[diesel(sql_type = Text)]
    pub day: String,
    #[diesel(sql_type = BigInt)]
    pub calls: i64,
    #[diesel(sql_type = BigInt)]
    pub tokens_input: i64,
    #[diesel(sql_type = BigInt)]
    pub tokens_output: i64,
    /// USD, to the old table's six decimals.
    #[diesel(sql_type = Text)]
    pub cost_usd: String,
}

/// Both sides, day by day: (main, analytics) per day where they differ (`None`: the
/// side has no calls that day); empty when equal.
pub struct Reconciliation {
    pub days: usize,
    pub differing: Vec<(Option<DayFigures>, Option<DayFigures>)>,
}

const DAY_FIGURES: &str = "to_char((created_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') AS day, count(*) AS calls, \
     coalesce(sum(tokens_input), 0)::int8 AS tokens_input, coalesce(sum(tokens_output), 0)::int8 AS tokens_output, \
     round(coalesce(sum(cost_usd), 0), 6)::text AS cost_usd";

/// Compares the old LLM rows up to `last_id` with the calls moved from them.
pub async fn reconcile(
    main: &mut AsyncPgConnection,
    analytics: &mut AsyncPgConnection,
    last_id: i64,
) -> anyhow::Result<Reconciliation> {
    let old: Vec<DayFigures> = sql_query(format!(
        "SELECT {DAY_FIGURES} FROM system_logs WHERE component = 'llm' AND id <= $1 GROUP BY 1 ORDER BY 1"
    ))
    .bind::<BigInt, _>(last_id)
    .load(main)
    .await?;
    let (lo, hi) = moved_ids();
    let new: Vec<DayFigures> =
        sql_query(format!("SELECT {DAY_FIGURES} FROM llm_logs WHERE event_id BETWEEN $1 AND $2 GROUP BY 1 ORDER BY 1"))
            .bind::<Uuid, _>(lo)
            .bind::<Uuid, _>(hi)
            .load(analytics)
            .await?;
    let mut days: Vec<&str> = old.iter().chain(&new).map(|d| d.day.as_str()).collect();
    days.sort_unstable();
    days.dedup();
    let find = |side: &[DayFigures], day: &str| side.iter().find(|d| d.day == day).cloned();
    let differing = days.iter().map(|day| (find(&old, day), find(&new, day))).filter(|(a, b)| a != b).collect();
    Ok(Reconciliation { days: days.len(), differing })
}

/// Deletes the moved rows (old LLM rows up to `last_id`) from the main database, `batch`
/// at a time, each batch its own short transaction, counting them in the progress
/// table; returns the rows deleted by this call.
pub async fn delete_moved(
    main: &mut AsyncPgConnection,
    analytics: &mut AsyncPgConnection,
    last_id: i64,
    batch: i64,
    mut progress: impl FnMut(i64),
) -> anyhow::Result<i64> {
    let mut deleted = 0;
    loop {
        let n = sql_query(
            "DELETE FROM system_logs WHERE id IN \
               (SELECT id FROM system_logs WHERE component = 'llm' AND id <= $1 ORDER BY id LIMIT $2)",
        )
        .bind::<BigInt, _>(last_id)
        .bind::<BigInt, _>(batch)
        .execute(main)
        .await? as i64;
        deleted += n;
        sql_query("UPDATE legacy_move_progress SET deleted = deleted + $2, updated_at = now() WHERE source = $1")
            .bind::<Text, _>(SOURCE)
            .bind::<BigInt, _>(n)
            .execute(analytics)
            .await?;
        progress(deleted);
        if n < batch {
            return Ok(deleted);
        }
    }
}

/// Creates the old table in `main` (unless there) and adds `rows` old LLM rows spread
/// over `days` days before `end`, with API rows between them (component `api`, which
/// the move leaves alone): models with and without a cost, errors without usage,
/// streams, old metadata. `progress(rows written)` after each 100,000.
pub async fn generate_fixture(
    main: &mut AsyncPgConnection,
    rows: i64,
    days: i64,
    end: DateTime<Utc>,
    mut progress: impl FnMut(i64),
) -> anyhow::Result<()> {
    main.batch_execute(LEGACY_TABLE).await?;
    let chunk = 100_000;
    let mut written = 0;
    while written < rows {
        let n = chunk.min(rows - written);
        sql_query(
            "INSERT INTO system_logs (created_at, level, component, action, message, user_id, company_id, \
               interview_id, model, tokens_used, tokens_input, tokens_output, cost_usd, latency_ms, streaming, \
               error_type, error_message, request_method, request_path, status_code, metadata, deployment_version, \
               deployment_environment) \
             SELECT $3::timestamptz - ($4::int8 * interval '1 day') * (1 - i::float8 / $5::int8), \
               CASE WHEN err THEN 'error' ELSE 'info' END, 'llm', \
               (ARRAY['cv_analysis', 'interview_questions', 'chat'])[1 + i % 3], \
               CASE WHEN i % 5 = 0 THEN 'LLM call ' || i END, 1 + i % 500, 1 + i % 40, \
               CASE WHEN i % 4 = 0 THEN i % 10000 END, m, tin + tout, tin, tout, \
               CASE WHEN tin IS NULL OR m = 'local-model' THEN NULL \
                    ELSE round(((tin * 0.15 + tout * 0.6) / 1000000.0)::numeric, 6) END, \
               50 + (i * 7919) % 20000, i % 2 = 0, \
               CASE WHEN err THEN 'upstream_error' END, CASE WHEN err THEN 'HTTP 502 from the provider' END, \
               CASE WHEN i % 7 = 0 THEN 'POST' END, CASE WHEN i % 7 = 0 THEN '/api/llm/analyze' END, \
               CASE WHEN err THEN 502 ELSE 200 END, \
               CASE WHEN i % 3 = 0 THEN jsonb_build_object('prompt_version', 'v' || (i % 4)) END, \
               'legacy-1.' || (i % 9), 'production' \
             FROM (SELECT i, i % 23 = 0 AS err, \
                          (ARRAY['gpt-4o-mini', 'gpt-4o', 'gpt-3.5-turbo', 'local-model'])[1 + (i / 3) % 4] AS m, \
                          CASE WHEN i % 23 <> 0 THEN 100 + i % 2000 END AS tin, \
                          CASE WHEN i % 23 <> 0 THEN 20 + i % 700 END AS tout \
                   FROM generate_series($1::int8, $2::int8) AS i) AS g",
        )
        .bind::<BigInt, _>(written)
        .bind::<BigInt, _>(written + n - 1)
        .bind::<Timestamptz, _>(end)
        .bind::<BigInt, _>(days)
        .bind::<BigInt, _>(rows)
        .execute(main)
        .await?;
        // API rows the move must leave where they are.
        sql_query(
            "INSERT INTO system_logs (created_at, level, component, message, request_method, request_path, status_code) \
             SELECT $2::timestamptz - interval '1 second' * i, 'info', 'api', 'request', 'GET', '/api/jobs', 200 \
             FROM generate_series(1, $1::int8 / 50) AS i",
        )
        .bind::<BigInt, _>(n)
        .bind::<Timestamptz, _>(end)
        .execute(main)
        .await?;
        written += n;
        progress(written);
    }
    main.batch_execute("ANALYZE system_logs").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_event_ids_are_valid_distinct_and_in_their_range() {
        let (lo, hi) = moved_ids();
        let a = legacy_event_id(1);
        let b = legacy_event_id(2);
        assert_ne!(a, b);
        assert_eq!(a.get_version_num(), 8);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        for id in [1, 2, 1_000_000, i64::MAX >> 2] {
            let e = legacy_event_id(id);
            assert!(lo <= e && e <= hi, "{id}");
        }
        assert!(common_models::events::new_event_id() < lo || common_models::events::new_event_id() > hi);
    }
}
