//! The gateway's one error type. Every error leaves as JSON in the OpenAI shape
//! (`{"error": {"message", "type", "param", "code"}}`), so OpenAI SDKs show it as-is;
//! `param` names the offending field or header.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input: `param` is the field or header at fault.
    #[error("{message}")]
    BadRequest { param: Option<String>, code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The upstream LLM did not answer: 502 (unreachable) or 504 (timed out).
    #[error("{message}")]
    Upstream { status: StatusCode, message: String },
    /// A dependency (database, pool) is down or exhausted.
    #[error("service temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(param: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { param: Some(param.into()), code, message: message.into() }
    }

    pub fn bad_body(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { param: None, code, message: message.into() }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } | Self::PayloadTooLarge { .. } => "invalid_request_error",
            Self::Unauthorized(_) => "authentication_error",
            Self::Forbidden(_) => "permission_error",
            Self::Upstream { .. } => "upstream_error",
            Self::Unavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Upstream { status, .. } => *status,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(err) = self {
            tracing::error!(error = ?err, "internal error");
        }
        let (param, code) = match self {
            Self::BadRequest { param, code, .. } => (param.clone(), Some(*code)),
            Self::PayloadTooLarge { .. } => (None, Some("body_too_large")),
            Self::Unauthorized(_) => (None, Some("invalid_api_key")),
            _ => (None, None),
        };
        let mut builder = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized(_)) {
            builder.insert_header(("www-authenticate", "Bearer"));
        }
        builder.json(json!({
            "error": {"message": self.to_string(), "type": self.kind(), "param": param, "code": code}
        }))
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Internal(err.into())
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for ApiError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::Unavailable(format!("main database: {err}"))
    }
}

/// Turns actix's JSON extractor errors into our 400/413 shape.
pub fn json_config(limit: usize) -> actix_web::web::JsonConfig {
    actix_web::web::JsonConfig::default().limit(limit).error_handler(move |err, _req| {
        use actix_web::error::JsonPayloadError;
        let api = match &err {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                ApiError::PayloadTooLarge { limit }
            }
            JsonPayloadError::ContentType => {
                ApiError::bad_body("invalid_content_type", "Content-Type must be application/json")
            }
            JsonPayloadError::Deserialize(e) => {
                ApiError::bad_body("invalid_json", format!("invalid request body: {e}"))
            }
            other => ApiError::bad_body("invalid_body", format!("invalid request body: {other}")),
        };
        actix_web::error::InternalError::from_response(err, api.error_response()).into()
    })
}
