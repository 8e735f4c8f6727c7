//! The two tiers: an in-process L1 (bounded in bytes, TTL respected) in front of Redis.
//!
//! Redis keys are `{prefix}{namespace}:{key}` (the seeds' `embedding:{hash}`,
//! `llm:{hash}`, …); L1 uses the same strings. When a Redis command fails or times
//! out, the store turns *degraded*: reads and writes use L1 alone, callers see no
//! error, and a monitor pings Redis until it answers again.
//!
//! Each thread that talks to Redis (every HTTP worker, and the background runtime's
//! threads) opens its own multiplexed, self-reconnecting connection on first use. A
//! connection's driver task runs on the runtime that opened it, so a worker's commands
//! are written and their replies read on the worker's own thread, with no hand-over
//! to another thread per command.
//!
//! Coherence between replicas: every write or delete also publishes the key on the
//! channel `{prefix}cache:invalidate`; each replica drops those keys from its L1.
//! A value read from Redis goes into L1 only if no write, delete or invalidation of
//! its key happened while the read was in flight (a generation counter per stripe of
//! keys tells), so a read that raced a newer write never brings the older value back.
//! Staleness is bounded by pub/sub delivery while the link is up (well under a
//! millisecond locally) and by `l1_max_ttl_secs` if a replica misses a message: L1
//! keeps an entry read from or written to Redis no longer than that. An entry written
//! while Redis is down exists nowhere else, so L1 keeps it for its full TTL.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::sync::Cache;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics::CacheMetrics;

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

/// Stripes of the write generations: keys share a counter when their hashes collide,
/// which costs a skipped L1 fill, never a stale one.
const GENERATION_STRIPES: usize = 256;

const OP_DELETE: &str = "del";
const OP_FLUSH: &str = "flush";

pub struct CacheStore {
    l1: Option<Cache<String, L1Value>>,
    /// One connection per thread (see the module comment); concurrent requests on a
    /// thread share it, pipelined on the wire, with no checkout or health ping.
    connections: RwLock<HashMap<ThreadId, ConnectionManager>>,
    client: redis::Client,
    redis_config: ConnectionManagerConfig,
    redis_timeout: Duration,
    prefix: String,
    l1_max_ttl: Duration,
    degraded: AtomicBool,
    /// Bumped before every change to a key in L1 (see the module comment).
    generations: Box<[AtomicU64]>,
    stripe_hasher: std::hash::RandomState,
    replica_id: String,
    /// Look-up counters per namespace, resolved once: [l1 hit, l1 miss, redis hit, redis miss].
    /// A handful of namespaces: a scan beats hashing the name.
    lookup_counters: Vec<(String, [prometheus::IntCounter; 4])>,
    pub metrics: CacheMetrics,
}

impl CacheStore {
    pub fn new(
        redis_url: &str,
        redis_timeout: Duration,
        prefix: String,
        namespaces: impl IntoIterator<Item = String>,
        l1_max_bytes: u64,
        l1_max_ttl: Duration,
        metrics: CacheMetrics,
    ) -> anyhow::Result<Arc<Self>> {
        let lookup_counters = namespaces
            .into_iter()
            .map(|ns| {
                let c = |tier: &str, result: &str| metrics.lookups.with_label_values(&[ns.as_str(), tier, result]);
                let counters = [c("l1", "hit"), c("l1", "miss"), c("redis", "hit"), c("redis", "miss")];
                (ns, counters)
            })
            .collect();
        let l1 = (l1_max_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(l1_max_bytes)
                .weigher(|k: &String, v: &L1Value| u32::try_from(k.len() + v.bytes.len() + 64).unwrap_or(u32::MAX))
                .expire_after(ExpireAt)
                .build()
        });
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let replica_id = id.iter().map(|b| format!("{b:02x}")).collect();
        let redis_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(redis_timeout))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Arc::new(Self {
            l1,
            connections: RwLock::new(HashMap::new()),
            client: redis::Client::open(redis_url)?,
            redis_config,
            redis_timeout,
            prefix,
            l1_max_ttl,
            degraded: AtomicBool::new(false),
            generations: (0..GENERATION_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            stripe_hasher: std::hash::RandomState::new(),
            replica_id,
            lookup_counters,
            metrics,
        }))
    }

    /// This thread's Redis connection (a cheap clone), opened on first use within
    /// `redis_timeout`.
    pub async fn conn(&self) -> Result<ConnectionManager, String> {
        let thread = std::thread::current().id();
        if let Some(conn) = self.connections.read().ok().and_then(|c| c.get(&thread).cloned()) {
            return Ok(conn);
        }
        let open = ConnectionManager::new_with_config(self.client.clone(), self.redis_config.clone());
        let conn = match tokio::time::timeout(self.redis_timeout, open).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no connection to Redis within {:?}", self.redis_timeout)),
        };
        if let Ok(mut connections) = self.connections.write() {
            connections.insert(thread, conn.clone());
        }
        Ok(conn)
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

    pub fn note_redis_unreachable(&self, err: &dyn std::fmt::Display) {
        self.note_redis_error(err);
    }

    fn note_redis_error(&self, err: &dyn std::fmt::Display) {
        self.metrics.redis_errors.inc();
        if !self.degraded.swap(true, Ordering::Relaxed) {
            self.metrics.fallback_active.set(1);
            tracing::warn!(error = %err, "Redis unreachable: serving from L1 alone until it answers again");
        }
    }

    /// The monitor's verdict: Redis answers again. Every thread opens a fresh
    /// connection on its next command rather than finding out that its old one broke.
    pub fn note_redis_back(&self) {
        if let Ok(mut connections) = self.connections.write() {
            connections.clear();
        }
        if self.degraded.swap(false, Ordering::Relaxed) {
            self.metrics.fallback_active.set(0);
            tracing::info!("Redis answers again: both tiers in use");
        }
    }

    fn generation(&self, full: &str) -> &AtomicU64 {
        let stripe = self.stripe_hasher.hash_one(full) as usize % GENERATION_STRIPES;
        &self.generations[stripe]
    }

    /// Marks `full` as changing: a Redis read of it now in flight will not fill L1.
    fn bump(&self, full: &str) {
        self.generation(full).fetch_add(1, Ordering::SeqCst);
    }

    fn bump_all(&self) {
        for g in &*self.generations {
            g.fetch_add(1, Ordering::SeqCst);
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
        let before: Vec<u64> = wanted.iter().map(|k| self.generation(k).load(Ordering::SeqCst)).collect();
        let reply = self.read_with_ttl(&wanted).await;
        match reply {
            Ok(values) => {
                for ((i, (value, pttl)), before) in missing.into_iter().zip(values).zip(before) {
                    match value {
                        Some(v) => {
                            self.count(namespace, Tier::Redis, true);
                            let bytes = Bytes::from(v);
                            let ttl = u64::try_from(pttl).map_or(self.l1_max_ttl, Duration::from_millis);
                            self.l1_fill(&full[i], bytes.clone(), ttl, before);
                            found[i] = Some((bytes, Tier::Redis));
                        }
                        None => self.count(namespace, Tier::Redis, false),
                    }
                }
            }
            Err(err) => self.note_redis_error(&err),
        }
    }

    /// Puts a value read from Redis into L1 unless its key changed since `before`.
    /// Checked after the insert, so a change that lands between check and insert is
    /// caught too; undoing the insert may then drop a newer value, which only costs a
    /// miss.
    fn l1_fill(&self, full: &str, bytes: Bytes, ttl: Duration, before: u64) {
        if self.generation(full).load(Ordering::SeqCst) != before {
            return;
        }
        self.l1_put(full.to_owned(), bytes, ttl, true);
        if self.generation(full).load(Ordering::SeqCst) != before
            && let Some(l1) = &self.l1
        {
            l1.invalidate(full);
        }
    }

    /// Values and remaining TTLs (ms; negative when none) of `keys`, one round trip.
    async fn read_with_ttl(&self, keys: &[&str]) -> Result<Vec<ValueWithTtl>, String> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("GET").arg(*key).cmd("PTTL").arg(*key);
        }
        let mut conn = self.conn().await?;
        let values: Vec<redis::Value> = pipe.query_async(&mut conn).await.map_err(|e| e.to_string())?;
        values
            .chunks(2)
            .map(|pair| {
                let value: Option<Vec<u8>> = redis::from_redis_value_ref(&pair[0]).map_err(|e| e.to_string())?;
                let ttl: i64 = redis::from_redis_value_ref(&pair[1]).map_err(|e| e.to_string())?;
                Ok((value, ttl))
            })
            .collect()
    }

    /// Stores entries in both tiers (L1 alone while Redis is down) and tells the other
    /// replicas to drop their copies.
    pub async fn put_many(&self, namespace: &str, entries: Vec<(String, Bytes)>, ttl: Duration) {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        let mut keys = Vec::with_capacity(entries.len());
        let shared = !self.is_degraded();
        for (key, value) in entries {
            let full = self.full_key(namespace, &key);
            pipe.cmd("SET").arg(&full).arg(value.as_ref()).arg("PX").arg(ttl_ms).ignore();
            self.bump(&full);
            self.l1_put(full.clone(), value, ttl, shared);
            keys.push(full);
        }
        let stored = self.redis_write(pipe, OP_DELETE, &keys).await;
        let label = if stored { "both" } else { "l1_only" };
        self.metrics.writes.with_label_values(&[namespace, label]).inc_by(keys.len() as u64);
    }

    /// Removes a key from both tiers, here and in every replica's L1.
    pub async fn delete(&self, namespace: &str, key: &str) {
        let full = self.full_key(namespace, key);
        self.bump(&full);
        if let Some(l1) = &self.l1 {
            l1.invalidate(&full);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(&full).ignore();
        self.redis_write(pipe, OP_DELETE, &[full]).await;
    }

    /// Empties a namespace in both tiers and every replica; returns the Redis keys removed.
    pub async fn flush(&self, namespace: &str) -> Result<u64, String> {
        let pattern_prefix = self.full_key(namespace, "");
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
        let message = format!("{}\n{OP_FLUSH}\n{pattern_prefix}", self.replica_id);
        redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(message)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(removed)
    }

    /// Runs a write pipeline plus the invalidation message; false if Redis was not
    /// written (degraded).
    async fn redis_write(&self, mut pipe: redis::Pipeline, op: &str, keys: &[String]) -> bool {
        if self.is_degraded() {
            return false;
        }
        let message = format!("{}\n{op}\n{}", self.replica_id, keys.join("\n"));
        pipe.cmd("PUBLISH").arg(self.channel()).arg(message).ignore();
        let result = match self.conn().await {
            Ok(mut conn) => pipe.query_async::<()>(&mut conn).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => true,
            Err(err) => {
                self.note_redis_error(&err);
                false
            }
        }
    }

    fn l1_drop_prefix(&self, prefix: &str) {
        self.bump_all();
        if let Some(l1) = &self.l1 {
            let doomed: Vec<Arc<String>> = l1.iter().map(|(k, _)| k).filter(|k| k.starts_with(prefix)).collect();
            for k in doomed {
                l1.invalidate(k.as_str());
            }
        }
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
                for key in lines {
                    self.bump(key);
                    if let Some(l1) = &self.l1 {
                        l1.invalidate(key);
                    }
                }
            }
            OP_FLUSH => {
                if let Some(prefix) = lines.next() {
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
