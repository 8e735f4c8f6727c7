//! One Redis pub/sub subscription per replica and channel, kept alive: after a lost
//! connection it resubscribes every second until shutdown (behind Sentinel, at the
//! primary of the moment). Messages published while a subscription was down are gone
//! (that is pub/sub); the handler hears `Subscribed` each time the subscription
//! (re)starts, so it can make up for what it may have missed.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

pub enum Message {
    /// The subscription has just started (again).
    Subscribed,
    Payload(String),
}

/// Subscribes to `channel` and hands every message to `handle` until `shutdown`.
pub fn follow(
    redis_url: &str,
    channel: String,
    shutdown: watch::Receiver<bool>,
    handle: impl Fn(Message) + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let endpoint = service_kit::redis::Endpoint::parse(redis_url)?;
    tokio::spawn(async move {
        let mut shutdown = shutdown;
        loop {
            let run = async {
                let mut pubsub = endpoint.primary().await?.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                handle(Message::Subscribed);
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    if let Ok(payload) = msg.get_payload::<String>() {
                        handle(Message::Payload(payload));
                    }
                }
                anyhow::Ok(())
            };
            tokio::select! {
                result = run => {
                    if let Err(err) = result {
                        tracing::warn!(channel, error = %err, "subscription lost; resubscribing");
                    }
                }
                _ = shutdown.wait_for(|s| *s) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    });
    Ok(())
}
