//! Analyses: an LLM's structured assessment of an application's CV against its job.
//! The gateway records the request (`analysis_results`, status `queued`) and puts an
//! [`AnalyzeApplication`] task on the `cv_jobs` stream; cv-processor asks the LLM
//! through the gateway's own `/v1/chat/completions` in the company's name (so the call
//! is logged, costed and budgeted like any other), checks the answer against
//! [`assessment_schema`], stores it and caches the finished analysis ([`AnalysisView`])
//! under `analysis:{company}:{id}` for [`CACHE_TTL`], and publishes each status change
//! on the company's event stream.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use task_queue::Task;

use crate::ids::{CompanyId, UserId};

/// The cache-service namespace finished analyses are kept in.
pub const CACHE_NAMESPACE: &str = "analysis";
/// How long a finished analysis stays cached.
pub const CACHE_TTL: Duration = Duration::from_secs(7 * 24 * 3_600);

/// The cache key of an analysis: the company is part of it, so a key computed for
/// another company's id finds nothing.
pub fn cache_key(company: CompanyId, analysis_id: i64) -> String {
    format!("{company}:{analysis_id}")
}

/// Analyse one application (queued by the gateway, run by cv-processor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyzeApplication {
    pub analysis_id: i64,
    pub application_id: i64,
    pub company_id: CompanyId,
    /// Who asked (logged with the LLM call).
    pub requested_by: Option<UserId>,
    pub queued_at: DateTime<Utc>,
}

impl Task for AnalyzeApplication {
    const STREAM: &'static str = "cv_jobs";
    const TYPE_TAG: &'static str = "application_analysis.v1";
}

/// Where an analysis is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AnalysisStatus {
    Queued,
    Running,
    Completed,
    Failed,
}

impl AnalysisStatus {
    pub const ALL: [Self; 4] = [Self::Queued, Self::Running, Self::Completed, Self::Failed];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Completed and failed analyses do not change again (and may be cached).
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// One change of an analysis's status, on the company's event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisStatusEvent {
    pub analysis_id: i64,
    pub application_id: i64,
    pub company_id: CompanyId,
    pub status: AnalysisStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// An analysis as the API shows it (and as the cache keeps a finished one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AnalysisView {
    pub id: i64,
    pub application_id: i64,
    pub status: AnalysisStatus,
    /// The model that answered (as the provider named it).
    pub model: Option<String>,
    pub result: Option<Assessment>,
    pub failure_reason: Option<String>,
    /// LLM answers it took (a malformed answer is asked again; a call the gateway did
    /// not answer is retried and not counted).
    pub attempts: i32,
    /// Time spent in LLM calls, all attempts together.
    pub latency_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// An `analysis_results` row, as both services read it back.
#[cfg(feature = "diesel")]
#[derive(Debug, Clone, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = crate::schema::main::analysis_results)]
pub struct AnalysisRow {
    pub id: i64,
    pub application_id: i64,
    pub status: String,
    pub model: Option<String>,
    pub result: Option<Value>,
    pub failure_reason: Option<String>,
    pub attempts: i32,
    pub latency_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[cfg(feature = "diesel")]
impl AnalysisRow {
    /// The row as the API shows it; an error for a status or result the schema refuses.
    pub fn view(self) -> anyhow::Result<AnalysisView> {
        let status = AnalysisStatus::parse(&self.status)
            .ok_or_else(|| anyhow::anyhow!("analysis {} has status {:?}", self.id, self.status))?;
        let result = self.result.map(serde_json::from_value).transpose()?;
        Ok(AnalysisView {
            id: self.id,
            application_id: self.application_id,
            status,
            model: self.model,
            result,
            failure_reason: self.failure_reason,
            attempts: self.attempts,
            latency_ms: self.latency_ms,
            created_at: self.created_at,
            completed_at: self.completed_at,
        })
    }
}

/// What the assessment says of a requirement of the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequirementCheck {
    pub requirement: String,
    pub met: bool,
    /// Where in the CV (quoted or paraphrased), or why it is missing.
    pub evidence: String,
}

/// The structured assessment the LLM must return: exactly these fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Assessment {
    /// Fit of the CV for the job, 0–100.
    #[cfg_attr(feature = "openapi", schema(maximum = 100))]
    pub score: u8,
    /// `strong_no`, `no`, `yes` or `strong_yes` (the scale of interview feedback).
    #[cfg_attr(feature = "openapi", schema(example = "yes"))]
    pub recommendation: String,
    pub summary: String,
    pub strengths: Vec<String>,
    pub concerns: Vec<String>,
    pub requirements: Vec<RequirementCheck>,
}

pub const RECOMMENDATIONS: [&str; 4] = ["strong_no", "no", "yes", "strong_yes"];
const SUMMARY_MAX: usize = 2_000;
const ITEM_MAX: usize = 500;
const LIST_MAX: usize = 10;
const REQUIREMENTS_MAX: usize = 50;

/// The JSON Schema sent as the request's `response_format` (OpenAI structured
/// outputs, strict). String lengths are not expressible there in strict mode; they are
/// checked by [`Assessment::parse`] with the rest.
pub fn assessment_schema() -> Value {
    let text_list = |max: usize| json!({"type": "array", "items": {"type": "string"}, "maxItems": max});
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["score", "recommendation", "summary", "strengths", "concerns", "requirements"],
        "properties": {
            "score": {"type": "integer", "minimum": 0, "maximum": 100,
                      "description": "How well the CV fits the job, 0 (not at all) to 100 (perfectly)."},
            "recommendation": {"type": "string", "enum": RECOMMENDATIONS},
            "summary": {"type": "string", "description": "A few sentences for the recruiter."},
            "strengths": text_list(LIST_MAX),
            "concerns": text_list(LIST_MAX),
            "requirements": {
                "type": "array",
                "maxItems": REQUIREMENTS_MAX,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["requirement", "met", "evidence"],
                    "properties": {
                        "requirement": {"type": "string"},
                        "met": {"type": "boolean"},
                        "evidence": {"type": "string"}
                    }
                }
            }
        }
    })
}

impl Assessment {
    /// Reads an LLM's answer: JSON (a Markdown code fence around it is tolerated) of
    /// exactly the schema's shape, within its limits. The error says what is wrong.
    pub fn parse(content: &str) -> Result<Self, String> {
        let trimmed = content.trim();
        let body = trimmed
            .strip_prefix("```json")
            .or_else(|| trimmed.strip_prefix("```"))
            .and_then(|rest| rest.trim_end().strip_suffix("```"))
            .unwrap_or(trimmed);
        let assessment: Self = serde_json::from_str(body).map_err(|e| format!("not the assessment's JSON: {e}"))?;
        assessment.check()?;
        Ok(assessment)
    }

    fn check(&self) -> Result<(), String> {
        if self.score > 100 {
            return Err(format!("`score` must be between 0 and 100, not {}", self.score));
        }
        if !RECOMMENDATIONS.contains(&self.recommendation.as_str()) {
            return Err(format!(
                "`recommendation` must be one of {}, not {:?}",
                RECOMMENDATIONS.join(", "),
                self.recommendation
            ));
        }
        text("summary", &self.summary, 1, SUMMARY_MAX)?;
        for (field, list) in [("strengths", &self.strengths), ("concerns", &self.concerns)] {
            if list.len() > LIST_MAX {
                return Err(format!("`{field}` has {} items; at most {LIST_MAX}", list.len()));
            }
            for item in list {
                text(field, item, 1, ITEM_MAX)?;
            }
        }
        if self.requirements.len() > REQUIREMENTS_MAX {
            return Err(format!("`requirements` has {} items; at most {REQUIREMENTS_MAX}", self.requirements.len()));
        }
        for check in &self.requirements {
            text("requirements[].requirement", &check.requirement, 1, ITEM_MAX)?;
            text("requirements[].evidence", &check.evidence, 0, ITEM_MAX)?;
        }
        Ok(())
    }
}

fn text(field: &str, value: &str, min: usize, max: usize) -> Result<(), String> {
    let chars = value.trim().chars().count();
    if chars < min || value.chars().count() > max {
        return Err(format!("`{field}` must have {min} to {max} characters, not {chars}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    fn answer() -> Value {
        json!({
            "score": 72, "recommendation": "yes", "summary": "Solid backend engineer.",
            "strengths": ["Rust"], "concerns": [],
            "requirements": [{"requirement": "PostgreSQL", "met": true, "evidence": "5 years"}]
        })
    }

    #[test]
    fn a_well_formed_answer_is_read_with_or_without_a_code_fence() {
        let plain = answer().to_string();
        assert_eq!(Assessment::parse(&plain).unwrap().score, 72);
        assert_eq!(Assessment::parse(&format!("```json\n{plain}\n```")).unwrap().requirements.len(), 1);
    }

    #[test]
    fn answers_off_the_schema_are_refused_with_the_reason() {
        let mut extra = answer();
        extra["salary"] = json!(1);
        assert!(Assessment::parse(&extra.to_string()).unwrap_err().contains("salary"));
        let mut high = answer();
        high["score"] = json!(130);
        assert!(Assessment::parse(&high.to_string()).unwrap_err().contains("score"));
        let mut verdict = answer();
        verdict["recommendation"] = json!("hire!");
        assert!(Assessment::parse(&verdict.to_string()).unwrap_err().contains("recommendation"));
        let mut missing = answer();
        missing.as_object_mut().unwrap().remove("summary");
        assert!(Assessment::parse(&missing.to_string()).unwrap_err().contains("summary"));
        assert!(Assessment::parse("Sure! Here is my assessment: great fit.").is_err());
    }

    #[test]
    fn the_schema_names_every_field_the_type_has() {
        let schema = assessment_schema();
        let required: Vec<&str> = schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let fields: Vec<String> = answer().as_object().unwrap().keys().cloned().collect();
        for field in &fields {
            assert!(required.contains(&field.as_str()), "{field}");
        }
        assert_eq!(required.len(), fields.len());
    }
}
