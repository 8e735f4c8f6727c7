//! Types and plumbing every headhunter service shares: the log events that travel
//! through Redis, the queue's key names, the diesel schema of both databases, the
//! database and Redis pool builders, configuration loading and telemetry set-up.
//! Nothing here knows about an HTTP framework.

pub mod cache_wire;
pub mod events;
pub mod ids;
pub mod queue;
pub mod redis_pool;
pub mod settings;
pub mod telemetry;

#[cfg(feature = "diesel")]
pub mod db;
#[cfg(feature = "diesel")]
pub mod schema;
