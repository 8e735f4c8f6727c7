//! The consumer runtime. A service gives it a batch handler; the runtime does the rest:
//!
//! - **Group per consumer kind.** Each kind (`llm-log-worker`, `cv-processor`) is one
//!   consumer group on each of its streams, created at start from the stream's
//!   beginning, so entries published before the first consumer started are read too.
//!   Each loop of each process is one consumer in it (`<name>-<n>`).
//! - **Reading.** A loop first takes back what this consumer (by name) read before a
//!   crash, then new entries (`XREADGROUP … >`, blocking up to `block`), and every
//!   `reclaim_interval` entries idle longer than `reclaim_idle` with any other consumer
//!   (`XAUTOCLAIM`: a crashed process's batch).
//! - **Claims.** While a handler works on a batch (or waits to retry it), the loop renews
//!   its claim every `reclaim_idle / 2`, so a long batch is never taken over.
//! - **Acknowledgement after success.** Entries are acknowledged only once the handler
//!   has returned `Ok` for them; a crash before that leaves them pending for the next
//!   owner, so handlers must be idempotent (the log worker writes on its event id).
//! - **Retries.** `Transient` errors (a database down or locked) retry the same batch
//!   with exponential backoff, for as long as it takes. `Rejected` (the data is refused)
//!   makes the runtime hand the entries to the handler one by one to find the culprits;
//!   an entry refused `max_attempts` times is dead-lettered with the handler's reason.
//! - **Dead letters.** `<stream>:dead` receives, with the original fields, entries that
//!   cannot be decoded (`undecodable`), that the handler keeps rejecting (`rejected`),
//!   or that were delivered more than `max_deliveries` times without ever being
//!   acknowledged (`delivery_limit`: an entry that crashes its consumer). Fields
//!   `dead_reason`, `dead_detail`, `dead_group`, `dead_original_id`, `dead_at_ms` say
//!   why; [`crate::dead_letters`] lists, replays and drops them.
//! - **Heartbeats and gauges.** Every `heartbeat_interval` each process records a
//!   heartbeat for its group and refreshes its gauges; consumers with nothing pending
//!   that have not read for `forget_consumers_after` are removed from the group.
//! - **Trimming.** After acknowledging (at most every `trim_interval`) and on every
//!   heartbeat, each stream is trimmed below the oldest entry any group still needs
//!   ([`crate::scripts::TRIM`]): a stream holds what some group has not acknowledged
//!   (or not been given), plus a tail of at most one internal node (100 entries by
//!   default). A stream with no group is never trimmed.
//! - **Shutdown.** When the shutdown flag turns, each loop finishes (and acknowledges)
//!   the batch in hand and stops; a batch stuck in retries stays pending for the next
//!   owner.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{Histogram, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec};
use redis::AsyncCommands;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamReadOptions,
};
use serde::Deserialize;
use service_kit::config::duration;
use service_kit::redis::Pool;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::keys::Keys;
use crate::scripts;
use crate::status;
use crate::task::{DecodeError, Message, PAYLOAD_FIELD, TYPE_FIELD};

/// How a consumer kind reads, retries and keeps its streams: the `[consumer]` section
/// of a consumer service's settings (durations with their unit: `250ms`, `30s`, `1h`).
#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerConfig {
    /// The consumer group: the kind of consumer (`llm-log-worker`); set by the service.
    #[serde(default)]
    pub group: String,
    /// This process's name in the group (`name`; its loops append `-<n>`). Keep it
    /// stable across restarts where possible (a pod name): a restarted process then
    /// finishes its own batch at once instead of after `reclaim_idle`.
    #[serde(rename = "name")]
    pub consumer: String,
    /// Loops, each reading and handling its own batches.
    pub concurrency: usize,
    /// Entries read per stream per round, and so the largest batch.
    pub batch_size: usize,
    /// How long one read waits for entries (also bounds how long a stop takes).
    #[serde(deserialize_with = "duration")]
    pub block: Duration,
    /// Pause after a batch under a quarter of `batch_size`, so light traffic is handled
    /// in fewer, larger batches (and the added delay before it is done).
    #[serde(deserialize_with = "duration")]
    pub linger: Duration,
    /// An entry pending this long with another consumer is taken over.
    #[serde(deserialize_with = "duration")]
    pub reclaim_idle: Duration,
    /// How often each loop looks for such entries.
    #[serde(deserialize_with = "duration")]
    pub reclaim_interval: Duration,
    /// First and longest pause between retries of a batch the handler could not complete.
    #[serde(deserialize_with = "duration")]
    pub retry_initial: Duration,
    #[serde(deserialize_with = "duration")]
    pub retry_max: Duration,
    /// Times the handler may reject an entry before it is dead-lettered.
    pub max_attempts: u32,
    /// Deliveries of an entry never acknowledged (its consumer died each time) before it
    /// is dead-lettered.
    pub max_deliveries: u32,
    /// Heartbeat, gauges and trimming of the streams.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_interval: Duration,
    /// Least time between two trims after acknowledgements.
    #[serde(deserialize_with = "duration")]
    pub trim_interval: Duration,
    /// Consumers with nothing pending, silent this long, are removed from the group.
    #[serde(deserialize_with = "duration")]
    pub forget_consumers_after: Duration,
}

impl ConsumerConfig {
    /// The same settings reacting within a fraction of a second (short block, retry,
    /// reclaim and heartbeat times), for tests and benchmarks.
    pub fn reacting_fast(mut self) -> Self {
        self.block = Duration::from_millis(200);
        self.reclaim_idle = Duration::from_secs(1);
        self.reclaim_interval = Duration::from_millis(300);
        self.retry_initial = Duration::from_millis(50);
        self.retry_max = Duration::from_millis(300);
        self.heartbeat_interval = Duration::from_millis(200);
        self.trim_interval = Duration::from_millis(100);
        self
    }

    /// Refuses settings that cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.concurrency >= 1, "consumer.concurrency must be at least 1");
        anyhow::ensure!((1..=10_000).contains(&self.batch_size), "consumer.batch_size must be between 1 and 10000");
        anyhow::ensure!(!self.block.is_zero(), "consumer.block must be longer than 0");
        anyhow::ensure!(self.max_attempts >= 1, "consumer.max_attempts must be at least 1");
        anyhow::ensure!(self.max_deliveries >= 1, "consumer.max_deliveries must be at least 1");
        anyhow::ensure!(
            self.reclaim_idle >= self.block * 2,
            "consumer.reclaim_idle must be at least twice consumer.block, or live consumers' entries are taken over"
        );
        Ok(())
    }

    /// The consumer name, or `$HOSTNAME` (a pod's name), or the group's name.
    pub fn with_default_name(mut self) -> Self {
        if self.consumer.trim().is_empty() {
            self.consumer =
                std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| self.group.clone());
        }
        self
    }
}

service_kit::metrics! {
    /// A consumer's metrics (registered under the service's prefix).
    pub struct ConsumerMetrics {
        /// Entries handled and acknowledged, per group and stream.
        consumed: IntCounterVec = "queue_consumed_total" ["group", "stream"],
        /// Entries moved to a dead-letter stream, per group, stream and reason.
        dead_lettered: IntCounterVec = "queue_dead_lettered_total" ["group", "stream", "reason"],
        /// Entries taken over from other consumers (a crashed process's), per group and stream.
        reclaimed: IntCounterVec = "queue_reclaimed_total" ["group", "stream"],
        /// Redelivered entries the handler found already done (written before a crash).
        redeliveries_done: IntCounterVec = "queue_redeliveries_already_done_total" ["group"],
        /// Handler failures by kind: transient (retried) or rejected (isolated, then dead-lettered).
        handler_errors: IntCounterVec = "queue_handler_errors_total" ["group", "kind"],
        /// Time the handler took for a batch it completed.
        handle_seconds: HistogramVec = "queue_handle_seconds" ["group"]
            buckets [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
        /// Entries per completed batch.
        batch_size: Histogram = "queue_batch_size"
            buckets [1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0],
        /// Failed Redis commands.
        redis_errors: IntCounterVec = "queue_redis_errors_total" ["group"],
        /// Entries delivered to the group but not acknowledged, per group and stream.
        pending: IntGaugeVec = "queue_pending_entries" ["group", "stream"],
        /// Entries not yet delivered to the group, per group and stream.
        lag: IntGaugeVec = "queue_lag_entries" ["group", "stream"],
        /// Entries in the stream: the unacknowledged ones plus the trimming tail.
        stream_length: IntGaugeVec = "queue_stream_length" ["stream"],
        /// Entries in the stream's dead-letter stream.
        dead_letters: IntGaugeVec = "queue_dead_letter_length" ["stream"],
        /// Entries removed by trimming.
        trimmed: IntCounterVec = "queue_trimmed_total" ["stream"],
        /// Consumers removed from the group after falling silent.
        consumers_removed: IntCounterVec = "queue_consumers_removed_total" ["group"],
        /// When this process last recorded its heartbeat in Redis (Unix seconds): a value
        /// falling behind the clock means its housekeeping is stuck or Redis refuses it.
        heartbeat_at: IntGaugeVec = "queue_heartbeat_timestamp_seconds" ["group"],
        /// Memory the queue Redis uses.
        redis_used_memory: IntGauge = "queue_redis_used_memory_bytes",
        /// The queue Redis's maxmemory (0: none).
        redis_maxmemory: IntGauge = "queue_redis_maxmemory_bytes",
    }
}

/// One entry handed to a handler.
#[derive(Debug)]
pub struct Delivery<M> {
    pub stream: &'static str,
    pub id: String,
    pub message: M,
    /// The entry as read, kept for a dead letter.
    fields: Fields,
}

type Fields = Vec<(String, Vec<u8>)>;

/// What a handler reports about a batch it completed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Handled {
    /// Entries that turned out to be done already (redelivered after a crash).
    pub already_done: u64,
}

/// Why a handler did not complete a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Something it depends on is down, locked or slow: the same batch is retried later.
    #[error("transient: {0}")]
    Transient(String),
    /// Something in the batch is refused: the runtime finds which entry, and after
    /// `max_attempts` dead-letters it with this reason.
    #[error("rejected: {0}")]
    Rejected(String),
}

/// The service's part: do the work of a batch, idempotently.
pub trait BatchHandler<M: Message>: Send + Sync + 'static {
    fn handle(&mut self, batch: &[Delivery<M>]) -> impl Future<Output = Result<Handled, HandlerError>> + Send;

    /// Called for each entry that is about to be dead-lettered (and could be decoded),
    /// with the letter's reason (`rejected`, `delivery_limit`) and detail, so the
    /// service can record the outcome where its users look. Best effort: the letter is
    /// written whatever this does. Nothing by default.
    fn dead_lettered(&mut self, message: &M, reason: &str, detail: &str) -> impl Future<Output = ()> + Send {
        let _ = (message, reason, detail);
        async {}
    }
}

struct Shared {
    redis: Pool,
    keys: Keys,
    config: ConsumerConfig,
    metrics: ConsumerMetrics,
    streams: Vec<&'static str>,
    stream_keys: Vec<String>,
    last_trim: Mutex<Option<std::time::Instant>>,
}

/// A consumer of `M`'s streams.
pub struct Consumer<M: Message> {
    shared: Arc<Shared>,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message> Consumer<M> {
    pub fn new(redis: Pool, keys: Keys, config: ConsumerConfig, metrics: ConsumerMetrics) -> Self {
        let streams = M::streams();
        let stream_keys = streams.iter().map(|s| keys.stream(s)).collect();
        let shared =
            Arc::new(Shared { redis, keys, config, metrics, streams, stream_keys, last_trim: Mutex::new(None) });
        Self { shared, _message: PhantomData }
    }

    /// Creates the group on each stream (and the stream) unless it exists, waiting for
    /// Redis if it is not up yet. Entries already in a stream are read too.
    pub async fn ensure_groups(&self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        loop {
            match self.try_ensure_groups().await {
                Ok(()) => return Ok(()),
                Err(err) => {
                    tracing::warn!(error = %err, group = %self.shared.config.group, "cannot create the consumer group yet, retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.wait_for(|s| *s) => anyhow::bail!("shut down before Redis was reachable"),
                    }
                }
            }
        }
    }

    async fn try_ensure_groups(&self) -> redis::RedisResult<()> {
        let mut conn = self.shared.conn().await?;
        let group = &self.shared.config.group;
        for key in &self.shared.stream_keys {
            // Look before creating: a queue Redis at its maxmemory refuses XGROUP CREATE
            // (with OOM, not BUSYGROUP) even for a group that exists, and a consumer that
            // could not start then could never drain the backlog that filled it.
            let groups: StreamInfoGroupsReply = conn.xinfo_groups(key).await.unwrap_or_default();
            if groups.groups.iter().any(|g| &g.name == group) {
                continue;
            }
            let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(key, group, "0").await;
            match created {
                Ok(()) => {}
                Err(err) if err.code() == Some("BUSYGROUP") => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Runs until `shutdown` turns true: the group is created, `concurrency` loops each
    /// with a handler from `make_handler`, and the heartbeat. Returns once every loop
    /// has settled the batch it had.
    pub async fn run<H, F>(self, mut make_handler: F, shutdown: watch::Receiver<bool>) -> anyhow::Result<()>
    where
        H: BatchHandler<M>,
        F: FnMut(usize) -> H,
    {
        self.ensure_groups(shutdown.clone()).await?;
        let config = &self.shared.config;
        tracing::info!(group = %config.group, consumer = %config.consumer, streams = ?self.shared.streams,
            loops = config.concurrency, "consumer started");
        let heartbeat = tokio::spawn(housekeeping(self.shared.clone(), shutdown.clone()));
        let loops: Vec<_> = (0..config.concurrency.max(1))
            .map(|n| {
                let consumer_loop = Loop::<M, H> {
                    shared: self.shared.clone(),
                    handler: make_handler(n),
                    consumer: format!("{}-{n}", config.consumer),
                    shutdown: shutdown.clone(),
                    last_reclaim: None,
                    claimed_at: Instant::now(),
                    _message: PhantomData,
                };
                tokio::spawn(consumer_loop.run())
            })
            .collect();
        for handle in loops {
            if let Err(err) = handle.await {
                tracing::error!(error = %err, "a consumer loop panicked");
            }
        }
        drop(heartbeat.await);
        // What this process acknowledged last leaves the streams too.
        self.shared.trim().await;
        tracing::info!(group = %config.group, consumer = %config.consumer, "consumer stopped");
        Ok(())
    }
}

impl Shared {
    async fn conn(&self) -> redis::RedisResult<service_kit::redis::Connection> {
        self.redis.get().await.map_err(|e| redis::RedisError::from((redis::ErrorKind::Io, "redis pool", e.to_string())))
    }

    fn redis_failed(&self, what: &str, err: &redis::RedisError) {
        self.metrics.redis_errors.with_label_values(&[&self.config.group]).inc();
        tracing::warn!(group = %self.config.group, error = %err, "{what} failed");
    }

    fn trim_due(&self) -> bool {
        let Ok(mut last) = self.last_trim.lock() else { return false };
        if last.is_some_and(|t| t.elapsed() < self.config.trim_interval) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }

    /// Trims every stream of this consumer below what any group still needs.
    async fn trim(&self) {
        let result = async {
            let mut conn = self.conn().await?;
            for (stream, key) in self.streams.iter().zip(&self.stream_keys) {
                let removed: u64 = scripts::TRIM.key(key).invoke_async(&mut *conn).await?;
                self.metrics.trimmed.with_label_values(&[stream]).inc_by(removed);
            }
            redis::RedisResult::Ok(())
        }
        .await;
        if let Err(err) = result {
            self.redis_failed("trimming the streams", &err);
        }
    }
}

/// Heartbeats, gauges, trimming and removing long-silent consumers.
async fn housekeeping(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let every = shared.config.heartbeat_interval;
    // Removing silent consumers needs no hurry: a tenth of the silence allowed, at most
    // once a minute.
    let forget_every = (shared.config.forget_consumers_after / 10).clamp(every, Duration::from_secs(60).max(every));
    let mut last_forget: Option<Instant> = None;
    loop {
        if let Err(err) = beat(&shared).await {
            shared.redis_failed("the heartbeat", &err);
        }
        shared.trim().await;
        if last_forget.is_none_or(|t| t.elapsed() >= forget_every) {
            last_forget = Some(Instant::now());
            if let Err(err) = forget_silent_consumers(&shared).await {
                shared.redis_failed("removing silent consumers", &err);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

async fn beat(shared: &Shared) -> redis::RedisResult<()> {
    let config = &shared.config;
    let mut conn = shared.conn().await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let forget_ms = i64::try_from(config.forget_consumers_after.as_millis()).unwrap_or(i64::MAX);
    let heartbeats = shared.keys.heartbeats(&config.group);
    redis::pipe()
        .zadd(&heartbeats, &config.consumer, now_ms)
        .ignore()
        .zrembyscore(&heartbeats, "-inf", now_ms.saturating_sub(forget_ms))
        .ignore()
        .query_async::<()>(&mut *conn)
        .await?;
    shared.metrics.heartbeat_at.with_label_values(&[config.group.as_str()]).set(now_ms / 1000);
    let status = status::group_status(&mut *conn, &shared.keys, &config.group, &shared.streams).await?;
    let m = &shared.metrics;
    for s in &status.streams {
        let labels = [config.group.as_str(), s.stream.as_str()];
        m.stream_length.with_label_values(&[&s.stream]).set(gauge(s.length));
        m.dead_letters.with_label_values(&[&s.stream]).set(gauge(s.dead_letters));
        if let Some(pending) = s.pending {
            m.pending.with_label_values(&labels).set(gauge(pending));
        }
        if let Some(lag) = s.lag {
            m.lag.with_label_values(&labels).set(gauge(lag));
        }
    }
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut *conn).await?;
    let number =
        |name: &str| service_kit::redis::info_field(&info, name).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    m.redis_used_memory.set(number("used_memory"));
    m.redis_maxmemory.set(number("maxmemory"));
    Ok(())
}

async fn forget_silent_consumers(shared: &Shared) -> redis::RedisResult<()> {
    let config = &shared.config;
    let idle_ms = u64::try_from(config.forget_consumers_after.as_millis()).unwrap_or(u64::MAX);
    let mut conn = shared.conn().await?;
    for key in &shared.stream_keys {
        let removed: Vec<String> =
            scripts::FORGET_CONSUMERS.key(key).arg(&config.group).arg(idle_ms).invoke_async(&mut *conn).await?;
        if !removed.is_empty() {
            shared.metrics.consumers_removed.with_label_values(&[&config.group]).inc_by(removed.len() as u64);
            tracing::info!(group = %config.group, stream = %key, consumers = ?removed,
                "removed consumers silent for longer than forget_consumers_after");
        }
    }
    Ok(())
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An entry that will not be handled, and why.
struct DeadLetter {
    stream: &'static str,
    id: String,
    fields: Fields,
    reason: &'static str,
    detail: String,
}

/// An entry as read, before decoding.
struct Raw {
    stream: &'static str,
    id: String,
    fields: Fields,
}

struct Loop<M: Message, H> {
    shared: Arc<Shared>,
    handler: H,
    consumer: String,
    shutdown: watch::Receiver<bool>,
    last_reclaim: Option<Instant>,
    /// When the claim on the batch in hand was last taken or renewed.
    claimed_at: Instant,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message, H: BatchHandler<M>> Loop<M, H> {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn group(&self) -> &str {
        &self.shared.config.group
    }

    async fn run(mut self) {
        tracing::debug!(consumer = %self.consumer, "consumer loop started");
        let mut own_pending_done = false;
        while !self.stopping() {
            let config = &self.shared.config;
            // Entries this consumer read before a crash come first; they, and entries
            // taken over from others, have their delivery counts checked.
            let (round, recovered) = if !own_pending_done {
                let round = self.read(&vec!["0"; self.shared.streams.len()], None).await;
                own_pending_done = matches!(&round, Ok(raws) if raws.is_empty());
                (round, true)
            } else if self.last_reclaim.is_none_or(|t| t.elapsed() >= config.reclaim_interval) {
                self.last_reclaim = Some(Instant::now());
                (self.reclaim().await, true)
            } else {
                (self.read(&vec![">"; self.shared.streams.len()], Some(config.block)).await, false)
            };
            match round {
                Ok(raws) if raws.is_empty() => {}
                Ok(raws) => {
                    let small = raws.len() < self.shared.config.batch_size / 4;
                    self.process(raws, recovered).await;
                    if small && own_pending_done {
                        self.pause(self.shared.config.linger).await;
                    }
                }
                Err(err) => {
                    self.shared.redis_failed("reading the streams", &err);
                    self.pause(self.shared.config.retry_max.min(Duration::from_secs(1))).await;
                }
            }
        }
        tracing::debug!(consumer = %self.consumer, "consumer loop stopped");
    }

    async fn read(&self, ids: &[&str], block: Option<Duration>) -> redis::RedisResult<Vec<Raw>> {
        let config = &self.shared.config;
        let mut opts = StreamReadOptions::default().group(&config.group, &self.consumer).count(config.batch_size);
        if let Some(block) = block {
            opts = opts.block(usize::try_from(block.as_millis()).unwrap_or(usize::MAX));
        }
        let mut conn = self.shared.conn().await?;
        let reply: redis::Value = conn.xread_options(&self.shared.stream_keys, ids, &opts).await?;
        let mut raws = Vec::new();
        for (key, entries) in read_reply(reply)? {
            let Some(stream) = self.shared.keys.stream_of(&key, &self.shared.streams) else { continue };
            raws.extend(entries.into_iter().map(|(id, fields)| Raw { stream, id, fields }));
        }
        Ok(raws)
    }

    /// Takes over entries other consumers left pending for longer than `reclaim_idle`.
    async fn reclaim(&mut self) -> redis::RedisResult<Vec<Raw>> {
        let config = &self.shared.config;
        let min_idle = usize::try_from(config.reclaim_idle.as_millis()).unwrap_or(usize::MAX);
        let mut conn = self.shared.conn().await?;
        let mut raws = Vec::new();
        for (stream, key) in self.shared.streams.iter().zip(&self.shared.stream_keys) {
            let reply: StreamAutoClaimReply = conn
                .xautoclaim_options(
                    key,
                    &config.group,
                    &self.consumer,
                    min_idle,
                    "0-0",
                    StreamAutoClaimOptions::default().count(config.batch_size),
                )
                .await?;
            if !reply.claimed.is_empty() {
                self.shared
                    .metrics
                    .reclaimed
                    .with_label_values(&[config.group.as_str(), stream])
                    .inc_by(reply.claimed.len() as u64);
                tracing::info!(consumer = %self.consumer, stream, count = reply.claimed.len(),
                    "took over entries left pending by another consumer");
            }
            raws.extend(reply.claimed.into_iter().map(|id| raw(stream, id)));
        }
        self.claimed_at = Instant::now();
        Ok(raws)
    }

    /// How many times each entry has been delivered; entries absent from the answer
    /// (acknowledged meanwhile) are left out.
    async fn delivery_counts(&self, raws: &[Raw]) -> redis::RedisResult<HashMap<String, usize>> {
        let mut counts = HashMap::new();
        let mut conn = self.shared.conn().await?;
        for (stream, key) in self.shared.streams.iter().zip(&self.shared.stream_keys) {
            let ids: Vec<&str> = raws.iter().filter(|r| r.stream == *stream).map(|r| r.id.as_str()).collect();
            let (Some(first), Some(last)) = (ids.first(), ids.last()) else { continue };
            let reply: redis::streams::StreamPendingCountReply = conn
                .xpending_consumer_count(key, &self.shared.config.group, *first, *last, ids.len(), &self.consumer)
                .await?;
            counts.extend(reply.ids.into_iter().map(|p| (p.id, p.times_delivered)));
        }
        Ok(counts)
    }

    /// Handles one batch and acknowledges it. Returns only when the batch is settled
    /// (handled or dead-lettered, and acknowledged) or shutdown interrupts a retry.
    async fn process(&mut self, raws: Vec<Raw>, recovered: bool) {
        self.claimed_at = Instant::now();
        let mut dead = Vec::new();
        let mut raws = raws;
        if recovered {
            match self.delivery_counts(&raws).await {
                Ok(counts) => {
                    let limit = self.shared.config.max_deliveries as usize;
                    let (over, under): (Vec<Raw>, Vec<Raw>) =
                        raws.into_iter().partition(|r| counts.get(&r.id).is_some_and(|n| *n > limit));
                    raws = under;
                    dead.extend(over.into_iter().map(|r| DeadLetter {
                        stream: r.stream,
                        detail: format!("delivered more than {limit} times without being acknowledged"),
                        id: r.id,
                        fields: r.fields,
                        reason: "delivery_limit",
                    }));
                }
                Err(err) => self.shared.redis_failed("reading delivery counts", &err),
            }
        }
        let mut deliveries = Vec::with_capacity(raws.len());
        for r in raws {
            match decode::<M>(&r) {
                Ok(message) => deliveries.push(Delivery { stream: r.stream, id: r.id, message, fields: r.fields }),
                Err(err) => dead.push(DeadLetter {
                    stream: r.stream,
                    id: r.id,
                    fields: r.fields,
                    reason: "undecodable",
                    detail: err.to_string(),
                }),
            }
        }
        let Some(handled) = self.handle_with_retries(&mut deliveries, &mut dead).await else {
            return; // shutting down mid-outage: the entries stay pending for the next owner
        };
        for letter in &dead {
            let raw = Raw { stream: letter.stream, id: letter.id.clone(), fields: letter.fields.clone() };
            if let Ok(message) = decode::<M>(&raw) {
                self.handler.dead_lettered(&message, letter.reason, &letter.detail).await;
            }
        }
        self.settle(&deliveries, &dead, handled).await;
    }

    /// Runs the handler until it completes `deliveries`; entries it keeps rejecting move
    /// to `dead`. `None` when shutdown interrupts the retries.
    async fn handle_with_retries(
        &mut self,
        deliveries: &mut Vec<Delivery<M>>,
        dead: &mut Vec<DeadLetter>,
    ) -> Option<Handled> {
        let mut backoff = self.shared.config.retry_initial;
        loop {
            if deliveries.is_empty() {
                return Some(Handled::default());
            }
            match self.handle(deliveries).await {
                Ok(handled) => return Some(handled),
                Err(HandlerError::Transient(msg)) => {
                    tracing::warn!(consumer = %self.consumer, error = %msg, retry_in_ms = backoff.as_millis() as u64,
                        "handler failed, will retry the batch");
                }
                Err(HandlerError::Rejected(msg)) => {
                    tracing::warn!(consumer = %self.consumer, error = %msg, entries = deliveries.len(),
                        "handler rejected a batch, handing it its entries one by one");
                    match self.isolate(deliveries, dead).await {
                        Ok(handled) => return Some(handled),
                        Err(msg) => {
                            tracing::warn!(consumer = %self.consumer, error = %msg, "handler failed, will retry")
                        }
                    }
                }
            }
            if self.stopping() {
                return None;
            }
            self.pause(backoff).await;
            backoff = (backoff * 2).min(self.shared.config.retry_max);
        }
    }

    /// One handler call, renewing the claim on the batch while it runs.
    async fn handle(&mut self, batch: &[Delivery<M>]) -> Result<Handled, HandlerError> {
        let renew_every = self.shared.config.reclaim_idle / 2;
        if self.claimed_at.elapsed() >= renew_every {
            renew_claim(&self.shared, &self.consumer, batch).await;
            self.claimed_at = Instant::now();
        }
        let started = Instant::now();
        let group = self.shared.config.group.clone();
        let result = {
            let work = self.handler.handle(batch);
            tokio::pin!(work);
            loop {
                tokio::select! {
                    result = &mut work => break result,
                    _ = tokio::time::sleep_until(self.claimed_at + renew_every) => {
                        renew_claim(&self.shared, &self.consumer, batch).await;
                        self.claimed_at = Instant::now();
                    }
                }
            }
        };
        let m = &self.shared.metrics;
        match &result {
            Ok(_) => m.handle_seconds.with_label_values(&[&group]).observe(started.elapsed().as_secs_f64()),
            Err(HandlerError::Transient(_)) => m.handler_errors.with_label_values(&[&group, "transient"]).inc(),
            Err(HandlerError::Rejected(_)) => m.handler_errors.with_label_values(&[&group, "rejected"]).inc(),
        }
        result
    }

    /// Hands each entry to the handler alone, up to `max_attempts` times; entries still
    /// rejected move to `dead`. A transient error stops it (the caller retries all
    /// that is left, including entries already done, which handlers absorb).
    async fn isolate(
        &mut self,
        deliveries: &mut Vec<Delivery<M>>,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<Handled, String> {
        let mut total = Handled::default();
        let mut keep = Vec::with_capacity(deliveries.len());
        let mut queue = std::mem::take(deliveries).into_iter();
        while let Some(delivery) = queue.next() {
            let mut refused = None;
            for _attempt in 0..self.shared.config.max_attempts.max(1) {
                match self.handle(std::slice::from_ref(&delivery)).await {
                    Ok(handled) => {
                        total.already_done += handled.already_done;
                        refused = None;
                        break;
                    }
                    Err(HandlerError::Rejected(msg)) => refused = Some(msg),
                    Err(HandlerError::Transient(msg)) => {
                        keep.push(delivery);
                        keep.extend(queue);
                        *deliveries = keep;
                        return Err(msg);
                    }
                }
            }
            match refused {
                Some(detail) => dead.push(DeadLetter {
                    stream: delivery.stream,
                    id: delivery.id,
                    fields: delivery.fields,
                    reason: "rejected",
                    detail,
                }),
                None => keep.push(delivery),
            }
        }
        *deliveries = keep;
        Ok(total)
    }

    /// Acknowledges a settled batch and dead-letters what could not be handled, retrying
    /// Redis until it answers. Acknowledging goes first and alone: `XACK` is allowed at
    /// `maxmemory` while `XADD` and `SET` are not, and a consumer must be able to
    /// acknowledge (so the streams can be trimmed) to free a Redis a backlog has filled.
    async fn settle(&self, deliveries: &[Delivery<M>], dead: &[DeadLetter], handled: Handled) {
        let shared = &self.shared;
        let group = self.group();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut acks = redis::pipe();
        for (stream, ids) in ids_by_stream(deliveries.iter().map(|d| (d.stream, d.id.as_str()))) {
            acks.xack(shared.keys.stream(stream), group, &ids).ignore();
        }
        // A dead letter and the acknowledgement of its entry go together or not at all.
        let mut letters = redis::pipe();
        letters.atomic();
        let now = now_ms.to_string();
        for d in dead {
            let mut fields: Vec<(&str, &[u8])> = d.fields.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            fields.extend([
                ("dead_reason", d.reason.as_bytes()),
                ("dead_detail", d.detail.as_bytes()),
                ("dead_group", group.as_bytes()),
                ("dead_original_id", d.id.as_bytes()),
                ("dead_at_ms", now.as_bytes()),
            ]);
            letters.xadd(shared.keys.dead_letter(d.stream), "*", &fields).ignore();
        }
        for (stream, ids) in ids_by_stream(dead.iter().map(|d| (d.stream, d.id.as_str()))) {
            letters.xack(shared.keys.stream(stream), group, &ids).ignore();
        }
        for (pipe, needed, what) in [
            (&acks, !deliveries.is_empty(), "acknowledging a handled batch"),
            (&letters, !dead.is_empty(), "dead-lettering entries"),
        ] {
            if needed && !self.run_until_done(pipe, what).await {
                // Stopping: handled but unacknowledged entries are redelivered and absorbed.
                return;
            }
        }
        if !deliveries.is_empty() {
            // Best effort: a health view's "last write", refused at maxmemory.
            if let Ok(mut conn) = shared.conn().await {
                let result: redis::RedisResult<()> = conn.set(shared.keys.last_success(group), now_ms).await;
                drop(result);
            }
        }

        let m = &shared.metrics;
        let mut consumed: HashMap<&str, u64> = HashMap::new();
        for d in deliveries {
            *consumed.entry(d.stream).or_default() += 1;
        }
        for (stream, n) in consumed {
            m.consumed.with_label_values(&[group, stream]).inc_by(n);
        }
        if !deliveries.is_empty() {
            m.batch_size.observe(deliveries.len() as f64);
        }
        if handled.already_done > 0 {
            m.redeliveries_done.with_label_values(&[group]).inc_by(handled.already_done);
        }
        for d in dead {
            m.dead_lettered.with_label_values(&[group, d.stream, d.reason]).inc();
            tracing::error!(consumer = %self.consumer, stream = d.stream, entry_id = %d.id, reason = d.reason,
                detail = %d.detail, "entry moved to the dead-letter stream");
        }
        if shared.trim_due() {
            shared.trim().await;
        }
    }

    /// Runs `pipe` until Redis takes it, with backoff; false when shutdown stops the retries.
    async fn run_until_done(&self, pipe: &redis::Pipeline, what: &str) -> bool {
        let mut backoff = self.shared.config.retry_initial;
        loop {
            let result: redis::RedisResult<()> = match self.shared.conn().await {
                Ok(mut conn) => pipe.query_async(&mut *conn).await,
                Err(err) => Err(err),
            };
            match result {
                Ok(()) => return true,
                Err(err) => {
                    self.shared.redis_failed(what, &err);
                    if self.stopping() {
                        return false;
                    }
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(self.shared.config.retry_max);
                }
            }
        }
    }

    /// Sleeps, but wakes early on shutdown.
    async fn pause(&self, duration: Duration) {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    }
}

/// Entry ids grouped by stream.
fn ids_by_stream<'a>(entries: impl Iterator<Item = (&'static str, &'a str)>) -> HashMap<&'static str, Vec<&'a str>> {
    let mut ids: HashMap<&'static str, Vec<&'a str>> = HashMap::new();
    for (stream, id) in entries {
        ids.entry(stream).or_default().push(id);
    }
    ids
}

/// Resets the idle time of the entries a consumer holds (`XCLAIM` to itself, `JUSTID`,
/// which does not count as a delivery), so no one takes them over.
async fn renew_claim<M>(shared: &Shared, consumer: &str, batch: &[Delivery<M>]) {
    let ids = ids_by_stream(batch.iter().map(|d| (d.stream, d.id.as_str())));
    let mut pipe = redis::pipe();
    for (stream, ids) in &ids {
        pipe.cmd("XCLAIM")
            .arg(shared.keys.stream(stream))
            .arg(&shared.config.group)
            .arg(consumer)
            .arg(0)
            .arg(ids)
            .arg("JUSTID")
            .ignore();
    }
    let result: redis::RedisResult<()> = match shared.conn().await {
        Ok(mut conn) => pipe.query_async(&mut *conn).await,
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        shared.redis_failed("renewing the claim on a batch", &err);
    }
}

fn raw(stream: &'static str, id: StreamId) -> Raw {
    let fields = id.map.into_iter().filter_map(|(k, v)| Some((k, field_value(v)?))).collect();
    Raw { stream, id: id.id, fields }
}

/// An entry's field value as bytes (Redis answers bulk strings; simple ones under RESP3).
fn field_value(v: redis::Value) -> Option<Vec<u8>> {
    match v {
        redis::Value::BulkString(bytes) => Some(bytes),
        redis::Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// Entries of one stream as `XREADGROUP` returns them: id and fields.
type StreamEntries = Vec<(String, Fields)>;

/// Takes `XREADGROUP`'s reply apart in place, moving the payloads out: under RESP2
/// `[[stream, [[id, [field, value, …]], …]], …]`, under RESP3 a map of stream to
/// entries; nil when the block ran out. An entry deleted while pending comes as its id
/// and nil (no fields). (The `redis` crate's `StreamReadReply` copies the whole reply
/// and builds a map per entry first.)
fn read_reply(reply: redis::Value) -> redis::RedisResult<Vec<(String, StreamEntries)>> {
    use redis::Value;
    fn text(v: Value) -> Option<String> {
        String::from_utf8(field_value(v)?).ok()
    }
    fn fields(v: Value) -> Option<Fields> {
        let pair = |(k, v): (Value, Value)| -> Option<(String, Vec<u8>)> { Some((text(k)?, field_value(v)?)) };
        match v {
            Value::Nil => Some(Vec::new()),
            Value::Map(map) => map.into_iter().map(pair).collect(),
            Value::Array(flat) => {
                let mut flat = flat.into_iter();
                std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).map(pair).collect()
            }
            _ => None,
        }
    }
    fn entries(v: Value) -> Option<StreamEntries> {
        let Value::Array(entries) = v else { return None };
        entries
            .into_iter()
            .map(|entry| {
                let Value::Array(parts) = entry else { return None };
                let mut parts = parts.into_iter();
                Some((text(parts.next()?)?, fields(parts.next().unwrap_or(Value::Nil))?))
            })
            .collect()
    }
    let streams: Option<Vec<_>> = match reply {
        Value::Nil => Some(Vec::new()),
        Value::Map(map) => map.into_iter().map(|(k, v)| Some((text(k)?, entries(v)?))).collect(),
        Value::Array(rows) => rows
            .into_iter()
            .map(|row| {
                let Value::Array(kv) = row else { return None };
                let mut kv = kv.into_iter();
                Some((text(kv.next()?)?, entries(kv.next()?)?))
            })
            .collect(),
        _ => None,
    };
    streams.ok_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "an XREADGROUP reply of another shape"))
    })
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a [u8]> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
}

fn decode<M: Message>(raw: &Raw) -> Result<M, DecodeError> {
    let tag = field(&raw.fields, TYPE_FIELD).ok_or(DecodeError::MissingField(TYPE_FIELD))?;
    let payload = field(&raw.fields, PAYLOAD_FIELD).ok_or(DecodeError::MissingField(PAYLOAD_FIELD))?;
    M::decode(raw.stream, tag, payload)
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn read_replies_of_both_protocols_come_apart_into_entries() -> redis::RedisResult<()> {
        let entry = |id: &str, fields: Value| Value::Array(vec![bulk(id), fields]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("q:logs"),
            Value::Array(vec![
                entry("1-0", Value::Array(vec![bulk("type"), bulk("call"), bulk("payload"), bulk("{}")])),
                entry("2-0", Value::Nil), // deleted while pending
            ]),
        ])]);
        let expected = vec![(
            "q:logs".to_owned(),
            vec![
                ("1-0".to_owned(), vec![("type".to_owned(), b"call".to_vec()), ("payload".to_owned(), b"{}".to_vec())]),
                ("2-0".to_owned(), Vec::new()),
            ],
        )];
        assert_eq!(read_reply(resp2)?, expected);
        let resp3 = Value::Map(vec![(
            bulk("q:logs"),
            Value::Array(vec![
                entry("1-0", Value::Map(vec![(bulk("type"), bulk("call")), (bulk("payload"), bulk("{}"))])),
                entry("2-0", Value::Nil),
            ]),
        )]);
        assert_eq!(read_reply(resp3)?, expected);
        assert!(read_reply(Value::Nil)?.is_empty());
        assert!(read_reply(Value::Array(vec![Value::Int(3)])).is_err());
        Ok(())
    }
}
