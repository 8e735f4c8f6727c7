//! Validation of an incoming chat completion request and the call context headers.

use actix_web::HttpRequest;
use common_models::ids::InterviewId;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use service_kit::AppError;

/// Optional headers that say what a call was for; stored with its log row.
pub const INTERVIEW_ID_HEADER: &str = "x-interview-id";
pub const ACTION_HEADER: &str = "x-action";
pub const DEFAULT_ACTION: &str = "chat_completion";

/// The request as the gateway checks it; any other field goes upstream untouched.
#[derive(utoipa::ToSchema)]
#[schema(examples(json!({"model": "gpt-4o-mini", "temperature": 0, "messages": [
    {"role": "user", "content": "Summarise this CV in two sentences: …"}
]})))]
#[allow(dead_code)]
pub struct ChatCompletionRequest {
    /// A model the gateway serves (with its dated versions).
    #[schema(min_length = 1)]
    model: String,
    /// Objects with a string `role`; at least one.
    #[schema(min_items = 1)]
    messages: Vec<ChatMessage>,
    stream: Option<bool>,
    /// 1 to the gateway's cap.
    #[schema(minimum = 1)]
    max_tokens: Option<u64>,
    #[schema(minimum = 1)]
    max_completion_tokens: Option<u64>,
    temperature: Option<f64>,
    /// Choices, 1 to the gateway's cap (each is billed).
    #[schema(minimum = 1)]
    n: Option<u64>,
}

/// One message of a conversation.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, …
    role: String,
    content: Option<serde_json::Value>,
}

/// The upstream's answer, relayed unchanged (the fields the gateway reads).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ChatCompletion {
    id: Option<String>,
    model: Option<String>,
    choices: Vec<serde_json::Value>,
    /// Tokens counted, for the log and the cost.
    usage: Option<serde_json::Value>,
}

/// A validated request. The body is forwarded as the client sent it; only a stream
/// request is rewritten (to ask for usage).
pub struct ChatRequest {
    body: bytes::Bytes,
    pub model: String,
    pub stream: bool,
    /// Temperature 0, not streamed, one choice: the same request may be answered
    /// from the LLM results cache.
    pub deterministic: bool,
}

/// The fields the gateway checks, read without building the whole JSON tree: message
/// contents (the bulk of a request) are skipped, not copied.
#[derive(Deserialize)]
struct RequestView<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow)]
    n: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageView<'a> {
    #[serde(borrow)]
    role: Option<&'a RawValue>,
}

fn is_json_string(v: &RawValue) -> bool {
    v.get().starts_with('"')
}

impl ChatRequest {
    pub fn parse(body: bytes::Bytes, max_tokens_cap: u64, max_choices: u64) -> Result<Self, AppError> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            // Valid JSON or not, anything but an object is the wrong shape.
            if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
                return Err(AppError::bad_body("invalid_body", "request body must be a JSON object"));
            }
        }
        let view: RequestView<'_> = serde_json::from_slice(&body)
            .map_err(|e| AppError::bad_body("invalid_json", format!("request body is not valid JSON: {e}")))?;
        let model = match view.model {
            Some(v) if is_json_string(v) => {
                let m: String = serde_json::from_str(v.get()).map_err(AppError::internal)?;
                if m.trim().is_empty() {
                    return Err(AppError::bad_request("model", "invalid_value", "`model` must not be empty"));
                }
                m
            }
            Some(v) if v.get() != "null" => {
                return Err(AppError::bad_request("model", "invalid_type", "`model` must be a string"));
            }
            _ => return Err(AppError::bad_request("model", "missing_field", "`model` is required")),
        };
        let Some(messages) = view.messages.filter(|v| v.get() != "null") else {
            return Err(AppError::bad_request("messages", "missing_field", "`messages` is required"));
        };
        if !messages.get().starts_with('[') {
            return Err(AppError::bad_request("messages", "invalid_type", "`messages` must be an array"));
        }
        let messages: Vec<&RawValue> = serde_json::from_str(messages.get()).map_err(AppError::internal)?;
        if messages.is_empty() {
            return Err(AppError::bad_request("messages", "invalid_value", "`messages` must not be empty"));
        }
        for (i, m) in messages.iter().enumerate() {
            let role = serde_json::from_str::<MessageView<'_>>(m.get()).ok().and_then(|v| v.role);
            if !role.is_some_and(is_json_string) {
                return Err(AppError::bad_request(
                    format!("messages[{i}].role"),
                    "missing_field",
                    format!("`messages[{i}]` must be an object with a string `role`"),
                ));
            }
        }
        let stream = match view.stream.map(RawValue::get) {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(AppError::bad_request("stream", "invalid_type", "`stream` must be a boolean")),
        };
        for (field, value) in [("max_tokens", view.max_tokens), ("max_completion_tokens", view.max_completion_tokens)] {
            match value.map(RawValue::get) {
                None | Some("null") => {}
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (1..=max_tokens_cap).contains(&n) => {}
                    _ => {
                        return Err(AppError::bad_request(
                            field,
                            "invalid_value",
                            format!("`{field}` must be an integer between 1 and {max_tokens_cap}"),
                        ));
                    }
                },
            }
        }
        if let Some(opts) = view.stream_options.map(RawValue::get)
            && opts != "null"
            && !opts.starts_with('{')
        {
            return Err(AppError::bad_request("stream_options", "invalid_type", "`stream_options` must be an object"));
        }
        match view.n.map(RawValue::get) {
            None | Some("null") => {}
            Some(v) if v.parse::<u64>().is_ok_and(|n| (1..=max_choices).contains(&n)) => {}
            Some(_) => {
                return Err(AppError::bad_request(
                    "n",
                    "invalid_value",
                    format!("`n` must be an integer between 1 and {max_choices}"),
                ));
            }
        }
        let temperature_zero = view.temperature.and_then(|t| t.get().parse::<f64>().ok()) == Some(0.0);
        let one_choice = view.n.is_none_or(|n| matches!(n.get(), "1" | "null"));
        Ok(Self { body, model, stream, deterministic: !stream && temperature_zero && one_choice })
    }

    /// Bytes of the request body as received.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// The LLM results cache key: the company and the whole request, canonical (object
    /// keys sorted), hashed. The company is part of it so tenants never share answers.
    pub fn cache_key(&self, company: common_models::ids::CompanyId) -> Option<String> {
        use sha2::{Digest, Sha256};
        let canonical = sorted(serde_json::from_slice(&self.body).ok()?);
        let mut hasher = Sha256::new();
        hasher.update(company.0.to_be_bytes());
        hasher.update(serde_json::to_vec(&canonical).ok()?);
        Some(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The body sent upstream: the client's own bytes, except that a stream asks for
    /// usage, so tokens and cost can be logged (the client then sees the usage chunk
    /// too, as the upstream sends it).
    pub fn upstream_body(self) -> Result<bytes::Bytes, AppError> {
        if !self.stream {
            return Ok(self.body);
        }
        let mut body: Map<String, Value> = serde_json::from_slice(&self.body).map_err(AppError::internal)?;
        let opts = body.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(o) = opts {
            o.insert("include_usage".into(), Value::Bool(true));
        } else {
            *opts = serde_json::json!({"include_usage": true});
        }
        serde_json::to_vec(&body).map(bytes::Bytes::from).map_err(AppError::internal)
    }
}

/// `value` with every object's keys in sorted order, whether or not serde_json keeps
/// insertion order (its `preserve_order` feature, which any crate in a build can turn on).
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// What the optional headers say about the call.
pub struct CallContext {
    pub interview_id: Option<InterviewId>,
    pub action: String,
}

impl CallContext {
    pub fn from_headers(req: &HttpRequest) -> Result<Self, AppError> {
        let header = |name: &'static str| -> Result<Option<&str>, AppError> {
            match req.headers().get(name) {
                None => Ok(None),
                Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
                    AppError::bad_request(name, "invalid_header", format!("`{name}` must be visible ASCII"))
                }),
            }
        };
        let interview_id = match header(INTERVIEW_ID_HEADER)? {
            None => None,
            Some(v) => match v.parse::<i64>() {
                Ok(id) if id > 0 => Some(InterviewId(id)),
                _ => {
                    return Err(AppError::bad_request(
                        INTERVIEW_ID_HEADER,
                        "invalid_header",
                        format!("`{INTERVIEW_ID_HEADER}` must be a positive integer"),
                    ));
                }
            },
        };
        let action = match header(ACTION_HEADER)? {
            None => DEFAULT_ACTION.to_owned(),
            Some(a)
                if !a.is_empty()
                    && a.len() <= 100
                    && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b)) =>
            {
                a.to_owned()
            }
            Some(_) => {
                return Err(AppError::bad_request(
                    ACTION_HEADER,
                    "invalid_header",
                    format!("`{ACTION_HEADER}` must be 1-100 characters of letters, digits, `_`, `.`, `:` or `-`"),
                ));
            }
        };
        Ok(Self { interview_id, action })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(err: AppError) -> Option<String> {
        match err.kind() {
            service_kit::ErrorKind::BadRequest => err.param().map(str::to_owned),
            _ => Some("not a bad request".into()),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let p = |body: &str| ChatRequest::parse(bytes::Bytes::from(body.to_owned()), 100, 4).err().and_then(param_of);
        assert_eq!(p(r#"{"messages":[{"role":"user","content":"hi"}]}"#), Some("model".into()));
        assert_eq!(p(r#"{"model":"m"}"#), Some("messages".into()));
        assert_eq!(p(r#"{"model":"m","messages":[{"content":"x"}]}"#), Some("messages[0].role".into()));
        assert_eq!(p(r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#), Some("stream".into()));
        assert_eq!(p(r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":101}"#), Some("max_tokens".into()));
        assert_eq!(p("[1]"), None);
        assert_eq!(p(r#"{"model":7,"messages":[{"role":"user"}]}"#), Some("model".into()));
        assert_eq!(p(r#"{"model":"m","messages":{"role":"user"}}"#), Some("messages".into()));
        assert_eq!(p(r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":-1}"#), Some("max_tokens".into()));
        // Each choice is billed: n is capped (4 here).
        assert_eq!(p(r#"{"model":"m","messages":[{"role":"user"}],"n":5}"#), Some("n".into()));
        assert_eq!(p(r#"{"model":"m","messages":[{"role":"user"}],"n":0}"#), Some("n".into()));
        assert_eq!(p(r#"{"model":"m","messages":[{"role":"user"}],"n":"2"}"#), Some("n".into()));
        let four = r#"{"model":"m","messages":[{"role":"user"}],"n":4}"#;
        assert!(ChatRequest::parse(bytes::Bytes::from_static(four.as_bytes()), 100, 4).is_ok());
        assert_eq!(
            p(r#"{"model":"m","messages":[{"role":"user"}],"stream_options":1}"#),
            Some("stream_options".into())
        );
    }

    #[test]
    fn only_temperature_zero_single_choice_plain_requests_are_cacheable() -> Result<(), AppError> {
        let parse = |b: &'static str| ChatRequest::parse(bytes::Bytes::from_static(b.as_bytes()), 10, 4);
        assert!(parse(r#"{"model":"m","messages":[{"role":"user"}],"temperature":0}"#)?.deterministic);
        assert!(parse(r#"{"model":"m","messages":[{"role":"user"}],"temperature":0.0,"n":1}"#)?.deterministic);
        assert!(!parse(r#"{"model":"m","messages":[{"role":"user"}]}"#)?.deterministic);
        assert!(!parse(r#"{"model":"m","messages":[{"role":"user"}],"temperature":0.7}"#)?.deterministic);
        assert!(!parse(r#"{"model":"m","messages":[{"role":"user"}],"temperature":0,"n":2}"#)?.deterministic);
        assert!(!parse(r#"{"model":"m","messages":[{"role":"user"}],"temperature":0,"stream":true}"#)?.deterministic);
        // Key order does not matter; the company does.
        let a = parse(r#"{"model":"m","messages":[{"role":"user"}],"temperature":0}"#)?;
        let b = parse(r#"{"temperature":0, "messages":[{"role":"user"}], "model":"m"}"#)?;
        let c = common_models::ids::CompanyId(1);
        assert_eq!(a.cache_key(c), b.cache_key(c));
        assert_ne!(a.cache_key(c), a.cache_key(common_models::ids::CompanyId(2)));
        let nested = parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0}"#)?;
        let reordered = parse(r#"{"model":"m","messages":[{"content":"x","role":"user"}],"temperature":0}"#)?;
        assert_eq!(nested.cache_key(c), reordered.cache_key(c));
        Ok(())
    }

    #[test]
    fn plain_requests_are_forwarded_byte_for_byte() -> Result<(), AppError> {
        let raw = br#"{ "model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0 }"#;
        let req = ChatRequest::parse(bytes::Bytes::from_static(raw), 10, 4)?;
        assert!(!req.stream);
        assert_eq!(req.upstream_body()?.as_ref(), raw);
        Ok(())
    }

    #[test]
    fn streams_ask_for_usage() -> Result<(), AppError> {
        let req = ChatRequest::parse(
            bytes::Bytes::from_static(br#"{"model":"m","messages":[{"role":"user"}],"stream":true}"#),
            10,
            4,
        )?;
        assert!(req.stream);
        let body: Value = serde_json::from_slice(&req.upstream_body()?).map_err(AppError::internal)?;
        assert_eq!(body["stream_options"]["include_usage"], Value::Bool(true));
        Ok(())
    }
}
