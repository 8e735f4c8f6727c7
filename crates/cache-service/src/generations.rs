//! Write generations: a counter per stripe of keys, bumped before every change to a key
//! in L1 (a write, a delete, an invalidation, a flush). A value read from Redis goes
//! into L1 only if its key's counter did not move while the read was in flight, so a
//! read that raced a newer write never brings the older value back.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Keys share a counter when their hashes collide, which costs a skipped L1 fill, never
/// a stale one.
const STRIPES: usize = 256;

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
    fn stripe(&self, key: &str) -> &AtomicU64 {
        &self.stripes[self.hasher.hash_one(key) as usize % STRIPES]
    }

    pub fn current(&self, key: &str) -> u64 {
        self.stripe(key).load(Ordering::SeqCst)
    }

    /// Marks `key` as changing: a Redis read of it now in flight will not fill L1.
    pub fn bump(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::SeqCst);
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
}
