//! The Redis connection of the per-request checks (sessions, rate limits, budgets): one
//! multiplexed, self-reconnecting connection per replica, so a check is one round trip
//! with no pool checkout (deadpool-redis pings a connection each time it hands one out).
//! It is made on first use: a gateway starts while Redis is away, and each check retries
//! the connection until it is there.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

#[derive(Clone)]
pub struct HotRedis {
    client: redis::Client,
    reply_timeout: Duration,
    conn: Arc<OnceCell<ConnectionManager>>,
}

impl HotRedis {
    pub fn new(url: &str, reply_timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self { client: redis::Client::open(url)?, reply_timeout, conn: Arc::new(OnceCell::new()) })
    }

    /// The shared connection (cheap to clone; commands on clones are pipelined).
    pub async fn conn(&self) -> redis::RedisResult<ConnectionManager> {
        self.conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(self.reply_timeout))
                    .set_connection_timeout(Some(self.reply_timeout))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .cloned()
    }
}
