//! cache-service metrics, under `headhunter_cache_`.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct CacheMetrics {
    pub registry: Registry,
    /// Look-ups by namespace, tier (`l1`, `redis`) and result (`hit`, `miss`).
    pub lookups: IntCounterVec,
    /// Entries written, by namespace and where: `both`; `deferred` (L1 now, Redis when
    /// it answers again); `l1_only` (Redis refused it, or the fallback log was full).
    pub writes: IntCounterVec,
    /// Entries in L1, and their weight (key + value bytes).
    pub l1_entries: IntGauge,
    pub l1_bytes: IntGauge,
    /// Redis memory, as INFO reports it (refreshed on each scrape).
    pub redis_used_memory: IntGauge,
    pub redis_maxmemory: IntGauge,
    pub redis_evicted_keys: IntGauge,
    /// 1 while Redis is unreachable and L1 alone serves.
    pub fallback_active: IntGauge,
    /// Failed Redis commands by kind: `outage` (no answer; fallback follows) or
    /// `refused` (Redis answered with an error).
    pub redis_errors: IntCounterVec,
    /// Writes waiting in the fallback log for Redis to answer.
    pub fallback_writes_pending: IntGauge,
    /// Writes from the fallback log that reached Redis.
    pub fallback_writes_replayed: IntCounter,
    /// Writes made while Redis was down that will never reach it (the log was full, or
    /// Redis refused them at the replay).
    pub fallback_writes_unreplayed: IntCounter,
    /// Writes made while Redis was down and dropped from the log before their replay,
    /// because another replica wrote their keys in Redis since, or their namespace was
    /// flushed.
    pub fallback_writes_superseded: IntCounter,
    /// Invalidations received from other replicas.
    pub invalidations_received: IntCounter,
}

impl CacheMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("headhunter_cache".into()), None)?;
        let m = Self {
            lookups: IntCounterVec::new(
                Opts::new("lookups_total", "Cache look-ups by namespace, tier and result"),
                &["namespace", "tier", "result"],
            )?,
            writes: IntCounterVec::new(Opts::new("writes_total", "Entries written"), &["namespace", "stored_in"])?,
            l1_entries: IntGauge::new("l1_entries", "Entries in the in-process L1")?,
            l1_bytes: IntGauge::new("l1_bytes", "Weight of the L1 entries in bytes")?,
            redis_used_memory: IntGauge::new("redis_used_memory_bytes", "Redis used_memory")?,
            redis_maxmemory: IntGauge::new("redis_maxmemory_bytes", "Redis maxmemory (0: unlimited)")?,
            redis_evicted_keys: IntGauge::new("redis_evicted_keys", "Keys Redis evicted since it started")?,
            fallback_active: IntGauge::new("fallback_active", "1 while L1 alone serves (Redis down)")?,
            redis_errors: IntCounterVec::new(
                Opts::new("redis_errors_total", "Failed Redis commands by kind (outage, refused)"),
                &["kind"],
            )?,
            fallback_writes_pending: IntGauge::new(
                "fallback_writes_pending",
                "Writes made while Redis was down, waiting to be replayed",
            )?,
            fallback_writes_replayed: IntCounter::new(
                "fallback_writes_replayed_total",
                "Writes made while Redis was down that reached it when it answered again",
            )?,
            fallback_writes_unreplayed: IntCounter::new(
                "fallback_writes_unreplayed_total",
                "Writes made while Redis was down that will not reach it (log full, or refused)",
            )?,
            fallback_writes_superseded: IntCounter::new(
                "fallback_writes_superseded_total",
                "Writes made while Redis was down, dropped before the replay: written by another replica since, or flushed",
            )?,
            invalidations_received: IntCounter::new(
                "invalidations_received_total",
                "Invalidations from other replicas",
            )?,
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 14] = [
            Box::new(m.lookups.clone()),
            Box::new(m.writes.clone()),
            Box::new(m.l1_entries.clone()),
            Box::new(m.l1_bytes.clone()),
            Box::new(m.redis_used_memory.clone()),
            Box::new(m.redis_maxmemory.clone()),
            Box::new(m.redis_evicted_keys.clone()),
            Box::new(m.fallback_active.clone()),
            Box::new(m.redis_errors.clone()),
            Box::new(m.fallback_writes_pending.clone()),
            Box::new(m.fallback_writes_replayed.clone()),
            Box::new(m.fallback_writes_unreplayed.clone()),
            Box::new(m.fallback_writes_superseded.clone()),
            Box::new(m.invalidations_received.clone()),
        ];
        for c in collectors {
            m.registry.register(c)?;
        }
        Ok(m)
    }
}
