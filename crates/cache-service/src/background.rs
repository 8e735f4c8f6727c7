//! Background tasks: the invalidation subscriber and the Redis health monitor.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::store::CacheStore;

/// Subscribes to the invalidation channel and applies what other replicas publish,
/// resubscribing after any break. After every recovery from fallback it subscribes
/// afresh (the old connection may hang half-open after an outage, with nothing to
/// say so): the new subscription is made before the old one is dropped, so no
/// message falls between them. L1 is not cleared on a break: it is what serves while
/// Redis is down, and what a missed message leaves stale is bounded by
/// `l1_max_ttl_secs`.
pub async fn invalidation_subscriber(store: Arc<CacheStore>, mut shutdown: watch::Receiver<bool>) {
    let channel = store.channel();
    let mut recoveries = store.recoveries();
    let subscribe = || async {
        let mut pubsub = store.redis_endpoint().primary().await?.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        tracing::debug!(channel = %channel, "listening for invalidations");
        anyhow::Ok(pubsub.into_on_message())
    };
    loop {
        let session = async {
            let mut messages = subscribe().await?;
            loop {
                tokio::select! {
                    msg = messages.next() => match msg {
                        Some(msg) => store.apply_invalidation(msg.get_payload_bytes()),
                        None => return anyhow::Ok(()),
                    },
                    _ = recoveries.changed() => {
                        // Bounded: meanwhile the old subscription's messages wait.
                        if let Ok(Ok(fresh)) = tokio::time::timeout(Duration::from_secs(1), subscribe()).await {
                            while let Some(Some(msg)) = messages.next().now_or_never() {
                                store.apply_invalidation(msg.get_payload_bytes());
                            }
                            messages = fresh;
                        }
                    }
                }
            }
        };
        tokio::select! {
            result = session => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "invalidation subscription unavailable");
                }
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// While degraded, pings Redis twice a second; when it answers, the store replays the
/// writes made meanwhile and turns back to both tiers.
pub async fn redis_monitor(store: Arc<CacheStore>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if store.is_degraded() {
            let ping = async {
                let mut conn = store.conn().await.ok()?;
                redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
            };
            if tokio::time::timeout(Duration::from_secs(1), ping).await.ok().flatten().is_some()
                && let Err(err) = store.recover().await
            {
                tracing::debug!(error = %err, "Redis stopped answering during the replay");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
