//! How much of a request the gateway logs. A log row is for finding a call again and
//! seeing what went wrong, not for keeping what a client sent: an attacker's 64 KiB path
//! or an upstream's megabyte of error text must not travel through the queue and into
//! the analytics database. Text longer than its limit is cut at a character boundary
//! and ends with `…`; request paths are cut by the request log
//! (`service_kit::request_log::MAX_PATH_BYTES`).

/// Messages and error messages.
pub const MAX_MESSAGE_BYTES: usize = 2048;
/// Names and ids that come from outside: the requested model, the upstream's model,
/// answer id and finish reason.
pub const MAX_NAME_BYTES: usize = 200;

pub use service_kit::request_log::cut;
