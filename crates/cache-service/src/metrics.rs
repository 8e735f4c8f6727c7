//! cache-service metrics, under `headhunter_cache_`.

use prometheus::{IntCounter, IntCounterVec, IntGauge};

service_kit::metrics! {
    pub struct CacheMetrics {
        /// Look-ups by namespace, tier (l1, redis) and result (hit, miss).
        lookups: IntCounterVec = "lookups_total" ["namespace", "tier", "result"],
        /// Entries written, by namespace and where: both; deferred (L1 now, Redis when it
        /// answers again); l1_only (Redis refused it, or the fallback log was full).
        writes: IntCounterVec = "writes_total" ["namespace", "stored_in"],
        /// Entries in the in-process L1.
        l1_entries: IntGauge = "l1_entries",
        /// Weight of the L1 entries in bytes (key + value).
        l1_bytes: IntGauge = "l1_bytes",
        /// Redis used_memory (refreshed on each scrape).
        redis_used_memory: IntGauge = "redis_used_memory_bytes",
        /// Redis maxmemory (0: unlimited).
        redis_maxmemory: IntGauge = "redis_maxmemory_bytes",
        /// Keys Redis evicted since it started.
        redis_evicted_keys: IntGauge = "redis_evicted_keys",
        /// 1 while Redis is unreachable and L1 alone serves.
        fallback_active: IntGauge = "fallback_active",
        /// Failed Redis commands by kind: outage (no answer; fallback follows) or refused
        /// (Redis answered with an error).
        redis_errors: IntCounterVec = "redis_errors_total" ["kind"],
        /// Writes made while Redis was down, waiting to be replayed.
        fallback_writes_pending: IntGauge = "fallback_writes_pending",
        /// Writes made while Redis was down that reached it when it answered again.
        fallback_writes_replayed: IntCounter = "fallback_writes_replayed_total",
        /// Writes made while Redis was down that will not reach it (log full, or refused).
        fallback_writes_unreplayed: IntCounter = "fallback_writes_unreplayed_total",
        /// Writes made while Redis was down, dropped before the replay: written by another
        /// replica since, or flushed.
        fallback_writes_superseded: IntCounter = "fallback_writes_superseded_total",
        /// Invalidations received from other replicas.
        invalidations_received: IntCounter = "invalidations_received_total",
    }
}
