//! Extraction in a child process. The child (`cv-processor extract`) limits itself
//! before it reads a byte: address space, CPU time, no file writes; the parent sends
//! the file on stdin, reads one JSON [`Outcome`] from stdout and kills the child at a
//! wall-clock deadline. A child that dies (stack overflow, out of memory, killed)
//! becomes a failure with its reason; the service itself never runs the readers.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::extract::{Limits, Outcome};

/// How a child is run.
#[derive(Debug, Clone, Deserialize)]
pub struct SandboxConfig {
    /// The program to run as `<program> extract`; empty: this executable.
    #[serde(default)]
    pub program: Option<PathBuf>,
    /// Address space of the child.
    #[serde(deserialize_with = "service_kit::config::bytes")]
    pub memory: usize,
    /// CPU time of the child.
    #[serde(deserialize_with = "service_kit::config::duration")]
    pub cpu: Duration,
    /// Wall-clock time before the child is killed.
    #[serde(deserialize_with = "service_kit::config::duration")]
    pub wall: Duration,
    #[serde(default)]
    pub limits: Limits,
}

/// Largest answer read back from a child (its text is capped well below).
const MAX_ANSWER: u64 = 16 << 20;

/// Runs the extractor on `bytes` in a child process.
pub async fn extract(config: &SandboxConfig, bytes: Vec<u8>) -> anyhow::Result<Outcome> {
    let program = match &config.program {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let mut child = tokio::process::Command::new(program)
        .arg("extract")
        .arg("--memory")
        .arg(config.memory.to_string())
        .arg("--cpu-secs")
        .arg(config.cpu.as_secs().max(1).to_string())
        .arg("--limits")
        .arg(serde_json::to_string(&config.limits)?)
        .env_clear()
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        anyhow::bail!("the extractor's pipes were not opened");
    };
    let feed = tokio::spawn(async move {
        // A child that dies early closes its stdin: that is reported by its status.
        let _ = stdin.write_all(&bytes).await;
    });
    let run = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (mut stdout, mut stderr) = (stdout.take(MAX_ANSWER), stderr.take(64 * 1024));
        let (read_out, read_err) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        read_out?;
        read_err?;
        let status = child.wait().await?;
        anyhow::Ok((status, out, err))
    };
    let result = tokio::time::timeout(config.wall, run).await;
    feed.abort();
    let (status, out, err) = match result {
        Ok(done) => done?,
        Err(_) => {
            // kill_on_drop ends it; the reason is ours to give.
            return Ok(Outcome::Failed(format!(
                "reading the file took longer than {} s and was stopped",
                config.wall.as_secs()
            )));
        }
    };
    if status.success()
        && let Ok(outcome) = serde_json::from_slice::<Outcome>(&out)
    {
        return Ok(outcome);
    }
    let stderr = String::from_utf8_lossy(&err);
    tracing::warn!(status = %status, stderr = %stderr.chars().take(500).collect::<String>(), "the extractor died");
    Ok(Outcome::Failed(death_reason(status, &stderr)))
}

/// Why a child died, in words for a recruiter.
fn death_reason(status: std::process::ExitStatus, stderr: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    if stderr.contains("overflowed its stack") {
        return "the file is nested too deeply to be read safely (its structure is malformed or hostile)".to_owned();
    }
    if stderr.contains("memory allocation") || stderr.contains("out of memory") || stderr.contains("capacity overflow")
    {
        return "reading the file needed more memory than a CV may use (a decompression bomb?)".to_owned();
    }
    match status.signal() {
        Some(24) | Some(9) => "reading the file took too much processing time and was stopped".to_owned(),
        Some(_) => {
            "the file could not be read: the reader crashed on its structure (damaged or hostile file)".to_owned()
        }
        None => format!("the file could not be read (the reader ended with status {})", status.code().unwrap_or(-1)),
    }
}

/// The child's side: limit this process, read the file from stdin, print the outcome.
pub fn run_child(memory: u64, cpu_secs: u64, limits: &Limits) -> anyhow::Result<()> {
    use rlimit::Resource;
    use std::io::{Read, Write};
    Resource::AS.set(memory, memory)?;
    Resource::CPU.set(cpu_secs, cpu_secs + 1)?;
    Resource::FSIZE.set(0, 0)?;
    Resource::CORE.set(0, 0)?;
    // Panics are turned into failures below; their messages are noise on stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes)?;
    let outcome = std::panic::catch_unwind(|| crate::extract::extract(&bytes, limits)).unwrap_or_else(|_| {
        Outcome::Failed("the file could not be read: the reader failed on its structure (damaged file)".to_owned())
    });
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &outcome)?;
    out.flush()?;
    Ok(())
}
