//! Redis key names, each behind an optional prefix so several deployments (or tests)
//! can share one Redis.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream `stream`.
    pub fn stream(&self, stream: &str) -> String {
        format!("{}{stream}", self.prefix)
    }

    /// The dead-letter stream of `stream`.
    pub fn dead_letter(&self, stream: &str) -> String {
        format!("{}{stream}:dead", self.prefix)
    }

    /// Sorted set: consumer process → unix ms of its last heartbeat, per consumer group.
    pub fn heartbeats(&self, group: &str) -> String {
        format!("{}queue:{group}:heartbeats", self.prefix)
    }

    /// Unix ms of the last batch the group's handler completed.
    pub fn last_success(&self, group: &str) -> String {
        format!("{}queue:{group}:last_success_ms", self.prefix)
    }

    /// Which of `streams` a stream key read back from Redis names.
    pub fn stream_of<'a>(&self, key: &str, streams: &[&'a str]) -> Option<&'a str> {
        let name = key.strip_prefix(self.prefix.as_str())?;
        streams.iter().copied().find(|s| *s == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_prefix() {
        let keys = Keys::new("t1:");
        assert_eq!(keys.stream("llm_logs"), "t1:llm_logs");
        assert_eq!(keys.dead_letter("system_logs"), "t1:system_logs:dead");
        assert_eq!(keys.heartbeats("llm-log-worker"), "t1:queue:llm-log-worker:heartbeats");
        assert_eq!(keys.stream_of("t1:system_logs", &["llm_logs", "system_logs"]), Some("system_logs"));
        assert_eq!(keys.stream_of("llm_logs", &["llm_logs"]), None);
    }
}
