//! CVs between the gateway and cv-processor: the task on the `cv_jobs` stream, the
//! processing states a CV goes through, and the status events that tell a watching
//! recruiter about each change (Redis pub/sub, with a short per-company replay log so a
//! reconnecting client misses nothing recent).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use task_queue::{DecodeError, Message, Task, decode_as};

use crate::analysis::{AnalysisStatusEvent, AnalyzeApplication};
use crate::ids::{CompanyId, CvId};

/// The consumer group of the CV processors.
pub const CV_PROCESSOR_GROUP: &str = "cv-processor";

/// Process one uploaded CV: extract, structure, embed, index, record the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessCv {
    pub cv_id: CvId,
    pub company_id: CompanyId,
    /// Where the original file is, in the file store.
    pub storage_key: String,
    pub file_name: String,
    pub content_type: String,
    pub queued_at: DateTime<Utc>,
}

impl Task for ProcessCv {
    const STREAM: &'static str = "cv_jobs";
    const TYPE_TAG: &'static str = "cv_process.v1";
}

/// Remove a deleted CV's vectors (its row and file are gone already).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetCv {
    pub cv_id: CvId,
    pub company_id: CompanyId,
}

impl Task for ForgetCv {
    const STREAM: &'static str = "cv_jobs";
    const TYPE_TAG: &'static str = "cv_forget.v1";
}

/// What cv-processor reads from `cv_jobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CvJob {
    Process(ProcessCv),
    Forget(ForgetCv),
    Analyze(AnalyzeApplication),
}

impl Message for CvJob {
    fn streams() -> Vec<&'static str> {
        vec![ProcessCv::STREAM]
    }

    fn decode(_stream: &str, tag: &[u8], payload: &[u8]) -> Result<Self, DecodeError> {
        if tag == ForgetCv::TYPE_TAG.as_bytes() {
            decode_as(tag, payload).map(CvJob::Forget)
        } else if tag == AnalyzeApplication::TYPE_TAG.as_bytes() {
            decode_as(tag, payload).map(CvJob::Analyze)
        } else {
            decode_as(tag, payload).map(CvJob::Process)
        }
    }
}

/// Where a CV is in its processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CvStatus {
    Queued,
    Processing,
    Processed,
    Failed,
}

impl CvStatus {
    pub const ALL: [CvStatus; 4] = [Self::Queued, Self::Processing, Self::Processed, Self::Failed];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Processed => "processed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// One change of a CV's status, as a watching client receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CvStatusEvent {
    pub cv_id: CvId,
    pub company_id: CompanyId,
    pub status: CvStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub file_name: String,
    pub at: DateTime<Utc>,
}

/// What a company's event stream carries: CV and analysis status changes (told apart
/// by their fields; a CV event's JSON is the same as before analyses existed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusEvent {
    Cv(CvStatusEvent),
    Analysis(AnalysisStatusEvent),
}

impl StatusEvent {
    pub fn company_id(&self) -> CompanyId {
        match self {
            Self::Cv(e) => e.company_id,
            Self::Analysis(e) => e.company_id,
        }
    }

    /// The server-sent event's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cv(_) => "cv.status",
            Self::Analysis(_) => "analysis.status",
        }
    }
}

/// The status events in Redis, under the deployment's key prefix.
pub mod events {
    use std::sync::LazyLock;

    use super::StatusEvent;
    use crate::ids::CompanyId;

    /// Every company's events are published on `<prefix>cv_events` (one subscription
    /// per gateway replica serves all its clients); the event names its company.
    pub fn channel(prefix: &str) -> String {
        format!("{prefix}cv_events")
    }

    /// A company's recent events, a capped stream whose ids are the SSE event ids: a
    /// client reconnecting with `Last-Event-ID` is sent what it missed from here.
    pub fn replay_log(prefix: &str, company: CompanyId) -> String {
        format!("{prefix}cv_events:{company}")
    }

    /// The generation of a company's cached API lists (api-gateway's `api` cache): every
    /// change to its jobs, CVs or applications, and every CV status event, moves it on,
    /// so a list cached under an older generation is never served again.
    pub fn api_generation(prefix: &str, company: CompanyId) -> String {
        format!("{prefix}api_gen:{company}")
    }

    /// Events kept per company for reconnecting clients (about: trimmed with `~`).
    pub const REPLAY_LEN: usize = 2_000;
    /// A company's replay log expires this long after its last event.
    pub const REPLAY_TTL_MS: u64 = 24 * 3_600 * 1_000;

    /// Appends to the replay log and publishes `<stream id> <json>` in one step, so a
    /// live subscriber and a replaying one see the same id for the same event.
    static EMIT: LazyLock<redis::Script> = LazyLock::new(|| {
        redis::Script::new(
            r"
            local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[2])
            redis.call('PEXPIRE', KEYS[1], ARGV[3])
            redis.call('PUBLISH', KEYS[2], id .. ' ' .. ARGV[2])
            redis.call('INCR', KEYS[3])
            redis.call('PEXPIRE', KEYS[3], ARGV[3])
            return id
            ",
        )
    });

    /// Emits `event`; returns its id. Watching is best effort next to the CV's row (the
    /// source of truth): callers log a failure and go on.
    pub async fn emit(redis: &service_kit::redis::Pool, prefix: &str, event: &StatusEvent) -> anyhow::Result<String> {
        let payload = serde_json::to_string(event)?;
        let mut conn = redis.get().await?;
        let id: String = EMIT
            .key(replay_log(prefix, event.company_id()))
            .key(channel(prefix))
            .key(api_generation(prefix, event.company_id()))
            .arg(REPLAY_LEN)
            .arg(payload)
            .arg(REPLAY_TTL_MS)
            .invoke_async(&mut *conn)
            .await?;
        Ok(id)
    }

    /// Splits a published message into (stream id, event).
    pub fn parse_published(message: &str) -> Option<(&str, StatusEvent)> {
        let (id, json) = message.split_once(' ')?;
        Some((id, serde_json::from_str(json).ok()?))
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in CvStatus::ALL {
            assert_eq!(CvStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert_eq!(CvStatus::parse("done"), None);
    }

    #[test]
    fn cv_and_analysis_events_are_told_apart_on_the_stream() {
        use crate::analysis::{AnalysisStatus, AnalysisStatusEvent};
        let at = Utc::now();
        let cv = StatusEvent::Cv(CvStatusEvent {
            cv_id: CvId(1),
            company_id: CompanyId(2),
            status: CvStatus::Processed,
            failure_reason: None,
            file_name: "a.pdf".into(),
            at,
        });
        let analysis = StatusEvent::Analysis(AnalysisStatusEvent {
            analysis_id: 3,
            application_id: 4,
            company_id: CompanyId(2),
            status: AnalysisStatus::Failed,
            failure_reason: Some("budget".into()),
            at,
        });
        for event in [cv, analysis] {
            let json = serde_json::to_string(&event).unwrap();
            assert!(!json.contains("\"Cv\"") && !json.contains("\"Analysis\""), "{json}");
            let (_, back) = events::parse_published(&format!("1-0 {json}")).unwrap();
            assert_eq!(back, event);
        }
    }
}
