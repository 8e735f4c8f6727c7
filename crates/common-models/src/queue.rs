//! The log queue: Redis Streams between the services that produce log events and
//! `llm-log-worker`, the only writer of the analytics database.
//!
//! Keys (each behind an optional prefix, so tests and tenants of one Redis keep apart):
//! - `llm_logs`, `system_logs`: the streams. Each entry has one field, `event`, holding a
//!   JSON [`LogEvent`]; its `type` tag names the payload and its version.
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

use crate::events::LogEvent;

/// The consumer group every log worker joins.
pub const CONSUMER_GROUP: &str = "llm-log-worker";
/// The stream entry field that holds the JSON event.
pub const EVENT_FIELD: &str = "event";
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

/// Serialises an event for the `event` field of a stream entry.
pub fn encode(event: &LogEvent) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(event)
}

/// Reads an event back from the `event` field of a stream entry.
pub fn decode(bytes: &[u8]) -> Result<LogEvent, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_prefix() {
        let keys = QueueKeys::new("t1:");
        assert_eq!(keys.stream(LogStream::LlmLogs), "t1:llm_logs");
        assert_eq!(keys.dead_letter(LogStream::SystemLogs), "t1:system_logs:dead");
        assert_eq!(keys.stream_of_key("t1:system_logs"), Some(LogStream::SystemLogs));
        assert_eq!(keys.stream_of_key("llm_logs"), None);
    }
}
