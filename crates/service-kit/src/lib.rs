//! What every headhunter service shares, so that no service writes it again:
//! configuration loading and the shared sections, typed durations, sizes and secrets,
//! telemetry (structured logs, the shutdown signal, the `healthcheck` subcommand), metric
//! declarations, Redis and PostgreSQL pools, request records; with the `http` feature, the one error type,
//! request ids, the request-log middleware, dependency checks and probe endpoints, admin authentication, limited body
//! reading and server start-up.

pub mod config;
pub mod metrics;
pub mod redis;
pub mod request_log;
pub mod telemetry;

#[cfg(feature = "postgres")]
pub mod db;

#[cfg(feature = "mimalloc")]
pub mod allocator;

#[cfg(feature = "http")]
pub mod auth;
#[cfg(feature = "http")]
pub mod body;
#[cfg(feature = "http")]
pub mod checks;
#[cfg(feature = "http")]
pub mod error;
#[cfg(feature = "http")]
pub mod probes;
#[cfg(feature = "http")]
pub mod request_id;
#[cfg(feature = "http")]
pub mod server;

/// Re-exported for [`metrics!`].
pub use prometheus;

#[cfg(feature = "http")]
pub use error::{AppError, ErrorKind};
