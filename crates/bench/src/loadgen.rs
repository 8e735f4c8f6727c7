//! One closed-loop client for both sides of the cache comparison: it speaks RESP
//! (`GET key` to Redis) and HTTP/1.1 (`GET path` to cache-service), so the two are
//! measured with one meaning of latency, from writing a request to reading the last
//! byte of its answer, the next request on that connection written at once.
//!
//! The external tools do not share that meaning: redis-benchmark writes a client's next
//! request one event-loop turn after the answer and leaves that turn out, so its
//! connections carry fewer requests in flight than wrk's do at the same `-c`. Each
//! report says how many requests were in flight on average (Little's law:
//! throughput × mean latency), which makes the difference visible.
//!
//! One thread (a current-thread runtime), like redis-benchmark and `wrk -t1`; the
//! benchmark runs it as a child process so it can be pinned to a core.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What each request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// `GET <target>` in RESP; the key must exist.
    Redis,
    /// `GET <target> HTTP/1.1` on a kept-alive connection; the answer must be 200.
    Http,
}

/// Figures of one run; latencies in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub requests: u64,
    pub rps: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Requests in flight on average: rps × mean latency.
    pub in_flight: f64,
}

fn request_bytes(protocol: Protocol, target: &str) -> Vec<u8> {
    match protocol {
        Protocol::Redis => format!("*2\r\n$3\r\nGET\r\n${}\r\n{target}\r\n", target.len()).into_bytes(),
        Protocol::Http => format!("GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The length of the complete answer at the start of `buf`, `None` while it is partial.
fn answer_len(protocol: Protocol, buf: &[u8]) -> anyhow::Result<Option<usize>> {
    match protocol {
        Protocol::Redis => {
            let Some(eol) = find(buf, b"\r\n") else { return Ok(None) };
            let head = std::str::from_utf8(&buf[..eol])?;
            let len: i64 = head
                .strip_prefix('$')
                .ok_or_else(|| anyhow::anyhow!("expected a bulk string, got {head:?}"))?
                .parse()?;
            anyhow::ensure!(len >= 0, "the key does not exist");
            let total = eol + 2 + usize::try_from(len)? + 2;
            Ok((buf.len() >= total).then_some(total))
        }
        Protocol::Http => {
            let Some(end) = find(buf, b"\r\n\r\n") else { return Ok(None) };
            let head = std::str::from_utf8(&buf[..end])?;
            anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "unexpected answer: {head:?}");
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| anyhow::anyhow!("no content-length in {head:?}"))?;
            let total = end + 4 + length;
            Ok((buf.len() >= total).then_some(total))
        }
    }
}

/// One connection's loop: latencies (ns) of the requests started after `record_from`.
async fn connection(
    addr: SocketAddr,
    protocol: Protocol,
    request: std::sync::Arc<[u8]>,
    record_from: Instant,
    until: Instant,
) -> anyhow::Result<Vec<u32>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut latencies = Vec::with_capacity(1 << 16);
    loop {
        let started = Instant::now();
        if started >= until {
            return Ok(latencies);
        }
        stream.write_all(&request).await?;
        let mut filled = 0;
        loop {
            if let Some(total) = answer_len(protocol, &buf[..filled])? {
                anyhow::ensure!(total == filled, "more bytes than one answer");
                break;
            }
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let n = stream.read(&mut buf[filled..]).await?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            filled += n;
        }
        if started >= record_from {
            latencies.push(u32::try_from(started.elapsed().as_nanos()).unwrap_or(u32::MAX));
        }
    }
}

/// Runs `connections` connections for `warmup + duration` on this thread and reports
/// on the last `duration`.
pub fn run(
    addr: SocketAddr,
    protocol: Protocol,
    target: &str,
    connections: u32,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let request: std::sync::Arc<[u8]> = request_bytes(protocol, target).into();
    let mut latencies: Vec<u32> = runtime.block_on(async {
        let record_from = Instant::now() + warmup;
        let until = record_from + duration;
        let tasks: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(connection(addr, protocol, request.clone(), record_from, until)))
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await??);
        }
        anyhow::Ok(all)
    })?;
    anyhow::ensure!(!latencies.is_empty(), "no request completed");
    latencies.sort_unstable();
    let ms = |ns: u32| f64::from(ns) / 1e6;
    let at = |q: f64| ms(latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)]);
    let requests = latencies.len() as u64;
    let rps = requests as f64 / duration.as_secs_f64();
    let mean_ms = latencies.iter().map(|&ns| f64::from(ns)).sum::<f64>() / requests as f64 / 1e6;
    Ok(Report {
        requests,
        rps,
        mean_ms,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: latencies.last().copied().map_or(f64::NAN, ms),
        in_flight: rps * mean_ms / 1000.0,
    })
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn answers_are_complete_only_with_their_last_byte() {
        let resp = b"$5\r\nhello\r\n";
        assert_eq!(answer_len(Protocol::Redis, &resp[..9]).unwrap(), None);
        assert_eq!(answer_len(Protocol::Redis, resp).unwrap(), Some(resp.len()));
        assert!(answer_len(Protocol::Redis, b"$-1\r\n").is_err());

        let http = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nx: y\r\n\r\nabc";
        assert_eq!(answer_len(Protocol::Http, &http[..http.len() - 1]).unwrap(), None);
        assert_eq!(answer_len(Protocol::Http, http).unwrap(), Some(http.len()));
        assert!(answer_len(Protocol::Http, b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_err());
    }
}
