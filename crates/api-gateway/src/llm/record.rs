//! What the gateway learns about one LLM call while it happens, and the one log
//! event it turns into. A [`CallGuard`] owns the record: whichever way the call ends
//! (answer, upstream error, timeout, or the client going away, which drops the guard)
//! exactly one event is published.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use common_models::events::{LlmCallEvent, LlmErrorType, new_event_id};
use common_models::pricing::Tokens;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use task_queue::Producer;

use crate::auth::Caller;
use crate::llm::request::CallContext;
use crate::logged::{MAX_MESSAGE_BYTES, MAX_NAME_BYTES, cut};
use crate::metrics::GatewayMetrics;
use crate::settings::GatewaySettings;

/// Usage as the upstream reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: i32,
    pub output: i32,
    pub total: i32,
    /// Of `input`, the tokens the upstream served from its prompt cache (when it says).
    pub cached_input: Option<i32>,
    /// Of `output`, the reasoning tokens (when it says).
    pub reasoning: Option<i32>,
}

/// An OpenAI `usage` object, as sent.
#[derive(Debug, Deserialize)]
pub struct UsageView {
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    total_tokens: Option<i64>,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Deserialize)]
pub struct PromptDetails {
    cached_tokens: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionDetails {
    reasoning_tokens: Option<i64>,
}

impl Usage {
    /// `None` unless the object holds the input and output counts.
    pub fn from_view(view: &UsageView) -> Option<Self> {
        let n = |v: Option<i64>| v.and_then(|v| i32::try_from(v).ok());
        let input = n(view.prompt_tokens)?;
        let output = n(view.completion_tokens)?;
        // A part can't exceed its whole; a count that does is not believed.
        let cached_input =
            n(view.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens)).filter(|c| (0..=input).contains(c));
        let reasoning = n(view.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens))
            .filter(|r| (0..=output).contains(r));
        Some(Self {
            input,
            output,
            total: n(view.total_tokens).unwrap_or(input.saturating_add(output)),
            cached_input,
            reasoning,
        })
    }
}

/// What the gateway reads from a complete upstream answer (or error body); the
/// rest of the body is skipped, not copied.
#[derive(Debug, Deserialize)]
pub struct AnswerView {
    id: Option<String>,
    model: Option<String>,
    usage: Option<UsageView>,
    #[serde(default)]
    choices: Vec<FinishView>,
    error: Option<ErrorView>,
}

#[derive(Debug, Deserialize)]
struct FinishView {
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorView {
    message: Option<String>,
}

impl AnswerView {
    /// A complete answer worth caching reports its usage.
    pub fn has_usage(&self) -> bool {
        self.usage.as_ref().and_then(Usage::from_view).is_some()
    }

    pub fn error_message(&self) -> Option<&str> {
        self.error.as_ref()?.message.as_deref()
    }
}

pub struct CallRecord {
    event_id: uuid::Uuid,
    created_at: DateTime<Utc>,
    started: Instant,
    caller: Caller,
    context: CallContext,
    request_id: String,
    model: String,
    pub streaming: bool,
    pub response_model: Option<String>,
    pub upstream_id: Option<String>,
    pub finish_reason: Option<String>,
    pub first_token_at: Option<Instant>,
    pub usage: Option<Usage>,
    pub http_status: Option<u16>,
    pub error: Option<(LlmErrorType, String)>,
    /// Answered from the LLM results cache.
    pub cache_hit: bool,
    /// Bytes of the request body (for an estimate of the prompt's tokens).
    pub prompt_bytes: usize,
    /// Bytes of answer text relayed so far (for an estimate of the output).
    pub relayed_bytes: usize,
    /// `usage` is our estimate, not the upstream's report.
    pub usage_estimated: bool,
}

impl CallRecord {
    pub fn new(caller: Caller, context: CallContext, request_id: String, model: String, streaming: bool) -> Self {
        Self {
            event_id: new_event_id(),
            created_at: common_models::events::event_time(),
            started: Instant::now(),
            caller,
            context,
            request_id,
            model,
            streaming,
            response_model: None,
            upstream_id: None,
            finish_reason: None,
            first_token_at: None,
            usage: None,
            http_status: None,
            error: None,
            cache_hit: false,
            prompt_bytes: 0,
            relayed_bytes: 0,
            usage_estimated: false,
        }
    }

    /// A stream the client left before the usage chunk: the upstream bills the tokens
    /// all the same, so they are estimated (about four bytes a token: the prompt from
    /// the request body, the output from the text relayed) rather than left empty.
    fn estimate_abandoned_usage(&mut self) {
        if self.usage.is_some() || !self.streaming || self.http_status.is_none_or(|s| s >= 400) {
            return;
        }
        let tokens = |bytes: usize| i32::try_from(bytes.div_ceil(4)).unwrap_or(i32::MAX);
        let (input, output) = (tokens(self.prompt_bytes).max(1), tokens(self.relayed_bytes));
        self.usage =
            Some(Usage { input, output, total: input.saturating_add(output), cached_input: None, reasoning: None });
        self.usage_estimated = true;
    }

    /// Notes what a complete (non-streamed) upstream answer says.
    pub fn observe_answer(&mut self, answer: AnswerView) {
        self.usage = answer.usage.as_ref().and_then(Usage::from_view);
        self.response_model = answer.model;
        self.upstream_id = answer.id;
        self.finish_reason = answer.choices.into_iter().next().and_then(|c| c.finish_reason);
    }

    /// Records the outcome of an upstream HTTP status (and the error body's message).
    pub fn observe_status(&mut self, status: u16, error_message: Option<&str>) {
        self.http_status = Some(status);
        let kind = match status {
            400..=499 => LlmErrorType::UpstreamClientError,
            500..=599 => LlmErrorType::UpstreamServerError,
            _ => return,
        };
        let message = error_message.map_or_else(|| format!("upstream answered HTTP {status}"), str::to_owned);
        self.error = Some((kind, message));
    }

    pub fn fail(&mut self, kind: LlmErrorType, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some((kind, message.into()));
        }
    }

    fn ms_since_start(&self, at: Instant) -> i32 {
        i32::try_from(at.duration_since(self.started).as_millis()).unwrap_or(i32::MAX)
    }

    fn into_event(self, settings: &GatewaySettings) -> LlmCallEvent {
        let pricing = &settings.pricing;
        let (tokens_input, tokens_output, tokens_total) = match self.usage {
            Some(u) => (Some(u.input), Some(u.output), Some(u.total)),
            None => (None, None, None),
        };
        let mut names = vec![self.model.as_str()];
        if let Some(m) = &self.response_model {
            names.push(m);
        }
        let tokens =
            self.usage.map(|u| Tokens { input: u.input, cached_input: u.cached_input.unwrap_or(0), output: u.output });
        let charge = pricing.charge(&names, tokens, self.created_at.date_naive(), self.cache_hit);
        let mut metadata = Map::new();
        let upstream_names = [
            ("upstream_id", &self.upstream_id),
            ("response_model", &self.response_model),
            ("finish_reason", &self.finish_reason),
        ];
        for (name, value) in upstream_names {
            if let Some(v) = value {
                metadata.insert(name.into(), json!(cut(v, MAX_NAME_BYTES)));
            }
        }
        if let Some(key) = self.caller.api_key_id {
            metadata.insert("api_key_id".into(), json!(key.0));
        }
        if self.usage.is_some() && charge.version.is_none() {
            metadata.insert("unpriced_model".into(), json!(true));
        }
        if self.usage_estimated {
            metadata.insert("usage_estimated".into(), json!(true));
        }
        let latency_ms = Some(self.ms_since_start(Instant::now()));
        let time_to_first_token_ms = self.first_token_at.map(|t| self.ms_since_start(t));
        let (error_type, error_message) = match self.error {
            Some((kind, message)) => (Some(kind.as_str().to_owned()), Some(cut(&message, MAX_MESSAGE_BYTES))),
            None => (None, None),
        };
        LlmCallEvent {
            event_id: self.event_id,
            created_at: self.created_at,
            action: self.context.action,
            message: None,
            company_id: Some(self.caller.company_id),
            user_id: self.caller.user_id,
            interview_id: self.context.interview_id,
            request_id: Some(self.request_id),
            model: Some(cut(&self.model, MAX_NAME_BYTES)),
            tokens_input,
            tokens_output,
            tokens_total,
            usage_reported: self.usage.is_some() && !self.usage_estimated,
            cost_usd: charge.cost_usd,
            price_table_version: charge.version,
            tokens_cached_input: self.usage.and_then(|u| u.cached_input),
            tokens_reasoning: self.usage.and_then(|u| u.reasoning),
            latency_ms,
            time_to_first_token_ms,
            streaming: self.streaming,
            http_status: self.http_status.and_then(|s| i16::try_from(s).ok()),
            error_type,
            error_message,
            metadata: Some(Value::Object(metadata)),
            deployment_version: Some(settings.deployment_version.clone()),
            deployment_environment: Some(settings.deployment_environment.clone()),
            cache_hit: self.cache_hit,
            cost_saved_usd: charge.cost_saved_usd,
        }
    }
}

/// Where finished records go.
#[derive(Clone)]
pub struct CallLogger {
    pub producer: Producer,
    pub settings: Arc<GatewaySettings>,
    pub metrics: GatewayMetrics,
    /// The month's spend of each company grows by its calls' costs.
    pub limits: Arc<crate::limits::Limits>,
}

impl CallLogger {
    fn log(&self, record: CallRecord) {
        let event = record.into_event(&self.settings);
        let m = &self.metrics;
        m.llm_calls.with_label_values(&[event.error_type.as_deref().unwrap_or("ok")]).inc();
        // A cache hit carries the answer's usage in its row but consumed nothing upstream.
        if !event.cache_hit
            && let (Some(i), Some(o)) = (event.tokens_input, event.tokens_output)
        {
            m.llm_tokens.with_label_values(&["input"]).inc_by(u64::try_from(i).unwrap_or(0));
            m.llm_tokens.with_label_values(&["output"]).inc_by(u64::try_from(o).unwrap_or(0));
        }
        if let (Some(cost), Some(model)) = (event.cost_usd, event.model.as_deref()) {
            let priced_as =
                self.settings.pricing.lookup(model, event.created_at.date_naive()).map_or("other", |p| p.name.as_str());
            m.llm_cost_usd.with_label_values(&[priced_as]).inc_by(cost);
            if let Some(company) = event.company_id {
                self.limits.record_spend(company.0, cost);
            }
        }
        self.producer.publish(&event);
    }
}

/// Owns a [`CallRecord`] until the call ends; dropping it unfinished logs the call
/// as abandoned by the client.
pub struct CallGuard {
    record: Option<CallRecord>,
    logger: CallLogger,
    /// The company's concurrency slot, given back when the call ends.
    _slot: Option<crate::limits::Slot>,
}

impl CallGuard {
    pub fn new(record: CallRecord, logger: CallLogger, slot: Option<crate::limits::Slot>) -> Self {
        Self { record: Some(record), logger, _slot: slot }
    }

    pub fn record(&mut self) -> Option<&mut CallRecord> {
        self.record.as_mut()
    }

    /// Publishes the record now.
    pub fn finish(&mut self) {
        if let Some(record) = self.record.take() {
            self.logger.log(record);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(record) = self.record.as_mut() {
            record.fail(
                LlmErrorType::ClientDisconnected,
                "the client closed the connection before the answer was complete",
            );
            record.estimate_abandoned_usage();
        }
        self.finish();
    }
}
