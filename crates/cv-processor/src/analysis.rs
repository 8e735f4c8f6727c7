//! Analyses (see `common_models::analysis`): one application's CV assessed against its
//! job by an LLM. The CV's text is read again from its file (sandboxed, like
//! processing) and masked, so the model never sees the candidate's contact details.
//! The call goes through the gateway's `/v1/chat/completions` in the company's name,
//! so it is logged, costed, rate-limited and budgeted like every other call. An answer
//! that does not match the schema is asked again (a little warmer, so it is not the
//! gateway's cached answer), up to `max_attempts` answers; then the analysis fails
//! with the reason. A budget or permission refusal fails it at once; an unreachable or
//! overloaded gateway is retried by the queue (not counted as an answer).

use std::time::{Duration, Instant};

use chrono::Utc;
use common_models::analysis::{
    AnalysisRow, AnalysisStatus, AnalysisStatusEvent, AnalyzeApplication, Assessment, CACHE_NAMESPACE, CACHE_TTL,
    assessment_schema, cache_key,
};
use common_models::cv::{CvStatus, StatusEvent, events};
use common_models::schema::main::{analysis_results, applications, cvs, jobs};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::Deserialize;
use serde_json::{Value, json};
use task_queue::HandlerError;

use crate::extract::Outcome;
use crate::handler::{Context, structure_text};
use crate::sandbox;

#[derive(Debug, Clone, Deserialize)]
pub struct AnalysisSettings {
    /// The gateway's base URL (its `/v1/chat/completions`).
    pub gateway_url: String,
    pub model: String,
    /// LLM answers per analysis (a malformed answer is asked again); calls the gateway
    /// did not answer do not count.
    pub max_attempts: u32,
    #[serde(deserialize_with = "service_kit::config::duration")]
    pub timeout: Duration,
    /// Characters of masked CV text sent.
    pub max_cv_chars: usize,
    pub max_tokens: u32,
}

/// Asks the gateway's LLM route for assessments.
pub struct Analyst {
    http: reqwest::Client,
    settings: AnalysisSettings,
    /// The internal service key the gateway accepts for calls in a company's name.
    service_key: String,
    /// Where finished analyses are cached (none: not cached).
    pub cache: Option<cache_client::CacheClient>,
}

impl Analyst {
    pub fn new(
        settings: AnalysisSettings,
        service_key: &str,
        cache: Option<cache_client::CacheClient>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(settings.timeout).build()?;
        Ok(Self { http, settings, service_key: service_key.to_owned(), cache })
    }
}

/// What the job and CV say, for the prompt.
struct Subject {
    title: String,
    description: String,
    requirements: Vec<String>,
    cv_status: String,
    storage_key: String,
}

/// How one call ended.
enum Call {
    /// The model's answer: its content, the model that gave it, how long it took.
    Answer { content: String, model: Option<String>, elapsed: Duration },
    /// The analysis cannot succeed (budget spent, refused): fail it with this reason.
    Final(String),
    /// Try again later (gateway unreachable, overloaded, rate-limited).
    Later(String),
}

impl Context {
    /// Runs one analysis; `false` when it was finished (or deleted) already.
    pub async fn analyze(&self, task: &AnalyzeApplication) -> Result<bool, HandlerError> {
        let Some(mut attempts) = self.claim_analysis(task).await? else {
            self.metrics.already_done.inc();
            return Ok(false);
        };
        self.emit_analysis(task, AnalysisStatus::Running, None).await;
        let Some(subject) = self.subject(task).await? else {
            // The application went with its CV or job; the analysis row went with it.
            self.metrics.already_done.inc();
            return Ok(false);
        };
        if subject.cv_status != CvStatus::Processed.as_str() {
            let reason =
                format!("the application's CV is {}; it can be analysed once it is processed", subject.cv_status);
            return self.finish_analysis(task, Err(reason), attempts, None).await;
        }
        let cv_text = match self.masked_text(&subject.storage_key).await? {
            Ok(text) => text,
            Err(reason) => return self.finish_analysis(task, Err(reason), attempts, None).await,
        };
        let settings = &self.analyst.settings;
        let mut spent = Duration::ZERO;
        let mut last_problem = String::new();
        while attempts < settings.max_attempts as i32 {
            attempts += 1;
            match self.ask(task, &subject, &cv_text, attempts).await {
                Call::Answer { content, model, elapsed } => {
                    spent += elapsed;
                    self.metrics.analysis_calls.with_label_values(&["answered"]).inc();
                    match Assessment::parse(&content) {
                        Ok(assessment) => {
                            let done = Ok((assessment, model));
                            return self.finish_analysis(task, done, attempts, Some(spent)).await;
                        }
                        Err(problem) => {
                            self.metrics.analysis_calls.with_label_values(&["malformed"]).inc();
                            tracing::info!(analysis_id = task.analysis_id, attempt = attempts, %problem,
                                "the model's answer did not match the assessment schema; asking again");
                            last_problem = problem;
                        }
                    }
                }
                Call::Final(reason) => {
                    self.metrics.analysis_calls.with_label_values(&["refused"]).inc();
                    return self.finish_analysis(task, Err(reason), attempts, Some(spent)).await;
                }
                Call::Later(reason) => {
                    self.metrics.analysis_calls.with_label_values(&["unavailable"]).inc();
                    // Not an answer: it does not count. The answered calls so far do;
                    // the queue retries the task (and fails it once it gives up).
                    self.save_attempts(task, attempts - 1).await?;
                    return Err(HandlerError::Transient(reason));
                }
            }
        }
        let reason = if last_problem.is_empty() {
            format!("no attempts left ({attempts} answers from the LLM)")
        } else {
            format!("the model's answer did not match the assessment schema after {attempts} attempts: {last_problem}")
        };
        self.finish_analysis(task, Err(reason), attempts, Some(spent)).await
    }

    /// Marks the analysis running; its LLM calls so far, or `None` when it is finished
    /// or gone.
    pub(crate) async fn claim_analysis(&self, task: &AnalyzeApplication) -> Result<Option<i32>, HandlerError> {
        let mut conn = self.db.get().await.map_err(transient)?;
        let target = analysis_results::table.filter(
            analysis_results::id.eq(task.analysis_id).and(analysis_results::company_id.eq(task.company_id.0)).and(
                analysis_results::status.eq_any([AnalysisStatus::Queued.as_str(), AnalysisStatus::Running.as_str()]),
            ),
        );
        diesel::update(target)
            .set((
                analysis_results::status.eq(AnalysisStatus::Running.as_str()),
                analysis_results::updated_at.eq(diesel::dsl::now),
            ))
            .returning(analysis_results::attempts)
            .get_result(&mut conn)
            .await
            .optional()
            .map_err(transient)
    }

    async fn subject(&self, task: &AnalyzeApplication) -> Result<Option<Subject>, HandlerError> {
        let mut conn = self.db.get().await.map_err(transient)?;
        let found: Option<(String, String, Vec<String>, String, String)> = applications::table
            .inner_join(jobs::table.on(jobs::id.eq(applications::job_id)))
            .inner_join(cvs::table.on(cvs::id.eq(applications::cv_id)))
            .filter(applications::id.eq(task.application_id).and(applications::company_id.eq(task.company_id.0)))
            .select((jobs::title, jobs::description, jobs::requirements, cvs::status, cvs::storage_key))
            .first(&mut conn)
            .await
            .optional()
            .map_err(transient)?;
        Ok(found.map(|(title, description, requirements, cv_status, storage_key)| Subject {
            title,
            description,
            requirements,
            cv_status,
            storage_key,
        }))
    }

    /// The CV's masked text, cut to `max_cv_chars`; `Err(reason)` when the file can no
    /// longer be read.
    async fn masked_text(&self, storage_key: &str) -> Result<Result<String, String>, HandlerError> {
        let bytes = match self.files.get(storage_key).await {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Err("the CV's file is missing from storage".to_owned()));
            }
            Err(err) => return Err(HandlerError::Transient(format!("file storage: {err}"))),
        };
        let extracted = match sandbox::extract(&self.sandbox, bytes).await {
            Ok(Outcome::Extracted(extracted)) => extracted,
            Ok(Outcome::Failed(reason)) => return Ok(Err(reason)),
            Err(err) => return Err(HandlerError::Transient(format!("the extractor could not be run: {err}"))),
        };
        let (chunk_words, max) = (self.chunk_words, self.analyst.settings.max_cv_chars);
        let text = tokio::task::spawn_blocking(move || structure_text(&extracted.text, chunk_words).masked_text)
            .await
            .map_err(|e| HandlerError::Transient(format!("structuring panicked: {e}")))?;
        Ok(Ok(text.chars().take(max).collect()))
    }

    /// One LLM call through the gateway.
    async fn ask(&self, task: &AnalyzeApplication, subject: &Subject, cv_text: &str, attempt: i32) -> Call {
        let analyst = &self.analyst;
        let body = request_body(&analyst.settings, subject, cv_text, attempt);
        let url = format!("{}/v1/chat/completions", analyst.settings.gateway_url.trim_end_matches('/'));
        let mut req = analyst
            .http
            .post(url)
            .bearer_auth(&analyst.service_key)
            .header("x-on-behalf-of-company", task.company_id.0.to_string())
            .header("x-action", "application_analysis")
            .header("x-request-id", format!("analysis-{}-{attempt}", task.analysis_id))
            .json(&body);
        if let Some(user) = task.requested_by {
            req = req.header("x-on-behalf-of-user", user.0.to_string());
        }
        let started = Instant::now();
        let res = match req.send().await {
            Ok(res) => res,
            Err(err) => return Call::Later(format!("the gateway did not answer: {err}")),
        };
        let status = res.status();
        let text = match res.text().await {
            Ok(text) => text,
            Err(err) => return Call::Later(format!("the gateway's answer was cut: {err}")),
        };
        let elapsed = started.elapsed();
        let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            let content = parsed.pointer("/choices/0/message/content").and_then(Value::as_str);
            let model = parsed.get("model").and_then(Value::as_str).map(str::to_owned);
            return Call::Answer { content: content.unwrap_or_default().to_owned(), model, elapsed };
        }
        let code = parsed.pointer("/error/code").and_then(Value::as_str).unwrap_or_default();
        let message = parsed.pointer("/error/message").and_then(Value::as_str).unwrap_or(text.as_str());
        match status.as_u16() {
            429 if code == "budget_exceeded" => {
                Call::Final(format!("the company's monthly LLM budget is spent: {message}"))
            }
            429 | 500..=599 | 408 => Call::Later(format!("the gateway answered {status}: {message}")),
            _ => Call::Final(format!("the gateway refused the LLM call ({status}): {message}")),
        }
    }

    async fn save_attempts(&self, task: &AnalyzeApplication, attempts: i32) -> Result<(), HandlerError> {
        let mut conn = self.db.get().await.map_err(transient)?;
        diesel::update(analysis_results::table.filter(analysis_results::id.eq(task.analysis_id)))
            .set((analysis_results::attempts.eq(attempts), analysis_results::updated_at.eq(diesel::dsl::now)))
            .execute(&mut conn)
            .await
            .map_err(transient)?;
        Ok(())
    }

    /// Records the outcome (an assessment, or the reason it failed), caches the finished
    /// analysis and tells watching clients.
    pub async fn finish_analysis(
        &self,
        task: &AnalyzeApplication,
        outcome: Result<(Assessment, Option<String>), String>,
        attempts: i32,
        spent: Option<Duration>,
    ) -> Result<bool, HandlerError> {
        let latency = spent.map(|d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX));
        let (status, result, model, reason) = match outcome {
            Ok((assessment, model)) => {
                let result = serde_json::to_value(&assessment).map_err(|e| HandlerError::Rejected(e.to_string()))?;
                (AnalysisStatus::Completed, Some(result), model, None)
            }
            Err(reason) => (AnalysisStatus::Failed, None, None, Some(reason)),
        };
        let mut conn = self.db.get().await.map_err(transient)?;
        let target =
            analysis_results::table.filter(analysis_results::id.eq(task.analysis_id).and(
                analysis_results::status.eq_any([AnalysisStatus::Queued.as_str(), AnalysisStatus::Running.as_str()]),
            ));
        let row: Option<AnalysisRow> = diesel::update(target)
            .set((
                analysis_results::status.eq(status.as_str()),
                analysis_results::result.eq(result),
                analysis_results::model.eq(model),
                analysis_results::failure_reason.eq(&reason),
                analysis_results::attempts.eq(attempts),
                analysis_results::latency_ms.eq(latency),
                analysis_results::updated_at.eq(diesel::dsl::now),
                analysis_results::completed_at.eq(diesel::dsl::now),
            ))
            .returning(AnalysisRow::as_returning())
            .get_result(&mut conn)
            .await
            .optional()
            .map_err(transient)?;
        drop(conn);
        let Some(row) = row else {
            self.metrics.already_done.inc();
            return Ok(false);
        };
        let view = row.view().map_err(|e| HandlerError::Rejected(format!("{e:#}")))?;
        let id = view.id;
        self.metrics.analyses.with_label_values(&[status.as_str()]).inc();
        tracing::info!(analysis_id = id, company_id = %task.company_id, status = status.as_str(),
            reason = reason.as_deref().unwrap_or(""), attempts = view.attempts, "analysis finished");
        if let (Some(cache), Ok(bytes)) = (&self.analyst.cache, serde_json::to_vec(&view)) {
            cache.put(CACHE_NAMESPACE, &cache_key(task.company_id, id), bytes.into(), Some(CACHE_TTL)).await;
        }
        self.emit_analysis(task, status, reason).await;
        Ok(true)
    }

    async fn emit_analysis(&self, task: &AnalyzeApplication, status: AnalysisStatus, failure_reason: Option<String>) {
        let event = StatusEvent::Analysis(AnalysisStatusEvent {
            analysis_id: task.analysis_id,
            application_id: task.application_id,
            company_id: task.company_id,
            status,
            failure_reason,
            at: Utc::now(),
        });
        if let Err(err) = events::emit(&self.redis, &self.key_prefix, &event).await {
            tracing::warn!(analysis_id = task.analysis_id, error = %err, "an analysis status event could not be published");
        }
    }
}

/// The chat completion request: the schema as a strict structured output, the job and
/// the masked CV as the user's message. The first call is deterministic (the gateway
/// may answer it from its cache); a retry is slightly warmer, so it is a new call.
fn request_body(settings: &AnalysisSettings, subject: &Subject, cv_text: &str, attempt: i32) -> Value {
    let requirements = if subject.requirements.is_empty() {
        "(none listed)".to_owned()
    } else {
        subject.requirements.iter().map(|r| format!("- {r}")).collect::<Vec<_>>().join("\n")
    };
    let system = "You assess a candidate's CV against a job for a recruiter. Judge only what the CV \
                  shows; personal details are masked and must not matter. Answer with JSON that \
                  matches the given schema exactly: a score from 0 to 100, a recommendation, a short \
                  summary, strengths, concerns, and for each listed requirement whether the CV meets \
                  it with the evidence.";
    let user = format!(
        "Job: {}\n\nDescription:\n{}\n\nRequirements:\n{requirements}\n\nCV (personal details masked):\n{cv_text}",
        subject.title, subject.description
    );
    json!({
        "model": settings.model,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user}
        ],
        "temperature": if attempt <= 1 { 0.0 } else { 0.2 },
        "max_tokens": settings.max_tokens,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "cv_assessment", "strict": true, "schema": assessment_schema()}
        }
    })
}

fn transient(err: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(format!("main database: {err}"))
}
