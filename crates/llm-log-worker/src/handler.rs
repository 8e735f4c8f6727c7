//! The worker's batch handler: a batch of log events becomes rows in one transaction.
//! COPY first; the idempotent INSERT when the batch holds a row already stored (a
//! redelivery) or a row the database refuses (the INSERT's error then names it, and the
//! consumer runtime isolates and, if it keeps being refused, dead-letters it).

use std::sync::Arc;

use common_models::events::{LlmCallEvent, LogEvent, SystemLogEvent};
use task_queue::{BatchHandler, Delivery, Handled, HandlerError};

use crate::copy::{CopyFailure, CopyWriter};
use crate::metrics::WorkerMetrics;
use crate::writer::{AnalyticsWriter, Inserted, WriteError};

pub struct LogWriter {
    copy: CopyWriter,
    writer: Arc<AnalyticsWriter>,
    metrics: WorkerMetrics,
}

impl LogWriter {
    pub fn new(copy: CopyWriter, writer: Arc<AnalyticsWriter>, metrics: WorkerMetrics) -> Self {
        Self { copy, writer, metrics }
    }

    async fn write(&mut self, llm: &[&LlmCallEvent], system: &[&SystemLogEvent]) -> Result<Inserted, WriteError> {
        self.writer.ensure_partitions_for(llm, system).await?;
        match self.copy.write(llm, system).await {
            Ok(inserted) => Ok(inserted),
            Err(CopyFailure::Transient(msg)) => Err(WriteError::Transient(msg)),
            Err(CopyFailure::Duplicate) => {
                self.metrics.copy_fallbacks.with_label_values(&["duplicate"]).inc();
                self.writer.write(llm, system).await
            }
            Err(CopyFailure::Rejected(msg)) => {
                self.metrics.copy_fallbacks.with_label_values(&["rejected"]).inc();
                tracing::debug!(error = %msg, "COPY refused a batch, inserting instead");
                self.writer.write(llm, system).await
            }
        }
    }
}

impl BatchHandler<LogEvent> for LogWriter {
    async fn handle(&mut self, batch: &[Delivery<LogEvent>]) -> Result<Handled, HandlerError> {
        let (llm, system) = split(batch.iter().map(|d| &d.message));
        let started = std::time::Instant::now();
        let inserted = self.write(&llm, &system).await.map_err(|err| match err {
            WriteError::Transient(msg) => HandlerError::Transient(msg),
            WriteError::Rejected(msg) => HandlerError::Rejected(msg),
        })?;
        let m = &self.metrics;
        m.write_seconds.observe(started.elapsed().as_secs_f64());
        m.rows_written.with_label_values(&["llm_logs"]).inc_by(inserted.llm_logs as u64);
        m.rows_written.with_label_values(&["system_logs"]).inc_by(inserted.system_logs as u64);
        let llm_dupes = llm.len().saturating_sub(inserted.llm_logs) as u64;
        let system_dupes = system.len().saturating_sub(inserted.system_logs) as u64;
        m.duplicates_ignored.with_label_values(&["llm_logs"]).inc_by(llm_dupes);
        m.duplicates_ignored.with_label_values(&["system_logs"]).inc_by(system_dupes);
        Ok(Handled { already_done: llm_dupes + system_dupes })
    }
}

fn split<'a>(events: impl Iterator<Item = &'a LogEvent>) -> (Vec<&'a LlmCallEvent>, Vec<&'a SystemLogEvent>) {
    let mut llm = Vec::new();
    let mut system = Vec::new();
    for event in events {
        match event {
            LogEvent::LlmCall(e) => llm.push(e),
            LogEvent::SystemLog(e) => system.push(e),
        }
    }
    (llm, system)
}
