//! One CV, start to end: claim it in the main database, fetch its file, extract the
//! text in the sandbox, structure it, mask it, embed its chunks (through the embedding
//! cache), store their vectors, and record the outcome. Two statements reach the main
//! database per CV (the claim and the outcome). A failure caused by the
//! file (hostile, scanned, damaged…) is an outcome, recorded and acknowledged; a
//! failure of our own infrastructure is retried; a CV whose task the queue
//! dead-letters (refused `consumer.max_attempts` times, or delivered
//! `consumer.max_deliveries` times to processors that died) is failed with the reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common_models::cv::{CvJob, CvStatus, CvStatusEvent, ForgetCv, ProcessCv, StatusEvent, events};
use common_models::ids::CvId;
use common_models::schema::main::cvs;
use common_models::storage::FileStore;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use service_kit::db::PgPool;
use task_queue::{BatchHandler, Delivery, Handled, HandlerError};

use crate::embed::CachedEmbedder;
use crate::extract::{Extracted, Outcome};
use crate::facts::Facts;
use crate::metrics::{ProcessorMetrics, reason_label};
use crate::sandbox::{self, SandboxConfig};
use crate::structure::{self, SectionKind};
use crate::vectors::{ChunkPoint, VectorStore};

/// What every loop shares.
pub struct Context {
    pub db: PgPool,
    pub redis: service_kit::redis::Pool,
    pub key_prefix: String,
    pub files: Arc<dyn FileStore>,
    pub sandbox: SandboxConfig,
    pub chunk_words: usize,
    pub metrics: ProcessorMetrics,
    pub embedder: CachedEmbedder,
    pub vectors: Arc<dyn VectorStore>,
    /// How long a claim keeps another task for the same CV waiting (a run that died
    /// holds its CV no longer than this).
    pub claim_lease: Duration,
    /// Runs analyses through the gateway.
    pub analyst: crate::analysis::Analyst,
}

pub struct CvHandler {
    pub ctx: Arc<Context>,
    /// The CV this loop claimed and has not finished: a retry of its task claims it
    /// again whatever the lease says.
    pub holding: Option<CvId>,
}

impl CvHandler {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self { ctx, holding: None }
    }
}

impl BatchHandler<CvJob> for CvHandler {
    async fn handle(&mut self, batch: &[Delivery<CvJob>]) -> Result<Handled, HandlerError> {
        let mut handled = Handled::default();
        for delivery in batch {
            let done = match &delivery.message {
                CvJob::Process(task) => {
                    let done = self.ctx.process(task, &mut self.holding).await?;
                    self.holding = None;
                    done
                }
                CvJob::Forget(task) => self.ctx.forget(task).await?,
                CvJob::Analyze(task) => self.ctx.analyze(task).await?,
            };
            if !done {
                handled.already_done += 1;
            }
        }
        Ok(handled)
    }

    /// A CV whose processing keeps failing ends `failed` with the reason, as the queue
    /// dead-letters its task.
    async fn dead_lettered(&mut self, message: &CvJob, reason: &str, detail: &str) {
        if let CvJob::Analyze(task) = message {
            let why = format!("the analysis could not be run after several attempts ({detail})");
            let marked = match self.ctx.claim_analysis(task).await {
                Ok(Some(attempts)) => self.ctx.finish_analysis(task, Err(why), attempts, None).await.map(drop),
                Ok(None) => Ok(()),
                Err(err) => Err(err),
            };
            if let Err(err) = marked {
                tracing::warn!(analysis_id = task.analysis_id, error = %err, "a dead-lettered analysis could not be marked failed");
            }
            return;
        }
        let CvJob::Process(task) = message else { return };
        let why = if reason == "delivery_limit" {
            crate::sweep::INTERRUPTED.to_owned()
        } else {
            format!("the file could not be processed after several attempts ({detail})")
        };
        if let Err(err) = self.ctx.record_failed(task, &why).await {
            tracing::warn!(cv_id = %task.cv_id, error = %err, "a dead-lettered CV could not be marked failed");
        }
    }
}

/// A CV's structured result, before it is recorded.
#[derive(Debug, Clone)]
pub struct Structured {
    pub facts: Facts,
    pub masked_text: String,
    pub chunks: Vec<structure::Chunk>,
    pub section_count: usize,
    pub summary: String,
}

/// Facts from the original text; sections and chunks from the masked text, so a name
/// (of whatever length) cannot move a chunk boundary.
pub fn structure_text(text: &str, chunk_words: usize) -> Structured {
    let original_sections = structure::sections(text);
    let facts = crate::facts::extract(&original_sections, text);
    let masked_text = crate::mask::mask(text, &facts);
    let sections = structure::sections(&masked_text);
    let chunks = structure::chunks(&sections, chunk_words);
    let summary = summary(&facts, &original_sections);
    Structured { facts, masked_text, chunks, section_count: sections.len(), summary }
}

/// A few lines a recruiter reads in a list: the latest role, years, top skills and
/// the CV's own first summary sentence.
fn summary(facts: &Facts, sections: &[structure::Section]) -> String {
    let mut parts = Vec::new();
    if let Some(role) = facts.roles.iter().max_by_key(|r| (r.end_year.unwrap_or(i32::MAX), r.start_year)) {
        let end = role.end_year.map_or_else(|| "present".to_owned(), |y| y.to_string());
        parts.push(format!("{} ({}–{end}).", role.title, role.start_year));
    }
    if let Some(years) = facts.total_years {
        parts.push(format!("{years:.0} years of experience."));
    }
    if !facts.skills.is_empty() {
        let top: Vec<&str> = facts.skills.iter().take(8).map(String::as_str).collect();
        parts.push(format!("Skills: {}.", top.join(", ")));
    }
    if let Some(section) = sections.iter().find(|s| s.kind == SectionKind::Summary) {
        let text = section.lines.join(" ");
        let sentence = text.split_inclusive(['.', '!', '?']).next().unwrap_or(&text).trim();
        if !sentence.is_empty() {
            parts.push(sentence.chars().take(240).collect());
        }
    }
    let joined = parts.join(" ");
    joined.chars().take(600).collect()
}

impl Context {
    /// Processes one CV; `false` when it was already finished or deleted. `holding`:
    /// the CV this loop claimed and did not finish (its own claim does not keep a retry
    /// out); set here once the claim is made.
    pub async fn process(&self, task: &ProcessCv, holding: &mut Option<CvId>) -> Result<bool, HandlerError> {
        if !self.claim(task, *holding == Some(task.cv_id)).await? {
            self.metrics.already_done.inc();
            return Ok(false);
        }
        *holding = Some(task.cv_id);
        self.emit(task, CvStatus::Processing, None).await;

        let started = Instant::now();
        let bytes = match self.files.get(&task.storage_key).await {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                self.record_failed(task, "the original file is missing from storage; upload it again").await?;
                return Ok(true);
            }
            Err(err) => return Err(HandlerError::Transient(format!("file storage: {err}"))),
        };
        self.observe("fetch", started);

        let started = Instant::now();
        let outcome = match sandbox::extract(&self.sandbox, bytes).await {
            Ok(outcome) => outcome,
            Err(err) => return Err(HandlerError::Rejected(format!("the extractor could not be run: {err}"))),
        };
        self.observe("extract", started);
        let extracted = match outcome {
            Outcome::Extracted(extracted) => extracted,
            Outcome::Failed(reason) => {
                self.record_failed(task, &reason).await?;
                return Ok(true);
            }
        };

        let started = Instant::now();
        let chunk_words = self.chunk_words;
        let text = extracted.text.clone();
        let structured = tokio::task::spawn_blocking(move || structure_text(&text, chunk_words))
            .await
            .map_err(|e| HandlerError::Transient(format!("structuring panicked: {e}")))?;
        self.observe("structure", started);

        self.index(task, &structured).await?;

        let started = Instant::now();
        let recorded = self.record_processed(task, &extracted, &structured).await?;
        self.observe("record", started);
        if !recorded {
            // Deleted while it was being processed: its vectors go too.
            self.vectors.delete_cv(task.company_id.0, task.cv_id.0).await.map_err(store_error)?;
            self.metrics.already_done.inc();
            return Ok(false);
        }
        self.metrics.chunks.inc_by(structured.chunks.len() as u64);
        Ok(true)
    }

    /// Embeds the chunks (the cache first) and replaces the CV's vectors.
    async fn index(&self, task: &ProcessCv, structured: &Structured) -> Result<(), HandlerError> {
        let started = Instant::now();
        let texts: Vec<String> = structured.chunks.iter().map(|c| c.text.clone()).collect();
        let (vectors, stats) =
            self.embedder.embed(&texts).await.map_err(|e| HandlerError::Transient(format!("embedding: {e:#}")))?;
        let m = &self.metrics;
        m.embeddings.with_label_values(&["cache_hit"]).inc_by(stats.cache_hits as u64);
        m.embeddings.with_label_values(&["computed"]).inc_by(stats.computed as u64);
        if stats.computed > 0 {
            m.model_seconds_per_chunk.observe(started.elapsed().as_secs_f64() / stats.computed as f64);
        }
        self.observe("embed", started);

        let started = Instant::now();
        let points = structured
            .chunks
            .iter()
            .zip(vectors)
            .map(|(chunk, dense)| ChunkPoint {
                chunk: chunk.index,
                section: chunk.section.as_str().to_owned(),
                text: chunk.text.clone(),
                dense,
            })
            .collect();
        self.vectors.replace_cv(task.company_id.0, task.cv_id.0, points).await.map_err(store_error)?;
        self.observe("index", started);
        Ok(())
    }

    /// Removes a deleted CV's vectors.
    pub async fn forget(&self, task: &ForgetCv) -> Result<bool, HandlerError> {
        self.vectors.delete_cv(task.company_id.0, task.cv_id.0).await.map_err(store_error)?;
        Ok(true)
    }

    fn observe(&self, stage: &str, started: Instant) {
        self.metrics.stage_seconds.with_label_values(&[stage]).observe(started.elapsed().as_secs_f64());
    }

    /// Marks the CV processing; `false` when it is finished or gone. A CV another run
    /// claimed within the lease is a transient refusal: the task waits (backing off)
    /// until that run has finished it (then `false`) or its claim lapses, as the claim
    /// of a run that died does (then this run takes it over).
    async fn claim(&self, task: &ProcessCv, retry: bool) -> Result<bool, HandlerError> {
        // A claim made before `lease_ends` has lapsed; for a retry, every claim has.
        let lease_ends = if retry { Utc::now() + self.claim_lease } else { Utc::now() - self.claim_lease };
        let mut conn = self.db.get().await.map_err(transient)?;
        let target = cvs::table.filter(
            owned(task).and(
                cvs::status
                    .eq(CvStatus::Queued.as_str())
                    .or(cvs::status.eq(CvStatus::Processing.as_str()).and(cvs::updated_at.lt(lease_ends))),
            ),
        );
        let claimed = diesel::update(target)
            .set((
                cvs::status.eq(CvStatus::Processing.as_str()),
                cvs::attempts.eq(cvs::attempts + 1),
                cvs::updated_at.eq(diesel::dsl::now),
            ))
            .execute(&mut conn)
            .await
            .map_err(transient)?;
        if claimed == 1 {
            return Ok(true);
        }
        // Rare (a duplicate task, or a restart reading its own pending entry at once):
        // one more statement tells a finished CV from one held by another run.
        let status: Option<String> =
            cvs::table.filter(owned(task)).select(cvs::status).first(&mut conn).await.optional().map_err(transient)?;
        if status.as_deref() == Some(CvStatus::Processing.as_str()) {
            return Err(HandlerError::Transient(format!(
                "CV {} is claimed by another run; waiting for it to finish or for its claim to lapse",
                task.cv_id
            )));
        }
        Ok(false)
    }

    pub async fn record_failed(&self, task: &ProcessCv, reason: &str) -> Result<(), HandlerError> {
        let mut conn = self.db.get().await.map_err(transient)?;
        // Queued too: a task dead-lettered for its deliveries may never have been claimed.
        let target = cvs::table.filter(owned(task).and(cvs::status.eq_any(UNFINISHED)));
        diesel::update(target)
            .set((
                cvs::status.eq(CvStatus::Failed.as_str()),
                cvs::failure_reason.eq(reason),
                cvs::updated_at.eq(diesel::dsl::now),
                cvs::processed_at.eq(diesel::dsl::now),
            ))
            .execute(&mut conn)
            .await
            .map_err(transient)?;
        tracing::info!(cv_id = %task.cv_id, company_id = %task.company_id, reason, "CV failed");
        self.metrics.cvs.with_label_values(&["failed"]).inc();
        self.metrics.failures.with_label_values(&[reason_label(reason)]).inc();
        self.emit(task, CvStatus::Failed, Some(reason.to_owned())).await;
        Ok(())
    }

    /// `false` when the CV is no longer there to record (deleted meanwhile).
    async fn record_processed(
        &self,
        task: &ProcessCv,
        extracted: &Extracted,
        structured: &Structured,
    ) -> Result<bool, HandlerError> {
        let facts = serde_json::to_value(&structured.facts).map_err(|e| HandlerError::Rejected(e.to_string()))?;
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let mut conn = self.db.get().await.map_err(transient)?;
        let target = cvs::table.filter(owned(task).and(cvs::status.eq(CvStatus::Processing.as_str())));
        let updated = diesel::update(target)
            .set((
                cvs::status.eq(CvStatus::Processed.as_str()),
                cvs::failure_reason.eq(extracted.truncated.then_some("the text was longer than the limit and was cut")),
                cvs::page_count.eq(count(extracted.pages)),
                cvs::char_count.eq(count(extracted.text.chars().count())),
                cvs::section_count.eq(count(structured.section_count)),
                cvs::chunk_count.eq(count(structured.chunks.len())),
                cvs::facts.eq(facts),
                cvs::summary.eq(&structured.summary),
                cvs::updated_at.eq(diesel::dsl::now),
                cvs::processed_at.eq(diesel::dsl::now),
            ))
            .execute(&mut conn)
            .await
            .map_err(transient)?;
        if updated == 0 {
            return Ok(false);
        }
        self.metrics.cvs.with_label_values(&["processed"]).inc();
        self.emit(task, CvStatus::Processed, None).await;
        Ok(true)
    }

    pub(crate) async fn emit(&self, task: &ProcessCv, status: CvStatus, failure_reason: Option<String>) {
        let event = CvStatusEvent {
            cv_id: task.cv_id,
            company_id: task.company_id,
            status,
            failure_reason,
            file_name: task.file_name.clone(),
            at: Utc::now(),
        };
        if let Err(err) = events::emit(&self.redis, &self.key_prefix, &StatusEvent::Cv(event)).await {
            tracing::warn!(cv_id = %task.cv_id, error = %err, "a CV status event could not be published");
        }
    }
}

/// Statuses of a CV still to finish.
const UNFINISHED: [&str; 2] = [CvStatus::Queued.as_str(), CvStatus::Processing.as_str()];

/// The task's CV row (of the task's company).
fn owned(task: &ProcessCv) -> diesel::dsl::And<diesel::dsl::Eq<cvs::id, i64>, diesel::dsl::Eq<cvs::company_id, i64>> {
    cvs::id.eq(task.cv_id.0).and(cvs::company_id.eq(task.company_id.0))
}

fn store_error(err: anyhow::Error) -> HandlerError {
    HandlerError::Transient(format!("vector store: {err:#}"))
}

fn transient(err: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(format!("main database: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_latest_role_years_and_skills() {
        let text = "Ada Lovelace\nSummary\nBackend engineer who likes queues. Also cats.\nExperience\n\
                    Engineer, Foo 2010 - 2014\nStaff Engineer, Bar 2014 - Present\nSkills\nRust, PostgreSQL";
        let s = structure_text(text, 40);
        assert!(s.summary.starts_with("Staff Engineer, Bar (2014–present)."), "{}", s.summary);
        assert!(s.summary.contains("Skills: Rust, PostgreSQL."), "{}", s.summary);
        assert!(s.summary.ends_with("Backend engineer who likes queues."), "{}", s.summary);
        assert!(!s.masked_text.contains("Ada"));
        assert_eq!(s.section_count, 4);
    }
}
