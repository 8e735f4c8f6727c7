//! The worker's own metrics, under `headhunter_log_worker_` (the consumer runtime's
//! `queue_*` metrics sit beside them in the same registry).

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

service_kit::metrics! {
    pub struct WorkerMetrics {
        /// Rows committed to the analytics database, per table (duplicates excluded).
        rows_written: IntCounterVec = "rows_written_total" ["table"],
        /// Entries whose row was already stored (a redelivery), per table.
        duplicates_ignored: IntCounterVec = "duplicates_ignored_total" ["table"],
        /// Batches written by INSERT instead of COPY, by reason: duplicate (a redelivered
        /// row was already stored) or rejected (the database refused a row).
        copy_fallbacks: IntCounterVec = "copy_fallbacks_total" ["reason"],
        /// Seconds a batch's write took (partitions, COPY or INSERT, commit).
        write_seconds: Histogram = "write_seconds"
            buckets [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
        /// Seconds a step folding raw rows into the hourly rollups took (this worker's
        /// steps; one worker folds at a time).
        rollup_step_seconds: Histogram = "rollup_step_seconds"
            buckets [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
        /// Calls this worker folded into the hourly rollups.
        rollup_calls: IntCounter = "rollup_calls_total",
        /// Of those, calls folded from the batches its own write loops handed over, not
        /// read back from the database (the rest: other writers' rows, changed batches).
        rollup_calls_handed: IntCounter = "rollup_calls_handed_total",
        /// Folding steps that failed (the reason is in the worker's log).
        rollup_step_failures: IntCounter = "rollup_step_failures_total",
        /// Raw rows committed but not yet in the rollups, after this worker's last step
        /// (grows when folding falls behind or a long transaction holds it back).
        rollup_backlog_rows: IntGauge = "rollup_backlog_rows",
        /// Months after the current one whose raw partitions exist for both tables (1:
        /// next month is ready; 0 or -1: partition upkeep is failing).
        partition_months_ahead: IntGauge = "partition_months_ahead",
        /// Age in days of the oldest raw partition's month start (grows past the
        /// retention age plus a month when retention is not dropping).
        oldest_partition_age_days: IntGauge = "oldest_partition_age_days",
        /// Raw partitions dropped by retention, per table.
        partitions_dropped: IntCounterVec = "partitions_dropped_total" ["table"],
    }
}
