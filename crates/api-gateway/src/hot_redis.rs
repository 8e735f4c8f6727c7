//! The Redis connection of the per-request checks (sessions, rate limits, budgets): one
//! multiplexed, self-reconnecting connection per replica, so a check is one round trip
//! with no pool checkout (the pool checks a connection each time it hands one out).
//! It is made on first use: a gateway starts while Redis is away, and each check retries
//! the connection until it is there. Behind Sentinel it is opened again, to the new
//! primary, once the endpoint sees the primary change.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use service_kit::redis::Endpoint;
use tokio::sync::OnceCell;

#[derive(Clone)]
pub struct HotRedis {
    endpoint: Endpoint,
    reply_timeout: Duration,
    /// The endpoint's epoch the connection was opened for.
    seen: Arc<AtomicU64>,
    conn: Arc<Mutex<Arc<OnceCell<ConnectionManager>>>>,
}

impl HotRedis {
    pub fn new(url: &str, reply_timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self { endpoint: Endpoint::parse(url)?, reply_timeout, seen: Arc::default(), conn: Arc::default() })
    }

    /// The shared connection (cheap to clone; commands on clones are pipelined).
    pub async fn conn(&self) -> redis::RedisResult<ConnectionManager> {
        let cell = match self.conn.lock() {
            Ok(mut cell) => {
                if self.endpoint.moved_since(&self.seen) {
                    *cell = Arc::default();
                }
                cell.clone()
            }
            Err(_) => Arc::default(),
        };
        cell.get_or_try_init(|| async {
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(self.reply_timeout))
                .set_connection_timeout(Some(self.reply_timeout))
                .set_number_of_retries(1);
            let open = async { ConnectionManager::new_with_config(self.endpoint.primary().await?, config).await };
            tokio::time::timeout(self.reply_timeout, open)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no connection to Redis in time"))?
        })
        .await
        .cloned()
    }
}
