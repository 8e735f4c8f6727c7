//! One of our binaries as a real process, for tests that kill it (SIGKILL: nothing is
//! flushed) or read its logs.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct ServiceProcess {
    pub url: String,
    pub child: tokio::process::Child,
    /// Where its stdout (the JSON log) goes.
    pub log: PathBuf,
}

impl ServiceProcess {
    /// Starts `program` with `env` (and nothing else of this process's environment, but
    /// `PORT` and `BIND_HOST` for a free local port and `LOG_FORMAT=json`), appending its
    /// stdout to `log`, and waits until its `/healthz` answers.
    pub async fn start(program: &Path, env: &[(&str, String)], log: PathBuf) -> anyhow::Result<Self> {
        let port = crate::local_listener()?.local_addr()?.port();
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let child = tokio::process::Command::new(program)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("PORT", port.to_string())
            .env("BIND_HOST", "127.0.0.1")
            .env("LOG_FORMAT", "json")
            .stdout(out)
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let what = format!("{} to answer", program.display());
        crate::wait_for(Duration::from_secs(30), &what, || async {
            client.get(format!("{url}/healthz")).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await?;
        Ok(Self { url, child, log })
    }

    /// SIGKILL: nothing is flushed.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    pub fn log_lines(&self) -> anyhow::Result<Vec<String>> {
        Ok(std::fs::read_to_string(&self.log)?.lines().map(str::to_owned).collect())
    }
}
