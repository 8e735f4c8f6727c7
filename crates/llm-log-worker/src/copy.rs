//! The fast path: a batch goes in with `COPY … FROM STDIN (FORMAT csv)`, straight into
//! the partitioned tables, both in one transaction. COPY cannot skip duplicates, so
//! when a batch holds an event that is already stored (a redelivery after a crash) the
//! transaction fails with a unique violation and the caller writes that batch again
//! through the idempotent `INSERT … ON CONFLICT DO NOTHING` path. Duplicates are rare;
//! the common case runs at the speed of COPY. Each row carries the transaction's id
//! (`inserted_by`), which the rollups follow (`rollup`).
//!
//! diesel-async has no COPY, so this path holds a plain tokio-postgres connection of
//! its own (one per write loop), reconnecting after any connection-level failure.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use common_models::events::{LlmCallEvent, SystemLogEvent};
use futures_util::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::writer::{Inserted, LLM_COLUMNS, SYSTEM_COLUMNS, fit, fit_opt, limits};

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
}

impl CopyWriter {
    pub fn new(url: &str, lock_timeout: Duration, statement_timeout: Duration) -> Self {
        Self {
            url: service_kit::config::postgres_url_for(url, "llm-log-worker-copy"),
            client: None,
            session_limits: limits(lock_timeout, statement_timeout),
        }
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
        let result = async {
            let client = self.client().await?;
            let tx = client.transaction().await.map_err(classify)?;
            let xid = transaction_id(&tx, &limits).await?;
            let mut inserted = Inserted::default();
            if !llm.is_empty() {
                inserted.llm_logs =
                    copy(&tx, "llm_logs", &format!("{LLM_COLUMNS}, inserted_by"), llm_csv(llm, &xid)).await?;
            }
            if !system.is_empty() {
                inserted.system_logs = copy(&tx, "system_logs", SYSTEM_COLUMNS, system_csv(system)).await?;
            }
            tx.commit().await.map_err(classify)?;
            Ok(inserted)
        }
        .await;
        if matches!(result, Err(CopyFailure::Transient(_))) {
            // Whatever state the connection is in, start afresh next time.
            self.client = None;
        }
        result
    }
}

/// Sets the transaction's limits and returns its id (assigning it), in one round trip.
async fn transaction_id(tx: &tokio_postgres::Transaction<'_>, limits: &str) -> Result<String, CopyFailure> {
    let replies = tx.simple_query(&format!("{limits}; SELECT pg_current_xact_id()::text")).await.map_err(classify)?;
    replies
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| CopyFailure::Transient("no transaction id".into()))
}

async fn copy(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    columns: &str,
    csv: String,
) -> Result<usize, CopyFailure> {
    let sink =
        tx.copy_in::<_, Bytes>(&format!("COPY {table} ({columns}) FROM STDIN (FORMAT csv)")).await.map_err(classify)?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(csv)).await.map_err(classify)?;
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

/// Appends a CSV field: NULL is an empty unquoted field, text is always quoted.
fn text(out: &mut String, v: Option<&str>) {
    if let Some(v) = v {
        out.push('"');
        for c in v.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push(',');
}

fn num<T: std::fmt::Display>(out: &mut String, v: Option<T>) {
    if let Some(v) = v {
        let _ = write!(out, "{v}");
    }
    out.push(',');
}

/// Microseconds, cut (not rounded) as the binary INSERT path stores them, so both
/// paths write the same idempotency key for the same event.
fn timestamp(out: &mut String, at: chrono::DateTime<chrono::Utc>) {
    let _ = write!(out, "{},", at.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
}

fn end_row(out: &mut String) {
    out.pop();
    out.push('\n');
}

/// The rows of `LLM_COLUMNS`, then `inserted_by` (`xid`).
fn llm_csv(events: &[&LlmCallEvent], xid: &str) -> String {
    let mut out = String::with_capacity(events.len() * 512);
    for e in events {
        num(&mut out, Some(e.event_id));
        timestamp(&mut out, e.created_at);
        text(&mut out, Some(&fit(&e.action, 100)));
        text(&mut out, fit_opt(e.message.as_ref(), usize::MAX).as_deref());
        num(&mut out, e.user_id.map(|v| v.0));
        num(&mut out, e.company_id.map(|v| v.0));
        num(&mut out, e.interview_id.map(|v| v.0));
        text(&mut out, fit_opt(e.request_id.as_ref(), 64).as_deref());
        text(&mut out, fit_opt(e.model.as_ref(), 100).as_deref());
        num(&mut out, e.tokens_total);
        num(&mut out, e.tokens_input);
        num(&mut out, e.tokens_output);
        num(&mut out, Some(e.usage_reported));
        num(&mut out, e.cost_usd.filter(|c| c.is_finite()));
        text(&mut out, fit_opt(e.price_table_version.as_ref(), 50).as_deref());
        num(&mut out, e.latency_ms);
        num(&mut out, e.time_to_first_token_ms);
        num(&mut out, Some(e.streaming));
        num(&mut out, e.http_status);
        text(&mut out, fit_opt(e.error_type.as_ref(), 100).as_deref());
        text(&mut out, fit_opt(e.error_message.as_ref(), usize::MAX).as_deref());
        text(&mut out, e.metadata.as_ref().map(|m| m.to_string()).as_deref());
        text(&mut out, fit_opt(e.deployment_version.as_ref(), 50).as_deref());
        text(&mut out, fit_opt(e.deployment_environment.as_ref(), 50).as_deref());
        num(&mut out, Some(e.cache_hit));
        num(&mut out, e.cost_saved_usd.filter(|c| c.is_finite()));
        num(&mut out, e.tokens_cached_input);
        num(&mut out, e.tokens_reasoning);
        num(&mut out, Some(xid));
        end_row(&mut out);
    }
    out
}

fn system_csv(events: &[&SystemLogEvent]) -> String {
    let mut out = String::with_capacity(events.len() * 256);
    for e in events {
        num(&mut out, Some(e.event_id));
        timestamp(&mut out, e.created_at);
        text(&mut out, Some(&fit(&e.level, 10)));
        text(&mut out, Some(&fit(&e.component, 50)));
        text(&mut out, Some(&fit(&e.message, usize::MAX)));
        text(&mut out, fit_opt(e.request_method.as_ref(), 10).as_deref());
        text(&mut out, fit_opt(e.request_path.as_ref(), 500).as_deref());
        num(&mut out, e.status_code);
        num(&mut out, e.latency_ms.filter(|l| l.is_finite()));
        num(&mut out, e.company_id.map(|v| v.0));
        num(&mut out, e.user_id.map(|v| v.0));
        text(&mut out, fit_opt(e.request_id.as_ref(), 64).as_deref());
        text(&mut out, fit_opt(e.error_type.as_ref(), 100).as_deref());
        text(&mut out, e.metadata.as_ref().map(|m| m.to_string()).as_deref());
        end_row(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_text_and_leaves_null_empty() {
        let mut out = String::new();
        text(&mut out, Some("say \"hi\", then\nleave"));
        text(&mut out, None);
        num(&mut out, Some(3));
        num::<i32>(&mut out, None);
        end_row(&mut out);
        assert_eq!(out, "\"say \"\"hi\"\", then\nleave\",,3,\n");
    }

    #[test]
    fn timestamps_are_cut_to_microseconds() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00.123456999Z")
            .map(|d| d.with_timezone(&chrono::Utc));
        let mut out = String::new();
        if let Ok(at) = at {
            timestamp(&mut out, at);
        }
        assert_eq!(out, "2026-11-23T10:00:00.123456Z,");
    }
}
