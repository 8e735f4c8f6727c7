//! Relays an upstream server-sent-event stream to the client byte for byte, while
//! reading along to note the time to first token, the usage chunk and the finish
//! reason.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use common_models::events::LlmErrorType;
use futures_util::Stream;
use serde::Deserialize;

use crate::llm::record::{CallGuard, CallRecord, Usage, UsageView};

type Upstream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

pub struct RelayedStream {
    upstream: Upstream,
    guard: CallGuard,
    /// Bytes of an incomplete line carried over to the next chunk.
    partial: Vec<u8>,
}

impl RelayedStream {
    pub fn new(upstream: Upstream, guard: CallGuard) -> Self {
        Self { upstream, guard, partial: Vec::new() }
    }

    fn read_along(&mut self, chunk: &[u8]) {
        let Some(record) = self.guard.record() else { return };
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(pos);
            rest = &tail[1..];
            if self.partial.is_empty() {
                observe_line(record, line);
            } else {
                self.partial.extend_from_slice(line);
                let whole = std::mem::take(&mut self.partial);
                observe_line(record, &whole);
            }
        }
        self.partial.extend_from_slice(rest);
    }
}

#[derive(Deserialize)]
struct ChunkView {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChoiceView>,
    usage: Option<UsageView>,
}

#[derive(Deserialize)]
struct ChoiceView {
    delta: Option<DeltaView>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct DeltaView {
    content: Option<String>,
    tool_calls: Option<serde_json::Value>,
}

fn observe_line(record: &mut CallRecord, line: &[u8]) {
    let Some(data) = line.strip_prefix(b"data:") else { return };
    let data = data.trim_ascii();
    if data.is_empty() || data == b"[DONE]" {
        return;
    }
    let Ok(chunk) = serde_json::from_slice::<ChunkView>(data) else { return };
    if record.upstream_id.is_none() {
        record.upstream_id = chunk.id;
    }
    if record.response_model.is_none() {
        record.response_model = chunk.model;
    }
    for choice in &chunk.choices {
        let produced = choice
            .delta
            .as_ref()
            .is_some_and(|d| d.content.as_deref().is_some_and(|c| !c.is_empty()) || d.tool_calls.is_some());
        if produced && record.first_token_at.is_none() {
            record.first_token_at = Some(Instant::now());
        }
        if let Some(text) = choice.delta.as_ref().and_then(|d| d.content.as_deref()) {
            record.relayed_bytes += text.len();
        }
        if let Some(reason) = &choice.finish_reason {
            record.finish_reason = Some(reason.clone());
        }
    }
    if let Some(usage) = chunk.usage.as_ref().and_then(Usage::from_view) {
        record.usage = Some(usage);
    }
}

impl Stream for RelayedStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.upstream.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.read_along(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(err))) => {
                let kind =
                    if err.is_timeout() { LlmErrorType::UpstreamTimeout } else { LlmErrorType::UpstreamProtocolError };
                if let Some(record) = self.guard.record() {
                    record.fail(kind, format!("upstream stream broke off: {err}"));
                }
                self.guard.finish();
                Poll::Ready(Some(Err(std::io::Error::other(err))))
            }
            Poll::Ready(None) => {
                self.guard.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
