//! One launcher for every service: each exposes `run(settings, listener, shutdown)`;
//! this starts it in-process on a free loopback port, waits until `/healthz` answers, and
//! stops it (gracefully, as SIGTERM would) when asked.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Service {
    pub name: String,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Starts `run` (a service's `run` with its settings bound) and waits until it
    /// answers `/healthz`, failing early with the service's own error if it stops.
    pub async fn start<F, Fut>(name: &str, run: F) -> anyhow::Result<Self>
    where
        F: FnOnce(TcpListener, watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let listener = crate::local_listener()?;
        let addr = listener.local_addr()?;
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(run(listener, rx));
        let service = Self { name: name.to_owned(), addr, url: format!("http://{addr}"), stop, task };
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let probe = format!("{}/healthz", service.url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if client.get(&probe).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(service);
            }
            if service.task.is_finished() {
                let outcome = service.task.await?;
                anyhow::bail!("{name} stopped before answering: {outcome:?}");
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "{name} did not answer /healthz within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Signals shutdown and waits (at most 30 s) for the service to finish its work.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .map_err(|_| anyhow::anyhow!("{} did not stop within 30 s", self.name))??
    }
}
