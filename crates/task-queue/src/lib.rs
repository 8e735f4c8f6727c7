//! One typed queue over Redis Streams for every headhunter service.
//!
//! - A [`Task`] names its stream and its versioned type tag (`llm_call.v1`); an entry
//!   carries two fields, `type` (the tag) and `payload` (the task as JSON), so a reader
//!   decodes the payload straight into its type and refuses tags it does not know.
//! - [`Producer`]: `publish` never blocks a request. Entries wait in a buffer bounded in
//!   bytes, go to Redis in pipelined batches, and go to a disk [`spool`] while Redis does
//!   not take them, to be replayed in order once it does. Every entry given up is
//!   counted by stream and reason.
//! - [`Consumer`]: a consumer group per kind of consumer, with reclaiming, claim renewal,
//!   acknowledgement only after the handler succeeded, retries, dead letters,
//!   heartbeats, metrics, trimming and a graceful stop; a service writes only its
//!   [`BatchHandler`]. The rules are in [`consumer`].
//!
//! Keys (each behind the configured prefix): `<stream>`, `<stream>:dead`,
//! `queue:<group>:heartbeats` (consumer process → unix ms) and
//! `queue:<group>:last_success_ms`.
//!
//! Streams are trimmed only below what every group on them has acknowledged (or not yet
//! been given), never by length: a `MAXLEN` would delete entries nobody has consumed.
//! A stream no group reads is never trimmed; the queue Redis's `maxmemory` bounds it, and
//! producers spool when Redis refuses.

pub mod cli;
pub mod consumer;
pub mod dead_letters;
pub mod keys;
pub mod producer;
pub mod scripts;
pub mod spool;
pub mod status;
pub mod task;

pub use consumer::{BatchHandler, Consumer, ConsumerConfig, ConsumerMetrics, Delivery, Handled, HandlerError};
pub use keys::Keys;
pub use producer::{Producer, ProducerConfig, ProducerMetrics, ProducerTask};
pub use spool::{Fsync, SpoolConfig};
pub use task::{DecodeError, Entry, Message, Task, decode_as};
