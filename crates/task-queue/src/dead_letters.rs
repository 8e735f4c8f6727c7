//! Reading, replaying and dropping dead letters (`<stream>:dead`). A dead letter keeps
//! the original entry's fields and adds `dead_reason`, `dead_detail`, `dead_group`,
//! `dead_original_id` and `dead_at_ms`.
//!
//! Replaying moves a letter back onto its stream as a new entry (every group on the
//! stream will see it again; consumers absorb what they had done) and deletes it, in
//! one script: replaying the same letter twice adds it once. "All" means the letters
//! present when the command starts, so a letter that fails again and comes back is not
//! replayed in a loop.

use redis::aio::ConnectionLike;
use redis::streams::StreamRangeReply;
use serde::Serialize;

use crate::keys::Keys;
use crate::scripts;

/// Which letters an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Ids(Vec<String>),
    All,
}

/// A dead letter as shown to people.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    pub stream: String,
    pub id: String,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub group: Option<String>,
    pub original_id: Option<String>,
    pub dead_at_ms: Option<i64>,
    #[serde(rename = "type")]
    pub type_tag: Option<String>,
    /// The payload, cut to 2,000 characters.
    pub payload: Option<String>,
}

const PAGE: usize = 500;
const SHOWN_PAYLOAD_CHARS: usize = 2000;

/// The oldest `limit` letters of `stream`.
pub async fn list<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    stream: &str,
    limit: usize,
) -> redis::RedisResult<Vec<DeadLetterView>> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys.dead_letter(stream))
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(limit)
        .query_async(conn)
        .await?;
    Ok(reply
        .ids
        .into_iter()
        .map(|entry| {
            let text = |name: &str| entry.get::<Vec<u8>>(name).map(|b| String::from_utf8_lossy(&b).into_owned());
            DeadLetterView {
                stream: stream.to_owned(),
                reason: text("dead_reason"),
                detail: text("dead_detail"),
                group: text("dead_group"),
                original_id: text("dead_original_id"),
                dead_at_ms: text("dead_at_ms").and_then(|t| t.parse().ok()),
                type_tag: text(crate::task::TYPE_FIELD),
                payload: text(crate::task::PAYLOAD_FIELD).map(|p| p.chars().take(SHOWN_PAYLOAD_CHARS).collect()),
                id: entry.id,
            }
        })
        .collect())
}

/// Ids of the selected letters that exist now, oldest first.
async fn selected<C: ConnectionLike + Send>(
    conn: &mut C,
    key: &str,
    selection: &Selection,
) -> redis::RedisResult<Vec<String>> {
    match selection {
        Selection::Ids(ids) => Ok(ids.clone()),
        Selection::All => {
            let newest: StreamRangeReply =
                redis::cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(1).query_async(conn).await?;
            let Some(last) = newest.ids.first().map(|e| e.id.clone()) else { return Ok(Vec::new()) };
            let mut ids = Vec::new();
            let mut start = "-".to_owned();
            loop {
                let page: StreamRangeReply = redis::cmd("XRANGE")
                    .arg(key)
                    .arg(&start)
                    .arg(&last)
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(conn)
                    .await?;
                let n = page.ids.len();
                ids.extend(page.ids.into_iter().map(|e| e.id));
                match ids.last() {
                    Some(id) if n == PAGE => start = format!("({id}"),
                    _ => return Ok(ids),
                }
            }
        }
    }
}

/// Puts the selected letters back on `stream`; returns how many were moved.
pub async fn replay<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    stream: &str,
    selection: &Selection,
) -> redis::RedisResult<u64> {
    let dead_key = keys.dead_letter(stream);
    let stream_key = keys.stream(stream);
    let mut moved = 0;
    for id in selected(conn, &dead_key, selection).await? {
        let n: u64 = scripts::REPLAY_DEAD_LETTER.key(&dead_key).key(&stream_key).arg(&id).invoke_async(conn).await?;
        moved += n;
    }
    Ok(moved)
}

/// Deletes the selected letters; returns how many were deleted.
pub async fn drop_letters<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    stream: &str,
    selection: &Selection,
) -> redis::RedisResult<u64> {
    let dead_key = keys.dead_letter(stream);
    let mut deleted = 0;
    for ids in selected(conn, &dead_key, selection).await?.chunks(PAGE) {
        let n: u64 = redis::cmd("XDEL").arg(&dead_key).arg(ids).query_async(conn).await?;
        deleted += n;
    }
    Ok(deleted)
}
