//! Live status: `GET /api/v1/cvs/events`, server-sent events of the company's CV
//! status changes (`cv.status`) and analysis status changes (`analysis.status`). Every replica subscribes once to the Redis channel cv-processor and
//! the gateway publish on, and fans the events out to its own clients, so any replica
//! serves any client. Each event's SSE id is its id in the company's replay stream: a
//! client reconnecting with `Last-Event-ID` first gets what it missed from there (the
//! last ~2,000 events, 24 hours), then the live ones.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use common_models::cv::{StatusEvent, events};
use common_models::ids::CompanyId;
use redis::AsyncCommands;
use service_kit::AppError;
use tokio::sync::{broadcast, watch};

use crate::access::Action;
use crate::state::AppState;

/// Events a slow client may fall behind before it is caught up from the replay stream.
const FAN_OUT_CAPACITY: usize = 4096;
const KEEPALIVE: Duration = Duration::from_secs(15);

/// One event with its id.
pub type Published = Arc<(String, StatusEvent)>;

/// This replica's subscription, shared by its clients.
pub struct EventHub {
    sender: broadcast::Sender<Published>,
    shutdown: watch::Receiver<bool>,
}

impl EventHub {
    /// Subscribes (and keeps resubscribing after failures) until `shutdown`.
    pub fn start(redis_url: &str, prefix: &str, shutdown: watch::Receiver<bool>) -> anyhow::Result<Arc<Self>> {
        let (sender, _) = broadcast::channel(FAN_OUT_CAPACITY);
        let hub = Arc::new(Self { sender: sender.clone(), shutdown: shutdown.clone() });
        crate::pubsub::follow(redis_url, events::channel(prefix), shutdown, move |message| {
            if let crate::pubsub::Message::Payload(payload) = message
                && let Some((id, event)) = events::parse_published(&payload)
            {
                // No receiver: nobody is watching; that is fine.
                let _ = sender.send(Arc::new((id.to_owned(), event)));
            }
        })?;
        Ok(hub)
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/cvs/events", web::get().to(stream_events));
}

/// Stream ids (`<ms>-<seq>`) in their order.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

fn frame(id: &str, event: &StatusEvent) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_default();
    Bytes::from(format!("id: {id}\nevent: {}\ndata: {data}\n\n", event.name()))
}

/// The company's events after `after` from its replay stream, oldest first.
async fn replay(state: &AppState, company: CompanyId, after: &str) -> Result<Vec<(String, StatusEvent)>, AppError> {
    let mut conn = state.redis.get().await.map_err(|e| AppError::unavailable("Redis", e))?;
    let key = events::replay_log(state.keys.prefix(), company);
    let reply: redis::streams::StreamRangeReply = conn
        .xrange_count(&key, format!("({after}"), "+", events::REPLAY_LEN)
        .await
        .map_err(|e| AppError::unavailable("Redis", e))?;
    Ok(reply
        .ids
        .into_iter()
        .filter_map(|entry| {
            let json: String = entry.get("event")?;
            Some((entry.id, serde_json::from_str(&json).ok()?))
        })
        .collect())
}

/// Server-sent events of the company's CV status changes (`event: cv.status`, the data
/// a JSON object with `cv_id`, `company_id`, `status`, `failure_reason`, `file_name`,
/// `at`). Each event's `id` can be sent back as `Last-Event-ID` on reconnecting, to get
/// what was missed first (the last ~2,000 events, 24 hours).
#[utoipa::path(get, path = "/api/v1/cvs/events", tag = "cvs",
    params(("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received.")),
    responses(
        (status = 200, description = "An endless event stream (a comment every 15 s keeps it open).", content_type = "text/event-stream", body = crate::openapi::SseEvent),
        (status = 400, description = "`Last-Event-ID` is not an id this API sent.", body = crate::openapi::ErrorBody),
    ))]
async fn stream_events(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::Read).await?;
    let company = caller.company_id;
    let last = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    if let Some(id) = &last
        && (id.split_once('-').is_none() || id_key(id) == (0, 0))
    {
        return Err(AppError::bad_request(
            "Last-Event-ID",
            "invalid_value",
            "Last-Event-ID is not an id this API sent",
        ));
    }
    let hub = state.events.clone();
    // Subscribe before replaying, so nothing falls between the two.
    let mut live = hub.sender.subscribe();
    let missed = match &last {
        Some(after) => replay(&state, company, after).await?,
        None => Vec::new(),
    };
    let mut shutdown = hub.shutdown.clone();
    let state = state.clone();
    let body = async_stream(move |tx| async move {
        let mut sent = last.as_deref().map_or((0, 0), id_key);
        if tx.send(Bytes::from_static(b": connected\n\n")).await.is_err() {
            return;
        }
        for (id, event) in missed {
            sent = id_key(&id);
            if tx.send(frame(&id, &event)).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                next = live.recv() => next,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() { return; }
                    continue;
                }
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match next {
                Ok(published) => {
                    let (id, event) = &*published;
                    if event.company_id() != company || id_key(id) <= sent {
                        continue;
                    }
                    sent = id_key(id);
                    if tx.send(frame(id, event)).await.is_err() {
                        return;
                    }
                }
                // Fell behind the fan-out: catch up from the replay stream.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let after = format!("{}-{}", sent.0, sent.1);
                    let Ok(missed) = replay(&state, company, &after).await else { return };
                    for (id, event) in missed {
                        sent = id_key(&id);
                        if tx.send(frame(&id, &event)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

/// A body stream fed by a task through a small channel (the task ends when the client
/// goes away: its sends fail).
fn async_stream<F, Fut>(producer: F) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    actix_web::rt::spawn(producer(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(id_key("1700000000000-2") > id_key("1700000000000-1"));
        assert!(id_key("1700000000001-0") > id_key("1700000000000-9"));
        assert_eq!(id_key("junk"), (0, 0));
    }
}
