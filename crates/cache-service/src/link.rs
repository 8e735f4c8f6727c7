//! The store's way to Redis: one multiplexed, self-reconnecting connection per thread
//! that talks to Redis (every HTTP worker, and the background runtime's threads),
//! opened on first use. A connection's driver task runs on the runtime that opened it,
//! so a worker's commands are written and their replies read on the worker's own
//! thread, with no hand-over to another thread per command.
//!
//! Failures come in two kinds: no answer (an outage, which sends the store into
//! fallback) and an error Redis answered with (that command failed; Redis is up).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::thread::ThreadId;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use service_kit::redis::Endpoint;
use tokio::sync::OnceCell;

/// How a Redis command failed.
#[derive(Debug)]
pub enum Failure {
    /// No answer: connection refused or dropped, or no reply in time. Redis is down.
    Outage(String),
    /// Redis answered with an error (out of memory, wrong type): this command failed,
    /// Redis is up.
    Refused(String),
}

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
            Self::Outage(e.to_string())
        } else {
            Self::Refused(e.to_string())
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Outage(e) | Self::Refused(e) => f.write_str(e),
        }
    }
}

/// A thread's connection, opened once however many requests ask for it at the same time.
type Slot = Arc<OnceCell<ConnectionManager>>;

pub struct RedisLink {
    connections: RwLock<HashMap<ThreadId, Slot>>,
    endpoint: Endpoint,
    /// The endpoint's epoch the open connections were made for: behind Sentinel, a new
    /// primary means every thread opens a fresh connection, to it.
    epoch: AtomicU64,
    config: ConnectionManagerConfig,
    timeout: Duration,
}

impl RedisLink {
    /// `timeout` bounds each reply and the opening of a connection.
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self {
            connections: RwLock::new(HashMap::new()),
            endpoint: Endpoint::parse(url)?,
            epoch: AtomicU64::new(0),
            config,
            timeout,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// This thread's connection (a cheap clone), opened on first use. Requests that
    /// arrive while it opens wait for that one attempt rather than each opening their own.
    pub async fn conn(&self) -> Result<ConnectionManager, String> {
        if self.endpoint.moved_since(&self.epoch) {
            self.reset();
        }
        let thread = std::thread::current().id();
        let slot = self.connections.read().ok().and_then(|c| c.get(&thread).cloned());
        let slot = match slot {
            Some(slot) => slot,
            None => match self.connections.write() {
                Ok(mut connections) => connections.entry(thread).or_default().clone(),
                Err(_) => Slot::default(),
            },
        };
        if let Some(conn) = slot.get() {
            return Ok(conn.clone());
        }
        let open = async {
            let open =
                async { ConnectionManager::new_with_config(self.endpoint.primary().await?, self.config.clone()).await };
            match tokio::time::timeout(self.timeout, open).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no connection to Redis within {:?}", self.timeout)),
            }
        };
        slot.get_or_try_init(|| open).await.cloned()
    }

    /// After an outage: every thread opens a fresh connection on its next command
    /// rather than finding out that its old one broke.
    pub fn reset(&self) {
        if let Ok(mut connections) = self.connections.write() {
            connections.clear();
        }
    }
}
