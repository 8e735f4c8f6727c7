//! **A simulator, not a model.** A small server that speaks the OpenAI chat
//! completions protocol (plain JSON and server-sent events), so the gateway can be
//! tested, benchmarked and run locally without a real provider. Its answers are
//! canned; what it lets you control is the protocol's behaviour: latency, stream
//! pacing, whether usage is reported, injected errors, and a count of requests. It
//! also answers `/v1/embeddings` with hashed bag-of-words vectors ([`EMBEDDING_DIM`]
//! dimensions): not a model's meaning, but the real wire format, deterministic, and
//! texts sharing words come out close. A request with a `json_schema` response format
//! is answered with JSON built from the schema (every property, the first enum value,
//! numbers in the middle of their range), or with malformed text while
//! [`Behaviour::malformed_structured_answers`] counts down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use futures_util::stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How the simulator behaves. Changeable while it runs (see [`Simulator::configure`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Behaviour {
    /// Delay before the response (or the first stream chunk).
    pub latency_ms: u64,
    /// Delay between stream chunks.
    pub chunk_delay_ms: u64,
    /// Report `usage` (plain responses always; streams when asked by
    /// `stream_options.include_usage`). False simulates a provider that never does.
    pub report_usage: bool,
    /// Answer every request with this HTTP status and an OpenAI-style error body.
    pub fail_with_status: Option<u16>,
    /// Content pieces per answer (each one stream chunk).
    pub answer_pieces: usize,
    /// Structured-output requests answered with text that is not the schema's JSON,
    /// before the simulator answers them properly again (counts down).
    pub malformed_structured_answers: u64,
    /// The share of prompt tokens reported as served from the prompt cache
    /// (`usage.prompt_tokens_details.cached_tokens`), 0-1.
    pub cached_prompt_share: f64,
    /// Reasoning tokens added to each answer's completion tokens and reported as such
    /// (`usage.completion_tokens_details.reasoning_tokens`).
    pub reasoning_tokens: u64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            chunk_delay_ms: 0,
            report_usage: true,
            fail_with_status: None,
            answer_pieces: 8,
            malformed_structured_answers: 0,
            cached_prompt_share: 0.0,
            reasoning_tokens: 0,
        }
    }
}

#[derive(Default)]
struct State {
    behaviour: RwLock<Behaviour>,
    requests: AtomicU64,
    /// The last answer sent, byte for byte (a stream's frames concatenated), so tests
    /// can check that a proxy relayed it unchanged.
    last_answer: RwLock<Vec<u8>>,
}

/// A running simulator.
pub struct Simulator {
    state: Arc<State>,
    pub addr: std::net::SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

impl Simulator {
    /// Starts the simulator on `listener` in the current runtime.
    pub fn start(listener: std::net::TcpListener, behaviour: Behaviour) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State { behaviour: RwLock::new(behaviour), ..State::default() });
        let server = build_server(listener, state.clone(), None)?;
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self { state, addr, handle })
    }

    /// The OpenAI-style base URL (`http://host:port/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Chat completion requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The last answer sent, byte for byte.
    pub fn last_answer(&self) -> Vec<u8> {
        self.state.last_answer.read().map(|a| a.clone()).unwrap_or_default()
    }

    pub fn configure(&self, change: impl FnOnce(&mut Behaviour)) {
        if let Ok(mut b) = self.state.behaviour.write() {
            change(&mut b);
        }
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// Builds the server for the binary (which runs it with signal handling on).
pub fn serve(listener: std::net::TcpListener, behaviour: Behaviour, workers: Option<usize>) -> std::io::Result<Server> {
    let state = Arc::new(State { behaviour: RwLock::new(behaviour), ..State::default() });
    build_server(listener, state, workers)
}

fn build_server(listener: std::net::TcpListener, state: Arc<State>, workers: Option<usize>) -> std::io::Result<Server> {
    let data = web::Data::from(state);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
            .route("/v1/chat/completions", web::post().to(chat_completions))
            .route("/v1/models", web::get().to(models))
            .route("/v1/embeddings", web::post().to(embeddings))
            .route("/simulator/stats", web::get().to(stats))
            .route("/simulator/behaviour", web::put().to(set_behaviour))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "ok"})) }))
    })
    .backlog(4096);
    if let Some(n) = workers {
        server = server.workers(n);
    }
    Ok(server.listen(listener)?.run())
}

fn remember(state: &State, answer: Vec<u8>) {
    if let Ok(mut last) = state.last_answer.write() {
        *last = answer;
    }
}

fn behaviour(state: &State) -> Behaviour {
    state.behaviour.read().map(|b| b.clone()).unwrap_or_default()
}

async fn stats(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"requests": state.requests.load(Ordering::SeqCst), "behaviour": behaviour(&state)}))
}

async fn set_behaviour(state: web::Data<State>, body: web::Json<Behaviour>) -> HttpResponse {
    if let Ok(mut b) = state.behaviour.write() {
        *b = body.into_inner();
    }
    HttpResponse::Ok().json(behaviour(&state))
}

async fn models() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "object": "list",
        "data": [{"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "simulator"}]
    }))
}

/// Dimensions of the simulator's embeddings.
pub const EMBEDDING_DIM: usize = 256;

/// A text as a unit vector of its hashed, lower-cased words.
pub fn hashed_embedding(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; EMBEDDING_DIM];
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        // FNV-1a: stable across runs and platforms.
        let hash = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        v[(hash % EMBEDDING_DIM as u64) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

async fn embeddings(state: web::Data<State>, body: Bytes) -> HttpResponse {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let b = behaviour(&state);
    if let Some(status) = b.fail_with_status {
        let code =
            actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
        return HttpResponse::build(code).json(error_body(status, "simulated failure"));
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().json(error_body(400, "the body is not JSON"));
    };
    let inputs: Vec<String> = match &request["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect()
        }
        _ => {
            return HttpResponse::BadRequest().json(error_body(400, "`input` must be a string or an array of strings"));
        }
    };
    let tokens: u64 = inputs.iter().map(|t| estimate_tokens(t)).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": hashed_embedding(text)}))
        .collect();
    HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "model": request["model"].as_str().unwrap_or("simulated-embedding"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    }))
}

/// Counts one malformed structured answer down; true when one was due.
fn take_malformed(state: &State) -> bool {
    let Ok(mut b) = state.behaviour.write() else { return false };
    if b.malformed_structured_answers == 0 {
        return false;
    }
    b.malformed_structured_answers -= 1;
    true
}

/// A value of JSON Schema `schema` (the subset structured outputs use): objects with
/// every property, arrays of their least length (at least one item), the first enum
/// value, numbers in the middle of their range, strings naming their property.
fn instance(schema: &Value, name: &str) -> Value {
    if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return first.clone();
    }
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    let middle = match (bound("minimum"), bound("maximum")) {
        (Some(lo), Some(hi)) => (lo + hi) / 2.0,
        (Some(lo), None) => lo,
        (None, Some(hi)) => hi.min(0.0),
        (None, None) => 0.0,
    };
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let fields = properties.into_iter().flatten().map(|(key, sub)| (key.clone(), instance(sub, key)));
            Value::Object(fields.collect())
        }
        Some("array") => {
            let least = schema.get("minItems").and_then(Value::as_u64).unwrap_or(1).max(1);
            let most = schema.get("maxItems").and_then(Value::as_u64).unwrap_or(least);
            let item = schema.get("items").cloned().unwrap_or(Value::Null);
            Value::Array((0..least.min(most.max(1))).map(|_| instance(&item, name)).collect())
        }
        Some("string") => json!(format!("simulated {name}")),
        Some("integer") => json!(middle.round() as i64),
        Some("number") => json!(middle),
        Some("boolean") => json!(true),
        _ => Value::Null,
    }
}

fn error_body(status: u16, message: &str) -> Value {
    let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

/// Rough token count: one token per four bytes of text, at least one.
fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
}

async fn chat_completions(req: HttpRequest, state: web::Data<State>, body: Bytes) -> HttpResponse {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let b = behaviour(&state);
    if b.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(b.latency_ms)).await;
    }
    if let Some(status) = b.fail_with_status {
        let code =
            actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = error_body(status, "simulated failure").to_string().into_bytes();
        remember(&state, body.clone());
        return HttpResponse::build(code).content_type("application/json").body(body);
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().json(error_body(400, "request body is not valid JSON"));
    };
    if req.headers().get("authorization").is_none() {
        return HttpResponse::Unauthorized().json(error_body(401, "missing API key"));
    }
    let model = request.get("model").and_then(Value::as_str).unwrap_or("gpt-4o-mini").to_owned();
    let prompt: String = request
        .get("messages")
        .and_then(Value::as_array)
        .map(|msgs| msgs.iter().filter_map(|m| m.get("content").and_then(Value::as_str)).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let last =
        prompt.split_whitespace().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" ");
    let schema = request
        .pointer("/response_format/json_schema/schema")
        .filter(|_| request.pointer("/response_format/type").and_then(Value::as_str) == Some("json_schema"));
    let pieces: Vec<String> = match schema {
        Some(_) if take_malformed(&state) => {
            vec![format!("Here is the assessment you asked for: {{\"score\": \"{last}")]
        }
        Some(schema) => vec![instance(schema, "answer").to_string()],
        None => (0..b.answer_pieces.max(1))
            .map(|i| if i == 0 { format!("Simulated answer to \"{last}\"") } else { format!(" part{i}") })
            .collect(),
    };
    let prompt_tokens = estimate_tokens(&prompt);
    let completion_tokens = pieces.len() as u64 + b.reasoning_tokens;
    let cached_tokens = (prompt_tokens as f64 * b.cached_prompt_share.clamp(0.0, 1.0)).floor() as u64;
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": b.reasoning_tokens}
    });
    let id = format!("chatcmpl-sim{}", state.requests.load(Ordering::SeqCst));
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);

    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage =
            b.report_usage && request.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
        let chunk = |delta: Value, finish: Value| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut events: Vec<Value> = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        events.extend(pieces.iter().map(|p| chunk(json!({"content": p}), Value::Null)));
        events.push(chunk(json!({}), json!("stop")));
        if include_usage {
            events.push(json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                               "choices": [], "usage": usage}));
        }
        let mut frames: Vec<Bytes> = events.iter().map(|e| Bytes::from(format!("data: {e}\n\n"))).collect();
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        remember(&state, frames.concat());
        let delay = Duration::from_millis(b.chunk_delay_ms);
        let body = stream::unfold((frames.into_iter(), true), move |(mut frames, first)| async move {
            let frame = frames.next()?;
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok::<_, actix_web::Error>(frame), (frames, false)))
        });
        return HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .streaming(body);
    }

    let mut answer = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": pieces.concat()}, "finish_reason": "stop"}],
    });
    if b.report_usage {
        answer["usage"] = usage;
    }
    let bytes = answer.to_string().into_bytes();
    remember(&state, bytes.clone());
    HttpResponse::Ok().content_type("application/json").body(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_instance_has_every_property_within_its_bounds() {
        let schema = json!({"type": "object", "properties": {
            "score": {"type": "integer", "minimum": 0, "maximum": 100},
            "verdict": {"type": "string", "enum": ["no", "yes"]},
            "notes": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "checks": {"type": "array", "items": {"type": "object", "properties": {"met": {"type": "boolean"}}}}
        }});
        assert_eq!(
            instance(&schema, "answer"),
            json!({"score": 50, "verdict": "no", "notes": ["simulated notes"], "checks": [{"met": true}]})
        );
    }
}
