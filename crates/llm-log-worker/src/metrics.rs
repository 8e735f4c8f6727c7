//! The worker's own metrics, under `headhunter_log_worker_` (the consumer runtime's
//! `queue_*` metrics sit beside them in the same registry).

use prometheus::IntCounterVec;

service_kit::metrics! {
    pub struct WorkerMetrics {
        /// Rows committed to the analytics database, per table (duplicates excluded).
        rows_written: IntCounterVec = "rows_written_total" ["table"],
        /// Entries whose row was already stored (a redelivery), per table.
        duplicates_ignored: IntCounterVec = "duplicates_ignored_total" ["table"],
        /// Batches written by INSERT instead of COPY, by reason: duplicate (a redelivered
        /// row was already stored) or rejected (the database refused a row).
        copy_fallbacks: IntCounterVec = "copy_fallbacks_total" ["reason"],
    }
}
