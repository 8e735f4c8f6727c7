//! The log publisher: hands log events to Redis without ever making a request wait.
//!
//! `publish` is a non-blocking push onto a bounded in-memory buffer. One background
//! task drains it in batches of up to `log_batch_size`, waiting at most
//! `log_linger_ms` for a batch to fill, and sends each batch as one pipelined `XADD`
//! round trip. While Redis is unreachable the task retries the batch
//! in hand with backoff and the buffer fills; once it is full, new events are dropped
//! and counted (`headhunter_gateway_log_events_dropped_total{reason="buffer_full"}`).
//! On shutdown the buffer is flushed for up to `flush_deadline`; what is still left
//! is counted as dropped with reason `shutdown`.

use std::time::Duration;

use common_models::events::LogEvent;
use common_models::queue::{self, EVENT_FIELD, LogStream, QueueKeys, TYPE_FIELD};
use deadpool_redis::Pool as RedisPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::metrics::GatewayMetrics;

#[derive(Clone)]
pub struct LogPublisher {
    tx: mpsc::Sender<LogEvent>,
    metrics: GatewayMetrics,
}

/// Stops the background task: flushes what is buffered, then returns.
pub struct PublisherShutdown {
    stop: oneshot::Sender<Duration>,
    task: JoinHandle<()>,
}

impl PublisherShutdown {
    /// Flushes for at most `deadline`, then gives up on the rest (counted as dropped).
    pub async fn flush_and_stop(self, deadline: Duration) {
        // An error means the task is already gone: nothing left to flush.
        self.stop.send(deadline).ok();
        drop(self.task.await);
    }
}

impl LogPublisher {
    pub fn start(
        redis: RedisPool,
        keys: QueueKeys,
        metrics: GatewayMetrics,
        capacity: usize,
        batch_size: usize,
        linger: Duration,
    ) -> (Self, PublisherShutdown) {
        let (tx, rx) = mpsc::channel(capacity);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(drain(rx, stop_rx, redis, keys, metrics.clone(), batch_size, linger));
        (Self { tx, metrics }, PublisherShutdown { stop: stop_tx, task })
    }

    /// Queues an event for Redis; never waits. A full buffer drops the event (counted).
    pub fn publish(&self, event: LogEvent) {
        let stream = LogStream::of(&event).name();
        match self.tx.try_send(event) {
            Ok(()) => self.metrics.log_events_buffered.inc(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.log_events_dropped.with_label_values(&[stream, "buffer_full"]).inc();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.log_events_dropped.with_label_values(&[stream, "shutdown"]).inc();
            }
        }
    }
}

async fn drain(
    mut rx: mpsc::Receiver<LogEvent>,
    mut stop: oneshot::Receiver<Duration>,
    redis: RedisPool,
    keys: QueueKeys,
    metrics: GatewayMetrics,
    batch_size: usize,
    linger: Duration,
) {
    let mut batch: Vec<LogEvent> = Vec::with_capacity(batch_size);
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if batch.is_empty() {
            if deadline.is_some() {
                // Shutting down: take what is left without waiting for more.
                while batch.len() < batch_size {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    return;
                }
            } else {
                tokio::select! {
                    n = rx.recv_many(&mut batch, batch_size) => if n == 0 { return },
                    d = &mut stop => {
                        deadline = Some(tokio::time::Instant::now() + d.unwrap_or_default());
                        rx.close();
                        continue;
                    }
                }
                // Let a batch fill for a moment: one round trip for many events costs
                // Redis and this process far less than one per request. Sleeping
                // (rather than waiting on the channel) means publishers wake no one.
                if batch.len() < batch_size && !linger.is_zero() {
                    tokio::time::sleep(linger).await;
                    while batch.len() < batch_size {
                        match rx.try_recv() {
                            Ok(e) => batch.push(e),
                            Err(_) => break,
                        }
                    }
                }
            }
        }

        match send(&redis, &keys, &batch, &metrics).await {
            Ok(()) => {
                metrics.log_events_buffered.sub(batch.len() as i64);
                batch.clear();
            }
            Err(err) => {
                metrics.log_publish_errors.with_label_values(&["redis"]).inc();
                tracing::warn!(error = %err, events = batch.len(), "publishing log events to Redis failed, will retry");
                let pause = tokio::time::sleep(Duration::from_millis(250));
                match deadline {
                    Some(d) if tokio::time::Instant::now() >= d => {
                        while let Ok(e) = rx.try_recv() {
                            batch.push(e);
                        }
                        give_up(&mut batch, &metrics);
                        return;
                    }
                    Some(_) => pause.await,
                    None => {
                        tokio::select! {
                            _ = pause => {}
                            d = &mut stop => {
                                deadline = Some(tokio::time::Instant::now() + d.unwrap_or_default());
                                rx.close();
                            }
                        }
                    }
                }
            }
        }
    }
}

fn give_up(batch: &mut Vec<LogEvent>, metrics: &GatewayMetrics) {
    metrics.log_events_buffered.sub(batch.len() as i64);
    for e in batch.drain(..) {
        metrics.log_events_dropped.with_label_values(&[LogStream::of(&e).name(), "shutdown"]).inc();
    }
}

async fn send(redis: &RedisPool, keys: &QueueKeys, batch: &[LogEvent], metrics: &GatewayMetrics) -> anyhow::Result<()> {
    let mut pipe = redis::pipe();
    let mut per_stream = [0u64; 2];
    for event in batch {
        let stream = LogStream::of(event);
        match queue::encode(event) {
            Ok((tag, payload)) => {
                pipe.xadd(keys.stream(stream), "*", &[(TYPE_FIELD, tag.as_bytes()), (EVENT_FIELD, payload.as_slice())])
                    .ignore();
                per_stream[usize::from(stream == LogStream::SystemLogs)] += 1;
            }
            Err(err) => {
                tracing::error!(error = %err, "a log event could not be encoded");
                metrics.log_events_dropped.with_label_values(&[stream.name(), "encode"]).inc();
            }
        }
    }
    let mut conn = redis.get().await?;
    pipe.query_async::<()>(&mut *conn).await?;
    metrics.log_events_published.with_label_values(&[LogStream::LlmLogs.name()]).inc_by(per_stream[0]);
    metrics.log_events_published.with_label_values(&[LogStream::SystemLogs.name()]).inc_by(per_stream[1]);
    Ok(())
}
