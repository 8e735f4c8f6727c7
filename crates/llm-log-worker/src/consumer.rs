//! One read → write → acknowledge loop over both log streams.
//!
//! Order of a round: take entries (first this consumer's own pending ones, then
//! entries idle with dead consumers, then new ones), decode them, write them in one
//! transaction, and only after the commit acknowledge them — together with the
//! dead-letter copies of entries that could not be written. A crash anywhere before
//! the acknowledgement leaves the entries pending, and the next owner writes them
//! again, which the `(event_id, created_at)` key turns into a no-op.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common_models::events::{LlmCallEvent, LogEvent, SystemLogEvent};
use common_models::queue::{self, CONSUMER_GROUP, EVENT_FIELD, LogStream, MAX_WRITE_ATTEMPTS, QueueKeys, TYPE_FIELD};
use deadpool_redis::Pool as RedisPool;
use redis::AsyncCommands;
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply};
use tokio::sync::watch;

use crate::copy::{CopyFailure, CopyWriter};
use crate::metrics::WorkerMetrics;
use crate::writer::{AnalyticsWriter, Inserted, WriteError};

/// What every loop shares.
pub struct Shared {
    pub keys: QueueKeys,
    pub redis: RedisPool,
    pub writer: AnalyticsWriter,
    pub metrics: WorkerMetrics,
    pub batch_size: usize,
    pub block: Duration,
    pub reclaim_idle: Duration,
    pub reclaim_interval: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Pause after a small batch, so light traffic is written in fewer transactions.
    pub linger: Duration,
    pub analytics_url: String,
    pub lock_timeout_ms: u64,
    pub statement_timeout_ms: u64,
}

/// A stream entry as read, before decoding.
#[derive(Debug, Clone)]
pub struct Entry {
    pub stream: LogStream,
    pub id: String,
    /// The `type` field; `None` when the entry lacks it.
    pub type_tag: Option<Vec<u8>>,
    /// The `event` field; `None` when the entry lacks it.
    pub payload: Option<Vec<u8>>,
}

/// An entry that will not be written, and why.
struct DeadLetter {
    entry: Entry,
    reason: &'static str,
    detail: String,
}

pub struct ConsumerLoop {
    shared: Arc<Shared>,
    copy: CopyWriter,
    consumer: String,
    shutdown: watch::Receiver<bool>,
    last_reclaim: Option<Instant>,
}

impl ConsumerLoop {
    pub fn new(shared: Arc<Shared>, consumer: String, shutdown: watch::Receiver<bool>) -> Self {
        let copy = CopyWriter::new(&shared.analytics_url, shared.lock_timeout_ms, shared.statement_timeout_ms);
        Self { shared, copy, consumer, shutdown, last_reclaim: None }
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Runs until shutdown is signalled; the batch in hand is always finished first.
    pub async fn run(mut self) {
        tracing::info!(consumer = %self.consumer, "log consumer started");
        // Entries this consumer (by name) read before a crash come first.
        let mut own_pending_done = false;
        while !self.stopping() {
            let round = if !own_pending_done {
                let entries = self.read_own_pending().await;
                if matches!(&entries, Ok(e) if e.is_empty()) {
                    own_pending_done = true;
                }
                entries
            } else if self.last_reclaim.is_none_or(|t| t.elapsed() >= self.shared.reclaim_interval) {
                self.last_reclaim = Some(Instant::now());
                self.reclaim().await
            } else {
                self.read_new().await
            };
            match round {
                Ok(entries) if entries.is_empty() => {}
                Ok(entries) => {
                    let small = entries.len() < self.shared.batch_size / 4;
                    self.process(entries).await;
                    if small && own_pending_done {
                        // Light traffic: let entries gather instead of committing a
                        // transaction for every few rows.
                        self.pause(self.shared.linger).await;
                    }
                }
                Err(err) => {
                    self.shared.metrics.redis_errors.inc();
                    tracing::warn!(consumer = %self.consumer, error = %err, "reading the log streams failed");
                    self.pause(self.shared.retry_max.min(Duration::from_secs(1))).await;
                }
            }
        }
        tracing::info!(consumer = %self.consumer, "log consumer stopped");
    }

    async fn read_own_pending(&self) -> redis::RedisResult<Vec<Entry>> {
        self.read_group(&["0", "0"], None).await
    }

    async fn read_new(&self) -> redis::RedisResult<Vec<Entry>> {
        self.read_group(&[">", ">"], Some(self.shared.block)).await
    }

    async fn read_group(&self, ids: &[&str; 2], block: Option<Duration>) -> redis::RedisResult<Vec<Entry>> {
        let keys: Vec<String> = LogStream::ALL.iter().map(|s| self.shared.keys.stream(*s)).collect();
        let mut opts = StreamReadOptions::default().group(CONSUMER_GROUP, &self.consumer).count(self.shared.batch_size);
        if let Some(block) = block {
            opts = opts.block(usize::try_from(block.as_millis()).unwrap_or(usize::MAX));
        }
        let mut conn = self.shared.redis.get().await.map_err(pool_error)?;
        let reply: Option<StreamReadReply> = conn.xread_options(&keys, ids, &opts).await?;
        let mut entries = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(stream) = self.shared.keys.stream_of_key(&key.key) else { continue };
            entries.extend(key.ids.into_iter().map(|id| to_entry(stream, id)));
        }
        Ok(entries)
    }

    /// Takes over entries that other consumers left pending for too long.
    async fn reclaim(&self) -> redis::RedisResult<Vec<Entry>> {
        let mut entries = Vec::new();
        let min_idle = usize::try_from(self.shared.reclaim_idle.as_millis()).unwrap_or(usize::MAX);
        let mut conn = self.shared.redis.get().await.map_err(pool_error)?;
        for stream in LogStream::ALL {
            let reply: StreamAutoClaimReply = conn
                .xautoclaim_options(
                    self.shared.keys.stream(stream),
                    CONSUMER_GROUP,
                    &self.consumer,
                    min_idle,
                    "0-0",
                    StreamAutoClaimOptions::default().count(self.shared.batch_size),
                )
                .await?;
            if !reply.claimed.is_empty() {
                self.shared.metrics.reclaimed.with_label_values(&[stream.name()]).inc_by(reply.claimed.len() as u64);
                tracing::info!(consumer = %self.consumer, stream = stream.name(), count = reply.claimed.len(),
                    "reclaimed entries left pending by another consumer");
            }
            entries.extend(reply.claimed.into_iter().map(|id| to_entry(stream, id)));
        }
        Ok(entries)
    }

    /// Writes one batch and acknowledges it. Returns only when the batch is settled
    /// (written or dead-lettered, and acknowledged) or shutdown interrupts a retry.
    async fn process(&mut self, entries: Vec<Entry>) {
        let mut decoded: Vec<(Entry, LogEvent)> = Vec::with_capacity(entries.len());
        let mut dead: Vec<DeadLetter> = Vec::new();
        for entry in entries {
            match queue::decode(entry.type_tag.as_deref(), entry.payload.as_deref()) {
                Ok(event) => decoded.push((entry, event)),
                Err(err) => {
                    let detail = err.to_string();
                    dead.push(DeadLetter { entry, reason: "undecodable", detail });
                }
            }
        }

        let Some(written) = self.write_with_retries(&mut decoded, &mut dead).await else {
            return; // shutting down mid-outage: the entries stay pending for the next owner
        };
        self.settle(&decoded, &dead, written).await;
    }

    /// Writes `decoded`; rows the database keeps refusing move from `decoded` to `dead`.
    async fn write_with_retries(
        &mut self,
        decoded: &mut Vec<(Entry, LogEvent)>,
        dead: &mut Vec<DeadLetter>,
    ) -> Option<Inserted> {
        let mut backoff = self.shared.retry_initial;
        let mut claimed_at = Instant::now();
        loop {
            if decoded.is_empty() {
                return Some(Inserted::default());
            }
            // A batch held through a long outage would look abandoned to other
            // consumers; renewing the claim keeps them from taking it over.
            if claimed_at.elapsed() >= self.shared.reclaim_idle / 2 {
                self.renew_claim(decoded.iter().map(|(e, _)| e)).await;
                claimed_at = Instant::now();
            }
            let started = Instant::now();
            let (llm, system) = split(decoded.iter().map(|(_, e)| e));
            match self.write_batch(&llm, &system).await {
                Ok(inserted) => {
                    self.shared
                        .metrics
                        .write_seconds
                        .with_label_values(&["committed"])
                        .observe(started.elapsed().as_secs_f64());
                    return Some(inserted);
                }
                Err(WriteError::Transient(msg)) => {
                    self.shared.metrics.write_errors.with_label_values(&["transient"]).inc();
                    tracing::warn!(consumer = %self.consumer, error = %msg, retry_in_ms = backoff.as_millis() as u64,
                        "analytics write failed, will retry");
                }
                Err(WriteError::Rejected(msg)) => {
                    self.shared.metrics.write_errors.with_label_values(&["rejected"]).inc();
                    tracing::warn!(consumer = %self.consumer, error = %msg, rows = decoded.len(),
                        "analytics database rejected a batch, writing its rows one by one");
                    match self.isolate_rejected(decoded, dead).await {
                        Ok(inserted) => return Some(inserted),
                        Err(msg) => {
                            tracing::warn!(consumer = %self.consumer, error = %msg, "analytics write failed, will retry")
                        }
                    }
                }
            }
            if self.stopping() {
                return None;
            }
            self.pause(backoff).await;
            backoff = (backoff * 2).min(self.shared.retry_max);
        }
    }

    /// Resets the idle time of entries this consumer holds (XCLAIM to itself).
    async fn renew_claim<'a>(&self, entries: impl Iterator<Item = &'a Entry>) {
        let ids_by_stream = ids_by_stream(entries);
        let mut pipe = redis::pipe();
        for (stream, ids) in &ids_by_stream {
            pipe.cmd("XCLAIM")
                .arg(self.shared.keys.stream(*stream))
                .arg(CONSUMER_GROUP)
                .arg(&self.consumer)
                .arg(0)
                .arg(ids)
                .arg("JUSTID")
                .ignore();
        }
        let result: redis::RedisResult<()> = match self.shared.redis.get().await {
            Ok(mut conn) => pipe.query_async(&mut *conn).await,
            Err(err) => Err(pool_error(err)),
        };
        if let Err(err) = result {
            self.shared.metrics.redis_errors.inc();
            tracing::warn!(consumer = %self.consumer, error = %err, "renewing the claim on a held batch failed");
        }
    }

    /// COPY first; the idempotent INSERT when the batch holds a row already stored
    /// (redelivery) or a row the database refuses (which that path then isolates).
    async fn write_batch(&mut self, llm: &[&LlmCallEvent], system: &[&SystemLogEvent]) -> Result<Inserted, WriteError> {
        self.shared.writer.ensure_partitions_for(llm, system).await?;
        match self.copy.write(llm, system).await {
            Ok(inserted) => Ok(inserted),
            Err(CopyFailure::Transient(msg)) => Err(WriteError::Transient(msg)),
            Err(CopyFailure::Duplicate) => {
                self.shared.metrics.copy_fallbacks.with_label_values(&["duplicate"]).inc();
                self.shared.writer.write(llm, system).await
            }
            Err(CopyFailure::Rejected(msg)) => {
                self.shared.metrics.copy_fallbacks.with_label_values(&["rejected"]).inc();
                tracing::debug!(consumer = %self.consumer, error = %msg, "COPY refused a batch, inserting instead");
                self.shared.writer.write(llm, system).await
            }
        }
    }

    /// Writes each row on its own, up to [`MAX_WRITE_ATTEMPTS`] times; rows still
    /// refused are moved to `dead`. A transient error aborts (the caller retries all).
    async fn isolate_rejected(
        &self,
        decoded: &mut Vec<(Entry, LogEvent)>,
        dead: &mut Vec<DeadLetter>,
    ) -> Result<Inserted, String> {
        let mut total = Inserted::default();
        let mut keep = Vec::with_capacity(decoded.len());
        let mut pending = std::mem::take(decoded).into_iter();
        while let Some((entry, event)) = pending.next() {
            let (llm, system) = split(std::iter::once(&event));
            let mut refused = None;
            for _attempt in 0..MAX_WRITE_ATTEMPTS {
                match self.shared.writer.write(&llm, &system).await {
                    Ok(inserted) => {
                        total.llm_logs += inserted.llm_logs;
                        total.system_logs += inserted.system_logs;
                        refused = None;
                        break;
                    }
                    Err(WriteError::Rejected(msg)) => refused = Some(msg),
                    Err(WriteError::Transient(msg)) => {
                        keep.push((entry, event));
                        // Put back what was not tried yet; rows already written are
                        // idempotent and will simply be skipped on the retry.
                        keep.extend(pending);
                        *decoded = keep;
                        return Err(msg);
                    }
                }
            }
            match refused {
                Some(detail) => dead.push(DeadLetter { entry, reason: "rejected", detail }),
                None => keep.push((entry, event)),
            }
        }
        *decoded = keep;
        Ok(total)
    }

    /// Dead-letters and acknowledges a settled batch, retrying Redis until it answers.
    async fn settle(&self, decoded: &[(Entry, LogEvent)], dead: &[DeadLetter], inserted: Inserted) {
        let ids_by_stream = ids_by_stream(decoded.iter().map(|(e, _)| e).chain(dead.iter().map(|d| &d.entry)));
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for d in dead {
            let mut fields: Vec<(&str, Vec<u8>)> = vec![
                ("original_id", d.entry.id.clone().into_bytes()),
                ("reason", d.reason.as_bytes().to_vec()),
                ("detail", d.detail.clone().into_bytes()),
                ("dead_at_ms", now_ms.to_string().into_bytes()),
            ];
            if let Some(tag) = &d.entry.type_tag {
                fields.push((TYPE_FIELD, tag.clone()));
            }
            if let Some(payload) = &d.entry.payload {
                fields.push((EVENT_FIELD, payload.clone()));
            }
            pipe.xadd(self.shared.keys.dead_letter(d.entry.stream), "*", &fields).ignore();
        }
        for (stream, ids) in &ids_by_stream {
            pipe.xack(self.shared.keys.stream(*stream), CONSUMER_GROUP, ids).ignore();
        }
        if !decoded.is_empty() {
            pipe.set(self.shared.keys.last_write_at(), now_ms).ignore();
        }

        let mut backoff = self.shared.retry_initial;
        loop {
            let result: redis::RedisResult<()> = match self.shared.redis.get().await {
                Ok(mut conn) => pipe.query_async(&mut *conn).await,
                Err(err) => Err(pool_error(err)),
            };
            match result {
                Ok(()) => break,
                Err(err) => {
                    self.shared.metrics.redis_errors.inc();
                    tracing::warn!(consumer = %self.consumer, error = %err, "acknowledging a written batch failed, will retry");
                    if self.stopping() {
                        // Written but unacknowledged: redelivery is harmless.
                        return;
                    }
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(self.shared.retry_max);
                }
            }
        }

        let m = &self.shared.metrics;
        let (llm_count, system_count) = decoded.iter().fold((0usize, 0usize), |(l, s), (_, e)| match e {
            LogEvent::LlmCall(_) => (l + 1, s),
            LogEvent::SystemLog(_) => (l, s + 1),
        });
        m.rows_written.with_label_values(&["llm_logs"]).inc_by(inserted.llm_logs as u64);
        m.rows_written.with_label_values(&["system_logs"]).inc_by(inserted.system_logs as u64);
        m.duplicates_ignored
            .with_label_values(&["llm_logs"])
            .inc_by(llm_count.saturating_sub(inserted.llm_logs) as u64);
        m.duplicates_ignored
            .with_label_values(&["system_logs"])
            .inc_by(system_count.saturating_sub(inserted.system_logs) as u64);
        if !decoded.is_empty() {
            m.batch_size.observe(decoded.len() as f64);
        }
        for d in dead {
            m.dead_lettered.with_label_values(&[d.entry.stream.name(), d.reason]).inc();
            tracing::error!(consumer = %self.consumer, stream = d.entry.stream.name(), entry_id = %d.entry.id,
                reason = d.reason, detail = %d.detail, "entry moved to the dead-letter stream");
        }
    }

    /// Sleeps, but wakes early on shutdown.
    async fn pause(&self, d: Duration) {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }
}

/// Entry ids grouped by the stream they came from (one XACK or XCLAIM per stream).
fn ids_by_stream<'a>(entries: impl Iterator<Item = &'a Entry>) -> HashMap<LogStream, Vec<&'a str>> {
    let mut ids: HashMap<LogStream, Vec<&str>> = HashMap::new();
    for entry in entries {
        ids.entry(entry.stream).or_default().push(&entry.id);
    }
    ids
}

fn to_entry(stream: LogStream, mut id: StreamId) -> Entry {
    let mut field = |name: &str| match id.map.remove(name) {
        Some(redis::Value::BulkString(bytes)) => Some(bytes),
        Some(redis::Value::SimpleString(s)) => Some(s.into_bytes()),
        _ => None,
    };
    let type_tag = field(TYPE_FIELD);
    let payload = field(EVENT_FIELD);
    Entry { stream, id: id.id, type_tag, payload }
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

pub fn pool_error(err: deadpool_redis::PoolError) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "redis pool", err.to_string()))
}
