//! The worker's Prometheus metrics, all under `headhunter_log_worker_`.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct WorkerMetrics {
    pub registry: Registry,
    /// Rows committed to the analytics database, per table (duplicates excluded).
    pub rows_written: IntCounterVec,
    /// Entries whose row already existed (redelivery), per table.
    pub duplicates_ignored: IntCounterVec,
    /// Entries per committed batch.
    pub batch_size: Histogram,
    /// Time to write and commit one batch.
    pub write_seconds: HistogramVec,
    /// Failed write attempts, by kind: `transient` (database down, locked, timed out)
    /// or `rejected` (the database refused a row).
    pub write_errors: IntCounterVec,
    /// Batches written by INSERT instead of COPY, by reason (`duplicate`: a redelivered
    /// row was already stored; `rejected`: the database refused a row).
    pub copy_fallbacks: IntCounterVec,
    /// Entries moved to a dead-letter stream, per stream and reason.
    pub dead_lettered: IntCounterVec,
    /// Entries taken over from other consumers (XAUTOCLAIM), per stream.
    pub reclaimed: IntCounterVec,
    /// Failed Redis commands.
    pub redis_errors: IntCounter,
    /// Entries delivered to the group but not yet acknowledged, per stream.
    pub pending: IntGaugeVec,
    /// Entries not yet delivered to the group, per stream.
    pub lag: IntGaugeVec,
    /// Entries in each stream (acknowledged ones included; streams are not trimmed).
    pub stream_length: IntGaugeVec,
}

impl WorkerMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("headhunter_log_worker".into()), None)?;
        let m = Self {
            rows_written: IntCounterVec::new(
                Opts::new("rows_written_total", "Rows committed to the analytics database"),
                &["table"],
            )?,
            duplicates_ignored: IntCounterVec::new(
                Opts::new("duplicates_ignored_total", "Entries whose row was already written"),
                &["table"],
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new("batch_size", "Entries per committed batch")
                    .buckets(vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0]),
            )?,
            write_seconds: HistogramVec::new(
                HistogramOpts::new("write_seconds", "Time to write and commit one batch")
                    .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
                &["outcome"],
            )?,
            write_errors: IntCounterVec::new(
                Opts::new("write_errors_total", "Failed write attempts by kind"),
                &["kind"],
            )?,
            copy_fallbacks: IntCounterVec::new(
                Opts::new("copy_fallbacks_total", "Batches written by INSERT instead of COPY"),
                &["reason"],
            )?,
            dead_lettered: IntCounterVec::new(
                Opts::new("dead_lettered_total", "Entries moved to a dead-letter stream"),
                &["stream", "reason"],
            )?,
            reclaimed: IntCounterVec::new(
                Opts::new("reclaimed_total", "Entries taken over from idle consumers"),
                &["stream"],
            )?,
            redis_errors: IntCounter::new("redis_errors_total", "Failed Redis commands")
                .unwrap_or_else(|_| unreachable!()),
            pending: IntGaugeVec::new(
                Opts::new("pending_entries", "Delivered but unacknowledged entries"),
                &["stream"],
            )?,
            lag: IntGaugeVec::new(Opts::new("lag_entries", "Entries not yet delivered to the group"), &["stream"])?,
            stream_length: IntGaugeVec::new(Opts::new("stream_length", "Entries in the stream"), &["stream"])?,
            registry,
        };
        m.register()?;
        Ok(m)
    }

    fn register(&self) -> prometheus::Result<()> {
        let collectors: [Box<dyn prometheus::core::Collector>; 12] = [
            Box::new(self.copy_fallbacks.clone()),
            Box::new(self.rows_written.clone()),
            Box::new(self.duplicates_ignored.clone()),
            Box::new(self.batch_size.clone()),
            Box::new(self.write_seconds.clone()),
            Box::new(self.write_errors.clone()),
            Box::new(self.dead_lettered.clone()),
            Box::new(self.reclaimed.clone()),
            Box::new(self.redis_errors.clone()),
            Box::new(self.pending.clone()),
            Box::new(self.lag.clone()),
            Box::new(self.stream_length.clone()),
        ];
        for c in collectors {
            self.registry.register(c)?;
        }
        Ok(())
    }
}
