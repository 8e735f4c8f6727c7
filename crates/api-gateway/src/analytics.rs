//! The analytics API: a company's LLM usage and cost, read from the analytics database
//! (its read replica when `ANALYTICS_READ_DATABASE_URL` is set).
//!
//! - `GET /api/v1/analytics/usage`: calls, errors, tokens, cost, unpriced calls, our
//!   cache's hits and savings, latency and time-to-first-token percentiles, per hour,
//!   day, week or month in the company's timezone, optionally grouped by model,
//!   action, user, interview or error type;
//! - `GET /api/v1/analytics/top`: the biggest spenders among models, actions, users or
//!   interviews;
//! - `GET /api/v1/analytics/calls`: the raw calls behind a figure, newest first.
//!
//! Owners and admins see their company; the operator (`/api/v1/admin/analytics/*`, the
//! admin key) sees every company or one (`company_id`), and may rank companies. Each
//! takes `format=csv`.
//!
//! Figures come from the hourly UTC rollups (the smallest grain that has the keys a
//! query needs: `llm_usage_hourly_totals` for every company's sums,
//! `llm_usage_hourly_grains`, `llm_usage_hourly_models` or `llm_usage_hourly`) wherever
//! a whole UTC
//! hour lies in one bucket of the requested timezone and inside the range; the hours
//! that straddle a bucket's edge (every hour, in a zone half an hour off UTC, such as
//! Asia/Kolkata) or the range's ends are read from the raw rows, each row put in its
//! own local bucket. So a local day adds up to exactly the raw rows of its local hours,
//! in any zone and across a DST change. Both sides are aggregated by the one SQL
//! definition the rollups use (`common_models::llm_usage_sums!`).

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use common_models::schema::main::companies;
use common_models::usage::{Grain, HISTOGRAM_BUCKETS, histogram_sum_sql, quantile};
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Array, BigInt, Bool, Double, Integer, Nullable, SmallInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use service_kit::AppError;
use service_kit::auth::require_admin;

use crate::access::Action;
use crate::state::AppState;

/// Most buckets one usage answer spans (2,000 hours is 83 days).
pub const MAX_BUCKETS: i64 = 2_000;
/// Most rows (buckets × groups) one usage answer holds.
pub const MAX_POINTS: i64 = 20_000;
/// Longest range one request reads (about three years).
pub const MAX_RANGE_DAYS: i64 = 1_100;
/// Dates and times outside these years are refused.
const MIN_YEAR: i32 = 2000;
const MAX_YEAR: i32 = 2100;
/// Largest `limit` of the top list, and of a page of calls.
pub const MAX_TOP: i64 = 100;
pub const MAX_CALLS_PAGE: i64 = 500;
/// Rows fetched per query while a calls CSV streams.
const CSV_PAGE: i64 = 1_000;
const TIMEZONE_MAX: usize = 64;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/analytics/usage", web::get().to(usage))
        .route("/api/v1/analytics/top", web::get().to(top))
        .route("/api/v1/analytics/calls", web::get().to(calls))
        .route("/api/v1/admin/analytics/usage", web::get().to(admin_usage))
        .route("/api/v1/admin/analytics/top", web::get().to(admin_top))
        .route("/api/v1/admin/analytics/calls", web::get().to(admin_calls));
}

// ---------------------------------------------------------------------------------
// Who is asking, and about whom.

/// The companies a request reads: one, or (the operator) all.
#[derive(Debug, Clone, Copy)]
struct Audience {
    company: Option<i64>,
    operator: bool,
}

/// An owner or admin of a company reads that company; `company_id` is the operator's.
async fn company_audience(
    req: &HttpRequest,
    state: &AppState,
    company_param: &Option<String>,
) -> Result<(Audience, String), AppError> {
    let caller = state.allow(req, Action::ReadAnalytics).await?;
    own_company_only(company_param)?;
    let tz = company_timezone(state, caller.company_id.0).await?;
    Ok((Audience { company: Some(caller.company_id.0), operator: false }, tz))
}

/// 400 for `company_id` on a company's own analytics route.
pub(crate) fn own_company_only(company_param: &Option<String>) -> Result<(), AppError> {
    match company_param {
        None => Ok(()),
        Some(_) => Err(AppError::bad_request(
            "company_id",
            "invalid_query",
            "`company_id` is for the operator's /api/v1/admin/analytics routes; you read your own company",
        )),
    }
}

/// The operator reads every company, or the one `company_id` names (in its timezone).
async fn operator_audience(
    req: &HttpRequest,
    state: &AppState,
    company_param: &Option<String>,
) -> Result<(Audience, String), AppError> {
    require_admin(req, &state.settings.admin_api_key, "ADMIN_API_KEY")?;
    match company_param {
        None => Ok((Audience { company: None, operator: true }, "UTC".to_owned())),
        Some(raw) => {
            let id = crate::page::integer("company_id", raw)?;
            let tz = company_timezone(state, id).await?;
            Ok((Audience { company: Some(id), operator: true }, tz))
        }
    }
}

async fn company_timezone(state: &AppState, company: i64) -> Result<String, AppError> {
    let mut conn = state.db.get().await?;
    companies::table
        .find(company)
        .select(companies::timezone)
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(|| crate::jobs::not_found("company", company))
}

// ---------------------------------------------------------------------------------
// Query parameters.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Hour,
    Day,
    Week,
    Month,
}

impl Bucket {
    fn parse(raw: &str) -> Result<Bucket, AppError> {
        Ok(match raw {
            "hour" => Bucket::Hour,
            "day" => Bucket::Day,
            "week" => Bucket::Week,
            "month" => Bucket::Month,
            _ => {
                return Err(AppError::bad_request(
                    "bucket",
                    "invalid_value",
                    format!("`bucket` must be hour, day, week or month, not {raw:?}"),
                ));
            }
        })
    }

    fn sql(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Week => "week",
            Bucket::Month => "month",
        }
    }

    /// The shortest a bucket can be, for counting buckets in a range.
    fn hours(self) -> i64 {
        match self {
            Bucket::Hour => 1,
            Bucket::Day => 23,
            Bucket::Week => 167,
            Bucket::Month => 28 * 24 - 1,
        }
    }
}

/// What figures are split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Model,
    Action,
    User,
    Interview,
    ErrorType,
    Company,
}

impl Group {
    fn parse(param: &'static str, raw: &str, operator: bool) -> Result<Group, AppError> {
        Ok(match raw {
            "model" => Group::Model,
            "action" => Group::Action,
            "user" => Group::User,
            "interview" => Group::Interview,
            "error_type" => Group::ErrorType,
            "company" if operator => Group::Company,
            _ => {
                let company = if operator { ", company" } else { "" };
                return Err(AppError::bad_request(
                    param,
                    "invalid_value",
                    format!(
                        "`{param}` must be one of model, action, user, interview, error_type{company}, not {raw:?}"
                    ),
                ));
            }
        })
    }

    /// The group's key as text (a column of both `llm_logs` and `llm_usage_hourly`).
    fn sql(group: Option<Group>) -> &'static str {
        match group {
            None => "NULL::text",
            Some(Group::Model) => "model::text",
            Some(Group::Action) => "action::text",
            Some(Group::User) => "user_id::text",
            Some(Group::Interview) => "interview_id::text",
            Some(Group::ErrorType) => "error_type::text",
            Some(Group::Company) => "company_id::text",
        }
    }
}

/// `from` and `to`: a date (the whole local day; `to`'s day is included) or an
/// RFC 3339 instant (`to` excluded). Passed to PostgreSQL as text it reads under the
/// session's timezone.
fn bound(param: &'static str, raw: &Option<String>, end: bool) -> Result<Option<String>, AppError> {
    use chrono::Datelike;
    let Some(raw) = raw else { return Ok(None) };
    let outside = |year: i32| {
        (!(MIN_YEAR..=MAX_YEAR).contains(&year)).then(|| {
            AppError::bad_request(
                param,
                "invalid_value",
                format!("`{param}` must lie in the years {MIN_YEAR}-{MAX_YEAR}"),
            )
        })
    };
    if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        if let Some(err) = outside(day.year()) {
            return Err(err);
        }
        let day = if end { day.succ_opt().unwrap_or(day) } else { day };
        return Ok(Some(day.format("%Y-%m-%d").to_string()));
    }
    match DateTime::parse_from_rfc3339(raw) {
        Ok(at) => match outside(at.year()) {
            Some(err) => Err(err),
            None => Ok(Some(at.with_timezone(&Utc).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())),
        },
        Err(_) => Err(AppError::bad_request(
            param,
            "invalid_value",
            format!("`{param}` must be a date (2026-11-01) or an RFC 3339 time (2026-11-01T09:30:00+01:00)"),
        )),
    }
}

pub(crate) fn format(raw: &Option<String>) -> Result<bool, AppError> {
    match raw.as_deref() {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(AppError::bad_request(
            "format",
            "invalid_value",
            format!("`format` must be json or csv, not {other:?}"),
        )),
    }
}

pub(crate) fn limit(raw: &Option<String>, default: i64, max: i64) -> Result<i64, AppError> {
    match raw {
        None => Ok(default),
        Some(raw) => raw.parse::<i64>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
            AppError::bad_request("limit", "invalid_value", format!("`limit` must be an integer from 1 to {max}"))
        }),
    }
}

/// Timezone names PostgreSQL has confirmed, so each is asked about once per process.
fn known_timezones() -> &'static Mutex<HashSet<String>> {
    static KNOWN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    KNOWN.get_or_init(|| Mutex::new(HashSet::new()))
}

/// 400 naming `param` unless `tz` is an IANA timezone name PostgreSQL knows
/// (`Europe/Berlin`, `Asia/Kolkata`, `UTC`); POSIX strings such as `UTC+5`, whose sign
/// reads backwards, are refused.
pub async fn check_timezone(conn: &mut AsyncPgConnection, param: &'static str, tz: &str) -> Result<(), AppError> {
    let refuse = || {
        AppError::bad_request(
            param,
            "invalid_value",
            format!("`{param}` must be an IANA timezone name such as Europe/Berlin or Asia/Kolkata, not {tz:?}"),
        )
    };
    let plausible = !tz.is_empty()
        && tz.len() <= TIMEZONE_MAX
        && tz.starts_with(|c: char| c.is_ascii_alphabetic())
        && tz.chars().all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c));
    if !plausible {
        return Err(refuse());
    }
    if known_timezones().lock().map(|k| k.contains(tz)).unwrap_or(false) {
        return Ok(());
    }
    #[derive(QueryableByName)]
    struct Known {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        known: bool,
    }
    let found: Known = sql_query("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1) AS known")
        .bind::<Text, _>(tz)
        .get_result(conn)
        .await?;
    if !found.known {
        return Err(refuse());
    }
    if let Ok(mut known) = known_timezones().lock() {
        known.insert(tz.to_owned());
    }
    Ok(())
}

/// A connection to the analytics reads, its session in `tz`, under the query timeout
/// and without JIT (every user of this pool sets them first).
pub(crate) async fn reader(
    state: &AppState,
    tz: &str,
) -> Result<diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>, AppError> {
    let mut conn = state.analytics_read.get().await.map_err(|e| AppError::unavailable("the analytics database", e))?;
    check_timezone(&mut conn, "tz", tz).await?;
    let timeout = format!("{}ms", state.settings.analytics_query_timeout.as_millis());
    // JIT compiling these short aggregates costs seconds (their row estimates look
    // large) and saves nothing.
    sql_query(
        "SELECT set_config('TimeZone', $1, false), set_config('statement_timeout', $2, false), \
                set_config('jit', 'off', false)",
    )
    .bind::<Text, _>(tz)
    .bind::<Text, _>(timeout)
    .execute(&mut conn)
    .await
    .map_err(query_failed)?;
    Ok(conn)
}

/// A failed analytics read: 503 (the analytics database is another server), saying
/// so when the query ran over its time limit.
pub(crate) fn query_failed(err: diesel::result::Error) -> AppError {
    use diesel::result::{DatabaseErrorKind, Error};
    match &err {
        Error::DatabaseError(DatabaseErrorKind::Unknown, info) if info.message().contains("statement timeout") => {
            AppError::new(
                service_kit::error::ErrorKind::Unavailable,
                "the analytics query ran over its time limit (analytics_query_timeout); narrow the range or use a \
                 coarser bucket",
            )
            .with_code("analytics_timeout")
        }
        Error::NotFound => AppError::internal(err),
        _ => AppError::unavailable("the analytics database", err),
    }
}

/// The range as UTC instants: the given bounds read in the session's timezone, by
/// default the last 30 local days (today included). 400 unless it runs forwards.
pub(crate) async fn resolve_range(
    conn: &mut AsyncPgConnection,
    from: &Option<String>,
    to: &Option<String>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), AppError> {
    #[derive(QueryableByName)]
    struct Range {
        #[diesel(sql_type = Timestamptz)]
        lo: DateTime<Utc>,
        #[diesel(sql_type = Timestamptz)]
        hi: DateTime<Utc>,
    }
    let (from, to) = (bound("from", from, false)?, bound("to", to, true)?);
    let range: Range = sql_query(
        "SELECT coalesce($1::timestamptz, date_trunc('day', now()) - interval '29 days') AS lo, \
                coalesce($2::timestamptz, date_trunc('day', now()) + interval '1 day') AS hi",
    )
    .bind::<Nullable<Text>, _>(from)
    .bind::<Nullable<Text>, _>(to)
    .get_result(conn)
    .await
    .map_err(query_failed)?;
    if range.lo >= range.hi {
        return Err(AppError::bad_request("to", "invalid_value", "`to` must come after `from`"));
    }
    if (range.hi - range.lo).num_days() > MAX_RANGE_DAYS {
        return Err(AppError::bad_request(
            "from",
            "range_too_long",
            format!("a range spans at most {MAX_RANGE_DAYS} days; split longer ones"),
        ));
    }
    Ok((range.lo, range.hi))
}

// ---------------------------------------------------------------------------------
// Figures.

/// Sums of one bucket × group, as the query yields them.
#[derive(QueryableByName, Debug, Clone)]
struct UsageRow {
    /// The bucket's start in the request's timezone (RFC 3339); NULL without buckets.
    #[diesel(sql_type = Nullable<Text>)]
    start: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    grp: Option<String>,
    #[diesel(sql_type = BigInt)]
    calls: i64,
    #[diesel(sql_type = BigInt)]
    calls_without_usage: i64,
    #[diesel(sql_type = BigInt)]
    unpriced_calls: i64,
    #[diesel(sql_type = BigInt)]
    tokens_input: i64,
    #[diesel(sql_type = BigInt)]
    tokens_output: i64,
    #[diesel(sql_type = Double)]
    cost_usd: f64,
    #[diesel(sql_type = BigInt)]
    cache_hits: i64,
    #[diesel(sql_type = Double)]
    cost_saved_usd: f64,
    #[diesel(sql_type = BigInt)]
    streaming_calls: i64,
    #[diesel(sql_type = BigInt)]
    latency_ms_sum: i64,
    #[diesel(sql_type = BigInt)]
    tokens_cached_input: i64,
    #[diesel(sql_type = BigInt)]
    tokens_reasoning: i64,
    #[diesel(sql_type = BigInt)]
    errors: i64,
    /// The rollups' latency and time-to-first-token histograms, dense (NULL: no rollup
    /// rows).
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    lh: Option<Vec<i64>>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    th: Option<Vec<i64>>,
    /// The raw rows' histograms, sparse: their non-empty buckets (1-based) and the
    /// latency and time-to-first-token counts in each (NULL: no raw rows timed).
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    ks: Option<Vec<i64>>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    lvs: Option<Vec<i64>>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    tvs: Option<Vec<i64>>,
}

impl UsageRow {
    fn empty() -> Self {
        Self {
            start: None,
            grp: None,
            calls: 0,
            calls_without_usage: 0,
            unpriced_calls: 0,
            tokens_input: 0,
            tokens_output: 0,
            cost_usd: 0.0,
            cache_hits: 0,
            cost_saved_usd: 0.0,
            streaming_calls: 0,
            latency_ms_sum: 0,
            tokens_cached_input: 0,
            tokens_reasoning: 0,
            errors: 0,
            lh: None,
            th: None,
            ks: None,
            lvs: None,
            tvs: None,
        }
    }

    /// The latency and time-to-first-token histograms, dense.
    fn histograms(&self) -> (Vec<i64>, Vec<i64>) {
        let dense = |h: &Option<Vec<i64>>| match h {
            Some(h) if h.len() == HISTOGRAM_BUCKETS => h.clone(),
            _ => vec![0; HISTOGRAM_BUCKETS],
        };
        let (mut latency, mut ttft) = (dense(&self.lh), dense(&self.th));
        for (i, k) in self.ks.iter().flatten().enumerate() {
            let Some(slot) = usize::try_from(*k).ok().and_then(|k| k.checked_sub(1)).filter(|k| *k < HISTOGRAM_BUCKETS)
            else {
                continue;
            };
            latency[slot] += self.lvs.as_ref().and_then(|v| v.get(i)).copied().unwrap_or(0);
            ttft[slot] += self.tvs.as_ref().and_then(|v| v.get(i)).copied().unwrap_or(0);
        }
        (latency, ttft)
    }

    fn add(&mut self, other: &UsageRow) {
        self.calls += other.calls;
        self.calls_without_usage += other.calls_without_usage;
        self.unpriced_calls += other.unpriced_calls;
        self.tokens_input += other.tokens_input;
        self.tokens_output += other.tokens_output;
        self.cost_usd += other.cost_usd;
        self.cache_hits += other.cache_hits;
        self.cost_saved_usd += other.cost_saved_usd;
        self.streaming_calls += other.streaming_calls;
        self.latency_ms_sum += other.latency_ms_sum;
        self.tokens_cached_input += other.tokens_cached_input;
        self.tokens_reasoning += other.tokens_reasoning;
        let (mut latency, mut ttft) = self.histograms();
        let (l, t) = other.histograms();
        latency.iter_mut().zip(l).for_each(|(a, b)| *a += b);
        ttft.iter_mut().zip(t).for_each(|(a, b)| *a += b);
        self.lh = Some(latency);
        self.th = Some(ttft);
        (self.ks, self.lvs, self.tvs) = (None, None, None);
        self.errors += other.errors;
    }

    fn figures(&self) -> Figures {
        let (latency, ttft) = self.histograms();
        let timed: i64 = latency.iter().sum();
        let percentiles = |h: &[i64]| Percentiles {
            p50: quantile(h, 0.50).map(round1),
            p95: quantile(h, 0.95).map(round1),
            p99: quantile(h, 0.99).map(round1),
        };
        Figures {
            calls: self.calls,
            errors: self.errors,
            error_rate: if self.calls > 0 { self.errors as f64 / self.calls as f64 } else { 0.0 },
            tokens_input: self.tokens_input,
            tokens_output: self.tokens_output,
            tokens_cached_input: self.tokens_cached_input,
            tokens_reasoning: self.tokens_reasoning,
            cost_usd: self.cost_usd,
            unpriced_calls: self.unpriced_calls,
            calls_without_usage: self.calls_without_usage,
            cache_hits: self.cache_hits,
            cost_saved_usd: self.cost_saved_usd,
            streaming_calls: self.streaming_calls,
            latency_ms_mean: (timed > 0).then(|| round1(self.latency_ms_sum as f64 / timed as f64)),
            latency_ms: percentiles(&latency),
            ttft_ms: percentiles(&ttft),
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The figures of a set of calls.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct Figures {
    pub calls: i64,
    /// Calls that failed (any `error_type`).
    pub errors: i64,
    /// `errors / calls` (0 without calls).
    pub error_rate: f64,
    pub tokens_input: i64,
    pub tokens_output: i64,
    /// Of `tokens_input`, those the upstream served from its prompt cache (priced apart).
    pub tokens_cached_input: i64,
    /// Of `tokens_output`, the reasoning tokens.
    pub tokens_reasoning: i64,
    /// Cost in USD of the priced calls; see `unpriced_calls` for the others.
    pub cost_usd: f64,
    /// Calls whose model had no price: their cost is unknown, not $0.
    pub unpriced_calls: i64,
    /// Calls whose upstream reported no token usage.
    pub calls_without_usage: i64,
    /// Calls answered from our LLM results cache (no upstream call, cost 0).
    pub cache_hits: i64,
    /// What those calls would have cost.
    pub cost_saved_usd: f64,
    pub streaming_calls: i64,
    pub latency_ms_mean: Option<f64>,
    /// Latency percentiles, each within one histogram bucket (±12 %) of the exact one.
    pub latency_ms: Percentiles,
    /// Time to the first token of streamed calls, likewise.
    pub ttft_ms: Percentiles,
}

#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// The aggregate over [`$1`, `$2`) for `$3`'s company (NULL: every company), split by
/// `bucket` (in the session's timezone) and `group`, at most `$4` rows, ordered by
/// bucket and group, or with `by_cost` by cost, largest first.
///
/// The rollups' histograms are added element by element with plain sums; the raw rows'
/// are counted per bucket (`llm_latency_bucket`) and handed over sparse, as (bucket,
/// count) pairs of the non-empty buckets; the two are added here. Without `percentiles`
/// no histogram is read or counted (the sums alone cost a fraction: a ranking by spend
/// over a month of user rollups reads tens of thousands of 60-bucket histograms).
fn usage_sql(
    bucket: Option<Bucket>,
    group: Option<Group>,
    company: bool,
    by_cost: bool,
    from_raw: bool,
    percentiles: bool,
) -> String {
    let trunc = |x: &str| match bucket {
        Some(b) => format!("date_trunc('{}', {x})", b.sql()),
        None => "NULL::timestamptz".to_owned(),
    };
    let same_bucket = match bucket {
        Some(_) => format!("{} = {}", trunc("h"), trunc("h + interval '1 hour' - interval '1 microsecond'")),
        None => "TRUE".to_owned(),
    };
    let whole = if from_raw {
        "FALSE".to_owned()
    } else {
        format!("h >= $1 AND h + interval '1 hour' <= $2 AND {same_bucket}")
    };
    let (rollups, errors) = rollups_for(group, company, percentiles);
    let company = company_filter(company);
    let grp = Group::sql(group);
    let order = if by_cost { "t.cost_usd DESC, t.calls DESC, t.grp" } else { "t.b, t.grp" };
    format!(
        "WITH hours AS (SELECT h FROM generate_series(date_trunc('hour', $1::timestamptz, 'UTC'), \
                                $2::timestamptz - interval '1 microsecond', interval '1 hour') AS h), \
         whole AS (SELECT h FROM hours WHERE {whole}), \
         edge AS (SELECT h FROM hours WHERE NOT ({whole})), \
         rolled AS ( \
           SELECT {b_hour} AS b, {grp} AS grp, sum(calls) AS calls, sum(calls_without_usage) AS calls_without_usage, \
                  sum(unpriced_calls) AS unpriced_calls, sum(tokens_input) AS tokens_input, \
                  sum(tokens_output) AS tokens_output, sum(cost_usd) AS cost_usd, sum(cache_hits) AS cache_hits, \
                  sum(cost_saved_usd) AS cost_saved_usd, sum(streaming_calls) AS streaming_calls, \
                  sum(latency_ms_sum) AS latency_ms_sum, sum(tokens_cached_input) AS tokens_cached_input, \
                  sum(tokens_reasoning) AS tokens_reasoning, \
                  {errors} AS errors, {dense_latency} AS lh, {dense_ttft} AS th \
           FROM {rollups} GROUP BY 1, 2), \
         raw AS MATERIALIZED (SELECT {b_row} AS b, {grp} AS grp, l.* \
           FROM llm_logs l JOIN edge ON l.created_at >= edge.h AND l.created_at < edge.h + interval '1 hour' \
           WHERE l.created_at >= $1 AND l.created_at < $2 AND {company}), \
         sums AS ( \
           SELECT b, grp, calls, calls_without_usage, unpriced_calls, tokens_input, tokens_output, cost_usd, \
                  cache_hits, cost_saved_usd, streaming_calls, latency_ms_sum, tokens_cached_input, tokens_reasoning, \
                  errors \
           FROM rolled \
           UNION ALL \
           SELECT b, grp, {sums}, count(*) FILTER (WHERE error_type IS NOT NULL) FROM raw GROUP BY b, grp), \
         raw_hist AS ( \
           SELECT b, grp, llm_latency_bucket(latency_ms) AS k, count(*) AS lv, 0 AS tv FROM raw \
           WHERE {percentiles} AND latency_ms IS NOT NULL GROUP BY 1, 2, 3 \
           UNION ALL \
           SELECT b, grp, llm_latency_bucket(time_to_first_token_ms), 0, count(*) FROM raw \
           WHERE {percentiles} AND time_to_first_token_ms IS NOT NULL GROUP BY 1, 2, 3), \
         per_bucket AS (SELECT b, grp, k, sum(lv)::int8 AS lv, sum(tv)::int8 AS tv FROM raw_hist GROUP BY 1, 2, 3), \
         raw_histograms AS ( \
           SELECT b, grp, array_agg(k::int8 ORDER BY k) AS ks, array_agg(lv ORDER BY k) AS lvs, \
                  array_agg(tv ORDER BY k) AS tvs \
           FROM per_bucket GROUP BY b, grp), \
         t AS ( \
           SELECT b, grp, sum(calls)::int8 AS calls, sum(calls_without_usage)::int8 AS calls_without_usage, \
                  sum(unpriced_calls)::int8 AS unpriced_calls, sum(tokens_input)::int8 AS tokens_input, \
                  sum(tokens_output)::int8 AS tokens_output, sum(cost_usd)::float8 AS cost_usd, \
                  sum(cache_hits)::int8 AS cache_hits, sum(cost_saved_usd)::float8 AS cost_saved_usd, \
                  sum(streaming_calls)::int8 AS streaming_calls, sum(latency_ms_sum)::int8 AS latency_ms_sum, \
                  sum(tokens_cached_input)::int8 AS tokens_cached_input, \
                  sum(tokens_reasoning)::int8 AS tokens_reasoning, sum(errors)::int8 AS errors \
           FROM sums GROUP BY b, grp) \
         SELECT to_char(t.b, 'YYYY-MM-DD\"T\"HH24:MI:SSTZH:TZM') AS start, t.grp, t.calls, t.calls_without_usage, \
                t.unpriced_calls, t.tokens_input, t.tokens_output, t.cost_usd, t.cache_hits, t.cost_saved_usd, \
                t.streaming_calls, t.latency_ms_sum, t.tokens_cached_input, t.tokens_reasoning, t.errors, r.lh, r.th, h.ks, h.lvs, h.tvs \
         FROM t \
         LEFT JOIN rolled r ON (t.b IS NULL, coalesce(t.b, 'epoch'), t.grp IS NULL, coalesce(t.grp, '')) \
            = (r.b IS NULL, coalesce(r.b, 'epoch'), r.grp IS NULL, coalesce(r.grp, '')) \
         LEFT JOIN raw_histograms h ON (t.b IS NULL, coalesce(t.b, 'epoch'), t.grp IS NULL, coalesce(t.grp, '')) \
            = (h.b IS NULL, coalesce(h.b, 'epoch'), h.grp IS NULL, coalesce(h.grp, '')) \
         ORDER BY {order} LIMIT $4",
        b_hour = trunc("r.hour"),
        b_row = trunc("l.created_at"),
        sums = common_models::llm_usage_sums!(),
        dense_latency = if percentiles { histogram_sum_sql("latency_ms_histogram") } else { "NULL::int8[]".to_owned() },
        dense_ttft = if percentiles { histogram_sum_sql("ttft_ms_histogram") } else { "NULL::int8[]".to_owned() },
    )
}

/// `$3`'s company (`company`), or every company (`$3` NULL).
fn company_filter(company: bool) -> &'static str {
    if company { "company_id = $3" } else { "$3::int8 IS NULL" }
}

/// The rollups an aggregate reads its whole hours from (joined with `whole`, filtered
/// to `$3`'s company when `company`), and how they count errors: the smallest of the
/// small grains with the keys it needs (a company's month is a few thousand rows
/// there), else the coarse grain (company, action, model, error), else for interviews,
/// errors by type or percentiles by user the fine rollups.
fn rollups_for(group: Option<Group>, company: bool, percentiles: bool) -> (String, &'static str) {
    // The group's key among the small grains' keys (`None`: not one of them).
    let key: Option<&[&str]> = match group {
        None => Some(&[]),
        Some(Group::Model) => Some(&["model"]),
        Some(Group::Action) => Some(&["action"]),
        Some(Group::User) => Some(&["user_id"]),
        Some(Group::Company) => Some(&["company_id"]),
        Some(Group::Interview | Group::ErrorType) => None,
    };
    let filter = company_filter(company);
    if let Some(key) = key {
        let keys: Vec<&str> = company.then_some("company_id").into_iter().chain(key.iter().copied()).collect();
        // Every company's sums, without percentiles, from the narrow totals (a month of
        // the per-company grain there is a few MiB; its rows with histograms, a hundred).
        let totals = Grain::covering_totals(&keys).filter(|_| !company && !percentiles);
        let grain = totals
            .map(|g| ("llm_usage_hourly_totals", g))
            .or_else(|| Grain::covering(&keys, percentiles).map(|g| ("llm_usage_hourly_grains", g)));
        if let Some((table, grain)) = grain {
            return (
                format!("{table} r JOIN whole ON r.hour = whole.h WHERE r.grain = {} AND {filter}", grain.id()),
                "sum(errors)",
            );
        }
    }
    let table = match group {
        Some(Group::User | Group::Interview) => "llm_usage_hourly",
        _ => "llm_usage_hourly_models",
    };
    (
        format!("{table} r JOIN whole ON r.hour = whole.h WHERE {filter}"),
        "sum(CASE WHEN error_type IS NULL THEN 0 ELSE calls END)",
    )
}

/// The usage aggregate's SQL exactly as the API runs it, for the benchmark (binds: from,
/// to, company or NULL, most rows; the session's timezone cuts the buckets). With
/// `from_raw` every hour is read from the raw rows instead of the rollups: the same
/// figures as a dashboard over raw logs would compute them.
pub fn usage_sql_for(
    bucket: Option<&str>,
    group: Option<&str>,
    company: bool,
    by_cost: bool,
    from_raw: bool,
    percentiles: bool,
) -> Result<String, AppError> {
    let bucket = bucket.map(Bucket::parse).transpose()?;
    let group = group.map(|g| Group::parse("group_by", g, true)).transpose()?;
    Ok(usage_sql(bucket, group, company, by_cost, from_raw, percentiles))
}

#[expect(clippy::too_many_arguments)]
async fn aggregate(
    conn: &mut AsyncPgConnection,
    range: (DateTime<Utc>, DateTime<Utc>),
    audience: Audience,
    bucket: Option<Bucket>,
    group: Option<Group>,
    by_cost: bool,
    max_rows: i64,
    percentiles: bool,
) -> Result<Vec<UsageRow>, AppError> {
    sql_query(usage_sql(bucket, group, audience.company.is_some(), by_cost, false, percentiles))
        .bind::<Timestamptz, _>(range.0)
        .bind::<Timestamptz, _>(range.1)
        .bind::<Nullable<BigInt>, _>(audience.company)
        .bind::<BigInt, _>(max_rows)
        .load(conn)
        .await
        .map_err(query_failed)
}

/// One bucket × group of figures, for the dashboard.
pub(crate) struct Point {
    /// The bucket's start in the session's timezone (RFC 3339); `None` without buckets.
    pub start: Option<String>,
    pub group: Option<String>,
    pub figures: Figures,
}

/// The figures the API's usage and top routes compute, for the dashboard: over
/// `range`, for `company` (`None`: every company), by `bucket` and `group` (named as
/// in the API), at most `max_rows`; with `by_cost` the largest spenders first. Also the
/// points' totals (histograms merged, so its percentiles are the range's). Without
/// `percentiles` the figures' percentiles are `None`, and the query much cheaper.
#[expect(clippy::too_many_arguments)]
pub(crate) async fn figures(
    conn: &mut AsyncPgConnection,
    range: (DateTime<Utc>, DateTime<Utc>),
    company: Option<i64>,
    bucket: Option<&str>,
    group: Option<&str>,
    by_cost: bool,
    max_rows: i64,
    percentiles: bool,
) -> Result<(Vec<Point>, Figures), AppError> {
    let bucket = bucket.map(Bucket::parse).transpose()?;
    let group = group.map(|g| Group::parse("group_by", g, true)).transpose()?;
    let audience = Audience { company, operator: company.is_none() };
    let rows = aggregate(conn, range, audience, bucket, group, by_cost, max_rows, percentiles).await?;
    let mut totals = UsageRow::empty();
    rows.iter().for_each(|r| totals.add(r));
    let points = rows.into_iter().map(|r| Point { figures: r.figures(), start: r.start, group: r.grp }).collect();
    Ok((points, totals.figures()))
}

/// Figures by bucket × group, and folded both ways from the same rows (histograms
/// merged, so percentiles stay exact to their bucket): per bucket over all groups, per
/// group over the range (largest cost first), and in all. One query for what would
/// otherwise take three.
pub(crate) struct Breakdown {
    pub cells: Vec<Point>,
    pub by_bucket: Vec<Point>,
    pub by_group: Vec<Point>,
    pub totals: Figures,
}

pub(crate) async fn breakdown(
    conn: &mut AsyncPgConnection,
    range: (DateTime<Utc>, DateTime<Utc>),
    company: Option<i64>,
    bucket: &str,
    group: &str,
) -> Result<Breakdown, AppError> {
    use std::collections::{BTreeMap, HashMap};
    let bucket = Bucket::parse(bucket)?;
    let group = Group::parse("group_by", group, true)?;
    let audience = Audience { company, operator: company.is_none() };
    let rows = aggregate(conn, range, audience, Some(bucket), Some(group), false, MAX_POINTS, true).await?;
    let mut by_bucket: BTreeMap<String, UsageRow> = BTreeMap::new();
    let mut by_group: HashMap<Option<String>, UsageRow> = HashMap::new();
    let mut totals = UsageRow::empty();
    for r in &rows {
        let start = r.start.clone().unwrap_or_default();
        by_bucket.entry(start.clone()).or_insert_with(|| UsageRow { start: Some(start), ..UsageRow::empty() }).add(r);
        by_group.entry(r.grp.clone()).or_insert_with(|| UsageRow { grp: r.grp.clone(), ..UsageRow::empty() }).add(r);
        totals.add(r);
    }
    let point = |r: UsageRow| Point { figures: r.figures(), start: r.start, group: r.grp };
    let mut by_group: Vec<Point> = by_group.into_values().map(point).collect();
    by_group.sort_by(|a, b| {
        b.figures
            .cost_usd
            .total_cmp(&a.figures.cost_usd)
            .then(b.figures.calls.cmp(&a.figures.calls))
            .then(a.group.cmp(&b.group))
    });
    Ok(Breakdown {
        cells: rows.into_iter().map(point).collect(),
        by_bucket: by_bucket.into_values().map(point).collect(),
        by_group,
        totals: totals.figures(),
    })
}

// ---------------------------------------------------------------------------------
// GET …/usage

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    /// First day (`2026-11-01`, from its local midnight) or instant (RFC 3339); default:
    /// 29 days before today.
    from: Option<String>,
    /// Last day, included (`2026-11-30`), or instant, excluded; default: today included.
    to: Option<String>,
    /// IANA timezone the days are cut in; default: the company's (`timezone`), UTC for
    /// the operator's all-company view.
    tz: Option<String>,
    /// hour, day (default), week (from Monday) or month.
    bucket: Option<String>,
    /// Split each bucket by model, action, user, interview or error_type.
    group_by: Option<String>,
    /// json (default) or csv.
    format: Option<String>,
    /// The operator's routes only (`/api/v1/admin/analytics/…`): one company.
    #[param(ignore)]
    company_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct UsagePoint {
    /// The bucket's start, in the request's timezone.
    start: String,
    /// The group's key (model, action, user id, interview id, error type); `null` for
    /// calls without one (e.g. a user-less key, or no error).
    group: Option<String>,
    #[serde(flatten)]
    figures: Figures,
}

#[derive(Serialize, utoipa::ToSchema)]
struct UsageAnswer {
    company_id: Option<i64>,
    /// The range read: [from, to).
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    timezone: String,
    bucket: &'static str,
    group_by: Option<String>,
    data: Vec<UsagePoint>,
    /// The whole range's figures.
    totals: Figures,
}

/// A company's LLM usage and cost over time (owners and admins).
#[utoipa::path(get, path = "/api/v1/analytics/usage", tag = "analytics", params(UsageQuery),
    responses((status = 200, description = "Figures per bucket (and group), and the range's totals; \
        `text/csv` with `format=csv`.", content(
            (UsageAnswer = "application/json"), (String = "text/csv")))))]
async fn usage(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let q: UsageQuery = crate::page::query(&req)?;
    let (audience, tz) = company_audience(&req, &state, &q.company_id).await?;
    usage_answer(&state, q, audience, tz).await
}

async fn admin_usage(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let q: UsageQuery = crate::page::query(&req)?;
    let (audience, tz) = operator_audience(&req, &state, &q.company_id).await?;
    usage_answer(&state, q, audience, tz).await
}

async fn usage_answer(
    state: &AppState,
    q: UsageQuery,
    audience: Audience,
    tz: String,
) -> Result<HttpResponse, AppError> {
    let bucket = Bucket::parse(q.bucket.as_deref().unwrap_or("day"))?;
    let group = q.group_by.as_deref().map(|g| Group::parse("group_by", g, audience.operator)).transpose()?;
    let csv = format(&q.format)?;
    let tz = q.tz.clone().unwrap_or(tz);
    let mut conn = reader(state, &tz).await?;
    let range = resolve_range(&mut conn, &q.from, &q.to).await?;
    let spans = (range.1 - range.0).num_hours() / bucket.hours();
    if spans > MAX_BUCKETS {
        return Err(AppError::bad_request(
            "bucket",
            "too_many_points",
            format!(
                "the range holds about {spans} {}s; at most {MAX_BUCKETS}: use a coarser bucket or a shorter range",
                bucket.sql()
            ),
        ));
    }
    let rows = aggregate(&mut conn, range, audience, Some(bucket), group, false, MAX_POINTS + 1, true).await?;
    if rows.len() as i64 > MAX_POINTS {
        return Err(AppError::bad_request(
            "group_by",
            "too_many_points",
            format!("more than {MAX_POINTS} buckets × groups; use a coarser bucket, a shorter range or no group_by"),
        ));
    }
    let mut totals = UsageRow::empty();
    rows.iter().for_each(|r| totals.add(r));
    if csv {
        return Ok(csv_answer("usage", usage_csv(rows)));
    }
    let data = rows
        .into_iter()
        .map(|r| UsagePoint { start: r.start.clone().unwrap_or_default(), group: r.grp.clone(), figures: r.figures() })
        .collect();
    Ok(HttpResponse::Ok().json(UsageAnswer {
        company_id: audience.company,
        from: range.0,
        to: range.1,
        timezone: tz,
        bucket: bucket.sql(),
        group_by: q.group_by,
        data,
        totals: totals.figures(),
    }))
}

// ---------------------------------------------------------------------------------
// GET …/top

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct TopQuery {
    /// What is ranked: model, action, user, interview or error_type (the operator's
    /// routes also: company).
    by: Option<String>,
    /// As for usage.
    from: Option<String>,
    to: Option<String>,
    tz: Option<String>,
    /// How many, 1-100 (default 10).
    #[param(value_type = Option<i64>)]
    limit: Option<String>,
    format: Option<String>,
    /// The operator's routes only (`/api/v1/admin/analytics/…`): one company.
    #[param(ignore)]
    company_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct TopEntry {
    key: Option<String>,
    /// This entry's share of the range's cost (0 when nothing cost anything).
    cost_share: f64,
    #[serde(flatten)]
    figures: Figures,
}

#[derive(Serialize, utoipa::ToSchema)]
struct TopAnswer {
    company_id: Option<i64>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    timezone: String,
    by: String,
    data: Vec<TopEntry>,
    totals: Figures,
}

/// The biggest spenders among models, actions, users or interviews (owners and admins).
#[utoipa::path(get, path = "/api/v1/analytics/top", tag = "analytics", params(TopQuery),
    responses((status = 200, description = "Ranked by cost, then calls; `text/csv` with `format=csv`.", content(
        (TopAnswer = "application/json"), (String = "text/csv")))))]
async fn top(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let q: TopQuery = crate::page::query(&req)?;
    let (audience, tz) = company_audience(&req, &state, &q.company_id).await?;
    top_answer(&state, q, audience, tz).await
}

async fn admin_top(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let q: TopQuery = crate::page::query(&req)?;
    let (audience, tz) = operator_audience(&req, &state, &q.company_id).await?;
    top_answer(&state, q, audience, tz).await
}

async fn top_answer(state: &AppState, q: TopQuery, audience: Audience, tz: String) -> Result<HttpResponse, AppError> {
    let Some(by) = q.by.as_deref() else {
        return Err(AppError::bad_request(
            "by",
            "missing_field",
            "`by` is required (model, action, user, interview, error_type)",
        ));
    };
    let group = Group::parse("by", by, audience.operator)?;
    let n = limit(&q.limit, 10, MAX_TOP)?;
    let csv = format(&q.format)?;
    let tz = q.tz.clone().unwrap_or(tz);
    let mut conn = reader(state, &tz).await?;
    let range = resolve_range(&mut conn, &q.from, &q.to).await?;
    let rows = aggregate(&mut conn, range, audience, None, Some(group), true, n, true).await?;
    let totals =
        aggregate(&mut conn, range, audience, None, None, false, 1, true).await?.pop().unwrap_or_else(UsageRow::empty);
    if csv {
        return Ok(csv_answer("top", usage_csv(rows)));
    }
    let share = |cost: f64| if totals.cost_usd > 0.0 { cost / totals.cost_usd } else { 0.0 };
    let data = rows
        .into_iter()
        .map(|r| TopEntry { key: r.grp.clone(), cost_share: share(r.cost_usd), figures: r.figures() })
        .collect();
    Ok(HttpResponse::Ok().json(TopAnswer {
        company_id: audience.company,
        from: range.0,
        to: range.1,
        timezone: tz,
        by: by.to_owned(),
        data,
        totals: totals.figures(),
    }))
}

// ---------------------------------------------------------------------------------
// GET …/calls

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct CallsQuery {
    /// As for usage.
    from: Option<String>,
    to: Option<String>,
    tz: Option<String>,
    /// Only this model / action / error type (`none`: only calls that succeeded).
    model: Option<String>,
    action: Option<String>,
    error_type: Option<String>,
    #[param(value_type = Option<i64>)]
    interview_id: Option<String>,
    #[param(value_type = Option<i64>)]
    user_id: Option<String>,
    /// Page size, 1-500 (default 50); ignored by `format=csv`, which streams them all.
    #[param(value_type = Option<i64>)]
    limit: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    format: Option<String>,
    /// The operator's routes only (`/api/v1/admin/analytics/…`): one company.
    #[param(ignore)]
    company_id: Option<String>,
}

/// One LLM call, as logged.
#[derive(QueryableByName, Serialize, utoipa::ToSchema)]
struct Call {
    #[serde(skip)]
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<BigInt>)]
    company_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    user_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    interview_id: Option<i64>,
    #[diesel(sql_type = Text)]
    action: String,
    #[diesel(sql_type = Nullable<Text>)]
    model: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    request_id: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    tokens_input: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    tokens_output: Option<i32>,
    /// Of `tokens_input`, those from the upstream's prompt cache (`null`: not said).
    #[diesel(sql_type = Nullable<Integer>)]
    tokens_cached_input: Option<i32>,
    /// Of `tokens_output`, the reasoning tokens (`null`: not said).
    #[diesel(sql_type = Nullable<Integer>)]
    tokens_reasoning: Option<i32>,
    #[diesel(sql_type = Bool)]
    usage_reported: bool,
    /// `null`: unknown (an unpriced model, or no usage reported); 0 for a cache hit.
    #[diesel(sql_type = Nullable<Double>)]
    cost_usd: Option<f64>,
    #[diesel(sql_type = Nullable<Text>)]
    price_table_version: Option<String>,
    #[diesel(sql_type = Bool)]
    cache_hit: bool,
    #[diesel(sql_type = Nullable<Double>)]
    cost_saved_usd: Option<f64>,
    #[diesel(sql_type = Nullable<Integer>)]
    latency_ms: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    time_to_first_token_ms: Option<i32>,
    #[diesel(sql_type = Bool)]
    streaming: bool,
    #[diesel(sql_type = Nullable<SmallInt>)]
    http_status: Option<i16>,
    #[diesel(sql_type = Nullable<Text>)]
    error_type: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    error_message: Option<String>,
}

/// The calls of [`$1`, `$2`) matching the filters, newest first, below the cursor
/// (`$9`, `$10`), at most `$11`.
fn calls_sql(company: bool) -> String {
    let company = company_filter(company);
    format!(
        "SELECT id, event_id::text AS event_id, created_at, company_id, user_id, interview_id, action, model, \
                request_id, tokens_input, tokens_output, tokens_cached_input, tokens_reasoning, usage_reported, cost_usd::float8 AS cost_usd, \
                price_table_version, cache_hit, cost_saved_usd::float8 AS cost_saved_usd, latency_ms, \
                time_to_first_token_ms, streaming, http_status, error_type, error_message \
         FROM llm_logs \
         WHERE created_at >= $1 AND created_at < $2 AND {company} \
           AND ($4::text IS NULL OR model = $4) AND ($5::text IS NULL OR action = $5) \
           AND ($6::text IS NULL OR error_type IS NOT DISTINCT FROM nullif($6, 'none')) \
           AND ($7::int8 IS NULL OR interview_id = $7) AND ($8::int8 IS NULL OR user_id = $8) \
           AND ($9::timestamptz IS NULL OR (created_at, id) < ($9, $10)) \
         ORDER BY created_at DESC, id DESC LIMIT $11"
    )
}

/// The filters of a calls query, checked.
#[derive(Clone)]
struct CallFilter {
    range: (DateTime<Utc>, DateTime<Utc>),
    company: Option<i64>,
    model: Option<String>,
    action: Option<String>,
    error_type: Option<String>,
    interview: Option<i64>,
    user: Option<i64>,
}

async fn load_calls(
    conn: &mut AsyncPgConnection,
    f: &CallFilter,
    after: Option<(DateTime<Utc>, i64)>,
    n: i64,
) -> Result<Vec<Call>, AppError> {
    sql_query(calls_sql(f.company.is_some()))
        .bind::<Timestamptz, _>(f.range.0)
        .bind::<Timestamptz, _>(f.range.1)
        .bind::<Nullable<BigInt>, _>(f.company)
        .bind::<Nullable<Text>, _>(f.model.as_deref())
        .bind::<Nullable<Text>, _>(f.action.as_deref())
        .bind::<Nullable<Text>, _>(f.error_type.as_deref())
        .bind::<Nullable<BigInt>, _>(f.interview)
        .bind::<Nullable<BigInt>, _>(f.user)
        .bind::<Nullable<Timestamptz>, _>(after.map(|a| a.0))
        .bind::<BigInt, _>(after.map_or(0, |a| a.1))
        .bind::<BigInt, _>(n)
        .load(conn)
        .await
        .map_err(query_failed)
}

/// A cursor for lists ordered by (time, id), newest first.
pub(crate) fn time_cursor(at: DateTime<Utc>, id: i64) -> String {
    format!("t{:x}.{:x}", at.timestamp_micros(), id)
}

pub(crate) fn decode_time_cursor(raw: &str) -> Result<(DateTime<Utc>, i64), AppError> {
    let bad = || AppError::bad_request("cursor", "invalid_value", "`cursor` is not one this API returned");
    let (micros, id) = raw.strip_prefix('t').and_then(|r| r.split_once('.')).ok_or_else(bad)?;
    let micros = i64::from_str_radix(micros, 16).map_err(|_| bad())?;
    let id = i64::from_str_radix(id, 16).map_err(|_| bad())?;
    Ok((DateTime::from_timestamp_micros(micros).ok_or_else(bad)?, id))
}

#[derive(Serialize, utoipa::ToSchema)]
struct CallsPage {
    data: Vec<Call>,
    next_cursor: Option<String>,
}

/// The LLM calls behind a figure, newest first (owners and admins).
#[utoipa::path(get, path = "/api/v1/analytics/calls", tag = "analytics", params(CallsQuery),
    responses((status = 200, description = "A page of calls; with `format=csv`, every matching call as \
        streamed `text/csv`.", content((CallsPage = "application/json"), (String = "text/csv")))))]
async fn calls(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let q: CallsQuery = crate::page::query(&req)?;
    let (audience, tz) = company_audience(&req, &state, &q.company_id).await?;
    calls_answer(&state, q, audience, tz).await
}

async fn admin_calls(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let q: CallsQuery = crate::page::query(&req)?;
    let (audience, tz) = operator_audience(&req, &state, &q.company_id).await?;
    calls_answer(&state, q, audience, tz).await
}

async fn calls_answer(
    state: &AppState,
    q: CallsQuery,
    audience: Audience,
    tz: String,
) -> Result<HttpResponse, AppError> {
    for (param, value) in [("model", &q.model), ("action", &q.action), ("error_type", &q.error_type)] {
        if let Some(v) = value {
            crate::jobs::storable(param, v)?;
        }
    }
    let interview = q.interview_id.as_deref().map(|v| crate::page::integer("interview_id", v)).transpose()?;
    let user = q.user_id.as_deref().map(|v| crate::page::integer("user_id", v)).transpose()?;
    let n = limit(&q.limit, 50, MAX_CALLS_PAGE)?;
    let after = q.cursor.as_deref().filter(|c| !c.is_empty()).map(decode_time_cursor).transpose()?;
    let csv = format(&q.format)?;
    let mut conn = reader(state, q.tz.as_deref().unwrap_or(&tz)).await?;
    let filter = CallFilter {
        range: resolve_range(&mut conn, &q.from, &q.to).await?,
        company: audience.company,
        model: q.model,
        action: q.action,
        error_type: q.error_type,
        interview,
        user,
    };
    if csv {
        return Ok(csv_answer("calls", calls_csv(conn, filter, after)));
    }
    let mut rows = load_calls(&mut conn, &filter, after, n + 1).await?;
    let more = rows.len() as i64 > n;
    rows.truncate(n as usize);
    let next_cursor = if more { rows.last().map(|c| time_cursor(c.created_at, c.id)) } else { None };
    Ok(HttpResponse::Ok().json(CallsPage { data: rows, next_cursor }))
}

// ---------------------------------------------------------------------------------
// CSV.

pub(crate) type Chunks = futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

pub(crate) fn csv_answer(name: &str, body: Chunks) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}.csv\"")))
        .streaming(body)
}

/// One CSV field: quoted when it holds a separator, quote or line break; text that a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading `'`.
pub(crate) fn text_field(out: &mut String, value: Option<&str>) {
    let Some(v) = value else { return };
    let guarded = if v.starts_with(['=', '+', '-', '@']) { format!("'{v}") } else { v.to_owned() };
    if guarded.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&guarded.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&guarded);
    }
}

pub(crate) fn number_field<T: std::fmt::Display>(out: &mut String, value: Option<T>) {
    if let Some(v) = value {
        out.push_str(&v.to_string());
    }
}

const USAGE_HEADER: &str = "start,group,calls,errors,error_rate,tokens_input,tokens_output,tokens_cached_input,\
tokens_reasoning,cost_usd,unpriced_calls,\
calls_without_usage,cache_hits,cost_saved_usd,streaming_calls,latency_ms_mean,latency_ms_p50,latency_ms_p95,\
latency_ms_p99,ttft_ms_p50,ttft_ms_p95,ttft_ms_p99\n";

/// Usage rows as CSV, a chunk per row (their number is bounded by [`MAX_POINTS`]).
fn usage_csv(rows: Vec<UsageRow>) -> Chunks {
    let header = std::iter::once(Ok(Bytes::from_static(USAGE_HEADER.as_bytes())));
    let lines = rows.into_iter().map(|r| {
        let f = r.figures();
        let mut line = String::with_capacity(160);
        text_field(&mut line, r.start.as_deref());
        line.push(',');
        text_field(&mut line, r.grp.as_deref());
        let numbers: [Option<String>; 20] = [
            Some(f.calls.to_string()),
            Some(f.errors.to_string()),
            Some(f.error_rate.to_string()),
            Some(f.tokens_input.to_string()),
            Some(f.tokens_output.to_string()),
            Some(f.tokens_cached_input.to_string()),
            Some(f.tokens_reasoning.to_string()),
            Some(f.cost_usd.to_string()),
            Some(f.unpriced_calls.to_string()),
            Some(f.calls_without_usage.to_string()),
            Some(f.cache_hits.to_string()),
            Some(f.cost_saved_usd.to_string()),
            Some(f.streaming_calls.to_string()),
            f.latency_ms_mean.map(|v| v.to_string()),
            f.latency_ms.p50.map(|v| v.to_string()),
            f.latency_ms.p95.map(|v| v.to_string()),
            f.latency_ms.p99.map(|v| v.to_string()),
            f.ttft_ms.p50.map(|v| v.to_string()),
            f.ttft_ms.p95.map(|v| v.to_string()),
            f.ttft_ms.p99.map(|v| v.to_string()),
        ];
        for n in numbers {
            line.push(',');
            number_field(&mut line, n);
        }
        line.push('\n');
        Ok(Bytes::from(line))
    });
    Box::pin(futures_util::stream::iter(header.chain(lines)))
}

const CALLS_HEADER: &str = "event_id,created_at,company_id,user_id,interview_id,action,model,request_id,tokens_input,\
tokens_output,tokens_cached_input,tokens_reasoning,usage_reported,cost_usd,price_table_version,cache_hit,cost_saved_usd,latency_ms,time_to_first_token_ms,\
streaming,http_status,error_type,error_message\n";

fn call_line(out: &mut String, c: &Call) {
    out.push_str(&c.event_id);
    out.push(',');
    out.push_str(&c.created_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
    for n in [c.company_id, c.user_id, c.interview_id] {
        out.push(',');
        number_field(out, n);
    }
    for t in [Some(c.action.as_str()), c.model.as_deref(), c.request_id.as_deref()] {
        out.push(',');
        text_field(out, t);
    }
    for n in [c.tokens_input, c.tokens_output, c.tokens_cached_input, c.tokens_reasoning] {
        out.push(',');
        number_field(out, n);
    }
    out.push(',');
    out.push_str(if c.usage_reported { "true" } else { "false" });
    out.push(',');
    number_field(out, c.cost_usd);
    out.push(',');
    text_field(out, c.price_table_version.as_deref());
    out.push(',');
    out.push_str(if c.cache_hit { "true" } else { "false" });
    out.push(',');
    number_field(out, c.cost_saved_usd);
    for n in [c.latency_ms, c.time_to_first_token_ms] {
        out.push(',');
        number_field(out, n);
    }
    out.push(',');
    out.push_str(if c.streaming { "true" } else { "false" });
    out.push(',');
    number_field(out, c.http_status);
    out.push(',');
    text_field(out, c.error_type.as_deref());
    out.push(',');
    text_field(out, c.error_message.as_deref());
    out.push('\n');
}

/// Every matching call as CSV, read [`CSV_PAGE`] rows at a time while the client
/// takes them: memory stays one page whatever the range holds.
fn calls_csv(
    conn: diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>,
    filter: CallFilter,
    after: Option<(DateTime<Utc>, i64)>,
) -> Chunks {
    struct Walk {
        conn: diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>,
        filter: CallFilter,
        after: Option<(DateTime<Utc>, i64)>,
        started: bool,
        done: bool,
    }
    let walk = Walk { conn, filter, after, started: false, done: false };
    Box::pin(futures_util::stream::try_unfold(walk, |mut w| async move {
        if !w.started {
            w.started = true;
            return Ok(Some((Bytes::from_static(CALLS_HEADER.as_bytes()), w)));
        }
        if w.done {
            return Ok(None);
        }
        let rows = load_calls(&mut w.conn, &w.filter, w.after, CSV_PAGE).await.map_err(|e| {
            tracing::warn!(error = %e, "a calls export stopped: the analytics database failed mid-stream");
            std::io::Error::other("the analytics database failed mid-export")
        })?;
        w.done = (rows.len() as i64) < CSV_PAGE;
        w.after = rows.last().map(|c| (c.created_at, c.id));
        if rows.is_empty() {
            return Ok(None);
        }
        let mut chunk = String::with_capacity(rows.len() * 200);
        rows.iter().for_each(|c| call_line(&mut chunk, c));
        Ok(Some((Bytes::from(chunk), w)))
    }))
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        let mut out = String::new();
        text_field(&mut out, Some("plain"));
        out.push('|');
        text_field(&mut out, Some("a,b \"c\""));
        out.push('|');
        text_field(&mut out, Some("=HYPERLINK(1)"));
        out.push('|');
        text_field(&mut out, None);
        assert_eq!(out, "plain|\"a,b \"\"c\"\"\"|'=HYPERLINK(1)|");
    }

    #[test]
    fn bounds_read_days_whole_and_instants_exactly() {
        assert_eq!(bound("from", &Some("2026-11-01".into()), false).unwrap().unwrap(), "2026-11-01");
        assert_eq!(bound("to", &Some("2026-11-30".into()), true).unwrap().unwrap(), "2026-12-01");
        assert_eq!(
            bound("to", &Some("2026-11-30T10:00:00+05:30".into()), true).unwrap().unwrap(),
            "2026-11-30T04:30:00.000000Z"
        );
        assert_eq!(bound("from", &Some("yesterday".into()), false).unwrap_err().param(), Some("from"));
        assert_eq!(bound("from", &None, false).unwrap(), None);
    }

    #[test]
    fn call_cursors_round_trip() {
        let (at, id) = decode_time_cursor("t5f5e100.2a").unwrap();
        assert_eq!((at.timestamp_micros(), id), (0x5f5e100, 42));
        assert!(decode_time_cursor("c12").is_err());
        assert!(decode_time_cursor("tzz.1").is_err());
    }
}
