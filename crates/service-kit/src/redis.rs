//! Redis connection pools.

use std::time::Duration;

use deadpool_redis::{Manager, Pool, Runtime};
use redis::AsyncConnectionConfig;

/// How a pool's connections treat slow replies.
#[derive(Debug, Clone, Copy)]
pub enum ReplyTimeout {
    /// Fail a command whose reply takes longer than this.
    After(Duration),
    /// Wait as long as the command needs: for `XREADGROUP … BLOCK`, whose reply
    /// comes only when entries arrive or the block time ends.
    Never,
}

/// Builds a pool of multiplexed connections to `url`.
pub fn build_pool(url: &str, max_size: usize, reply_timeout: ReplyTimeout) -> anyhow::Result<Pool> {
    let response_timeout = match reply_timeout {
        ReplyTimeout::After(d) => Some(d),
        ReplyTimeout::Never => None,
    };
    let connection_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(response_timeout);
    let manager = Manager::new_with_config(url, connection_config)?;
    let pool = Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(2)))
        .create_timeout(Some(Duration::from_secs(3)))
        .recycle_timeout(Some(Duration::from_secs(2)))
        .build()?;
    Ok(pool)
}
