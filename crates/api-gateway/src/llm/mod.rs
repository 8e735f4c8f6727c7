//! The OpenAI-compatible LLM endpoint: `POST /v1/chat/completions`, forwarded to the
//! configured upstream, answered with exactly what the upstream sent, and logged
//! (through the queue producer, never waiting on it).

pub use common_models::pricing;
pub mod record;
pub mod request;
pub mod seal;
pub mod stream;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use common_models::events::LlmErrorType;

use service_kit::request_id::RequestId;
use service_kit::{AppError, ErrorKind};

use crate::access::Action;
use crate::state::AppState;
use record::{AnswerView, CallGuard, CallRecord};
use request::{CallContext, ChatRequest};

/// The cache-service namespace of LLM results (seed 002's `llm:{hash}`, 2 h by default).
const LLM_CACHE_NAMESPACE: &str = "llm";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/chat/completions", web::post().to(chat_completions));
}

/// An OpenAI-compatible chat completion, forwarded to the upstream LLM and answered
/// with exactly what it sent (server-sent events with `"stream": true`). A repeated
/// deterministic request (temperature 0, one choice, not streamed) may be answered from
/// the cache (`X-Cache: hit`). Every call is logged with its tokens, cost and latency.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "llm",
    params(
        ("X-Action" = Option<String>, Header, pattern = "^[A-Za-z0-9_.:-]{1,100}$",
            description = "What the call is for (default `chat_completion`), kept with its log row."),
        ("X-Interview-Id" = Option<i64>, Header, minimum = 1,
            description = "The interview the call is about: one of the company's."),
    ),
    request_body = request::ChatCompletionRequest,
    responses(
        (status = 200, description = "The upstream's answer.",
            content(
                (request::ChatCompletion = "application/json"),
                (crate::openapi::SseEvent = "text/event-stream"),
            ),
            headers(("X-Cache" = String, description = "`hit` when answered from the cache."))),
        (status = 400, description = "A malformed request, a model not served here (`model_not_allowed`), a bad header, or an interview not of the company (`unknown_interview`).", body = crate::openapi::ErrorBody),
        (status = 403, description = "The caller's role or key scopes do not allow LLM calls (`insufficient_role`, `insufficient_scope`), or the model is not one the company may call (`model_not_allowed`).", body = crate::openapi::ErrorBody),
        (status = 502, description = "The upstream could not be reached, refused the gateway's credentials, or answered more than the gateway relays.", body = crate::openapi::ErrorBody),
        (status = 504, description = "The upstream did not answer in time.", body = crate::openapi::ErrorBody),
        (status = "4XX", description = "The upstream's own refusal of the request, relayed as it sent it."),
    ))]
async fn chat_completions(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let caller = state.allow(&req, Action::UseLlm).await?;
    let settings = &state.settings;
    let body = service_kit::body::read_limited(&req, payload, settings.max_body_bytes, settings.body_timeout).await?;
    let chat = ChatRequest::parse(body, settings.max_tokens_cap, settings.max_choices)?;
    if !settings.allow_unpriced_models && !settings.pricing.prices(&chat.model) {
        let served = settings.pricing.names();
        return Err(AppError::bad_request(
            "model",
            "model_not_allowed",
            format!(
                "model `{}` is not served here; these are (with their dated versions): {}",
                chat.model,
                served.join(", ")
            ),
        ));
    }
    if let Some(allowed) = state.limits.allowed_models(caller.company_id.0).await
        && !pricing::listed(&allowed, &chat.model)
    {
        return Err(AppError::forbidden(format!(
            "model `{}` is not one this company may call: {}",
            chat.model,
            allowed.join(", ")
        ))
        .with_code("model_not_allowed")
        .with_param("model"));
    }
    let context = CallContext::from_headers(&req)?;
    if let Some(interview) = context.interview_id {
        state.interviews.require(&state, caller.company_id.0, interview.0).await?;
    }
    let request_id = RequestId::of(&req).unwrap_or_default();

    let mut record = CallRecord::new(caller.clone(), context, request_id, chat.model.clone(), chat.stream);
    record.prompt_bytes = chat.body_len();
    let streaming = chat.stream;

    // The LLM results cache: a repeated deterministic request is answered from it. Before
    // the budget and the concurrency cap: an answer from the cache costs nothing and
    // calls no one, so a company over its budget still gets the answers it paid for.
    let cache = state.cache.as_ref().zip(chat.deterministic.then(|| chat.cache_key(caller.company_id)).flatten());
    if let Some((client, key)) = &cache {
        let found = client.get(LLM_CACHE_NAMESPACE, key).await;
        let opened = found.as_ref().and_then(|stored| state.seal.open(key, stored));
        if found.is_some() && opened.is_none() {
            tracing::warn!(cache_key = %key, "an LLM cache value not sealed by this gateway was ignored");
            state.metrics.llm_cache.with_label_values(&["unsealed"]).inc();
        }
        match opened {
            Some(cached) => {
                state.metrics.llm_cache.with_label_values(&["hit"]).inc();
                record.cache_hit = true;
                record.http_status = Some(200);
                if let Ok(answer) = serde_json::from_slice::<AnswerView>(&cached) {
                    record.observe_answer(answer);
                }
                CallGuard::new(record, state.call_logger(), None).finish();
                return Ok(HttpResponse::Ok()
                    .content_type("application/json")
                    .insert_header(("x-cache", "hit"))
                    .body(cached));
            }
            None => state.metrics.llm_cache.with_label_values(&["miss"]).inc(),
        }
    }
    let slot = state.limits.admit_llm_call(caller.company_id.0).await?;
    let mut guard = CallGuard::new(record, state.call_logger(), slot);
    let upstream_body = chat.upstream_body()?;

    let mut upstream_req = state
        .http
        .post(state.settings.chat_completions_url())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(upstream_body);
    if !state.settings.llm_api_key.is_empty() {
        upstream_req = upstream_req.bearer_auth(state.settings.llm_api_key.expose());
    }
    let response = match upstream_req.send().await {
        Ok(r) => r,
        Err(err) => return Err(upstream_failure(&mut guard, &err)),
    };

    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type =
        response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| actix_web::http::header::HeaderValue::from_bytes(v.as_bytes()).ok());

    if streaming && status.is_success() {
        if let Some(record) = guard.record() {
            record.http_status = Some(status.as_u16());
        }
        let relayed = stream::RelayedStream::new(Box::pin(response.bytes_stream()), guard);
        return Ok(HttpResponse::build(status)
            .content_type(content_type.unwrap_or_else(|| "text/event-stream".to_owned()))
            .insert_header(("cache-control", "no-cache"))
            .insert_header(("x-accel-buffering", "no"))
            .streaming(relayed));
    }

    let bytes = match read_capped(response, state.settings.max_upstream_response_bytes).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            let limit = state.settings.max_upstream_response_bytes;
            if let Some(record) = guard.record() {
                record.http_status = Some(status.as_u16());
                record
                    .fail(LlmErrorType::UpstreamProtocolError, format!("the upstream's answer exceeded {limit} bytes"));
            }
            guard.finish();
            return Err(AppError::new(
                ErrorKind::BadGateway,
                "the upstream LLM's answer was larger than the gateway relays",
            )
            .with_code("upstream_response_too_large"));
        }
        Err(err) => return Err(upstream_failure(&mut guard, &err)),
    };
    let answer: Option<AnswerView> = serde_json::from_slice(&bytes).ok();
    if let (Some((client, key)), Some(answer)) = (cache, &answer)
        && status.is_success()
        && answer.has_usage()
    {
        // Stored off the response path: the client does not wait for the cache.
        let (client, metrics, bytes) = (client.clone(), state.metrics.clone(), state.seal.seal(&key, &bytes));
        tokio::spawn(async move {
            let stored = client.put(LLM_CACHE_NAMESPACE, &key, bytes, None).await;
            metrics.llm_cache.with_label_values(&[if stored { "stored" } else { "store_failed" }]).inc();
        });
    }
    if let Some(record) = guard.record() {
        record.observe_status(status.as_u16(), answer.as_ref().and_then(AnswerView::error_message));
        match answer {
            Some(answer) if status.is_success() => record.observe_answer(answer),
            None if status.is_success() && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() => {
                record.fail(LlmErrorType::UpstreamProtocolError, "upstream answer is not JSON");
            }
            _ => {}
        }
    }
    guard.finish();
    if let Some(shown) = upstream_refusal(status, retry_after) {
        return Ok(shown);
    }
    let mut out = HttpResponse::build(status);
    if let Some(ct) = content_type {
        out.content_type(ct);
    }
    Ok(out.body(bytes))
}

/// The upstream's whole answer, or `None` once it passes `limit` bytes (the rest is
/// not read).
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Option<bytes::Bytes>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// What the client sees when the upstream refused the gateway itself (its key: 401 or
/// 403; its rate: 429). The upstream's own words can name the operator's organisation
/// or the end of its key, so they go to the log row only; `Retry-After` is passed on.
fn upstream_refusal(
    status: StatusCode,
    retry_after: Option<actix_web::http::header::HeaderValue>,
) -> Option<HttpResponse> {
    let (shown, kind, message) = match status.as_u16() {
        401 | 403 => (
            StatusCode::BAD_GATEWAY,
            "upstream_auth_error",
            "the upstream LLM refused the gateway's credentials; the operator has to correct them",
        ),
        429 => {
            (StatusCode::TOO_MANY_REQUESTS, "upstream_rate_limited", "the upstream LLM is rate limiting; retry later")
        }
        _ => return None,
    };
    let mut out = HttpResponse::build(shown);
    if let Some(value) = retry_after {
        out.insert_header((actix_web::http::header::RETRY_AFTER, value));
    }
    Some(out.json(serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": null}})))
}

/// The upstream gave no answer at all: log it, and tell the client 504 or 502.
fn upstream_failure(guard: &mut CallGuard, err: &reqwest::Error) -> AppError {
    let (kind, status, message) = if err.is_timeout() {
        (LlmErrorType::UpstreamTimeout, ErrorKind::GatewayTimeout, "the upstream LLM did not answer in time")
    } else {
        (LlmErrorType::UpstreamUnavailable, ErrorKind::BadGateway, "the upstream LLM could not be reached")
    };
    if let Some(record) = guard.record() {
        record.fail(kind, format!("{message}: {err}"));
    }
    guard.finish();
    AppError::new(status, message)
}
