//! The fast path: a batch goes in with `COPY … FROM STDIN (FORMAT binary)`, straight into
//! the partitioned tables, both in one transaction. COPY cannot skip duplicates, so
//! when a batch holds an event that is already stored (a redelivery after a crash) the
//! transaction fails with a unique violation and the caller writes that batch again
//! through the idempotent `INSERT … ON CONFLICT DO NOTHING` path. Duplicates are rare;
//! the common case runs at the speed of COPY. Each row carries the transaction's id
//! (`inserted_by`), which the rollups follow (`rollup`).
//!
//! diesel-async has no COPY, so this path holds a plain tokio-postgres connection of
//! its own (one per write loop), reconnecting after any connection-level failure.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common_models::events::{LlmCallEvent, SystemLogEvent};
use futures_util::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::handoff::{Call, Handoff};
use crate::writer::{Inserted, LLM_COLUMNS, SYSTEM_COLUMNS, decimal, fit, fit_opt, limits};

/// Why a COPY did not commit.
#[derive(Debug)]
pub enum CopyFailure {
    /// Some row is already stored: write the batch through the idempotent path.
    Duplicate,
    /// The database refused the data: let the idempotent path find the row at fault.
    Rejected(String),
    /// Down, locked, timed out: retry later.
    Transient(String),
}

pub struct CopyWriter {
    url: String,
    client: Option<Client>,
    session_limits: String,
    handoff: Option<Arc<Handoff>>,
}

impl CopyWriter {
    pub fn new(url: &str, lock_timeout: Duration, statement_timeout: Duration) -> Self {
        Self {
            url: service_kit::config::postgres_url_for(url, "llm-log-worker-copy"),
            client: None,
            session_limits: limits(lock_timeout, statement_timeout),
            handoff: None,
        }
    }

    /// Hands each committed batch's calls to the fold of this process ([`Handoff`]).
    pub fn handing(mut self, handoff: Arc<Handoff>) -> Self {
        self.handoff = Some(handoff);
        self
    }

    async fn client(&mut self) -> Result<&mut Client, CopyFailure> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) =
                tokio_postgres::connect(&self.url, NoTls).await.map_err(|e| CopyFailure::Transient(e.to_string()))?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "copy connection ended");
                }
            });
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| CopyFailure::Transient("no connection".into()))
    }

    /// Copies both slices in one transaction. Partitions must exist already.
    pub async fn write(&mut self, llm: &[&LlmCallEvent], system: &[&SystemLogEvent]) -> Result<Inserted, CopyFailure> {
        let limits = self.session_limits.clone();
        let handed = match &self.handoff {
            Some(_) if !llm.is_empty() => llm.iter().map(|e| Call::of(e)).collect::<Option<Vec<_>>>(),
            _ => None,
        };
        let result = async {
            let client = self.client().await?;
            let tx = client.transaction().await.map_err(classify)?;
            let xid = transaction_id(&tx, &limits).await?;
            let mut inserted = Inserted::default();
            if !llm.is_empty() {
                inserted.llm_logs =
                    copy(&tx, "llm_logs", &format!("{LLM_COLUMNS}, inserted_by"), llm_rows(llm, xid)).await?;
            }
            if !system.is_empty() {
                inserted.system_logs = copy(&tx, "system_logs", SYSTEM_COLUMNS, system_rows(system)).await?;
            }
            tx.commit().await.map_err(classify)?;
            Ok((inserted, xid))
        }
        .await;
        if matches!(result, Err(CopyFailure::Transient(_))) {
            // Whatever state the connection is in, start afresh next time.
            self.client = None;
        }
        let (inserted, xid) = result?;
        if let (Some(handoff), Some(calls)) = (&self.handoff, handed) {
            handoff.hand(xid, calls);
        }
        Ok(inserted)
    }
}

/// Sets the transaction's limits and returns its id (assigning it), in one round trip.
async fn transaction_id(tx: &tokio_postgres::Transaction<'_>, limits: &str) -> Result<u64, CopyFailure> {
    let replies = tx.simple_query(&format!("{limits}; SELECT pg_current_xact_id()::text")).await.map_err(classify)?;
    replies
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok(),
            _ => None,
        })
        .ok_or_else(|| CopyFailure::Transient("no transaction id".into()))
}

async fn copy(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    columns: &str,
    rows: Vec<u8>,
) -> Result<usize, CopyFailure> {
    let sink = tx
        .copy_in::<_, Bytes>(&format!("COPY {table} ({columns}) FROM STDIN (FORMAT binary)"))
        .await
        .map_err(classify)?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(rows)).await.map_err(classify)?;
    let rows = sink.finish().await.map_err(classify)?;
    Ok(usize::try_from(rows).unwrap_or(usize::MAX))
}

fn classify(err: tokio_postgres::Error) -> CopyFailure {
    let Some(code) = err.code() else {
        return CopyFailure::Transient(err.to_string());
    };
    if *code == SqlState::UNIQUE_VIOLATION {
        return CopyFailure::Duplicate;
    }
    // Connection problems (08), resources (53), operator intervention and timeouts
    // (57), lock waits (55P03), serialisation and deadlocks (40).
    let transient = ["08", "53", "57", "40"].iter().any(|class| code.code().starts_with(class))
        || *code == SqlState::LOCK_NOT_AVAILABLE;
    if transient { CopyFailure::Transient(err.to_string()) } else { CopyFailure::Rejected(err.to_string()) }
}

/// The rows of one `COPY … (FORMAT binary)`: a header, then each row as a field count
/// and its fields, each a length (-1 for NULL) and the column type's binary form, then
/// a trailer. PostgreSQL parses these with each type's receive function, which checks
/// the same limits as text input (varchar lengths, numeric typmods, UTF-8, jsonb) and
/// costs it less than parsing CSV text.
struct BinaryRows {
    out: Vec<u8>,
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
pub(crate) const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl BinaryRows {
    fn with_capacity(rows: usize, row_bytes: usize) -> Self {
        let mut out = Vec::with_capacity(19 + rows * row_bytes + 2);
        out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        out.extend_from_slice(&0_i32.to_be_bytes()); // flags: no OIDs
        out.extend_from_slice(&0_i32.to_be_bytes()); // no header extension
        Self { out }
    }

    fn row(&mut self, fields: i16) {
        self.out.extend_from_slice(&fields.to_be_bytes());
    }

    fn null(&mut self) {
        self.out.extend_from_slice(&(-1_i32).to_be_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.out.extend_from_slice(bytes);
    }

    fn text(&mut self, v: Option<&str>) {
        match v {
            Some(v) => self.field(v.as_bytes()),
            None => self.null(),
        }
    }

    /// A fixed-width value (an integer or a float) in network byte order.
    fn fixed<const N: usize>(&mut self, v: Option<[u8; N]>) {
        match v {
            Some(bytes) => self.field(&bytes),
            None => self.null(),
        }
    }

    fn bool(&mut self, v: bool) {
        self.field(&[u8::from(v)]);
    }

    fn uuid(&mut self, v: uuid::Uuid) {
        self.field(v.as_bytes());
    }

    /// Microseconds, cut (not rounded) as the INSERT path stores them, so both paths
    /// write the same idempotency key for the same event.
    fn timestamptz(&mut self, at: chrono::DateTime<chrono::Utc>) {
        self.field(&(at.timestamp_micros() - POSTGRES_EPOCH_MICROS).to_be_bytes());
    }

    fn xid8(&mut self, xid: u64) {
        self.field(&xid.to_be_bytes());
    }

    /// A float as the NUMERIC its shortest decimal text would be: base-10,000 digits,
    /// with the display scale of that text. The column's typmod then rounds it on the
    /// server exactly as it rounds text input.
    fn numeric(&mut self, v: Option<f64>) {
        let Some(text) = decimal(v) else {
            return self.null();
        };
        let (negative, int, frac) = decimal_parts(&text);
        let int = int.trim_start_matches('0');
        let lead = (4 - int.len() % 4) % 4;
        let decimals: Vec<u8> = std::iter::repeat_n(b'0', lead)
            .chain(int.bytes())
            .chain(frac.bytes())
            .chain(std::iter::repeat_n(b'0', (4 - frac.len() % 4) % 4))
            .map(|c| c - b'0')
            .collect();
        let mut groups: Vec<i16> =
            decimals.chunks(4).map(|g| g.iter().fold(0_i16, |n, &d| n * 10 + i16::from(d))).collect();
        let mut weight = ((lead + int.len()) / 4) as i16 - 1;
        let first = groups.iter().position(|&g| g != 0).unwrap_or(groups.len());
        groups.drain(..first);
        weight -= first as i16;
        while groups.last() == Some(&0) {
            groups.pop();
        }
        let (sign, weight) = match groups.is_empty() {
            true => (0_i16, 0_i16),
            false if negative => (0x4000, weight),
            false => (0, weight),
        };
        self.out.extend_from_slice(&(8 + 2 * groups.len() as i32).to_be_bytes());
        for part in [groups.len() as i16, weight, sign, frac.len() as i16].into_iter().chain(groups) {
            self.out.extend_from_slice(&part.to_be_bytes());
        }
    }

    /// jsonb's binary form is a version byte (1) and the JSON text.
    fn jsonb(&mut self, v: Option<&serde_json::Value>) {
        let Some(v) = v else {
            return self.null();
        };
        let json = v.to_string();
        self.out.extend_from_slice(&(json.len() as i32 + 1).to_be_bytes());
        self.out.push(1);
        self.out.extend_from_slice(json.as_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&(-1_i16).to_be_bytes());
        self.out
    }
}

/// A float's decimal text (`decimal`) taken apart: its sign, and the digits before and
/// after the point.
pub(crate) fn decimal_parts(text: &str) -> (bool, &str, &str) {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    (negative, int, frac)
}

/// The action, model and error type of `e` as its row stores them (the rollups' text
/// keys; the fold's handed calls take them from here too).
pub(crate) fn stored_keys(e: &LlmCallEvent) -> (Cow<'_, str>, Option<Cow<'_, str>>, Option<Cow<'_, str>>) {
    (fit(&e.action, 100), fit_opt(e.model.as_ref(), 100), fit_opt(e.error_type.as_ref(), 100))
}

/// The rows of `LLM_COLUMNS`, then `inserted_by` (`xid`).
fn llm_rows(events: &[&LlmCallEvent], xid: u64) -> Vec<u8> {
    let mut rows = BinaryRows::with_capacity(events.len(), 512);
    for e in events {
        let (action, model, error_type) = stored_keys(e);
        rows.row(29);
        rows.uuid(e.event_id);
        rows.timestamptz(e.created_at);
        rows.text(Some(&action));
        rows.text(fit_opt(e.message.as_ref(), usize::MAX).as_deref());
        rows.fixed(e.user_id.map(|v| v.0).map(i64::to_be_bytes));
        rows.fixed(e.company_id.map(|v| v.0).map(i64::to_be_bytes));
        rows.fixed(e.interview_id.map(|v| v.0).map(i64::to_be_bytes));
        rows.text(fit_opt(e.request_id.as_ref(), 64).as_deref());
        rows.text(model.as_deref());
        rows.fixed(e.tokens_total.map(i32::to_be_bytes));
        rows.fixed(e.tokens_input.map(i32::to_be_bytes));
        rows.fixed(e.tokens_output.map(i32::to_be_bytes));
        rows.bool(e.usage_reported);
        rows.numeric(e.cost_usd);
        rows.text(fit_opt(e.price_table_version.as_ref(), 50).as_deref());
        rows.fixed(e.latency_ms.map(i32::to_be_bytes));
        rows.fixed(e.time_to_first_token_ms.map(i32::to_be_bytes));
        rows.bool(e.streaming);
        rows.fixed(e.http_status.map(i16::to_be_bytes));
        rows.text(error_type.as_deref());
        rows.text(fit_opt(e.error_message.as_ref(), usize::MAX).as_deref());
        rows.jsonb(e.metadata.as_ref());
        rows.text(fit_opt(e.deployment_version.as_ref(), 50).as_deref());
        rows.text(fit_opt(e.deployment_environment.as_ref(), 50).as_deref());
        rows.bool(e.cache_hit);
        rows.numeric(e.cost_saved_usd);
        rows.fixed(e.tokens_cached_input.map(i32::to_be_bytes));
        rows.fixed(e.tokens_reasoning.map(i32::to_be_bytes));
        rows.xid8(xid);
    }
    rows.finish()
}

fn system_rows(events: &[&SystemLogEvent]) -> Vec<u8> {
    let mut rows = BinaryRows::with_capacity(events.len(), 256);
    for e in events {
        rows.row(14);
        rows.uuid(e.event_id);
        rows.timestamptz(e.created_at);
        rows.text(Some(&fit(&e.level, 10)));
        rows.text(Some(&fit(&e.component, 50)));
        rows.text(Some(&fit(&e.message, usize::MAX)));
        rows.text(fit_opt(e.request_method.as_ref(), 10).as_deref());
        rows.text(fit_opt(e.request_path.as_ref(), 500).as_deref());
        rows.fixed(e.status_code.map(i16::to_be_bytes));
        rows.fixed(e.latency_ms.filter(|l| l.is_finite()).map(f64::to_be_bytes));
        rows.fixed(e.company_id.map(|v| v.0).map(i64::to_be_bytes));
        rows.fixed(e.user_id.map(|v| v.0).map(i64::to_be_bytes));
        rows.text(fit_opt(e.request_id.as_ref(), 64).as_deref());
        rows.text(fit_opt(e.error_type.as_ref(), 100).as_deref());
        rows.jsonb(e.metadata.as_ref());
    }
    rows.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The NUMERIC field `numeric` writes: (ndigits, weight, sign, dscale, digits).
    fn numeric_parts(v: f64) -> Vec<i16> {
        let mut rows = BinaryRows { out: Vec::new() };
        rows.numeric(Some(v));
        rows.out[4..].chunks(2).map(|p| i16::from_be_bytes([p[0], p[1]])).collect()
    }

    #[test]
    fn numerics_are_base_10000_digits_with_the_texts_scale() {
        // 0.000123 = 1·10⁻⁴ + 2300·10⁻⁸
        assert_eq!(numeric_parts(0.000123), [2, -1, 0, 6, 1, 2300]);
        assert_eq!(numeric_parts(1234.5), [2, 0, 0, 1, 1234, 5000]);
        assert_eq!(numeric_parts(12345.0), [2, 1, 0, 0, 1, 2345]);
        // 0.00001 = 1000·10⁻⁸: a leading zero group is dropped, the weight follows
        assert_eq!(numeric_parts(0.00001), [1, -2, 0, 5, 1000]);
        assert_eq!(numeric_parts(-2.5), [2, 0, 0x4000, 1, 2, 5000]);
        assert_eq!(numeric_parts(0.0), [0, 0, 0, 0]);
        assert_eq!(numeric_parts(-0.0), [0, 0, 0, 0]);
        let mut rows = BinaryRows { out: Vec::new() };
        rows.numeric(Some(f64::NAN));
        assert_eq!(rows.out, (-1_i32).to_be_bytes());
    }

    #[test]
    fn timestamps_are_cut_to_microseconds_from_2000() {
        let at = chrono::DateTime::from_timestamp(946_684_801, 123_456_999).unwrap_or_default();
        let mut rows = BinaryRows { out: Vec::new() };
        rows.timestamptz(at);
        assert_eq!(rows.out[4..], 1_123_456_i64.to_be_bytes());
    }
}
