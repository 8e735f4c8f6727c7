//! How the services that run on mimalloc (every one but cv-processor) keep the memory
//! they free.
//!
//! mimalloc hands freed memory back to the system 10 ms after it falls empty (its
//! `purge_delay`). A service that works in batches frees a batch's memory and allocates
//! the next batch's a few milliseconds later, so the same memory went back and forth:
//! the kernel zeroed every page again on its first touch. In the ingest benchmark
//! (200,000 calls through the gateway's producer and the worker in one process) that
//! was 50,000-65,000 page faults and 1.7-2.3 s of system time; with a delay of one
//! second, 2,500-4,000 faults and 1.2-1.5 s, and about 0.4 CPU-s less in user time.
//! Memory left unused for longer than the delay still goes back to the system.

use std::ffi::c_long;

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_t` (version 2), which the
/// bindings leave unnamed. [`tests`] check it by its default.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before it goes back to the system.
pub const PURGE_DELAY_MS: c_long = 1000;

/// The environment variable through which mimalloc's own setting wins over
/// [`PURGE_DELAY_MS`].
pub const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] unless [`PURGE_DELAY_ENV`] is set;
/// returns the delay in effect, in milliseconds (-1: never). Call it first thing in
/// `main`.
pub fn keep_freed_memory() -> c_long {
    if std::env::var_os(PURGE_DELAY_ENV).is_none() {
        // SAFETY: sets one of mimalloc's numeric options, which it reads on each use;
        // the option number is checked against its documented default in the tests.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
    purge_delay()
}

/// mimalloc's purge delay now, in milliseconds.
pub fn purge_delay() -> c_long {
    // SAFETY: reads one of mimalloc's options.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_get(PURGE_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_stays_a_second_unless_the_environment_says_otherwise() {
        // 10 ms is mimalloc's documented default of `purge_delay`, and no neighbouring
        // option has it: the option number is the right one.
        if std::env::var_os(PURGE_DELAY_ENV).is_none() {
            assert_eq!(purge_delay(), 10);
            assert_eq!(keep_freed_memory(), PURGE_DELAY_MS);
            assert_eq!(purge_delay(), 1000);
        } else {
            let before = purge_delay();
            assert_eq!(keep_freed_memory(), before, "the environment's delay is kept");
        }
    }
}
