//! The one error type of every HTTP service. It leaves as JSON in the OpenAI shape
//! (`{"error": {"message", "type", "param", "code"}}`), so OpenAI SDKs show it as-is;
//! `param` names the field, header, path segment or query parameter at fault.
//!
//! `Unavailable` and `Internal` carry their cause for the log only: the client learns
//! that a dependency is down or that something failed, never the driver's text. The log
//! line is written inside the request's span, so it carries the request id the client
//! got in `X-Request-Id`.

use std::borrow::Cow;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// What went wrong, which decides the status and the `type` of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 400: malformed input.
    BadRequest,
    /// 401: no or unknown credentials.
    Unauthorized,
    /// 403: the operation is not allowed (or disabled).
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 409: the request contradicts what exists (a duplicate, a state it cannot leave).
    Conflict,
    /// 408: the request body did not arrive in time.
    RequestTimeout,
    /// 413: over a documented size limit.
    PayloadTooLarge,
    /// 429: over a rate limit (with `Retry-After`).
    TooManyRequests,
    /// 502: an upstream could not be reached or broke its answer.
    BadGateway,
    /// 504: an upstream did not answer in time.
    GatewayTimeout,
    /// 503: a dependency (database, Redis, pool) is down or exhausted.
    Unavailable,
    /// 500: a defect; the detail is logged, never sent.
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `type` of the JSON body.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::BadRequest
            | Self::PayloadTooLarge
            | Self::MethodNotAllowed
            | Self::RequestTimeout
            | Self::Conflict => "invalid_request_error",
            Self::Unauthorized => "authentication_error",
            Self::TooManyRequests => "rate_limit_error",
            Self::Forbidden => "permission_error",
            Self::NotFound => "not_found_error",
            Self::BadGateway | Self::GatewayTimeout => "upstream_error",
            Self::Unavailable => "service_unavailable",
            Self::Internal => "internal_error",
        }
    }
}

#[derive(Debug)]
pub struct AppError {
    kind: ErrorKind,
    message: Cow<'static, str>,
    param: Option<Cow<'static, str>>,
    code: Option<&'static str>,
    /// Seconds for `Retry-After`.
    retry_after: Option<u64>,
    /// For the log only.
    source: Option<anyhow::Error>,
}

impl AppError {
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self { kind, message: message.into(), param: None, code: None, retry_after: None, source: None }
    }

    /// 429, to be retried after `seconds`.
    pub fn too_many_requests(code: &'static str, message: impl Into<Cow<'static, str>>, seconds: u64) -> Self {
        let mut err = Self::new(ErrorKind::TooManyRequests, message).with_code(code);
        err.retry_after = Some(seconds.max(1));
        err
    }

    /// 400 naming the field at fault and a machine-readable code.
    pub fn bad_request(
        param: impl Into<Cow<'static, str>>,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(ErrorKind::BadRequest, message).with_param(param).with_code(code)
    }

    /// 400 about the body as a whole.
    pub fn bad_body(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::BadRequest, message).with_code(code)
    }

    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unauthorized, message).with_code("invalid_api_key")
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// 409 with a machine-readable code.
    pub fn conflict(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Conflict, message).with_code(code)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotFound, message).with_code("not_found")
    }

    /// 413: the body (`param` `None`, code `body_too_large`) or one part of it (code
    /// `too_large`) is over its limit of `limit` bytes.
    pub fn too_large(param: Option<&'static str>, limit: usize) -> Self {
        let (what, code) = match param {
            Some(p) => (format!("`{p}`"), "too_large"),
            None => ("the request body".to_owned(), "body_too_large"),
        };
        let mut err =
            Self::new(ErrorKind::PayloadTooLarge, format!("{what} exceeds the limit of {limit} bytes")).with_code(code);
        err.param = param.map(Cow::Borrowed);
        err
    }

    /// 503 because `dependency` ("the main database") failed; `cause` is logged only.
    pub fn unavailable(dependency: &str, cause: impl Into<anyhow::Error>) -> Self {
        let mut err = Self::new(
            ErrorKind::Unavailable,
            format!("service temporarily unavailable: {dependency} does not answer; retry shortly"),
        );
        err.source = Some(cause.into());
        err
    }

    /// 500; `cause` is logged only.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let mut err = Self::new(ErrorKind::Internal, "internal error");
        err.source = Some(cause.into());
        err
    }

    pub fn with_param(mut self, param: impl Into<Cow<'static, str>>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The field, header or parameter at fault, if one is.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        match (self.kind, &self.source) {
            (ErrorKind::Internal, Some(cause)) => tracing::error!(error = format!("{cause:#}"), "internal error"),
            (ErrorKind::Unavailable, Some(cause)) => {
                tracing::warn!(error = format!("{cause:#}"), "answered 503: a dependency failed")
            }
            _ => {}
        }
        let mut builder = HttpResponse::build(self.status_code());
        if self.kind == ErrorKind::Unauthorized {
            builder.insert_header(("www-authenticate", "Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            builder.insert_header(("retry-after", seconds.to_string()));
        }
        builder.json(json!({
            "error": {"message": self.message, "type": self.kind.type_name(), "param": self.param, "code": self.code}
        }))
    }
}

#[cfg(feature = "postgres")]
impl From<diesel::result::Error> for AppError {
    fn from(err: diesel::result::Error) -> Self {
        Self::internal(err)
    }
}

#[cfg(feature = "postgres")]
impl From<diesel_async::pooled_connection::deadpool::PoolError> for AppError {
    fn from(err: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        Self::unavailable("the database", err)
    }
}

impl From<crate::body::BodyError> for AppError {
    fn from(err: crate::body::BodyError) -> Self {
        match err {
            crate::body::BodyError::TooLarge { limit } => Self::too_large(None, limit),
            crate::body::BodyError::TooSlow { after } => Self::new(
                ErrorKind::RequestTimeout,
                format!("the request body did not arrive within {} s", after.as_secs_f64()),
            )
            .with_code("body_timeout"),
            crate::body::BodyError::Unreadable(detail) => {
                Self::bad_body("invalid_body", format!("could not read the request body: {detail}"))
            }
        }
    }
}

/// actix's JSON extractor with our 400/413 shape.
pub fn json_config(limit: usize) -> actix_web::web::JsonConfig {
    actix_web::web::JsonConfig::default().limit(limit).error_handler(move |err, _req| {
        use actix_web::error::JsonPayloadError;
        let api = match &err {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                AppError::too_large(None, limit)
            }
            JsonPayloadError::ContentType => {
                AppError::bad_body("invalid_content_type", "Content-Type must be application/json")
            }
            JsonPayloadError::Deserialize(e) => {
                let message = e.to_string();
                match (unknown_field(&message), named_field("missing field `", &message)) {
                    (Some(field), _) => AppError::bad_request(
                        field.clone(),
                        "unknown_field",
                        format!("`{field}` is not a field this request takes; it was not applied"),
                    ),
                    (None, Some(field)) => {
                        AppError::bad_request(field.clone(), "missing_field", format!("`{field}` is required"))
                    }
                    (None, None) => AppError::bad_body("invalid_json", format!("invalid request body: {e}")),
                }
            }
            other => AppError::bad_body("invalid_body", format!("invalid request body: {other}")),
        };
        actix_web::error::InternalError::from_response(err, api.error_response()).into()
    })
}

/// The field serde names in "unknown field `x`, expected …" (a body carrying a field
/// the route does not take: `company_id`, `role`, …, never silently dropped).
fn unknown_field(message: &str) -> Option<String> {
    named_field("unknown field `", message)
}

/// The field serde names after `prefix` ("missing field `x`", "unknown field `x`, …").
fn named_field(prefix: &str, message: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(field, _)| field.to_owned())
}

/// The answer for a path no route matches.
pub fn no_route(req: &actix_web::HttpRequest) -> AppError {
    AppError::not_found(format!("no route for {} {}", req.method(), req.path())).with_param("path")
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    fn body_of(res: HttpResponse) -> serde_json::Value {
        let bytes = actix_web::body::to_bytes_limited(res.into_body(), 1 << 16);
        let bytes = futures_util::FutureExt::now_or_never(bytes).unwrap().unwrap().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn dependency_failures_keep_their_cause_out_of_the_body() {
        let cause = anyhow::anyhow!("connection to server at \"10.0.0.5\", port 5432 failed: password authentication");
        let err = AppError::unavailable("the main database", cause);
        assert_eq!(err.status_code(), 503);
        let body = body_of(err.error_response());
        let text = body.to_string();
        assert!(!text.contains("10.0.0.5") && !text.contains("password"), "{text}");
        assert_eq!(body["error"]["type"], "service_unavailable");

        let err = AppError::internal(anyhow::anyhow!("relation \"api_keys\" does not exist"));
        let body = body_of(err.error_response());
        assert_eq!(body["error"]["message"], "internal error");
        assert!(!body.to_string().contains("api_keys"));
    }

    #[test]
    fn bad_input_names_the_field() {
        let body = body_of(AppError::bad_request("model", "missing_field", "`model` is required").error_response());
        assert_eq!(body["error"]["param"], "model");
        assert_eq!(body["error"]["code"], "missing_field");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let res = AppError::unauthorized("invalid API key").error_response();
        assert_eq!(res.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    }

    #[test]
    fn unknown_fields_are_named() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[expect(dead_code)]
        struct Input {
            title: String,
        }
        let err = serde_json::from_str::<Input>(r#"{"title":"x","company_id":7}"#).unwrap_err();
        assert_eq!(unknown_field(&err.to_string()).as_deref(), Some("company_id"));
        assert_eq!(unknown_field("missing field `title`"), None);
        let err = serde_json::from_str::<Input>("{}").unwrap_err();
        assert_eq!(named_field("missing field `", &err.to_string()).as_deref(), Some("title"));
    }
}
