//! The processor's metrics, under `headhunter_cv_processor_` (the queue consumer's
//! `queue_*` metrics sit beside them).

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

service_kit::metrics! {
    pub struct ProcessorMetrics {
        /// CVs finished, by outcome (processed, failed).
        cvs: IntCounterVec = "cvs_total" ["outcome"],
        /// Failed CVs by reason (empty, not_a_document, scanned, encrypted, damaged,
        /// bomb, too_large, too_slow, crashed, interrupted, other).
        failures: IntCounterVec = "cv_failures_total" ["reason"],
        /// Time per processing stage (fetch, extract, structure, embed, index, record).
        stage_seconds: HistogramVec = "stage_duration_seconds" ["stage"]
            buckets [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
        /// Chunk embeddings by source: cache_hit (the embedding namespace had it) or
        /// computed (the model ran).
        embeddings: IntCounterVec = "embeddings_total" ["source"],
        /// Model time per computed chunk, per CV.
        model_seconds_per_chunk: Histogram = "model_seconds_per_chunk"
            buckets [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
        /// Match requests served, by direction (job_to_cvs, cv_to_jobs).
        matches: IntCounterVec = "match_requests_total" ["direction"],
        /// Chunks made from processed CVs.
        chunks: IntCounter = "chunks_total",
        /// Unfinished CVs and analyses found without a live task and queued again by the
        /// sweep.
        requeued: IntCounter = "requeued_total",
        /// Analyses finished, by outcome (completed, failed).
        analyses: IntCounterVec = "analyses_total" ["outcome"],
        /// LLM calls made for analyses, by result: answered, malformed (an answer off
        /// the schema, asked again), refused (budget, permission), unavailable (retried).
        analysis_calls: IntCounterVec = "analysis_llm_calls_total" ["result"],
        /// CV tasks that found their CV already finished or deleted.
        already_done: IntCounter = "already_done_total",
    }
}

/// A failure reason's metric label.
pub fn reason_label(reason: &str) -> &'static str {
    let r = reason.to_lowercase();
    let has = |needle: &str| r.contains(needle);
    if has("file is empty") || has("document is empty") {
        "empty"
    } else if has("not a cv document") || has("not a docx") {
        "not_a_document"
    } else if has("scanned") {
        "scanned"
    } else if has("encrypted") {
        "encrypted"
    } else if has("bomb") || has("expands") || has("more memory") {
        "bomb"
    } else if has("too many") {
        "too_large"
    } else if has("longer than") || has("processing time") {
        "too_slow"
    } else if has("nested") || has("crashed") {
        "crashed"
    } else if has("damaged") || has("truncated") || has("malformed") {
        "damaged"
    } else if has("interrupted") {
        "interrupted"
    } else {
        "other"
    }
}
