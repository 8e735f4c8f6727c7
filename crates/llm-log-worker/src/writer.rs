//! Batched, idempotent writes of log events to the analytics database.
//!
//! A batch becomes one `INSERT … SELECT FROM unnest(<one array per column>) ON CONFLICT
//! DO NOTHING` per table, both in one transaction: one statement and one round trip
//! whatever the batch size, with every value sent as a typed binary array.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use common_models::events::{LlmCallEvent, SystemLogEvent};
use common_models::queue::LogStream;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_query;
use diesel::sql_types::{Array, Bool, Date, Float8, Int2, Int4, Int8, Jsonb, Nullable, Text, Timestamptz, Uuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use service_kit::db::PgPool;

/// Why a write failed, which decides what happens next.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The database is down, locked, overloaded or timed out: retry the same batch later.
    #[error("analytics database unavailable: {0}")]
    Transient(String),
    /// The database refused the data itself: find the row and, if it keeps being
    /// refused, dead-letter it.
    #[error("analytics database rejected the batch: {0}")]
    Rejected(String),
}

/// Rows actually inserted per table (the rest were duplicates).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub llm_logs: usize,
    pub system_logs: usize,
}

pub struct AnalyticsWriter {
    pool: PgPool,
    /// Partitions known to exist, so the check costs a query once per month and table.
    known_partitions: Mutex<HashSet<(LogStream, NaiveDate)>>,
    session_limits: String,
}

impl AnalyticsWriter {
    pub fn new(pool: PgPool, lock_timeout: Duration, statement_timeout: Duration) -> Self {
        Self {
            pool,
            known_partitions: Mutex::new(HashSet::new()),
            session_limits: limits(lock_timeout, statement_timeout),
        }
    }

    /// Creates the partitions the events need, unless known to exist.
    pub async fn ensure_partitions_for(
        &self,
        llm: &[&LlmCallEvent],
        system: &[&SystemLogEvent],
    ) -> Result<(), WriteError> {
        let mut months: HashSet<(LogStream, NaiveDate)> = HashSet::new();
        months.extend(llm.iter().map(|e| (LogStream::LlmLogs, month_of(e.created_at))));
        months.extend(system.iter().map(|e| (LogStream::SystemLogs, month_of(e.created_at))));
        if let Ok(known) = self.known_partitions.lock() {
            months.retain(|p| !known.contains(p));
        }
        if months.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.get().await.map_err(|e| WriteError::Transient(e.to_string()))?;
        self.ensure_partitions(&mut conn, months).await
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Writes both slices in one transaction. Rows already present are skipped.
    pub async fn write(&self, llm: &[&LlmCallEvent], system: &[&SystemLogEvent]) -> Result<Inserted, WriteError> {
        self.ensure_partitions_for(llm, system).await?;
        let mut conn = self.pool.get().await.map_err(|e| WriteError::Transient(e.to_string()))?;

        let llm_rows = LlmColumns::from_events(llm);
        let system_rows = SystemColumns::from_events(system);
        let limits = self.session_limits.as_str();
        conn.transaction::<Inserted, DieselError, _>(async move |conn| {
            conn.batch_execute(limits).await?;
            let mut inserted = Inserted::default();
            if let Some(rows) = llm_rows {
                inserted.llm_logs = rows.insert(conn).await?;
            }
            if let Some(rows) = system_rows {
                inserted.system_logs = rows.insert(conn).await?;
            }
            Ok(inserted)
        })
        .await
        .map_err(classify)
    }

    /// Creates the monthly partitions for the current and the next month of both tables.
    pub async fn ensure_partitions_ahead(&self, now: DateTime<Utc>) -> Result<(), WriteError> {
        let this_month = month_of(now);
        let next_month = this_month.checked_add_months(Months::new(1)).unwrap_or(this_month);
        let wanted = LogStream::ALL.into_iter().flat_map(|s| [(s, this_month), (s, next_month)]).collect();
        let mut conn = self.pool.get().await.map_err(|e| WriteError::Transient(e.to_string()))?;
        self.ensure_partitions(&mut conn, wanted).await
    }

    async fn ensure_partitions(
        &self,
        conn: &mut AsyncPgConnection,
        mut wanted: HashSet<(LogStream, NaiveDate)>,
    ) -> Result<(), WriteError> {
        if let Ok(known) = self.known_partitions.lock() {
            wanted.retain(|p| !known.contains(p));
        }
        for (stream, month) in wanted {
            sql_query("SELECT ensure_monthly_partition($1, $2)")
                .bind::<Text, _>(stream.name())
                .bind::<Date, _>(month)
                .execute(conn)
                .await
                .map_err(classify)?;
            if let Ok(mut known) = self.known_partitions.lock() {
                known.insert((stream, month));
            }
        }
        Ok(())
    }
}

/// The first day of the month `at` falls in (UTC), which names its partition.
pub fn month_of(at: DateTime<Utc>) -> NaiveDate {
    let d = at.date_naive();
    NaiveDate::from_ymd_opt(d.year(), d.month(), 1).unwrap_or(d)
}

/// Errors the database raises about the state of the server or a lock, never about
/// the data: the same batch may well succeed later.
const TRANSIENT_MESSAGES: [&str; 9] = [
    "lock timeout",
    "statement timeout",
    "canceling statement",
    "terminating connection",
    "the database system is",
    "too many clients",
    "deadlock detected",
    "out of memory",
    "could not extend",
];

fn classify(err: DieselError) -> WriteError {
    match &err {
        DieselError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::SerializationFailure
            | DatabaseErrorKind::ReadOnlyTransaction => WriteError::Transient(err.to_string()),
            _ if TRANSIENT_MESSAGES.iter().any(|m| info.message().contains(m)) => {
                WriteError::Transient(err.to_string())
            }
            _ => WriteError::Rejected(describe(&err)),
        },
        DieselError::BrokenTransactionManager | DieselError::RollbackErrorOnCommit { .. } => {
            WriteError::Transient(err.to_string())
        }
        _ => WriteError::Rejected(describe(&err)),
    }
}

fn describe(err: &DieselError) -> String {
    match err {
        DieselError::DatabaseError(_, info) => match (info.column_name(), info.details()) {
            (Some(col), _) => format!("{} (column {col})", info.message()),
            (None, Some(details)) => format!("{}: {details}", info.message()),
            _ => info.message().to_owned(),
        },
        other => other.to_string(),
    }
}

/// The per-transaction limits every write sets first.
pub fn limits(lock_timeout: Duration, statement_timeout: Duration) -> String {
    format!(
        "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}",
        lock_timeout.as_millis(),
        statement_timeout.as_millis()
    )
}

/// Cuts `s` to at most `max` characters and drops NUL bytes, which PostgreSQL text
/// cannot hold. Column limits are a storage detail: a long model name must not cost
/// the whole row. Borrows when nothing needs changing, which is almost always.
pub fn fit(s: &str, max: usize) -> Cow<'_, str> {
    let clean: Cow<'_, str> = if s.contains('\0') { Cow::Owned(s.replace('\0', "")) } else { Cow::Borrowed(s) };
    if clean.len() <= max {
        return clean; // a string of at most `max` bytes has at most `max` characters
    }
    match clean.char_indices().nth(max) {
        Some((cut, _)) => match clean {
            Cow::Borrowed(b) => Cow::Borrowed(&b[..cut]),
            Cow::Owned(o) => Cow::Owned(o[..cut].to_owned()),
        },
        None => clean,
    }
}

pub fn fit_opt(s: Option<&String>, max: usize) -> Option<Cow<'_, str>> {
    s.map(|s| fit(s, max))
}

/// Unbounded text columns: only NUL bytes are removed.
const UNBOUNDED: usize = usize::MAX;

/// The `llm_logs` columns every write path fills, in this order.
macro_rules! llm_columns {
    () => {
        "event_id, created_at, action, message, user_id, company_id, interview_id, request_id, model, \
         tokens_used, tokens_input, tokens_output, usage_reported, cost_usd, price_table_version, latency_ms, \
         time_to_first_token_ms, streaming, http_status, error_type, error_message, metadata, \
         deployment_version, deployment_environment, cache_hit, cost_saved_usd, tokens_cached_input, \
         tokens_reasoning"
    };
}
pub const LLM_COLUMNS: &str = llm_columns!();

/// Each row carries the transaction's id (`inserted_by`), which the rollups follow.
const INSERT_LLM_LOGS: &str = concat!(
    "INSERT INTO llm_logs (",
    llm_columns!(),
    ", inserted_by) SELECT *, pg_current_xact_id() FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::int8[], $6::int8[], \
     $7::int8[], $8::text[], $9::text[], $10::int4[], $11::int4[], $12::int4[], $13::bool[], $14::text[]::numeric[], \
     $15::text[], $16::int4[], $17::int4[], $18::bool[], $19::int2[], $20::text[], $21::text[], $22::jsonb[], \
     $23::text[], $24::text[], $25::bool[], $26::text[]::numeric[], $27::int4[], $28::int4[]) ON CONFLICT DO NOTHING"
);

/// A finite amount as its shortest decimal text (Rust writes no exponent): what both
/// write paths hand PostgreSQL for a `NUMERIC` column.
pub(crate) fn decimal(v: Option<f64>) -> Option<String> {
    v.filter(|v| v.is_finite()).map(|v| v.to_string())
}

/// One batch of `llm_logs` rows, column by column.
struct LlmColumns<'a> {
    event_id: Vec<uuid::Uuid>,
    created_at: Vec<DateTime<Utc>>,
    action: Vec<Cow<'a, str>>,
    message: Vec<Option<Cow<'a, str>>>,
    user_id: Vec<Option<i64>>,
    company_id: Vec<Option<i64>>,
    interview_id: Vec<Option<i64>>,
    request_id: Vec<Option<Cow<'a, str>>>,
    model: Vec<Option<Cow<'a, str>>>,
    tokens_used: Vec<Option<i32>>,
    tokens_input: Vec<Option<i32>>,
    tokens_output: Vec<Option<i32>>,
    usage_reported: Vec<bool>,
    /// Costs as their shortest decimal text, which the column rounds as COPY's does
    /// (a float8 parameter would be cut to 15 digits first and could round otherwise).
    cost_usd: Vec<Option<String>>,
    price_table_version: Vec<Option<Cow<'a, str>>>,
    latency_ms: Vec<Option<i32>>,
    time_to_first_token_ms: Vec<Option<i32>>,
    streaming: Vec<bool>,
    http_status: Vec<Option<i16>>,
    error_type: Vec<Option<Cow<'a, str>>>,
    error_message: Vec<Option<Cow<'a, str>>>,
    metadata: Vec<Option<&'a serde_json::Value>>,
    deployment_version: Vec<Option<Cow<'a, str>>>,
    deployment_environment: Vec<Option<Cow<'a, str>>>,
    cache_hit: Vec<bool>,
    cost_saved_usd: Vec<Option<String>>,
    tokens_cached_input: Vec<Option<i32>>,
    tokens_reasoning: Vec<Option<i32>>,
}

impl<'a> LlmColumns<'a> {
    fn from_events(events: &[&'a LlmCallEvent]) -> Option<Self> {
        if events.is_empty() {
            return None;
        }
        Some(Self {
            event_id: events.iter().map(|e| e.event_id).collect(),
            created_at: events.iter().map(|e| e.created_at).collect(),
            action: events.iter().map(|e| fit(&e.action, 100)).collect(),
            message: events.iter().map(|e| fit_opt(e.message.as_ref(), UNBOUNDED)).collect(),
            user_id: events.iter().map(|e| e.user_id.map(|v| v.0)).collect(),
            company_id: events.iter().map(|e| e.company_id.map(|v| v.0)).collect(),
            interview_id: events.iter().map(|e| e.interview_id.map(|v| v.0)).collect(),
            request_id: events.iter().map(|e| fit_opt(e.request_id.as_ref(), 64)).collect(),
            model: events.iter().map(|e| fit_opt(e.model.as_ref(), 100)).collect(),
            tokens_used: events.iter().map(|e| e.tokens_total).collect(),
            tokens_input: events.iter().map(|e| e.tokens_input).collect(),
            tokens_output: events.iter().map(|e| e.tokens_output).collect(),
            usage_reported: events.iter().map(|e| e.usage_reported).collect(),
            cost_usd: events.iter().map(|e| decimal(e.cost_usd)).collect(),
            price_table_version: events.iter().map(|e| fit_opt(e.price_table_version.as_ref(), 50)).collect(),
            latency_ms: events.iter().map(|e| e.latency_ms).collect(),
            time_to_first_token_ms: events.iter().map(|e| e.time_to_first_token_ms).collect(),
            streaming: events.iter().map(|e| e.streaming).collect(),
            http_status: events.iter().map(|e| e.http_status).collect(),
            error_type: events.iter().map(|e| fit_opt(e.error_type.as_ref(), 100)).collect(),
            error_message: events.iter().map(|e| fit_opt(e.error_message.as_ref(), UNBOUNDED)).collect(),
            metadata: events.iter().map(|e| e.metadata.as_ref()).collect(),
            deployment_version: events.iter().map(|e| fit_opt(e.deployment_version.as_ref(), 50)).collect(),
            deployment_environment: events.iter().map(|e| fit_opt(e.deployment_environment.as_ref(), 50)).collect(),
            cache_hit: events.iter().map(|e| e.cache_hit).collect(),
            cost_saved_usd: events.iter().map(|e| decimal(e.cost_saved_usd)).collect(),
            tokens_cached_input: events.iter().map(|e| e.tokens_cached_input).collect(),
            tokens_reasoning: events.iter().map(|e| e.tokens_reasoning).collect(),
        })
    }

    async fn insert(self, conn: &mut AsyncPgConnection) -> Result<usize, DieselError> {
        sql_query(INSERT_LLM_LOGS)
            .bind::<Array<Uuid>, _>(self.event_id)
            .bind::<Array<Timestamptz>, _>(self.created_at)
            .bind::<Array<Text>, _>(self.action)
            .bind::<Array<Nullable<Text>>, _>(self.message)
            .bind::<Array<Nullable<Int8>>, _>(self.user_id)
            .bind::<Array<Nullable<Int8>>, _>(self.company_id)
            .bind::<Array<Nullable<Int8>>, _>(self.interview_id)
            .bind::<Array<Nullable<Text>>, _>(self.request_id)
            .bind::<Array<Nullable<Text>>, _>(self.model)
            .bind::<Array<Nullable<Int4>>, _>(self.tokens_used)
            .bind::<Array<Nullable<Int4>>, _>(self.tokens_input)
            .bind::<Array<Nullable<Int4>>, _>(self.tokens_output)
            .bind::<Array<Bool>, _>(self.usage_reported)
            .bind::<Array<Nullable<Text>>, _>(self.cost_usd)
            .bind::<Array<Nullable<Text>>, _>(self.price_table_version)
            .bind::<Array<Nullable<Int4>>, _>(self.latency_ms)
            .bind::<Array<Nullable<Int4>>, _>(self.time_to_first_token_ms)
            .bind::<Array<Bool>, _>(self.streaming)
            .bind::<Array<Nullable<Int2>>, _>(self.http_status)
            .bind::<Array<Nullable<Text>>, _>(self.error_type)
            .bind::<Array<Nullable<Text>>, _>(self.error_message)
            .bind::<Array<Nullable<Jsonb>>, _>(self.metadata)
            .bind::<Array<Nullable<Text>>, _>(self.deployment_version)
            .bind::<Array<Nullable<Text>>, _>(self.deployment_environment)
            .bind::<Array<Bool>, _>(self.cache_hit)
            .bind::<Array<Nullable<Text>>, _>(self.cost_saved_usd)
            .bind::<Array<Nullable<Int4>>, _>(self.tokens_cached_input)
            .bind::<Array<Nullable<Int4>>, _>(self.tokens_reasoning)
            .execute(conn)
            .await
    }
}

/// The `system_logs` columns every write path fills, in this order.
macro_rules! system_columns {
    () => {
        "event_id, created_at, level, component, message, request_method, request_path, status_code, \
         latency_ms, company_id, user_id, request_id, error_type, metadata"
    };
}
pub const SYSTEM_COLUMNS: &str = system_columns!();

const INSERT_SYSTEM_LOGS: &str = concat!(
    "INSERT INTO system_logs (",
    system_columns!(),
    ") SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::int2[], $9::float8[], $10::int8[], $11::int8[], $12::text[], $13::text[], $14::jsonb[]) \
     ON CONFLICT DO NOTHING"
);

/// One batch of `system_logs` rows, column by column.
struct SystemColumns<'a> {
    event_id: Vec<uuid::Uuid>,
    created_at: Vec<DateTime<Utc>>,
    level: Vec<Cow<'a, str>>,
    component: Vec<Cow<'a, str>>,
    message: Vec<Cow<'a, str>>,
    request_method: Vec<Option<Cow<'a, str>>>,
    request_path: Vec<Option<Cow<'a, str>>>,
    status_code: Vec<Option<i16>>,
    latency_ms: Vec<Option<f64>>,
    company_id: Vec<Option<i64>>,
    user_id: Vec<Option<i64>>,
    request_id: Vec<Option<Cow<'a, str>>>,
    error_type: Vec<Option<Cow<'a, str>>>,
    metadata: Vec<Option<&'a serde_json::Value>>,
}

impl<'a> SystemColumns<'a> {
    fn from_events(events: &[&'a SystemLogEvent]) -> Option<Self> {
        if events.is_empty() {
            return None;
        }
        Some(Self {
            event_id: events.iter().map(|e| e.event_id).collect(),
            created_at: events.iter().map(|e| e.created_at).collect(),
            level: events.iter().map(|e| fit(&e.level, 10)).collect(),
            component: events.iter().map(|e| fit(&e.component, 50)).collect(),
            message: events.iter().map(|e| fit(&e.message, UNBOUNDED)).collect(),
            request_method: events.iter().map(|e| fit_opt(e.request_method.as_ref(), 10)).collect(),
            request_path: events.iter().map(|e| fit_opt(e.request_path.as_ref(), 500)).collect(),
            status_code: events.iter().map(|e| e.status_code).collect(),
            latency_ms: events.iter().map(|e| e.latency_ms.filter(|l| l.is_finite())).collect(),
            company_id: events.iter().map(|e| e.company_id.map(|v| v.0)).collect(),
            user_id: events.iter().map(|e| e.user_id.map(|v| v.0)).collect(),
            request_id: events.iter().map(|e| fit_opt(e.request_id.as_ref(), 64)).collect(),
            error_type: events.iter().map(|e| fit_opt(e.error_type.as_ref(), 100)).collect(),
            metadata: events.iter().map(|e| e.metadata.as_ref()).collect(),
        })
    }

    async fn insert(self, conn: &mut AsyncPgConnection) -> Result<usize, DieselError> {
        sql_query(INSERT_SYSTEM_LOGS)
            .bind::<Array<Uuid>, _>(self.event_id)
            .bind::<Array<Timestamptz>, _>(self.created_at)
            .bind::<Array<Text>, _>(self.level)
            .bind::<Array<Text>, _>(self.component)
            .bind::<Array<Text>, _>(self.message)
            .bind::<Array<Nullable<Text>>, _>(self.request_method)
            .bind::<Array<Nullable<Text>>, _>(self.request_path)
            .bind::<Array<Nullable<Int2>>, _>(self.status_code)
            .bind::<Array<Nullable<Float8>>, _>(self.latency_ms)
            .bind::<Array<Nullable<Int8>>, _>(self.company_id)
            .bind::<Array<Nullable<Int8>>, _>(self.user_id)
            .bind::<Array<Nullable<Text>>, _>(self.request_id)
            .bind::<Array<Nullable<Text>>, _>(self.error_type)
            .bind::<Array<Nullable<Jsonb>>, _>(self.metadata)
            .execute(conn)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_on_character_boundaries_and_drops_nul() {
        assert_eq!(fit("héllo", 2), "hé");
        assert_eq!(fit("a\0b", 10), "ab");
        assert_eq!(fit("short", 100), "short");
    }

    #[test]
    fn month_of_names_the_partition() {
        let at = DateTime::parse_from_rfc3339("2026-12-31T23:59:59Z").map(|d| d.with_timezone(&Utc));
        assert_eq!(at.map(month_of).ok(), NaiveDate::from_ymd_opt(2026, 12, 1));
    }
}
