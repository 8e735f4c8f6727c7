//! The log events that travel from the services to the analytics database.
//!
//! Producers fix `event_id` and `created_at` when the event happens; the worker
//! never invents either. That is what makes redelivery harmless: the same event
//! always lands on the same `(event_id, created_at)` key.

use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{CompanyId, InterviewId, UserId};

/// One message on a log stream. On the wire (see `queue`) its type tag travels in a
/// field of its own and names the payload's version, so a new shape can be introduced
/// as `llm_call.v2` while old entries still decode.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    LlmCall(LlmCallEvent),
    SystemLog(SystemLogEvent),
}

impl LogEvent {
    pub fn event_id(&self) -> Uuid {
        match self {
            Self::LlmCall(e) => e.event_id,
            Self::SystemLog(e) => e.event_id,
        }
    }
}

/// Why an LLM call did not produce a normal answer. Stored as `error_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmErrorType {
    /// The upstream answered 4xx.
    UpstreamClientError,
    /// The upstream answered 5xx.
    UpstreamServerError,
    /// The upstream did not answer (or finish its stream) within the configured time.
    UpstreamTimeout,
    /// The upstream could not be reached or broke the connection.
    UpstreamUnavailable,
    /// The upstream's answer could not be read (a broken stream, a body that is not JSON).
    UpstreamProtocolError,
    /// The client went away before the answer was complete.
    ClientDisconnected,
}

impl LlmErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UpstreamClientError => "upstream_client_error",
            Self::UpstreamServerError => "upstream_server_error",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamProtocolError => "upstream_protocol_error",
            Self::ClientDisconnected => "client_disconnected",
        }
    }
}

/// One call to an LLM, successful or not: a row of `llm_logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmCallEvent {
    pub event_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// What the call was for (`chat_completion` unless the caller says otherwise).
    pub action: String,
    pub message: Option<String>,
    pub company_id: Option<CompanyId>,
    pub user_id: Option<UserId>,
    pub interview_id: Option<InterviewId>,
    pub request_id: Option<String>,
    pub model: Option<String>,
    /// Token counts are `None` when the upstream did not report usage; then
    /// `usage_reported` is false. They are never guessed as zero. A stream the client
    /// left before the usage chunk carries an estimate instead (`usage_reported` false,
    /// `metadata.usage_estimated` true), since the upstream bills it all the same.
    pub tokens_input: Option<i32>,
    pub tokens_output: Option<i32>,
    pub tokens_total: Option<i32>,
    pub usage_reported: bool,
    pub cost_usd: Option<f64>,
    /// Version of the price table `cost_usd` was computed from.
    pub price_table_version: Option<String>,
    pub latency_ms: Option<i32>,
    pub time_to_first_token_ms: Option<i32>,
    pub streaming: bool,
    pub http_status: Option<i16>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub deployment_version: Option<String>,
    pub deployment_environment: Option<String>,
    /// Answered from the LLM results cache: no upstream call, `cost_usd` 0.
    #[serde(default)]
    pub cache_hit: bool,
    /// For a cache hit, what the call would have cost.
    #[serde(default)]
    pub cost_saved_usd: Option<f64>,
    /// Of `tokens_input`, those the upstream served from its prompt cache (priced
    /// apart); `None` when it did not say.
    #[serde(default)]
    pub tokens_cached_input: Option<i32>,
    /// Of `tokens_output`, the reasoning tokens; `None` when the upstream did not say.
    #[serde(default)]
    pub tokens_reasoning: Option<i32>,
}

/// One API request or operational message: a row of `system_logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemLogEvent {
    pub event_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub level: String,
    pub component: String,
    pub message: String,
    pub request_method: Option<String>,
    pub request_path: Option<String>,
    pub status_code: Option<i16>,
    pub latency_ms: Option<f64>,
    pub company_id: Option<CompanyId>,
    pub user_id: Option<UserId>,
    pub request_id: Option<String>,
    pub error_type: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// The current time at the precision PostgreSQL stores (microseconds). Events carry
/// their `created_at` from the producer, and it is half of the idempotency key: every
/// write path must store exactly this value, so it holds no finer digits to round.
pub fn event_time() -> DateTime<Utc> {
    at_stored_precision(Utc::now())
}

/// `at` without the digits below a microsecond.
pub fn at_stored_precision(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_nanosecond(at.nanosecond() / 1_000 * 1_000).unwrap_or(at)
}

/// A new time-ordered event id (UUIDv7), so ids of one day sit together in indexes.
pub fn new_event_id() -> Uuid {
    Uuid::now_v7()
}
