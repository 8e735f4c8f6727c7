//! Errors as JSON: `{"error": {"message", "type", "param", "code"}}`, `param` naming the
//! path segment, query parameter or field at fault.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { param: &'static str, code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{message}")]
    TooLarge { param: &'static str, message: String },
    #[error("service temporarily unavailable: {0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn bad(param: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { param, code, message: message.into() }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (kind, param, code) = match self {
            Self::BadRequest { param, code, .. } => ("invalid_request_error", Some(*param), Some(*code)),
            Self::NotFound(_) => ("not_found", None, None),
            Self::Forbidden(_) => ("permission_error", None, None),
            Self::MethodNotAllowed(_) => ("invalid_request_error", None, Some("method_not_allowed")),
            Self::Unauthorized(_) => ("authentication_error", None, None),
            Self::TooLarge { param, .. } => ("invalid_request_error", Some(*param), Some("too_large")),
            Self::Unavailable(_) => ("service_unavailable", None, None),
        };
        HttpResponse::build(self.status_code())
            .json(json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}}))
    }
}
