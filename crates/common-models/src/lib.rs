//! The types every headhunter service shares: the log events and the streams they
//! travel on, the CV and analysis tasks and their status events, the file store, ids,
//! the cache's batch framing, the diesel schema and migrations of both databases.
//! Nothing here knows about an HTTP framework; service machinery lives in
//! `service-kit`, the queue's in `task-queue`.

pub mod analysis;
pub mod cache_wire;
pub mod cv;
pub mod events;
pub mod ids;
pub mod pricing;
pub mod queue;
pub mod storage;
pub mod usage;

#[cfg(feature = "diesel")]
pub mod db;
#[cfg(feature = "diesel")]
pub mod schema;
