//! The public API's OpenAPI 3.1 document, generated from the handlers' annotations, and
//! a page that shows it: `GET /api/v1/openapi.json` and `GET /api/v1/docs`, both
//! without credentials. The operator's routes (`/api/v1/admin/*`, `/metrics`) live on
//! the internal listener and are not in it.
//!
//! The annotations say what is particular to each route (its parameters, body, success
//! answers and the refusals only it gives). What every route shares is added here once,
//! from the document itself: the credentials and the refusals that come with them (401,
//! 403, 429 with `Retry-After` and the `RateLimit-*` headers), 400 and 413 for a JSON
//! body, 400 for a malformed query, 404 for an id that names nothing, 503 while a
//! dependency is down, and `X-Request-Id` on every answer; and operation ids unique
//! across modules.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::{OpenApi, ToSchema};

use crate::settings::GatewaySettings;
use crate::state::AppState;

/// The documents' own routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/openapi.json", web::get().to(spec)).route("/api/v1/docs", web::get().to(docs));
}

/// Operations that take no credentials (method, path).
const OPEN: [(&str, &str); 6] = [
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/invitations/accept"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/docs"),
];

/// Operations that answer without asking a database or Redis.
const NO_DEPENDENCY: [&str; 3] = ["/healthz", "/api/v1/openapi.json", "/api/v1/docs"];

/// The error body of every refusal and failure (`service_kit::AppError`), in the
/// OpenAI shape so OpenAI SDKs show it as-is.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, for a person.
    pub message: String,
    /// The class: `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error`, `upstream_error`, `service_unavailable`,
    /// `internal_error` (and, for the LLM route, `upstream_auth_error` or
    /// `upstream_rate_limited`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The field, header, path segment or query parameter at fault.
    pub param: Option<String>,
    /// A machine-readable reason (`missing_field`, `invalid_value`, `rate_limited`, …).
    pub code: Option<String>,
}

/// One server-sent event of a `text/event-stream` answer, as a client's parser hands
/// it over (the model OpenAPI 3.2 gives such streams).
#[derive(ToSchema)]
pub struct SseEvent {
    /// The event's name (`message` when the stream gives none): `cv.status` or
    /// `analysis.status` on the status stream.
    pub event: Option<String>,
    /// The event's data: JSON text (a chunk of the answer, a CV's or an analysis's
    /// status), or `[DONE]`
    /// at the end of an LLM stream.
    pub data: String,
    /// The id to send back as `Last-Event-ID` when reconnecting.
    pub id: Option<String>,
    /// Milliseconds the client should wait before reconnecting.
    pub retry: Option<u64>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "headhunter API",
        description = "Recruiting for companies: jobs, CVs and their matches, applications and interviews, \
                       the company's people, API keys and audit trail, and an OpenAI-compatible LLM proxy. \
                       Every resource belongs to the caller's company: another company's ids are not found (404).\n\n\
                       Lists are pages, newest first: `limit` (1-100, default 20) and the opaque `cursor` \
                       from the previous page's `next_cursor` (`null` on the last page).",
    ),
    paths(
        crate::llm::chat_completions,
        crate::jobs::create,
        crate::jobs::list,
        crate::jobs::read,
        crate::jobs::update,
        crate::jobs::archive,
        crate::events::stream_events,
        crate::cvs::upload,
        crate::cvs::list,
        crate::cvs::read,
        crate::cvs::delete,
        crate::cvs::download,
        crate::matches::cvs_for_job,
        crate::matches::jobs_for_cv,
        crate::accounts::login,
        crate::accounts::logout,
        crate::accounts::logout_all,
        crate::accounts::me,
        crate::accounts::change_password,
        crate::people::list_users,
        crate::people::read_user,
        crate::people::update_user,
        crate::people::accept,
        crate::people::invite,
        crate::people::list_invitations,
        crate::people::resend,
        crate::people::revoke,
        crate::audit::list,
        crate::keys::list,
        crate::keys::create,
        crate::keys::rotate,
        crate::keys::revoke,
        crate::recruiting::apply,
        crate::recruiting::list_applications,
        crate::recruiting::read_application,
        crate::recruiting::update_application,
        crate::recruiting::schedule,
        crate::recruiting::list_interviews,
        crate::recruiting::read_interview,
        crate::recruiting::update_interview,
        crate::recruiting::give_feedback,
        crate::analysis::request,
        crate::analysis::read,
        crate::analysis::list,
        crate::admin::company_limits,
        crate::admin::company_settings,
        crate::analytics::usage,
        crate::analytics::top,
        crate::analytics::calls,
        crate::spend_alerts::list,
        healthz,
        readyz,
        spec,
        docs,
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "llm", description = "The OpenAI-compatible chat completions endpoint, logged and rate limited per company."),
        (name = "jobs", description = "What a company recruits for."),
        (name = "cvs", description = "CV uploads, their processing status and their files."),
        (name = "matches", description = "A job's best CVs and a CV's best open jobs, with the evidence per requirement."),
        (name = "recruiting", description = "Applications (a CV applying to a job), interviews and feedback."),
        (name = "accounts", description = "Signing in and out, and one's own account."),
        (name = "people", description = "The company's people and the invitations that bring them in."),
        (name = "keys", description = "API keys, managed by owners and admins signed in."),
        (name = "audit", description = "The company's audit trail and limits."),
        (name = "probes", description = "Liveness, readiness and these documents."),
    )
)]
struct PublicApi;

/// The public API's document, with the limits `settings` configure.
pub fn document(settings: &GatewaySettings) -> Value {
    let mut doc = serde_json::to_value(PublicApi::openapi()).unwrap_or(Value::Null);
    add_shared_components(&mut doc, settings);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return doc };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, operation) in item.iter_mut() {
            if let Some(operation) = operation.as_object_mut() {
                add_shared_answers(method, path, operation);
            }
        }
    }
    doc
}

/// The security schemes and the answers many operations share.
fn add_shared_components(doc: &mut Value, settings: &GatewaySettings) {
    let error = |description: String| {
        json!({
            "description": description,
            "headers": {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        })
    };
    let mut too_many = error(
        "Over a rate limit (`rate_limited`: the company's or the credential's requests a minute, per plan), \
         too many failed sign-ins (`auth_throttled`, `login_throttled`), or for the LLM route too many calls \
         at once (`too_many_concurrent_calls`) or the month's budget spent (`budget_exceeded`). Retry after \
         `Retry-After` seconds."
            .to_owned(),
    );
    too_many["headers"]["Retry-After"] = json!({
        "description": "Seconds to wait before retrying.",
        "required": true,
        "schema": {"type": "integer", "minimum": 1},
    });
    let components = &mut doc["components"];
    components["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A company API key (`hh_…`, made with the company or at `POST /api/v1/api-keys`) or a \
                            session token (`hhs_…`, from `POST /api/v1/auth/login`).",
        },
        "session_cookie": {
            "type": "apiKey",
            "in": "cookie",
            "name": crate::sessions::COOKIE,
            "description": "The session cookie that signing in sets (the same session token).",
        },
    });
    components["headers"] = json!({
        "X-Request-Id": {
            "description": "This request's id, also in the gateway's log lines.",
            "schema": {"type": "string"},
        },
        "RateLimit-Limit": {
            "description": "Requests a minute the tighter of the company's and the credential's limits allows.",
            "schema": {"type": "integer", "minimum": 0},
        },
        "RateLimit-Remaining": {
            "description": "Requests left before 429.",
            "schema": {"type": "integer", "minimum": 0},
        },
        "RateLimit-Reset": {
            "description": "Seconds until the limit is full again.",
            "schema": {"type": "integer", "minimum": 0},
        },
    });
    components["responses"] = json!({
        "BadRequest": error("Malformed input: `param` names the field, header or parameter at fault, `code` says why.".to_owned()),
        "Unauthorized": error("No credentials, or unknown, revoked or expired ones (`WWW-Authenticate: Bearer`).".to_owned()),
        "Forbidden": error("The caller's role (`insufficient_role`) or an API key's scopes (`insufficient_scope`) do not allow this.".to_owned()),
        "NotFound": error("No such resource in the caller's company (an id that is not a number names none either).".to_owned()),
        "PayloadTooLarge": error(format!("The request body is over {} bytes.", settings.max_body_bytes)),
        "TooManyRequests": too_many,
        "Unavailable": error("A dependency (the main database, Redis, cv-processor, file storage) does not answer; retry shortly.".to_owned()),
    });
}

/// The credentials, refusals and headers that `operation` shares with others like it.
fn add_shared_answers(method: &str, path: &str, operation: &mut Map<String, Value>) {
    let open = OPEN.contains(&(method, path));
    // Handler names repeat across modules (`list`, `read`): the tag makes them unique.
    let tag = operation.get("tags").and_then(|t| t[0].as_str()).unwrap_or("api").to_owned();
    if let Some(Value::String(id)) = operation.get_mut("operationId") {
        *id = format!("{tag}.{id}");
    }
    let takes_json = operation
        .get("requestBody")
        .and_then(|b| b.get("content"))
        .and_then(Value::as_object)
        .is_some_and(|c| c.contains_key("application/json"));
    let params = operation.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
    let has_query = params.iter().any(|p| p["in"] == "query");
    let has_path = params.iter().any(|p| p["in"] == "path");
    let mut shared: Vec<(&str, &str)> = Vec::new();
    if takes_json || has_query {
        shared.push(("400", "BadRequest"));
    }
    if takes_json {
        shared.push(("413", "PayloadTooLarge"));
    }
    if has_path {
        shared.push(("404", "NotFound"));
    }
    if !open {
        operation.insert("security".to_owned(), json!([{"bearer": []}, {"session_cookie": []}]));
        shared.extend([("401", "Unauthorized"), ("403", "Forbidden"), ("429", "TooManyRequests")]);
    } else if method == "post" {
        // Failed sign-ins and invitation guesses are throttled per account and address.
        shared.push(("429", "TooManyRequests"));
    }
    if !NO_DEPENDENCY.contains(&path) {
        shared.push(("503", "Unavailable"));
    }
    let responses = operation.entry("responses").or_insert_with(|| json!({}));
    for (status, name) in shared {
        if responses.get(status).is_none() {
            responses[status] = json!({"$ref": format!("#/components/responses/{name}")});
        }
    }
    // Headers on the answers written here; the shared ones carry theirs.
    if let Some(responses) = responses.as_object_mut() {
        for response in responses.values_mut() {
            if response.get("$ref").is_some() {
                continue;
            }
            let headers = response.as_object_mut().map(|r| r.entry("headers").or_insert_with(|| json!({})));
            if let Some(headers) = headers {
                headers["X-Request-Id"] = json!({"$ref": "#/components/headers/X-Request-Id"});
                if !open {
                    for name in ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"] {
                        headers[name] = json!({"$ref": format!("#/components/headers/{name}")});
                    }
                }
            }
        }
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "probes",
    responses((status = 200, description = "The public API's OpenAPI 3.1 document.", content_type = "application/json", body = Object)),
)]
async fn spec(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(document(&state.settings))
}

/// The page that shows this document (it loads `/api/v1/openapi.json`).
#[utoipa::path(
    get,
    path = "/api/v1/docs",
    tag = "probes",
    responses((status = 200, description = "An HTML page.", content_type = "text/html", body = String)),
)]
async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'",
        ))
        .body(DOCS_PAGE)
}

const DOCS_PAGE: &str = include_str!("openapi/docs.html");

// The probes are served by `service_kit::probes`; these mark them for the document.

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "probes",
    responses((status = 200, description = "Alive.", body = inline(Status))),
)]
#[allow(dead_code)]
fn healthz() {}

/// Readiness: the main database answers (Redis is reported but not required).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    responses(
        (status = 200, description = "Ready; each dependency with whether it answered.", body = Object),
        (status = 503, description = "Not ready: a required dependency does not answer.", body = Object),
    ),
)]
#[allow(dead_code)]
fn readyz() {}

#[derive(ToSchema)]
#[allow(dead_code)]
struct Status {
    /// `ok`.
    status: String,
}
