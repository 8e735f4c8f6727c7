//! What a consumer group's streams look like right now: lengths, pending and
//! undelivered entries, dead letters, heartbeats. The consumers' gauges and the admin
//! health view read it the same way.

use redis::AsyncCommands;
use redis::aio::ConnectionLike;
use redis::streams::StreamInfoGroupsReply;
use serde::Serialize;

use crate::keys::Keys;

#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub stream: String,
    /// Entries in the stream (the unacknowledged ones plus the trimming tail).
    pub length: u64,
    /// Entries in its dead-letter stream.
    pub dead_letters: u64,
    /// Delivered to the group, not yet acknowledged; `None` when the group does not exist.
    pub pending: Option<u64>,
    /// Not yet delivered to the group; `None` when Redis cannot tell.
    pub lag: Option<u64>,
    /// Consumers known to the group.
    pub consumers: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub group: String,
    pub streams: Vec<StreamStatus>,
    /// Consumer processes and the unix ms of their last heartbeat.
    pub heartbeats: Vec<(String, i64)>,
    /// Unix ms when the group last completed a batch.
    pub last_success_ms: Option<i64>,
}

impl GroupStatus {
    /// The newest heartbeat of any process of the group.
    pub fn latest_heartbeat_ms(&self) -> Option<i64> {
        self.heartbeats.iter().map(|(_, at)| *at).max()
    }
}

/// Reads the status of `group` on `streams`.
pub async fn group_status<C: ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &Keys,
    group: &str,
    streams: &[&str],
) -> redis::RedisResult<GroupStatus> {
    let mut out = Vec::with_capacity(streams.len());
    for stream in streams {
        let key = keys.stream(stream);
        let length: u64 = conn.xlen(&key).await?;
        let dead_letters: u64 = conn.xlen(keys.dead_letter(stream)).await?;
        // A stream that does not exist yet has no groups (XINFO answers an error).
        let groups: StreamInfoGroupsReply = conn.xinfo_groups(&key).await.unwrap_or_default();
        let info = groups.groups.into_iter().find(|g| g.name == group);
        out.push(StreamStatus {
            stream: (*stream).to_owned(),
            length,
            dead_letters,
            pending: info.as_ref().map(|g| g.pending as u64),
            lag: info.as_ref().and_then(|g| g.lag).map(|l| l as u64),
            consumers: info.as_ref().map(|g| g.consumers as u64),
        });
    }
    let heartbeats: Vec<(String, i64)> = conn.zrange_withscores(keys.heartbeats(group), 0, -1).await?;
    let last_success_ms: Option<i64> = conn.get(keys.last_success(group)).await?;
    Ok(GroupStatus { group: group.to_owned(), streams: out, heartbeats, last_success_ms })
}
