//! The producer: hands tasks to Redis without ever making the caller wait.
//!
//! [`Producer::publish`] encodes the task and pushes it onto an in-memory buffer bounded
//! in bytes (`buffer_max_bytes`); it never blocks and never touches the network. One
//! background task drains the buffer in batches (up to `batch_max_entries` entries or
//! `batch_max_bytes`, waiting at most `linger` for a batch to fill) and sends each batch
//! as one pipelined `XADD` round trip.
//!
//! When Redis does not answer, or refuses (`OOM` under `maxmemory`, a read-only replica),
//! the batch goes to the disk spool ([`crate::spool`]) instead, and so does everything
//! after it: while the spool holds entries, new ones are appended behind them, so order
//! is kept. Every `retry_interval` the task replays the spool from its oldest entry;
//! once it is empty, batches go straight to Redis again. A producer started on a
//! non-empty spool (a restart during an outage) replays it first.
//!
//! Nothing is lost silently: an entry is either accepted by Redis, or waiting (buffer
//! or spool), or counted in `queue_dropped_total{stream,reason}` with reason
//! `buffer_full` (the in-memory bound), `spool_full` (the spool's bound),
//! `spool_error` (the disk failed), `rejected` (Redis refused that entry for good, e.g.
//! `WRONGTYPE`), `encode` (not serialisable) or `shutdown` (no spool, and Redis was down
//! when the process stopped). Without a spool, a batch Redis does not take is retried
//! from memory, and the buffer's bound decides what is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge};
use serde::Deserialize;
use service_kit::config::{bytes, duration};
use service_kit::redis::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::keys::Keys;
use crate::spool::{Chunk, Fsync, Spool, SpoolConfig};
use crate::task::{Entry, PAYLOAD_FIELD, TYPE_FIELD, Task};

/// How a producer buffers, batches and spools: the `[producer]` section of a producing
/// service's settings (sizes as numbers or with a unit, `64MiB`; durations with theirs).
#[derive(Debug, Clone, Deserialize)]
pub struct ProducerConfig {
    /// Bytes of entries held in memory (waiting, or in the batch being sent); beyond it
    /// new entries are dropped (`buffer_full`).
    #[serde(deserialize_with = "bytes")]
    pub buffer_max_bytes: usize,
    /// Entries per pipelined round trip, at most.
    pub batch_max_entries: usize,
    /// Bytes per pipelined round trip, about.
    #[serde(deserialize_with = "bytes")]
    pub batch_max_bytes: usize,
    /// How long a batch may wait to fill.
    #[serde(deserialize_with = "duration")]
    pub linger: Duration,
    /// While Redis is away, how often the spool is tried again.
    #[serde(deserialize_with = "duration")]
    pub retry_interval: Duration,
    /// At shutdown, how long sending (and replaying the spool) may take; what is left
    /// stays in the spool for the next start.
    #[serde(deserialize_with = "duration")]
    pub shutdown_deadline: Duration,
    /// Where entries wait while Redis is away (`[producer.spool]`); an empty `dir`:
    /// nowhere but memory.
    #[serde(deserialize_with = "spool_section")]
    pub spool: Option<SpoolConfig>,
    /// Replicas that must confirm each batch (`WAIT`, in the batch's own round trip);
    /// 0: none asked. What Redis took but fewer replicas confirmed within
    /// `replica_timeout` is counted in `queue_unreplicated_total`: a primary lost before
    /// replicating it loses it. After a batch without enough confirmations the producer
    /// stops waiting (and counts) for `retry_interval`, so a replica that is away costs
    /// no throughput.
    #[serde(default)]
    pub wait_replicas: u32,
    #[serde(default = "default_replica_timeout", deserialize_with = "duration")]
    pub replica_timeout: Duration,
}

fn default_replica_timeout() -> Duration {
    Duration::from_millis(20)
}

impl ProducerConfig {
    /// Refuses settings that cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.buffer_max_bytes >= 1024, "producer.buffer_max_bytes must be at least 1KiB");
        anyhow::ensure!(self.batch_max_entries >= 1, "producer.batch_max_entries must be at least 1");
        anyhow::ensure!(self.batch_max_bytes >= 1024, "producer.batch_max_bytes must be at least 1KiB");
        anyhow::ensure!(!self.retry_interval.is_zero(), "producer.retry_interval must be longer than 0");
        if let Some(spool) = &self.spool {
            anyhow::ensure!(spool.segment_bytes >= 4096, "producer.spool.segment_bytes must be at least 4KiB");
            anyhow::ensure!(
                spool.max_bytes >= spool.segment_bytes,
                "producer.spool.max_bytes must be at least producer.spool.segment_bytes"
            );
        }
        Ok(())
    }
}

/// `[producer.spool]` as written in settings.
#[derive(Deserialize)]
struct SpoolSection {
    dir: String,
    #[serde(deserialize_with = "bytes")]
    max_bytes: u64,
    #[serde(deserialize_with = "bytes")]
    segment_bytes: u64,
    /// `always`, `interval` or `never`.
    fsync: FsyncMode,
    #[serde(deserialize_with = "duration")]
    fsync_interval: Duration,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum FsyncMode {
    Always,
    Interval,
    Never,
}

fn spool_section<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SpoolConfig>, D::Error> {
    let s = SpoolSection::deserialize(d)?;
    if s.dir.trim().is_empty() {
        return Ok(None);
    }
    let fsync = match s.fsync {
        FsyncMode::Always => Fsync::Always,
        FsyncMode::Interval => Fsync::Every(s.fsync_interval),
        FsyncMode::Never => Fsync::Never,
    };
    Ok(Some(SpoolConfig { dir: s.dir.into(), max_bytes: s.max_bytes, segment_bytes: s.segment_bytes, fsync }))
}

service_kit::metrics! {
    /// A producer's metrics (registered under the service's prefix).
    pub struct ProducerMetrics {
        /// Entries Redis accepted, per stream, sent at once or replayed from the spool.
        published: IntCounterVec = "queue_published_total" ["stream"],
        /// Entries Redis took that fewer replicas than `wait_replicas` confirmed in time,
        /// per stream: at risk until replicated, lost if the primary dies first.
        unreplicated: IntCounterVec = "queue_unreplicated_total" ["stream"],
        /// Entries given up, per stream and reason (buffer_full, spool_full, spool_error,
        /// rejected, encode, shutdown).
        dropped: IntCounterVec = "queue_dropped_total" ["stream", "reason"],
        /// Bytes of entries in memory, waiting for Redis or the spool.
        buffered_bytes: IntGauge = "queue_buffered_bytes",
        /// The bound of the in-memory buffer (buffer_max_bytes).
        buffer_limit_bytes: IntGauge = "queue_buffer_limit_bytes",
        /// Entries in memory, waiting for Redis or the spool.
        buffered_entries: IntGauge = "queue_buffered_entries",
        /// Sends Redis did not take, by kind: unavailable (no answer) or refused (an error
        /// reply such as OOM under maxmemory).
        send_errors: IntCounterVec = "queue_send_errors_total" ["kind"],
        /// Entries written to the spool, per stream.
        spooled: IntCounterVec = "queue_spooled_total" ["stream"],
        /// Entries replayed from the spool into Redis, per stream.
        replayed: IntCounterVec = "queue_spool_replayed_total" ["stream"],
        /// Entries in the spool, waiting to be replayed.
        spool_entries: IntGauge = "queue_spool_entries",
        /// Bytes the spool takes on disk.
        spool_bytes: IntGauge = "queue_spool_bytes",
        /// The bound of the spool on disk (spool.max_bytes; 0: no spool).
        spool_limit_bytes: IntGauge = "queue_spool_limit_bytes",
        /// Spool bytes cut away because they held no whole, valid record (torn, corrupt).
        spool_discarded_bytes: IntCounterVec = "queue_spool_discarded_bytes_total" ["reason"],
    }
}

struct Shared {
    tx: mpsc::UnboundedSender<Entry>,
    buffered: AtomicUsize,
    max_bytes: usize,
    metrics: ProducerMetrics,
}

/// A cheap handle to publish through; clone it freely.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

/// The background task; [`ProducerTask::shutdown`] flushes and stops it.
pub struct ProducerTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl ProducerTask {
    /// Sends (or spools) what is buffered, tries to empty the spool within the
    /// shutdown deadline, and returns.
    pub async fn shutdown(self) {
        // An error means the task is already gone: nothing left to flush.
        self.stop.send(()).ok();
        drop(self.task.await);
    }
}

impl Producer {
    /// Opens the spool (checking it; a spool in use by another process is an error) and
    /// starts the background task.
    pub async fn start(
        redis: Pool,
        keys: Keys,
        config: ProducerConfig,
        metrics: ProducerMetrics,
    ) -> anyhow::Result<(Self, ProducerTask)> {
        metrics.buffer_limit_bytes.set(gauge(config.buffer_max_bytes as u64));
        metrics.spool_limit_bytes.set(config.spool.as_ref().map_or(0, |s| gauge(s.max_bytes)));
        let spool = match config.spool.clone() {
            Some(spool_config) => {
                let (spool, discarded) = tokio::task::spawn_blocking(move || Spool::open(spool_config)).await??;
                for d in &discarded {
                    metrics.spool_discarded_bytes.with_label_values(&[d.reason]).inc_by(d.bytes);
                    tracing::warn!(segment = %d.segment.display(), offset = d.offset, bytes = d.bytes, reason = d.reason,
                        "cut damaged bytes from the spool; the records before them will be replayed");
                }
                if !spool.is_empty() {
                    tracing::info!(dir = %spool.dir().display(), entries = spool.entries(),
                        "the spool holds entries from an earlier run; replaying them before new ones");
                }
                metrics.spool_entries.set(gauge(spool.entries()));
                metrics.spool_bytes.set(gauge(spool.bytes()));
                Some(spool)
            }
            None => None,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let shared =
            Arc::new(Shared { tx, buffered: AtomicUsize::new(0), max_bytes: config.buffer_max_bytes, metrics });
        let (stop_tx, stop_rx) = oneshot::channel();
        let backlog = spool.as_ref().is_some_and(|s| !s.is_empty());
        let sender = Sender {
            rx,
            redis,
            keys,
            config,
            shared: shared.clone(),
            spool,
            backlog,
            held: Vec::new(),
            stream_keys: HashMap::new(),
            replicas_away_until: None,
        };
        let task = tokio::spawn(sender.run(stop_rx));
        Ok((Self { shared }, ProducerTask { stop: stop_tx, task }))
    }

    /// Queues a task for Redis; never waits. Dropped (and counted) when the buffer is full.
    pub fn publish<T: Task>(&self, task: &T) {
        match Entry::encode(task) {
            Ok(entry) => self.publish_entry(entry),
            Err(err) => {
                tracing::error!(error = %err, stream = T::STREAM, "a task could not be encoded");
                self.shared.metrics.dropped.with_label_values(&[T::STREAM, "encode"]).inc();
            }
        }
    }

    /// Queues an encoded entry.
    pub fn publish_entry(&self, entry: Entry) {
        let shared = &self.shared;
        let weight = entry.weight();
        let mut current = shared.buffered.load(Ordering::Relaxed);
        loop {
            if current + weight > shared.max_bytes {
                shared.metrics.dropped.with_label_values(&[&entry.stream, "buffer_full"]).inc();
                return;
            }
            match shared.buffered.compare_exchange_weak(current, current + weight, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        // Counted before it is sent: the sender may take it (and subtract it) at once.
        shared.metrics.buffered_bytes.add(gauge(weight as u64));
        shared.metrics.buffered_entries.inc();
        let stream = entry.stream.clone();
        if shared.tx.send(entry).is_err() {
            shared.buffered.fetch_sub(weight, Ordering::AcqRel);
            shared.metrics.buffered_bytes.sub(gauge(weight as u64));
            shared.metrics.buffered_entries.dec();
            shared.metrics.dropped.with_label_values(&[&stream, "shutdown"]).inc();
        }
    }

    pub fn metrics(&self) -> &ProducerMetrics {
        &self.shared.metrics
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Why Redis did not take a batch.
enum SendFailure {
    /// No answer: which entries landed is unknown, so all of them wait (a consumer
    /// absorbs the duplicates of those that did).
    Unavailable(String),
    /// Redis answered, refusing some entries: `retry` wait (OOM, loading, read-only),
    /// `rejected` never will be taken (WRONGTYPE); the rest landed.
    Refused { retry: Vec<usize>, rejected: Vec<(usize, String)> },
}

/// Error codes Redis answers with that go away by themselves.
const TRANSIENT_CODES: [&str; 9] =
    ["OOM", "LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS", "EXECABORT"];

struct Sender {
    rx: mpsc::UnboundedReceiver<Entry>,
    redis: Pool,
    keys: Keys,
    config: ProducerConfig,
    shared: Arc<Shared>,
    spool: Option<Spool>,
    /// The spool holds entries: new ones go behind them.
    backlog: bool,
    /// Without a spool: entries Redis did not take, tried again before anything newer.
    held: Vec<Entry>,
    /// Stream name → prefixed key.
    stream_keys: HashMap<String, String>,
    /// Set when a batch was not confirmed by `wait_replicas` replicas: until then batches
    /// are sent without `WAIT` and counted unreplicated.
    replicas_away_until: Option<Instant>,
}

impl Sender {
    fn metrics(&self) -> &ProducerMetrics {
        &self.shared.metrics
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut retry_at = Instant::now();
        loop {
            let waiting = self.backlog || !self.held.is_empty();
            let mut batch = Vec::new();
            tokio::select! {
                n = self.rx.recv_many(&mut batch, self.config.batch_max_entries) => if n == 0 { break },
                _ = tokio::time::sleep_until(retry_at), if waiting => {}
                _ = &mut stop => break,
            }
            if !batch.is_empty() {
                self.fill(&mut batch).await;
            }
            if self.backlog {
                self.spool_entries(batch).await;
                if Instant::now() >= retry_at {
                    let progressed = self.replay(Some(self.config.retry_interval)).await;
                    // A replay cut short by its time budget goes on at once; one that
                    // failed waits for the next interval.
                    let pause = if progressed.is_some() { Duration::ZERO } else { self.config.retry_interval };
                    retry_at = Instant::now() + pause;
                }
            } else if !self.held.is_empty() {
                self.held.extend(batch);
                if Instant::now() >= retry_at {
                    // Oldest first, a batch at a time; a failure puts it back in front.
                    let take = self.held.len().min(self.config.batch_max_entries.max(1));
                    let batch: Vec<Entry> = self.held.drain(..take).collect();
                    let delivered = self.deliver(batch).await;
                    let more = delivered && !self.held.is_empty();
                    retry_at = Instant::now() + if more { Duration::ZERO } else { self.config.retry_interval };
                }
            } else if !batch.is_empty() && !self.deliver(batch).await {
                retry_at = Instant::now() + self.config.retry_interval;
            }
        }
        self.finish().await;
    }

    /// Lets a batch fill for a moment (one round trip for many entries costs Redis and
    /// this process far less than one each), then takes what arrived up to the limits.
    async fn fill(&mut self, batch: &mut Vec<Entry>) {
        let max = self.config.batch_max_entries;
        if batch.len() < max && !self.config.linger.is_zero() {
            // Sleeping rather than waiting on the channel: publishers wake no one.
            tokio::time::sleep(self.config.linger).await;
        }
        let mut bytes: usize = batch.iter().map(Entry::weight).sum();
        while batch.len() < max && bytes < self.config.batch_max_bytes {
            match self.rx.try_recv() {
                Ok(entry) => {
                    bytes += entry.weight();
                    batch.push(entry);
                }
                Err(_) => break,
            }
        }
    }

    /// The entries leave memory (sent, spooled or dropped).
    fn release(&self, entries: &[Entry]) {
        let bytes: usize = entries.iter().map(Entry::weight).sum();
        self.shared.buffered.fetch_sub(bytes, Ordering::AcqRel);
        self.metrics().buffered_bytes.sub(gauge(bytes as u64));
        self.metrics().buffered_entries.sub(gauge(entries.len() as u64));
    }

    /// Sends a batch; what Redis does not take goes to the spool (or is held). True when
    /// Redis took all of it.
    async fn deliver(&mut self, batch: Vec<Entry>) -> bool {
        match self.send(&batch).await {
            Ok(()) => {
                self.count(&self.metrics().published, &batch);
                self.release(&batch);
                true
            }
            Err(failure) => {
                let waiting = self.sort_failure(failure, batch);
                self.wait_for_redis(waiting).await;
                false
            }
        }
    }

    /// Counts what landed and what Redis rejected for good; returns what must wait.
    fn sort_failure(&self, failure: SendFailure, batch: Vec<Entry>) -> Vec<Entry> {
        match failure {
            SendFailure::Unavailable(err) => {
                self.metrics().send_errors.with_label_values(&["unavailable"]).inc();
                tracing::warn!(error = %err, entries = batch.len(), spool = self.spool.is_some(),
                    "Redis did not take a batch; it waits until Redis answers");
                batch
            }
            SendFailure::Refused { retry, rejected } => {
                self.metrics().send_errors.with_label_values(&["refused"]).inc();
                let mut waiting = Vec::with_capacity(retry.len());
                let mut landed = Vec::new();
                let mut dropped = Vec::new();
                for (i, entry) in batch.into_iter().enumerate() {
                    // Redis reports errors in pipeline order: `retry` is sorted.
                    if retry.binary_search(&i).is_ok() {
                        waiting.push(entry);
                    } else if let Some((_, why)) = rejected.iter().find(|(j, _)| *j == i) {
                        tracing::error!(stream = %entry.stream, error = %why, "Redis rejected an entry; dropped");
                        dropped.push(entry);
                    } else {
                        landed.push(entry);
                    }
                }
                tracing::warn!(
                    waiting = waiting.len(),
                    rejected = dropped.len(),
                    landed = landed.len(),
                    "Redis refused entries (out of memory?); the refused ones wait"
                );
                self.count(&self.metrics().published, &landed);
                for e in &dropped {
                    self.metrics().dropped.with_label_values(&[&e.stream, "rejected"]).inc();
                }
                self.release(&landed);
                self.release(&dropped);
                waiting
            }
        }
    }

    /// Entries Redis did not take: into the spool (and every later one behind them),
    /// or held in memory without a spool.
    async fn wait_for_redis(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        if self.spool.is_some() {
            self.backlog = true;
            self.spool_entries(entries).await;
        } else {
            let mut held = entries;
            held.append(&mut self.held);
            self.held = held;
        }
    }

    fn count(&self, counter: &IntCounterVec, entries: &[Entry]) {
        let mut per_stream: Vec<(&str, u64)> = Vec::new();
        for e in entries {
            match per_stream.iter_mut().find(|(s, _)| *s == e.stream) {
                Some((_, n)) => *n += 1,
                None => per_stream.push((&e.stream, 1)),
            }
        }
        for (stream, n) in per_stream {
            counter.with_label_values(&[stream]).inc_by(n);
        }
    }

    async fn send(&mut self, entries: &[Entry]) -> Result<(), SendFailure> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for e in entries {
            let key = match self.stream_keys.get(e.stream.as_ref()) {
                Some(key) => key,
                None => self.stream_keys.entry(e.stream.to_string()).or_insert_with(|| self.keys.stream(&e.stream)),
            };
            pipe.xadd(key, "*", &[(TYPE_FIELD, e.tag.as_bytes()), (PAYLOAD_FIELD, &e.payload[..])]).ignore();
        }
        let wanted = self.config.wait_replicas;
        let wait = wanted > 0 && self.replicas_away_until.is_none_or(|until| Instant::now() >= until);
        if wait {
            let ms = u64::try_from(self.config.replica_timeout.as_millis()).unwrap_or(u64::MAX).max(1);
            pipe.cmd("WAIT").arg(wanted).arg(ms);
        }
        let mut conn = self.redis.get().await.map_err(|e| SendFailure::Unavailable(e.to_string()))?;
        let sent = if wait {
            pipe.query_async::<(u32,)>(&mut *conn).await.map(|(confirmed,)| confirmed >= wanted)
        } else {
            pipe.query_async::<()>(&mut *conn).await.map(|()| wanted == 0)
        };
        match sent {
            Ok(confirmed) => {
                if !confirmed {
                    if wait {
                        tracing::warn!(replicas = wanted, "queue entries not confirmed by the replicas in time");
                        self.replicas_away_until = Some(Instant::now() + self.config.retry_interval);
                    }
                    self.count(&self.metrics().unreplicated, entries);
                }
                Ok(())
            }
            Err(err) => {
                let text = err.to_string();
                let Some(errors) = err.into_server_errors() else { return Err(SendFailure::Unavailable(text)) };
                let mut retry = Vec::new();
                let mut rejected = Vec::new();
                for (i, e) in errors.iter().filter(|(i, _)| *i < entries.len()) {
                    if TRANSIENT_CODES.contains(&e.code()) {
                        retry.push(*i);
                    } else {
                        rejected.push((*i, format!("{} {}", e.code(), e.details().unwrap_or(""))));
                    }
                }
                Err(SendFailure::Refused { retry, rejected })
            }
        }
    }

    /// Shows the spool's size in its gauges. Called after the counters of what changed
    /// it, so a scrape never sees entries in the spool that no counter has yet.
    fn show_spool(&self) {
        if let Some(spool) = &self.spool {
            self.metrics().spool_entries.set(gauge(spool.entries()));
            self.metrics().spool_bytes.set(gauge(spool.bytes()));
        }
    }

    /// Runs `op` on the spool on the blocking pool (file I/O must not stall the runtime);
    /// the caller then counts what it did and calls [`Sender::show_spool`].
    async fn with_spool<R: Send + 'static>(&mut self, op: impl FnOnce(&mut Spool) -> R + Send + 'static) -> Option<R> {
        let mut spool = self.spool.take()?;
        match tokio::task::spawn_blocking(move || {
            let result = op(&mut spool);
            (spool, result)
        })
        .await
        {
            Ok((spool, result)) => {
                self.spool = Some(spool);
                Some(result)
            }
            Err(err) => {
                tracing::error!(error = %err, "the spool failed; entries that cannot reach Redis are dropped from now on");
                None
            }
        }
    }

    /// Appends to the spool; what it refuses is dropped and counted.
    async fn spool_entries(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let total = entries.clone();
        let outcome = self.with_spool(move |spool| spool.append(entries)).await;
        let (appended, dropped, reason): (Vec<Entry>, Vec<Entry>, &str) = match outcome {
            Some(Ok(refused)) => {
                let kept = total.len() - refused.len();
                (total[..kept].to_vec(), refused, "spool_full")
            }
            Some(Err(err)) => {
                tracing::error!(error = %err, entries = total.len(), "writing to the spool failed; entries dropped");
                (Vec::new(), total.clone(), "spool_error")
            }
            None => (Vec::new(), total.clone(), "spool_error"),
        };
        self.count(&self.metrics().spooled, &appended);
        for e in &dropped {
            self.metrics().dropped.with_label_values(&[&e.stream, reason]).inc();
        }
        self.show_spool();
        if !dropped.is_empty() && reason == "spool_full" {
            tracing::error!(entries = dropped.len(), "the spool is full; entries dropped");
        }
        self.release(&total);
    }

    /// Replays the spool into Redis, oldest first, for at most `budget` (or until done).
    /// Some(()) when it ran out of budget with entries left, or emptied the spool; None
    /// when Redis did not take a chunk.
    async fn replay(&mut self, budget: Option<Duration>) -> Option<()> {
        if self.spool.is_none() {
            // The spool failed (see with_spool): nothing to wait behind any more.
            self.backlog = false;
            return Some(());
        }
        let started = Instant::now();
        loop {
            let (max_entries, max_bytes) = (self.config.batch_max_entries.max(1) * 4, self.config.batch_max_bytes * 4);
            let chunk = self.with_spool(move |spool| spool.read_chunk(max_entries, max_bytes)).await?;
            self.show_spool();
            let Chunk { entries, end, discarded } = match chunk {
                Ok(chunk) => chunk,
                Err(err) => {
                    tracing::error!(error = %err, "reading the spool failed; will retry");
                    return None;
                }
            };
            for d in &discarded {
                self.metrics().spool_discarded_bytes.with_label_values(&[d.reason]).inc_by(d.bytes);
                tracing::warn!(segment = %d.segment.display(), offset = d.offset, bytes = d.bytes,
                    "skipped damaged spool bytes");
            }
            match self.send(&entries).await {
                Ok(()) => {}
                Err(SendFailure::Unavailable(err)) => {
                    self.metrics().send_errors.with_label_values(&["unavailable"]).inc();
                    tracing::debug!(error = %err, "Redis is still away; the spool waits");
                    return None;
                }
                Err(SendFailure::Refused { retry, rejected }) if !rejected.is_empty() && retry.is_empty() => {
                    // Entries Redis will never take must not block the spool: the rest
                    // of the chunk landed, these are dropped.
                    self.metrics().send_errors.with_label_values(&["refused"]).inc();
                    for (i, why) in &rejected {
                        if let Some(e) = entries.get(*i) {
                            tracing::error!(stream = %e.stream, error = %why, "Redis rejected a spooled entry; dropped");
                            self.metrics().dropped.with_label_values(&[&e.stream, "rejected"]).inc();
                        }
                    }
                }
                Err(SendFailure::Refused { .. }) => {
                    // Out of memory (or similar) part-way: the chunk is replayed again
                    // later, whole; what landed now lands twice, which consumers absorb.
                    self.metrics().send_errors.with_label_values(&["refused"]).inc();
                    return None;
                }
            }
            self.count(&self.metrics().replayed, &entries);
            self.count(&self.metrics().published, &entries);
            let committed = self.with_spool(move |spool| spool.commit(end)).await?;
            self.show_spool();
            match committed {
                Ok(()) => {}
                Err(err) => {
                    tracing::error!(error = %err, "moving the spool's cursor failed; a chunk may be replayed twice")
                }
            }
            if end.is_last() {
                self.backlog = false;
                tracing::info!("the spool is empty; sending straight to Redis again");
                return Some(());
            }
            if budget.is_some_and(|b| started.elapsed() >= b) {
                return Some(());
            }
        }
    }

    /// Stops: sends (or spools) everything still in memory, then replays the spool
    /// within the shutdown deadline.
    async fn finish(&mut self) {
        self.rx.close();
        let deadline = Instant::now() + self.config.shutdown_deadline;
        let mut pending = std::mem::take(&mut self.held);
        while let Ok(entry) = self.rx.try_recv() {
            pending.push(entry);
        }
        let max = self.config.batch_max_entries.max(1);
        while !pending.is_empty() {
            let rest = pending.split_off(pending.len().min(max));
            let batch = std::mem::replace(&mut pending, rest);
            if self.backlog || Instant::now() >= deadline {
                self.spool_or_drop(batch).await;
            } else {
                match tokio::time::timeout(deadline - Instant::now(), self.send(&batch)).await {
                    Ok(Ok(())) => {
                        self.count(&self.metrics().published, &batch);
                        self.release(&batch);
                    }
                    Ok(Err(failure)) => {
                        let waiting = self.sort_failure(failure, batch);
                        self.spool_or_drop(waiting).await;
                    }
                    Err(_) => self.spool_or_drop(batch).await,
                }
            }
        }
        // On disk first, whatever the replay below gets done before the deadline.
        if let Some(Err(err)) = self.with_spool(Spool::sync).await {
            tracing::error!(error = %err, "syncing the spool at shutdown failed");
        }
        if self.backlog {
            let left = deadline.saturating_duration_since(Instant::now());
            if !left.is_zero() && tokio::time::timeout(left, self.replay(None)).await.is_err() {
                tracing::info!("shutdown deadline reached; the spool keeps the rest for the next start");
            }
        }
    }

    async fn spool_or_drop(&mut self, entries: Vec<Entry>) {
        if self.spool.is_some() {
            self.backlog = true;
            self.spool_entries(entries).await;
        } else {
            for e in &entries {
                self.metrics().dropped.with_label_values(&[&e.stream, "shutdown"]).inc();
            }
            self.release(&entries);
        }
    }
}
