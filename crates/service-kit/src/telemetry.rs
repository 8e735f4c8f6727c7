//! Structured logging, Prometheus rendering, the shutdown signal and the `healthcheck`
//! subcommand.

use prometheus::{Encoder, Registry, TextEncoder};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSection};

/// Installs the global tracing subscriber: JSON lines or readable text, as configured.
/// `RUST_LOG` overrides the configured level. In JSON, the fields of the spans an event
/// happened in (a request's `request_id`) are part of its line. Safe to call more than once.
pub fn init_tracing(logging: &LoggingSection) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&logging.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let result = match logging.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second initialisation (tests start several services in one process) is not an error.
    drop(result);
}

/// Renders a registry in the Prometheus text exposition format.
pub fn render_metrics(registry: &Registry) -> String {
    let mut buf = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %err, "failed to encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// The Prometheus text format's content type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A flag that turns true on SIGTERM or Ctrl-C: the graceful-shutdown signal every
/// binary passes down to its loops.
pub fn shutdown_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested, finishing work in hand");
        tx.send_replace(true);
    });
    rx
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => drop(tokio::signal::ctrl_c().await),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    drop(tokio::signal::ctrl_c().await);
}

/// The `healthcheck` subcommand: exits with an error unless `GET /healthz` on this
/// machine's `port` answers 200 within two seconds.
pub async fn healthcheck(port: u16) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        anyhow::Ok(head)
    };
    let head = tokio::time::timeout(std::time::Duration::from_secs(2), probe).await??;
    anyhow::ensure!(&head[9..12] == b"200", "healthz answered {}", String::from_utf8_lossy(&head));
    Ok(())
}
