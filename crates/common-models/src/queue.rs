//! The platform's streams, consumer groups and tasks. The machinery (producer, spool,
//! consumer runtime, trimming, dead letters) is the `task-queue` crate's; this module
//! says what travels where:
//!
//! - `llm_logs`: [`LlmCallEvent`] (`llm_call.v1`), one per LLM call;
//! - `system_logs`: [`SystemLogEvent`] (`system_log.v1`), one per API request;
//! - both read by the consumer group `llm-log-worker`, the only writer of the analytics
//!   database.

use service_kit::request_log::{RequestRecord, RequestSink};
use task_queue::{DecodeError, Message, Producer, Task, decode_as};

use crate::events::{LlmCallEvent, LogEvent, SystemLogEvent, new_event_id};
use crate::ids::{CompanyId, UserId};

/// The consumer group of the analytics writer.
pub const LOG_WORKER_GROUP: &str = "llm-log-worker";

/// The log streams; each is also the name of its analytics table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    LlmLogs,
    SystemLogs,
}

impl LogStream {
    pub const ALL: [LogStream; 2] = [LogStream::LlmLogs, LogStream::SystemLogs];

    pub const fn name(self) -> &'static str {
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

impl Task for LlmCallEvent {
    const STREAM: &'static str = LogStream::LlmLogs.name();
    const TYPE_TAG: &'static str = "llm_call.v1";
}

impl Task for SystemLogEvent {
    const STREAM: &'static str = LogStream::SystemLogs.name();
    const TYPE_TAG: &'static str = "system_log.v1";
}

/// Sends each API request a service serves to `system_logs`, as a row of its component.
pub struct SystemLogSink {
    pub component: &'static str,
    pub producer: Producer,
}

impl RequestSink for SystemLogSink {
    fn record(&self, record: RequestRecord) {
        self.producer.publish(&SystemLogEvent::for_request(self.component, record));
    }
}

impl SystemLogEvent {
    /// The row for one API request: 5xx are errors, 4xx warnings.
    pub fn for_request(component: &str, r: RequestRecord) -> Self {
        let (level, error_type) = match r.status {
            500.. => ("error", Some("server_error".to_owned())),
            400..=499 => ("warning", Some("client_error".to_owned())),
            _ => ("info", None),
        };
        let created_at = chrono::DateTime::<chrono::Utc>::from(r.started_at);
        Self {
            event_id: new_event_id(),
            created_at: crate::events::at_stored_precision(created_at),
            level: level.to_owned(),
            component: component.to_owned(),
            message: format!("{} {} {}", r.method, r.path, r.status),
            request_method: Some(r.method),
            request_path: Some(r.path),
            status_code: i16::try_from(r.status).ok(),
            latency_ms: Some(r.elapsed.as_secs_f64() * 1000.0),
            company_id: r.requester.company_id.map(CompanyId),
            user_id: r.requester.user_id.map(UserId),
            request_id: r.request_id,
            error_type,
            metadata: None,
        }
    }
}

/// What the log worker reads: either event, from either stream.
impl Message for LogEvent {
    fn streams() -> Vec<&'static str> {
        LogStream::ALL.iter().map(|s| s.name()).collect()
    }

    fn decode(_stream: &str, tag: &[u8], payload: &[u8]) -> Result<Self, DecodeError> {
        if tag == LlmCallEvent::TYPE_TAG.as_bytes() {
            decode_as(tag, payload).map(LogEvent::LlmCall)
        } else {
            decode_as(tag, payload).map(LogEvent::SystemLog)
        }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;
    use crate::events::new_event_id;

    #[test]
    fn log_events_round_trip_and_bad_entries_say_why() {
        let event = SystemLogEvent {
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
        };
        let entry = task_queue::Entry::encode(&event).unwrap();
        assert_eq!((entry.stream.as_ref(), entry.tag.as_ref()), ("system_logs", "system_log.v1"));
        let back = LogEvent::decode("system_logs", entry.tag.as_bytes(), &entry.payload).unwrap();
        assert_eq!(back, LogEvent::SystemLog(event));
        let unknown = LogEvent::decode("llm_logs", b"llm_call.v9", &entry.payload);
        assert!(matches!(unknown, Err(DecodeError::UnknownType(_))));
        let wrong_shape = LogEvent::decode("llm_logs", b"llm_call.v1", &entry.payload);
        assert!(matches!(wrong_shape, Err(DecodeError::Invalid { .. })));
        assert_eq!(LogEvent::streams(), vec!["llm_logs", "system_logs"]);
    }
}
