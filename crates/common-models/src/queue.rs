//! The log queue: Redis Streams between the services that produce log events and
//! `llm-log-worker`, the only writer of the analytics database.
//!
//! Keys (each behind an optional prefix, so tests and tenants of one Redis keep apart):
//! - `llm_logs`, `system_logs`: the streams. Each entry has two fields: `type`, the
//!   payload's type and version (`llm_call.v1`, `system_log.v1`), and `event`, the
//!   payload as JSON. The tag sits outside the JSON so a reader decodes the payload
//!   straight into its type.
//! - consumer group `llm-log-worker` on both streams. A worker reads with `XREADGROUP`,
//!   writes a batch in one transaction and `XACK`s only after the commit. Entries left
//!   pending by a dead consumer are taken over with `XAUTOCLAIM` once idle long enough.
//! - `<stream>:dead`: the dead-letter stream. An entry that cannot be decoded, or whose
//!   row the database refuses three times, is copied there (with the reason and the
//!   original id) and acknowledged, so it never blocks the entries behind it.
//! - `log_worker:heartbeats`: a sorted set, consumer name → last heartbeat (unix ms).
//! - `log_worker:last_write_at`: unix ms of the last committed analytics write.
//!
//! Streams are never trimmed by length: Redis 7 cannot trim only acknowledged entries,
//! and a `MAXLEN` would delete events no worker has written yet.

use crate::events::{LLM_CALL_V1, LogEvent, SYSTEM_LOG_V1};

/// The consumer group every log worker joins.
pub const CONSUMER_GROUP: &str = "llm-log-worker";
/// The stream entry field that holds the JSON event.
pub const EVENT_FIELD: &str = "event";
/// The stream entry field that names the event's type and version.
pub const TYPE_FIELD: &str = "type";
/// How many times a row may be refused by the database before it is dead-lettered.
pub const MAX_WRITE_ATTEMPTS: u32 = 3;

/// Which stream an event travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    LlmLogs,
    SystemLogs,
}

impl LogStream {
    pub const ALL: [LogStream; 2] = [LogStream::LlmLogs, LogStream::SystemLogs];

    /// The stream's name without prefix; also the name of its analytics table.
    pub fn name(self) -> &'static str {
        match self {
            Self::LlmLogs => "llm_logs",
            Self::SystemLogs => "system_logs",
        }
    }

    pub fn of(event: &LogEvent) -> Self {
        match event {
            LogEvent::LlmCall(_) => Self::LlmLogs,
            LogEvent::SystemLog(_) => Self::SystemLogs,
        }
    }
}

/// The Redis key names, with the configured prefix applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueKeys {
    prefix: String,
}

impl QueueKeys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream key of `stream`.
    pub fn stream(&self, stream: LogStream) -> String {
        format!("{}{}", self.prefix, stream.name())
    }

    /// The dead-letter stream key of `stream`.
    pub fn dead_letter(&self, stream: LogStream) -> String {
        format!("{}{}:dead", self.prefix, stream.name())
    }

    /// Sorted set of worker heartbeats.
    pub fn heartbeats(&self) -> String {
        format!("{}log_worker:heartbeats", self.prefix)
    }

    /// Unix ms of the last committed analytics write.
    pub fn last_write_at(&self) -> String {
        format!("{}log_worker:last_write_at", self.prefix)
    }

    /// Maps a stream key read back from Redis to the stream it names.
    pub fn stream_of_key(&self, key: &str) -> Option<LogStream> {
        LogStream::ALL.into_iter().find(|s| self.stream(*s) == key)
    }
}

/// Serialises an event: the `type` and `event` fields of its stream entry.
pub fn encode(event: &LogEvent) -> Result<(&'static str, Vec<u8>), serde_json::Error> {
    let payload = match event {
        LogEvent::LlmCall(e) => serde_json::to_vec(e)?,
        LogEvent::SystemLog(e) => serde_json::to_vec(e)?,
    };
    Ok((event.type_tag(), payload))
}

/// Why a stream entry could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("entry has no `{0}` field")]
    MissingField(&'static str),
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("invalid {tag} payload: {source}")]
    Invalid { tag: &'static str, source: serde_json::Error },
}

/// Reads an event back from the `type` and `event` fields of a stream entry.
pub fn decode(type_tag: Option<&[u8]>, payload: Option<&[u8]>) -> Result<LogEvent, DecodeError> {
    let tag = type_tag.ok_or(DecodeError::MissingField(TYPE_FIELD))?;
    let payload = payload.ok_or(DecodeError::MissingField(EVENT_FIELD))?;
    match tag {
        t if t == LLM_CALL_V1.as_bytes() => serde_json::from_slice(payload)
            .map(LogEvent::LlmCall)
            .map_err(|source| DecodeError::Invalid { tag: LLM_CALL_V1, source }),
        t if t == SYSTEM_LOG_V1.as_bytes() => serde_json::from_slice(payload)
            .map(LogEvent::SystemLog)
            .map_err(|source| DecodeError::Invalid { tag: SYSTEM_LOG_V1, source }),
        other => Err(DecodeError::UnknownType(String::from_utf8_lossy(other).into_owned())),
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;
    use crate::events::{SystemLogEvent, new_event_id};

    #[test]
    fn events_round_trip_and_bad_entries_say_why() {
        let event = LogEvent::SystemLog(SystemLogEvent {
            event_id: new_event_id(),
            created_at: chrono::Utc::now(),
            level: "info".into(),
            component: "api".into(),
            message: "GET /x".into(),
            request_method: None,
            request_path: None,
            status_code: Some(200),
            latency_ms: Some(0.4),
            company_id: None,
            user_id: None,
            request_id: None,
            error_type: None,
            metadata: None,
        });
        let (tag, payload) = encode(&event).unwrap();
        assert_eq!(tag, "system_log.v1");
        assert_eq!(decode(Some(tag.as_bytes()), Some(&payload)).unwrap(), event);
        assert!(matches!(decode(Some(b"llm_call.v9"), Some(&payload)), Err(DecodeError::UnknownType(_))));
        assert!(matches!(decode(Some(b"llm_call.v1"), Some(&payload)), Err(DecodeError::Invalid { .. })));
        assert!(matches!(decode(None, Some(&payload)), Err(DecodeError::MissingField("type"))));
    }

    #[test]
    fn keys_carry_the_prefix() {
        let keys = QueueKeys::new("t1:");
        assert_eq!(keys.stream(LogStream::LlmLogs), "t1:llm_logs");
        assert_eq!(keys.dead_letter(LogStream::SystemLogs), "t1:system_logs:dead");
        assert_eq!(keys.stream_of_key("t1:system_logs"), Some(LogStream::SystemLogs));
        assert_eq!(keys.stream_of_key("llm_logs"), None);
    }
}
