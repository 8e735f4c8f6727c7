//! Validation of an incoming chat completion request and the call context headers.

use actix_web::HttpRequest;
use common_models::ids::InterviewId;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Optional headers that say what a call was for; stored with its log row.
pub const INTERVIEW_ID_HEADER: &str = "x-interview-id";
pub const ACTION_HEADER: &str = "x-action";
pub const DEFAULT_ACTION: &str = "chat_completion";

/// A validated request, still as JSON: the gateway forwards what it does not understand.
pub struct ChatRequest {
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
}

impl ChatRequest {
    pub fn parse(bytes: &[u8], max_tokens_cap: u64) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_body("invalid_json", format!("request body is not valid JSON: {e}")))?;
        let Value::Object(body) = value else {
            return Err(ApiError::bad_body("invalid_body", "request body must be a JSON object"));
        };
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
            Some(Value::String(_)) => return Err(ApiError::bad_request("model", "invalid_value", "`model` must not be empty")),
            Some(_) => return Err(ApiError::bad_request("model", "invalid_type", "`model` must be a string")),
            None => return Err(ApiError::bad_request("model", "missing_field", "`model` is required")),
        };
        match body.get("messages") {
            Some(Value::Array(messages)) if !messages.is_empty() => {
                for (i, m) in messages.iter().enumerate() {
                    if !m.get("role").is_some_and(Value::is_string) {
                        return Err(ApiError::bad_request(
                            format!("messages[{i}].role"),
                            "missing_field",
                            format!("`messages[{i}]` must be an object with a string `role`"),
                        ));
                    }
                }
            }
            Some(Value::Array(_)) => {
                return Err(ApiError::bad_request("messages", "invalid_value", "`messages` must not be empty"));
            }
            Some(_) => return Err(ApiError::bad_request("messages", "invalid_type", "`messages` must be an array")),
            None => return Err(ApiError::bad_request("messages", "missing_field", "`messages` is required")),
        }
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ApiError::bad_request("stream", "invalid_type", "`stream` must be a boolean")),
        };
        for field in ["max_tokens", "max_completion_tokens"] {
            match body.get(field) {
                None | Some(Value::Null) => {}
                Some(v) => match v.as_u64() {
                    Some(n) if (1..=max_tokens_cap).contains(&n) => {}
                    Some(_) | None => {
                        return Err(ApiError::bad_request(
                            field,
                            "invalid_value",
                            format!("`{field}` must be an integer between 1 and {max_tokens_cap}"),
                        ));
                    }
                },
            }
        }
        if let Some(opts) = body.get("stream_options")
            && !opts.is_object()
            && !opts.is_null()
        {
            return Err(ApiError::bad_request("stream_options", "invalid_type", "`stream_options` must be an object"));
        }
        Ok(Self { body, model, stream })
    }

    /// The body sent upstream. Streams ask for usage, so tokens and cost can be logged;
    /// the client then sees the usage chunk too, as the upstream sends it.
    pub fn upstream_body(mut self) -> Result<Vec<u8>, ApiError> {
        if self.stream {
            let opts = self.body.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(o) = opts {
                o.insert("include_usage".into(), Value::Bool(true));
            } else {
                *opts = serde_json::json!({"include_usage": true});
            }
        }
        serde_json::to_vec(&self.body).map_err(|e| ApiError::Internal(e.into()))
    }
}

/// What the optional headers say about the call.
pub struct CallContext {
    pub interview_id: Option<InterviewId>,
    pub action: String,
}

impl CallContext {
    pub fn from_headers(req: &HttpRequest) -> Result<Self, ApiError> {
        let header = |name: &str| -> Result<Option<&str>, ApiError> {
            match req.headers().get(name) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .map(|s| Some(s.trim()))
                    .map_err(|_| ApiError::bad_request(name, "invalid_header", format!("`{name}` must be visible ASCII"))),
            }
        };
        let interview_id = match header(INTERVIEW_ID_HEADER)? {
            None => None,
            Some(v) => match v.parse::<i64>() {
                Ok(id) if id > 0 => Some(InterviewId(id)),
                _ => {
                    return Err(ApiError::bad_request(
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
                return Err(ApiError::bad_request(
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

    fn param_of(err: ApiError) -> Option<String> {
        match err {
            ApiError::BadRequest { param, .. } => param,
            _ => Some("not a bad request".into()),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let p = |body: &str| ChatRequest::parse(body.as_bytes(), 100).err().and_then(param_of);
        assert_eq!(p(r#"{"messages":[{"role":"user","content":"hi"}]}"#), Some("model".into()));
        assert_eq!(p(r#"{"model":"m"}"#), Some("messages".into()));
        assert_eq!(p(r#"{"model":"m","messages":[{"content":"x"}]}"#), Some("messages[0].role".into()));
        assert_eq!(p(r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#), Some("stream".into()));
        assert_eq!(p(r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":101}"#), Some("max_tokens".into()));
        assert_eq!(p("[1]"), None);
    }

    #[test]
    fn streams_ask_for_usage() -> Result<(), ApiError> {
        let req = ChatRequest::parse(br#"{"model":"m","messages":[{"role":"user"}],"stream":true}"#, 10)?;
        assert!(req.stream);
        let body: Value = serde_json::from_slice(&req.upstream_body()?).map_err(|e| ApiError::Internal(e.into()))?;
        assert_eq!(body["stream_options"]["include_usage"], Value::Bool(true));
        Ok(())
    }
}
