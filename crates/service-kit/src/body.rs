//! Reading a request body under a byte limit.

use actix_web::{HttpRequest, web};
use bytes::Bytes;
use futures_util::StreamExt;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    #[error("the body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("could not read the body: {0}")]
    Unreadable(String),
    #[error("the body did not arrive within {after:?}")]
    TooSlow { after: std::time::Duration },
}

/// How long a whole body may take to arrive unless a service says otherwise: a client
/// trickling bytes would otherwise hold a connection and a buffer for ever.
pub const DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads a request body of at most `limit` bytes, all of it within `deadline`. A
/// declared `Content-Length` over the limit is refused before anything is read; a
/// streamed body is counted as it comes.
pub async fn read_limited(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<Bytes, BodyError> {
    tokio::time::timeout(deadline, read(req, payload, limit))
        .await
        .unwrap_or(Err(BodyError::TooSlow { after: deadline }))
}

async fn read(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(4096).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| BodyError::Unreadable(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    // A body that outgrew its first guess carries spare capacity; whoever keeps it (an
    // L1 entry) would pay for memory nobody counts.
    if body.capacity() - body.len() > body.len() / 8 {
        return Ok(Bytes::copy_from_slice(&body));
    }
    Ok(body.freeze())
}
