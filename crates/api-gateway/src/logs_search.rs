//! `GET /api/v1/admin/logs`: the operator's search of `system_logs` (every service's
//! API requests) by level, component, error type, company, request id and time, newest
//! first. Each of level, component and error type has an index led by it and followed
//! by `created_at` (seed 004's three), so a search naming one reads its matching rows
//! newest first without scanning the month; a test checks the plans use them.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Double, Nullable, SmallInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use service_kit::AppError;
use service_kit::auth::require_admin;

use crate::analytics::{decode_time_cursor, limit, query_failed, reader, resolve_range, time_cursor};
use crate::state::AppState;

pub const MAX_PAGE: i64 = 500;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/admin/logs", web::get().to(search));
}

/// The search: rows of [`$1`, `$2`) matching the filters (`NULL`: any), below the
/// cursor (`$8`, `$9`), newest first, at most `$10`. Each filter given is a plain
/// equality once PostgreSQL plans with the values, so the index it leads is usable.
pub const SEARCH: &str = "SELECT id, event_id::text AS event_id, created_at, level, component, message, \
        request_method, request_path, status_code, latency_ms, company_id, user_id, request_id, error_type \
     FROM system_logs \
     WHERE created_at >= $1 AND created_at < $2 \
       AND ($3::text IS NULL OR level = $3) AND ($4::text IS NULL OR component = $4) \
       AND ($5::text IS NULL OR error_type = $5) AND ($6::int8 IS NULL OR company_id = $6) \
       AND ($7::text IS NULL OR request_id = $7) \
       AND ($8::timestamptz IS NULL OR (created_at, id) < ($8, $9)) \
     ORDER BY created_at DESC, id DESC LIMIT $10";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    /// `info`, `warning` or `error`.
    level: Option<String>,
    /// The service: `api-gateway`, `cv-processor`, …
    component: Option<String>,
    /// `client_error`, `server_error`, …
    error_type: Option<String>,
    company_id: Option<String>,
    request_id: Option<String>,
    /// As for the analytics routes (dates whole local days; default the last 30).
    from: Option<String>,
    to: Option<String>,
    tz: Option<String>,
    /// Page size 1-500 (default 50).
    limit: Option<String>,
    cursor: Option<String>,
}

/// The filters of a search, checked.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub level: Option<String>,
    pub component: Option<String>,
    pub error_type: Option<String>,
    pub company: Option<i64>,
    pub request_id: Option<String>,
}

/// One API log row.
#[derive(QueryableByName, Serialize)]
pub struct LogRow {
    #[serde(skip)]
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub level: String,
    #[diesel(sql_type = Text)]
    pub component: String,
    #[diesel(sql_type = Text)]
    pub message: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub request_method: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub request_path: Option<String>,
    #[diesel(sql_type = Nullable<SmallInt>)]
    pub status_code: Option<i16>,
    #[diesel(sql_type = Nullable<Double>)]
    pub latency_ms: Option<f64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub company_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub user_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub request_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error_type: Option<String>,
}

/// Rows of `range` matching `filter`, newest first, below `after`, at most `n`.
pub async fn load(
    conn: &mut AsyncPgConnection,
    range: (DateTime<Utc>, DateTime<Utc>),
    filter: &Filter,
    after: Option<(DateTime<Utc>, i64)>,
    n: i64,
) -> diesel::QueryResult<Vec<LogRow>> {
    sql_query(SEARCH)
        .bind::<Timestamptz, _>(range.0)
        .bind::<Timestamptz, _>(range.1)
        .bind::<Nullable<Text>, _>(filter.level.as_deref())
        .bind::<Nullable<Text>, _>(filter.component.as_deref())
        .bind::<Nullable<Text>, _>(filter.error_type.as_deref())
        .bind::<Nullable<BigInt>, _>(filter.company)
        .bind::<Nullable<Text>, _>(filter.request_id.as_deref())
        .bind::<Nullable<Timestamptz>, _>(after.map(|a| a.0))
        .bind::<BigInt, _>(after.map_or(0, |a| a.1))
        .bind::<BigInt, _>(n)
        .load(conn)
        .await
}

#[derive(Serialize)]
struct LogPage {
    data: Vec<LogRow>,
    next_cursor: Option<String>,
}

async fn search(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    require_admin(&req, &state.settings.admin_api_key, "ADMIN_API_KEY")?;
    let q: SearchQuery = crate::page::query(&req)?;
    for (param, value) in
        [("level", &q.level), ("component", &q.component), ("error_type", &q.error_type), ("request_id", &q.request_id)]
    {
        if let Some(v) = value {
            crate::jobs::storable(param, v)?;
        }
    }
    let filter = Filter {
        level: q.level,
        component: q.component,
        error_type: q.error_type,
        company: q.company_id.as_deref().map(|v| crate::page::integer("company_id", v)).transpose()?,
        request_id: q.request_id,
    };
    let n = limit(&q.limit, 50, MAX_PAGE)?;
    let after = q.cursor.as_deref().filter(|c| !c.is_empty()).map(decode_time_cursor).transpose()?;
    let mut conn = reader(&state, q.tz.as_deref().unwrap_or("UTC")).await?;
    let range = resolve_range(&mut conn, &q.from, &q.to).await?;
    let mut rows = load(&mut conn, range, &filter, after, n + 1).await.map_err(query_failed)?;
    let more = rows.len() as i64 > n;
    rows.truncate(usize::try_from(n).unwrap_or(0));
    let next_cursor = if more { rows.last().map(|r| time_cursor(r.created_at, r.id)) } else { None };
    Ok(HttpResponse::Ok().json(LogPage { data: rows, next_cursor }))
}
