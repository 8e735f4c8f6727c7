//! Write generations: a counter per stripe of keys, bumped before every change to a key
//! in L1 (a write, a delete, an invalidation, a flush). A value read from Redis goes
//! into L1 only if its key's counter did not move while the read was in flight, so a
//! read that raced a newer write never brings the older value back.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Keys share a counter when their hashes collide, which costs a skipped L1 fill, never
/// a stale one.
const STRIPES: usize = 256;

/// Where a key's stripe must stand for a write's own value to go back into L1.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    stripe: usize,
    expect: u64,
}

pub struct Generations {
    stripes: Box<[AtomicU64]>,
    hasher: std::hash::RandomState,
}

impl Default for Generations {
    fn default() -> Self {
        Self { stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(), hasher: std::hash::RandomState::new() }
    }
}

impl Generations {
    fn index(&self, key: &str) -> usize {
        self.hasher.hash_one(key) as usize % STRIPES
    }

    fn stripe(&self, key: &str) -> &AtomicU64 {
        &self.stripes[self.index(key)]
    }

    pub fn current(&self, key: &str) -> u64 {
        self.stripe(key).load(Ordering::SeqCst)
    }

    /// Marks `key` as changing: a Redis read of it now in flight will not fill L1.
    pub fn bump(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::SeqCst);
    }

    /// Bumps every key of a write (as `bump`) and remembers where each stripe stood
    /// after the write's own bumps, so that `settle` can tell whether anything else
    /// changed a key while the write was in flight.
    pub fn mark<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Vec<Mark> {
        let mut marks: Vec<Mark> = keys
            .into_iter()
            .map(|key| {
                let stripe = self.index(key);
                Mark { stripe, expect: self.stripes[stripe].fetch_add(1, Ordering::SeqCst) + 1 }
            })
            .collect();
        // A stripe bumped again later in the same write is expected that much further on.
        let mut later = [0u64; STRIPES];
        for m in marks.iter_mut().rev() {
            m.expect += later[m.stripe];
            later[m.stripe] += 1;
        }
        marks
    }

    /// For each mark: `Some(generation)` if nothing else moved its stripe since the
    /// mark (the stripe is then bumped once more, so reads begun before now will not
    /// fill L1), `None` if something did.
    pub fn settle(&self, marks: &[Mark]) -> Vec<Option<u64>> {
        let mut outcome: [Option<Option<u64>>; STRIPES] = [None; STRIPES];
        marks
            .iter()
            .map(|m| {
                *outcome[m.stripe].get_or_insert_with(|| {
                    self.stripes[m.stripe]
                        .compare_exchange(m.expect, m.expect + 1, Ordering::SeqCst, Ordering::SeqCst)
                        .ok()
                        .map(|g| g + 1)
                })
            })
            .collect()
    }

    pub fn bump_all(&self) {
        for stripe in &*self.stripes {
            stripe.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_moves_the_key_and_a_bump_all_moves_every_key() {
        let g = Generations::default();
        let (a, b) = (g.current("embedding:a"), g.current("embedding:b"));
        g.bump("embedding:a");
        assert_ne!(g.current("embedding:a"), a);
        g.bump_all();
        assert_ne!(g.current("embedding:b"), b);
    }

    #[test]
    fn a_write_settles_only_if_nothing_else_moved_its_keys() {
        let g = Generations::default();
        // Enough keys that some share a stripe: the write's own bumps never count against it.
        let keys: Vec<String> = (0..64).map(|i| format!("embedding:cv7:chunk{i}")).collect();
        let marks = g.mark(keys.iter().map(String::as_str));
        let settled = g.settle(&marks);
        assert!(settled.iter().all(Option::is_some), "{settled:?}");
        // A later write moved each key (and a read begun before it must not fill L1).
        assert!(settled.iter().zip(&keys).all(|(s, k)| *s == Some(g.current(k))));

        let marks = g.mark(["llm:q", "llm:r"]);
        g.bump("llm:q"); // someone else's change to one of them
        let settled = g.settle(&marks);
        assert_eq!(settled[0], None);
    }
}
