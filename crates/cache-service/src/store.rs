//! The two tiers: an in-process L1 (bounded in bytes, TTL respected) in front of Redis.
//!
//! Redis keys are `{prefix}{namespace}:{key}` (the seeds' `embedding:{hash}`,
//! `llm:{hash}`, …); L1 uses the same strings. When Redis does not answer (connection
//! refused or dropped, or no reply within `redis_timeout`), the store turns
//! *degraded*: reads use L1 alone, writes go to L1 and to the fallback log (see
//! `fallback`), callers see no error, and a monitor pings Redis until it answers, then
//! replays the log before leaving fallback. An error Redis answers with (out of memory,
//! say) fails that command only: it is counted, and Redis stays in use.
//!
//! Redis is reached through `link` (a connection per thread).
//!
//! Coherence between replicas: every write or delete also publishes the key on the
//! channel `{prefix}cache:invalidate`; each replica drops those keys from its L1.
//! A value read from Redis goes into L1 only if no write, delete or invalidation of
//! its key happened while the read was in flight (see `generations`), so a read that
//! raced a newer write never brings the older value back.
//! Staleness is bounded by pub/sub delivery while the link is up (well under a
//! millisecond locally) and by `l1_max_ttl_secs` if a replica misses a message: L1
//! keeps an entry read from or written to Redis no longer than that. An entry written
//! while Redis is down keeps its full TTL in L1 until the replay puts it in Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::sync::Cache;
use redis::aio::ConnectionManager;
use tokio::sync::watch;

use crate::fallback::{FallbackLog, Write};
use crate::generations::Generations;
use crate::link::{Failure, RedisLink};
use crate::metrics::CacheMetrics;
use crate::settings::CacheSettings;

/// Where a value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    L1,
    Redis,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::Redis => "redis",
        }
    }
}

#[derive(Clone)]
struct L1Value {
    bytes: Bytes,
    expires_at: Instant,
}

struct ExpireAt;

impl Expiry<String, L1Value> for ExpireAt {
    fn expire_after_create(&self, _key: &String, value: &L1Value, created_at: Instant) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &L1Value,
        updated_at: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(updated_at))
    }
}

/// A value read from Redis and its remaining TTL in milliseconds.
type ValueWithTtl = (Option<Vec<u8>>, i64);

/// PTTL's answer for a key that does not exist (it expired after the GET).
const PTTL_NO_KEY: i64 = -2;

/// Writes replayed per round trip when Redis answers again: up to this many, and about
/// this many bytes, so that one round trip fits in `redis_timeout`.
const REPLAY_BATCH: usize = 500;
const REPLAY_BATCH_BYTES: usize = 1 << 20;

/// Where a write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// L1 and Redis.
    Both,
    /// L1 now, Redis when it answers again (the fallback log).
    Deferred,
    /// L1 only: Redis refused it, or the fallback log was full.
    L1Only,
}

impl Stored {
    fn label(self) -> &'static str {
        match self {
            Self::Both => "both",
            Self::Deferred => "deferred",
            Self::L1Only => "l1_only",
        }
    }
}

const OP_DELETE: &str = "del";
const OP_FLUSH: &str = "flush";

pub struct CacheStore {
    l1: Option<Cache<String, L1Value>>,
    redis: RedisLink,
    prefix: String,
    l1_max_ttl: Duration,
    degraded: AtomicBool,
    /// Writes made while degraded, replayed when Redis answers again. Writers check
    /// `degraded` under its lock, and the replay clears `degraded` under it, so no
    /// write is left behind in the log.
    fallback_log: Mutex<FallbackLog>,
    generations: Generations,
    recoveries: watch::Sender<u64>,
    replica_id: String,
    /// Look-up counters per namespace, resolved once: [l1 hit, l1 miss, redis hit, redis miss].
    /// A handful of namespaces: a scan beats hashing the name.
    lookup_counters: Vec<(String, [prometheus::IntCounter; 4])>,
    pub metrics: CacheMetrics,
}

impl CacheStore {
    pub fn new(settings: &CacheSettings, metrics: CacheMetrics) -> anyhow::Result<Arc<Self>> {
        let namespaces = settings.namespaces.keys().cloned();
        let lookup_counters = namespaces
            .into_iter()
            .map(|ns| {
                let c = |tier: &str, result: &str| metrics.lookups.with_label_values(&[ns.as_str(), tier, result]);
                let counters = [c("l1", "hit"), c("l1", "miss"), c("redis", "hit"), c("redis", "miss")];
                (ns, counters)
            })
            .collect();
        let l1 = (settings.l1_max_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(settings.l1_max_bytes)
                .weigher(|k: &String, v: &L1Value| u32::try_from(k.len() + v.bytes.len() + 64).unwrap_or(u32::MAX))
                .expire_after(ExpireAt)
                .build()
        });
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let replica_id = id.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Arc::new(Self {
            l1,
            redis: RedisLink::new(settings.redis.url.expose(), settings.redis_timeout)?,
            prefix: settings.redis.key_prefix.clone(),
            l1_max_ttl: settings.l1_max_ttl,
            degraded: AtomicBool::new(false),
            fallback_log: Mutex::new(FallbackLog::new(settings.fallback_log_max_bytes)),
            generations: Generations::default(),
            recoveries: watch::Sender::new(0),
            replica_id,
            lookup_counters,
            metrics,
        }))
    }

    /// Where Redis is (one server, or the primary Sentinel names).
    pub fn redis_endpoint(&self) -> &service_kit::redis::Endpoint {
        self.redis.endpoint()
    }

    /// This thread's Redis connection (see `link`).
    pub async fn conn(&self) -> Result<ConnectionManager, String> {
        self.redis.conn().await
    }

    pub fn channel(&self) -> String {
        format!("{}cache:invalidate", self.prefix)
    }

    fn full_key(&self, namespace: &str, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + namespace.len() + 1 + key.len());
        full.push_str(&self.prefix);
        full.push_str(namespace);
        full.push(':');
        full.push_str(key);
        full
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Redis could not be reached (at start-up, or by the monitor).
    pub fn note_redis_unreachable(&self, err: &dyn std::fmt::Display) {
        self.note_failure(&Failure::Outage(err.to_string()));
    }

    fn note_failure(&self, failure: &Failure) {
        match failure {
            Failure::Outage(err) => {
                self.metrics.redis_errors.with_label_values(&["outage"]).inc();
                let was = self.degraded.swap(true, Ordering::SeqCst);
                self.sync_fallback_gauge();
                if !was {
                    tracing::warn!(error = %err, "Redis unreachable: serving from L1 alone until it answers again");
                }
            }
            Failure::Refused(err) => {
                self.metrics.redis_errors.with_label_values(&["refused"]).inc();
                tracing::debug!(error = %err, "Redis refused a command");
            }
        }
    }

    /// The gauge is set from the flag as it stands, so that a fall into fallback and a
    /// recovery racing each other cannot leave it showing the other one.
    fn sync_fallback_gauge(&self) {
        self.metrics.fallback_active.set(i64::from(self.is_degraded()));
    }

    /// Ticks on every recovery from fallback (the invalidation subscriber resubscribes:
    /// its connection may not have survived the outage).
    pub fn recoveries(&self) -> watch::Receiver<u64> {
        self.recoveries.subscribe()
    }

    fn fallback_log(&self) -> std::sync::MutexGuard<'_, FallbackLog> {
        self.fallback_log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The monitor's verdict: Redis answers again. Replays the writes made meanwhile
    /// (each replica replays its own), then leaves fallback; an error if Redis stops
    /// answering during the replay (the rest waits for the next try).
    pub async fn recover(&self) -> Result<(), String> {
        self.redis.reset();
        let mut replayed = 0usize;
        loop {
            let batch = {
                let mut log = self.fallback_log();
                if log.is_empty() {
                    let was = self.degraded.swap(false, Ordering::SeqCst);
                    self.sync_fallback_gauge();
                    if was {
                        self.recoveries.send_modify(|n| *n += 1);
                        tracing::info!(replayed, "Redis answers again: both tiers in use");
                    }
                    self.metrics.fallback_writes_pending.set(0);
                    return Ok(());
                }
                log.take(REPLAY_BATCH, REPLAY_BATCH_BYTES)
            };
            match self.send(&batch).await {
                Ok(()) => {
                    replayed += batch.len();
                    self.metrics.fallback_writes_replayed.inc_by(batch.len() as u64);
                    // Now in Redis, they are shared: L1 refills them with the capped TTL.
                    for (full, _) in &batch {
                        self.generations.bump(full);
                        self.l1_invalidate(full);
                    }
                }
                Err(Failure::Refused(err)) => {
                    // A pipeline is not atomic: some of these may be in Redis now. L1
                    // drops them all (it held them with their full TTL) and reads ask Redis.
                    self.metrics.fallback_writes_unreplayed.inc_by(batch.len() as u64);
                    for (full, _) in &batch {
                        self.generations.bump(full);
                        self.l1_invalidate(full);
                    }
                    tracing::warn!(error = %err, writes = batch.len(), "Redis refused replayed writes");
                }
                Err(Failure::Outage(err)) => {
                    let mut log = self.fallback_log();
                    let lost = log.restore(batch);
                    self.metrics.fallback_writes_unreplayed.inc_by(lost as u64);
                    self.metrics.fallback_writes_pending.set(i64::try_from(log.len()).unwrap_or(i64::MAX));
                    return Err(err);
                }
            }
        }
    }

    fn l1_invalidate(&self, full: &str) {
        if let Some(l1) = &self.l1 {
            l1.invalidate(full);
        }
    }

    fn l1_get(&self, full: &str) -> Option<Bytes> {
        let v = self.l1.as_ref()?.get(full)?;
        (v.expires_at > Instant::now()).then_some(v.bytes)
    }

    /// `shared`: the value is (or will be) in Redis too, so other replicas may change
    /// it and L1 holds it at most `l1_max_ttl`.
    fn l1_put(&self, full: String, bytes: Bytes, ttl: Duration, shared: bool) {
        if let Some(l1) = &self.l1 {
            let keep = if shared { ttl.min(self.l1_max_ttl) } else { ttl };
            l1.insert(full, L1Value { bytes, expires_at: Instant::now() + keep });
        }
    }

    fn count(&self, namespace: &str, tier: Tier, hit: bool) {
        let slot = match (tier, hit) {
            (Tier::L1, true) => 0,
            (Tier::L1, false) => 1,
            (Tier::Redis, true) => 2,
            (Tier::Redis, false) => 3,
        };
        match self.lookup_counters.iter().find(|(ns, _)| ns == namespace) {
            Some((_, counters)) => counters[slot].inc(),
            None => self
                .metrics
                .lookups
                .with_label_values(&[namespace, tier.as_str(), if hit { "hit" } else { "miss" }])
                .inc(),
        }
    }

    /// Looks a key up in L1, then Redis (refilling L1 from Redis with the key's
    /// remaining TTL).
    pub async fn get(&self, namespace: &str, key: &str) -> Option<(Bytes, Tier)> {
        // The hot path: one key found in L1, with no allocation beyond the key.
        let full = self.full_key(namespace, key);
        if let Some(bytes) = self.l1_get(&full) {
            self.count(namespace, Tier::L1, true);
            return Some((bytes, Tier::L1));
        }
        if self.l1.is_some() {
            self.count(namespace, Tier::L1, false);
        }
        let mut found = vec![None];
        self.fill_from_redis(namespace, &[full], vec![0], &mut found).await;
        found.pop().flatten()
    }

    /// Looks up several keys: L1 first, the rest in one Redis round trip.
    pub async fn get_many(&self, namespace: &str, keys: &[&str]) -> Vec<Option<(Bytes, Tier)>> {
        let full: Vec<String> = keys.iter().map(|k| self.full_key(namespace, k)).collect();
        let mut found: Vec<Option<(Bytes, Tier)>> = Vec::with_capacity(keys.len());
        let mut missing: Vec<usize> = Vec::new();
        for (i, k) in full.iter().enumerate() {
            match self.l1_get(k) {
                Some(b) => {
                    self.count(namespace, Tier::L1, true);
                    found.push(Some((b, Tier::L1)));
                }
                None => {
                    if self.l1.is_some() {
                        self.count(namespace, Tier::L1, false);
                    }
                    found.push(None);
                    missing.push(i);
                }
            }
        }
        self.fill_from_redis(namespace, &full, missing, &mut found).await;
        found
    }

    /// Reads the `missing` positions of `full` from Redis in one round trip into
    /// `found`, refilling L1 with each key's remaining TTL.
    async fn fill_from_redis(
        &self,
        namespace: &str,
        full: &[String],
        missing: Vec<usize>,
        found: &mut [Option<(Bytes, Tier)>],
    ) {
        if missing.is_empty() || self.is_degraded() {
            return;
        }
        let wanted: Vec<&str> = missing.iter().map(|i| full[*i].as_str()).collect();
        let before: Vec<u64> = wanted.iter().map(|k| self.generations.current(k)).collect();
        let reply = self.read_with_ttl(&wanted).await;
        match reply {
            Ok(values) => {
                for ((i, (value, pttl)), before) in missing.into_iter().zip(values).zip(before) {
                    match value {
                        Some(v) => {
                            self.count(namespace, Tier::Redis, true);
                            let bytes = Bytes::from(v);
                            // No TTL (-1): L1's cap; expired since the GET (-2): not kept.
                            if pttl != PTTL_NO_KEY {
                                let ttl = u64::try_from(pttl).map_or(self.l1_max_ttl, Duration::from_millis);
                                self.l1_fill(&full[i], bytes.clone(), ttl, before);
                            }
                            found[i] = Some((bytes, Tier::Redis));
                        }
                        None => self.count(namespace, Tier::Redis, false),
                    }
                }
            }
            Err(failure) => self.note_failure(&failure),
        }
    }

    /// Puts a value read from Redis into L1 unless its key changed since `before`.
    /// Checked after the insert, so a change that lands between check and insert is
    /// caught too; undoing the insert may then drop a newer value, which only costs a
    /// miss.
    fn l1_fill(&self, full: &str, bytes: Bytes, ttl: Duration, before: u64) {
        if self.generations.current(full) != before {
            return;
        }
        self.l1_put(full.to_owned(), bytes, ttl, true);
        if self.generations.current(full) != before {
            self.l1_invalidate(full);
        }
    }

    /// Values and remaining TTLs (ms; negative when none) of `keys`, one round trip.
    async fn read_with_ttl(&self, keys: &[&str]) -> Result<Vec<ValueWithTtl>, Failure> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("GET").arg(*key).cmd("PTTL").arg(*key);
        }
        let mut conn = self.conn().await.map_err(Failure::Outage)?;
        let values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        values
            .chunks(2)
            .map(|pair| {
                let value: Option<Vec<u8>> =
                    redis::from_redis_value_ref(&pair[0]).map_err(|e| Failure::Refused(e.to_string()))?;
                let ttl: i64 = redis::from_redis_value_ref(&pair[1]).map_err(|e| Failure::Refused(e.to_string()))?;
                Ok((value, ttl))
            })
            .collect()
    }

    /// Stores entries in both tiers and tells the other replicas to drop their copies.
    /// While Redis is down: in L1, and in Redis once it answers again.
    pub async fn put_many(&self, namespace: &str, entries: Vec<(String, Bytes)>, ttl: Duration) {
        let expires_at = Instant::now() + ttl;
        let shared = !self.is_degraded();
        let writes: Vec<(String, Write)> = entries
            .into_iter()
            .map(|(key, value)| (self.full_key(namespace, &key), Write::Put { value, expires_at }))
            .collect();
        let marks = self.generations.mark(writes.iter().map(|(full, _)| full.as_str()));
        for (full, write) in &writes {
            if let Write::Put { value, .. } = write {
                self.l1_put(full.clone(), value.clone(), ttl, shared);
            }
        }
        let stored = self.write_through(&writes).await;
        // Settle L1 now that the write's fate is known: a read that reached Redis just
        // before the write may have put the older value in meanwhile, and a write that
        // found Redis gone keeps its full TTL (until the replay shares it). Its
        // remaining time, so that L1 never outlives the Redis copy. A key changed by
        // anything else meanwhile (a newer write or delete here, another replica's
        // invalidation) leaves L1: which value Redis holds is not known here.
        let share = match stored {
            Stored::Both => Some(true),
            Stored::Deferred if shared => Some(false),
            Stored::Deferred | Stored::L1Only => None,
        };
        if let Some(share) = share {
            let remaining = expires_at.saturating_duration_since(Instant::now());
            for ((full, write), settled) in writes.iter().zip(self.generations.settle(&marks)) {
                match (write, settled) {
                    (Write::Put { value, .. }, Some(now)) => {
                        self.l1_put(full.clone(), value.clone(), remaining, share);
                        if self.generations.current(full) != now {
                            self.l1_invalidate(full);
                        }
                    }
                    _ => self.l1_invalidate(full),
                }
            }
        }
        self.metrics.writes.with_label_values(&[namespace, stored.label()]).inc_by(writes.len() as u64);
    }

    /// Removes a key from both tiers, here and in every replica's L1. While Redis is
    /// down: from L1, and from Redis once it answers again.
    pub async fn delete(&self, namespace: &str, key: &str) {
        let full = self.full_key(namespace, key);
        self.generations.bump(&full);
        self.l1_invalidate(&full);
        let writes = [(full, Write::Delete)];
        if self.write_through(&writes).await == Stored::Both {
            // A read that reached Redis before the DEL may have refilled L1 meanwhile.
            self.generations.bump(&writes[0].0);
            self.l1_invalidate(&writes[0].0);
        }
    }

    /// Sends `writes` to Redis, or keeps them for the replay while Redis is down.
    async fn write_through(&self, writes: &[(String, Write)]) -> Stored {
        {
            let mut log = self.fallback_log();
            if self.is_degraded() {
                return self.defer(&mut log, writes);
            }
        }
        match self.send(writes).await {
            Ok(()) => Stored::Both,
            Err(failure @ Failure::Outage(_)) => {
                // Fallback starts and the writes enter the log under one lock, so the
                // replay cannot end fallback between the two and strand them.
                let mut log = self.fallback_log();
                self.note_failure(&failure);
                self.defer(&mut log, writes)
            }
            Err(failure) => {
                self.note_failure(&failure);
                Stored::L1Only
            }
        }
    }

    fn defer(&self, log: &mut FallbackLog, writes: &[(String, Write)]) -> Stored {
        let refused = writes.iter().filter(|(full, write)| !log.record(full, write)).count();
        self.metrics.fallback_writes_pending.set(i64::try_from(log.len()).unwrap_or(i64::MAX));
        if refused > 0 {
            self.metrics.fallback_writes_unreplayed.inc_by(refused as u64);
            return Stored::L1Only;
        }
        Stored::Deferred
    }

    /// One round trip: the writes (an expired put deletes: the older value it replaced
    /// must not come back) and the invalidation of their keys.
    async fn send(&self, writes: &[(String, Write)]) -> Result<(), Failure> {
        let now = Instant::now();
        let mut pipe = redis::pipe();
        for (full, write) in writes {
            match write {
                Write::Put { value, expires_at } if *expires_at > now => {
                    let ttl_ms = u64::try_from(expires_at.duration_since(now).as_millis()).unwrap_or(u64::MAX);
                    pipe.cmd("SET").arg(full).arg(value.as_ref()).arg("PX").arg(ttl_ms.max(1)).ignore();
                }
                Write::Put { .. } | Write::Delete => {
                    pipe.cmd("DEL").arg(full).ignore();
                }
            }
        }
        let keys: Vec<&str> = writes.iter().map(|(k, _)| k.as_str()).collect();
        let message = format!("{}\n{OP_DELETE}\n{}", self.replica_id, keys.join("\n"));
        pipe.cmd("PUBLISH").arg(self.channel()).arg(message).ignore();
        let mut conn = self.conn().await.map_err(Failure::Outage)?;
        Ok(pipe.query_async::<()>(&mut conn).await?)
    }

    /// Empties a namespace in both tiers and every replica; returns the Redis keys removed.
    pub async fn flush(&self, namespace: &str) -> Result<u64, String> {
        let pattern_prefix = self.full_key(namespace, "");
        // Writes kept during an outage would bring flushed keys back when replayed.
        self.forget_logged(|log| log.forget_prefix(&pattern_prefix));
        self.l1_drop_prefix(&pattern_prefix);
        let mut conn = self.conn().await?;
        let mut cursor: u64 = 0;
        let mut removed = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{pattern_prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if !keys.is_empty() {
                removed +=
                    redis::cmd("UNLINK").arg(&keys).query_async::<u64>(&mut conn).await.map_err(|e| e.to_string())?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // Reads during the scan may have refilled L1 with keys it then removed.
        self.l1_drop_prefix(&pattern_prefix);
        let message = format!("{}\n{OP_FLUSH}\n{pattern_prefix}", self.replica_id);
        redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(message)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(removed)
    }

    fn l1_drop_prefix(&self, prefix: &str) {
        self.generations.bump_all();
        if let Some(l1) = &self.l1 {
            let doomed: Vec<Arc<String>> = l1.iter().map(|(k, _)| k).filter(|k| k.starts_with(prefix)).collect();
            for k in doomed {
                l1.invalidate(k.as_str());
            }
        }
    }

    /// Removes writes from the fallback log (another replica wrote their keys in Redis
    /// since, or their namespace was flushed: replaying them would undo that newer
    /// change); how many went.
    fn forget_logged(&self, forget: impl FnOnce(&mut FallbackLog) -> usize) -> usize {
        let mut log = self.fallback_log();
        if log.is_empty() {
            return 0;
        }
        let gone = forget(&mut log);
        self.metrics.fallback_writes_superseded.inc_by(gone as u64);
        self.metrics.fallback_writes_pending.set(i64::try_from(log.len()).unwrap_or(i64::MAX));
        gone
    }

    /// Applies an invalidation published by a replica (our own are ignored).
    pub fn apply_invalidation(&self, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else { return };
        let mut lines = text.split('\n');
        let (Some(replica), Some(op)) = (lines.next(), lines.next()) else { return };
        if replica == self.replica_id {
            return;
        }
        self.metrics.invalidations_received.inc();
        match op {
            OP_DELETE => {
                for key in lines.clone() {
                    self.generations.bump(key);
                    self.l1_invalidate(key);
                }
                let superseded = self.forget_logged(|log| lines.filter(|key| log.forget(key)).count());
                if superseded > 0 {
                    tracing::debug!(superseded, "writes kept during fallback were superseded by another replica's");
                }
            }
            OP_FLUSH => {
                if let Some(prefix) = lines.next() {
                    self.forget_logged(|log| log.forget_prefix(prefix));
                    self.l1_drop_prefix(prefix);
                }
            }
            _ => {}
        }
    }

    /// (entries, weighted bytes) of L1.
    pub fn l1_size(&self) -> (u64, u64) {
        self.l1.as_ref().map_or((0, 0), |l1| {
            l1.run_pending_tasks();
            (l1.entry_count(), l1.weighted_size())
        })
    }
}
