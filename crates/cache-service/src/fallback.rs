//! The writes made while Redis does not answer. They go to L1 at once and into this
//! log; when Redis answers again the store replays them (puts with their remaining TTL,
//! deletes) and publishes their invalidations before it leaves fallback, so Redis and
//! every other replica end up with them. Without the log a delete made during an
//! outage would be undone when Redis came back, and a put would live in one replica's
//! L1 only.
//!
//! One entry per key (a later write replaces an earlier one), bounded in bytes; a
//! write past the bound stays in L1 only and is counted.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

/// A change to one key (its full Redis name), as it is sent to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// `SET … PX`, or `DEL` once `expires_at` has passed (the newer value expired, so
    /// an older one must not come back).
    Put {
        value: Bytes,
        expires_at: Instant,
    },
    Delete,
}

impl Write {
    fn weight(&self, key: &str) -> usize {
        let value = match self {
            Self::Put { value, .. } => value.len(),
            Self::Delete => 0,
        };
        key.len() + value + 64
    }
}

pub struct FallbackLog {
    writes: HashMap<String, Write>,
    bytes: usize,
    max_bytes: usize,
}

impl FallbackLog {
    pub fn new(max_bytes: usize) -> Self {
        Self { writes: HashMap::new(), bytes: 0, max_bytes }
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Keeps `write` for the replay; false if it does not fit under the bound.
    pub fn record(&mut self, key: &str, write: &Write) -> bool {
        let old = self.writes.get(key).map_or(0, |w| w.weight(key));
        let new = write.weight(key);
        if self.bytes - old + new > self.max_bytes {
            return false;
        }
        self.bytes = self.bytes - old + new;
        self.writes.insert(key.to_owned(), write.clone());
        true
    }

    /// Removes writes for replaying: up to `max` of them, and stopping once they weigh
    /// `max_bytes` (at least one is taken, whatever it weighs).
    pub fn take(&mut self, max: usize, max_bytes: usize) -> Vec<(String, Write)> {
        let mut keys = Vec::new();
        let mut bytes = 0;
        for (k, w) in &self.writes {
            if keys.len() == max || (!keys.is_empty() && bytes + w.weight(k) > max_bytes) {
                break;
            }
            bytes += w.weight(k);
            keys.push(k.clone());
        }
        keys.into_iter()
            .filter_map(|k| {
                let w = self.writes.remove(&k)?;
                self.bytes -= w.weight(&k);
                Some((k, w))
            })
            .collect()
    }

    /// Drops the logged write of `key`, if any: another replica wrote the key to Redis
    /// after this one logged it, and the newer write wins. True if one was dropped.
    pub fn forget(&mut self, key: &str) -> bool {
        match self.writes.remove(key) {
            Some(w) => {
                self.bytes -= w.weight(key);
                true
            }
            None => false,
        }
    }

    /// Drops every logged write whose key starts with `prefix` (a flushed namespace).
    pub fn forget_prefix(&mut self, prefix: &str) -> usize {
        let doomed: Vec<String> = self.writes.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        doomed.iter().filter(|k| self.forget(k)).count()
    }

    /// Puts back writes whose replay failed, unless the key was written again since
    /// (the newer write wins). Returns how many did not fit.
    pub fn restore(&mut self, batch: Vec<(String, Write)>) -> usize {
        batch.into_iter().filter(|(k, w)| !self.writes.contains_key(k) && !self.record(k, w)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(v: &str) -> Write {
        Write::Put { value: Bytes::copy_from_slice(v.as_bytes()), expires_at: Instant::now() }
    }

    #[test]
    fn a_later_write_replaces_an_earlier_one_and_the_bound_holds() {
        let mut log = FallbackLog::new(3 * 64 + 10);
        assert!(log.record("a", &put("1")));
        assert!(log.record("a", &Write::Delete));
        assert_eq!(log.len(), 1);
        assert!(log.record("b", &put("22")));
        assert!(!log.record("c", &put("too much for the bound")));
        assert_eq!(log.len(), 2);

        let first = log.take(10, 1);
        assert_eq!(first.len(), 1, "one at least, however heavy");
        let mut batch = log.take(10, usize::MAX);
        assert_eq!(batch.len(), 1);
        assert!(log.is_empty());
        batch.extend(first);
        assert!(log.record("a", &put("newer")));
        assert_eq!(log.restore(batch), 0);
        assert_eq!(log.len(), 2);
        let mut kept = log.take(10, usize::MAX);
        kept.sort_by(|x, y| x.0.cmp(&y.0));
        assert!(matches!(&kept[0], (k, Write::Put { value, .. }) if k == "a" && value == "newer"));
        assert_eq!(kept[1].0, "b");
    }

    #[test]
    fn forgotten_writes_leave_the_log_and_its_weight() {
        let mut log = FallbackLog::new(3 * 64 + 30);
        assert!(log.record("match:a", &put("1")));
        assert!(log.record("match:b", &put("2")));
        assert!(log.record("llm:c", &put("3")));
        assert!(!log.forget("llm:none"));
        assert!(log.forget("llm:c"));
        assert_eq!(log.forget_prefix("match:"), 2);
        assert!(log.is_empty());
        assert!(log.record("big", &put("fits again once the rest is gone")));
    }
}
