//! The admin dashboard: server-rendered pages with their charts drawn as inline SVG,
//! each beside a table of its numbers. No script, nothing loaded from elsewhere.
//!
//! - `/dashboard` (public listener): a company's owners and admins, signed in with
//!   their email and password (the `hh_session` cookie). They see their own company;
//!   other roles get 403, a `company` naming another company 403.
//! - `/admin/dashboard` (internal listener): the platform operator, signed in with the
//!   admin key (an `hh_operator` session in Redis, ended when the key changes); every
//!   company or one (`company`), the top companies, and the queue.
//!
//! Pages: overview (spend per day by model, calls and error rate, our cache's hit rate
//! and savings, top spenders), latency (percentiles per day, time to first token,
//! latency per model) and pipeline (CV processing by status and failure reason; the
//! queue for the operator). Date range: `from`/`to` (local days, default the last 30),
//! in the company's timezone (UTC for all companies). LLM figures come from the same
//! rollup-backed queries as the analytics API (`analytics::figures`).

mod html;
mod svg;

use std::collections::{BTreeMap, HashMap};

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use common_models::schema::main::{companies, users};
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use serde::Deserialize;
use service_kit::{AppError, ErrorKind};

use self::html::{Unit, card, esc, maybe, table};
use self::svg::{Chart, OTHER, PALETTE, Series, ranked};
use crate::access::Action;
use crate::analytics::{self, Point};
use crate::sessions::{COOKIE, OPERATOR_COOKIE};
use crate::state::AppState;

/// Longest range a page shows, in days (a bar per day).
pub const MAX_DAYS: i64 = 400;
/// Models drawn apart in the spend chart; the rest are summed as "other".
const MODELS_DRAWN: usize = 7;
/// Entries in each top list.
pub const TOP: i64 = 10;
/// The breakdown the overview and latency pages are drawn from (bucket, group): one
/// query, folded per day and per model.
pub const BREAKDOWN: (&str, &str) = ("day", "model");

/// The top lists of the overview page besides the models (ranked by cost): users of a
/// company, or companies for the operator's all-company view; and actions.
pub fn top_lists(one_company: bool) -> [&'static str; 2] {
    [if one_company { "user" } else { "company" }, "action"]
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    for place in [Place::Company, Place::Operator] {
        let base = place.base();
        for view in View::ALL {
            cfg.route(
                &view.path(place),
                web::get().to(move |req: HttpRequest, state: web::Data<AppState>| show(req, state, place, view)),
            );
        }
        cfg.route(&format!("{base}/login"), web::get().to(move |req: HttpRequest| login_form(req, place)))
            .route(
                &format!("{base}/login"),
                web::post().to(move |req: HttpRequest, state: web::Data<AppState>, body: web::Bytes| {
                    login(req, state, body, place)
                }),
            )
            .route(
                &format!("{base}/logout"),
                web::post().to(move |req: HttpRequest, state: web::Data<AppState>| logout(req, state, place)),
            );
    }
}

/// Which dashboard: a company's (public listener) or the operator's (internal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Company,
    Operator,
}

impl Place {
    fn base(self) -> &'static str {
        match self {
            Place::Company => "/dashboard",
            Place::Operator => "/admin/dashboard",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Overview,
    Latency,
    Pipeline,
}

impl View {
    const ALL: [View; 3] = [View::Overview, View::Latency, View::Pipeline];

    fn path(self, place: Place) -> String {
        match self {
            View::Overview => place.base().to_owned(),
            View::Latency => format!("{}/latency", place.base()),
            View::Pipeline => format!("{}/pipeline", place.base()),
        }
    }

    fn label(self) -> &'static str {
        match self {
            View::Overview => "Spend and calls",
            View::Latency => "Latency",
            View::Pipeline => "Pipeline",
        }
    }
}

/// Who is looking, and at which companies.
struct Viewer {
    place: Place,
    /// The company shown (`None`: every company, the operator only).
    company: Option<i64>,
    /// The company's name, or "All companies".
    title: String,
    timezone: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Filters {
    /// First local day shown (`YYYY-MM-DD`; empty: 29 days before today).
    from: Option<String>,
    /// Last local day shown, included.
    to: Option<String>,
    /// The operator's filter: one company's id (empty: all).
    company: Option<String>,
}

impl Filters {
    fn blank_is_none(raw: &Option<String>) -> Option<String> {
        raw.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
    }
}

/// The page to go back to after signing in: one of this dashboard's own.
fn next_page(place: Place, raw: Option<&str>) -> String {
    match raw {
        Some(next)
            if next.starts_with(place.base())
                && !next.contains("//")
                && !next.contains('\\')
                && next.chars().all(|c| c.is_ascii_graphic()) =>
        {
            next.to_owned()
        }
        _ => place.base().to_owned(),
    }
}

fn to_sign_in(req: &HttpRequest, place: Place) -> HttpResponse {
    let here = match req.query_string() {
        "" => req.path().to_owned(),
        q => format!("{}?{q}", req.path()),
    };
    let target = format!("{}/login?next={}", place.base(), percent(&here));
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, target))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// `text` percent-encoded for a query value.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An error as a page, with the status the API would answer.
fn problem_page(place: Place, err: &AppError) -> HttpResponse {
    let message = match err.param() {
        Some(param) => format!("{} ({param})", err.message()),
        None => err.message().to_owned(),
    };
    html::problem(err.kind().status(), &message, place.base())
}

/// The viewer of a request, or the answer to give instead (sign in, or 403).
async fn viewer(req: &HttpRequest, state: &AppState, place: Place, filters: &Filters) -> Result<Viewer, HttpResponse> {
    let wanted = match Filters::blank_is_none(&filters.company) {
        None => None,
        Some(raw) => Some(crate::page::integer("company", &raw).map_err(|e| problem_page(place, &e))?),
    };
    let company = match place {
        Place::Company => {
            let authenticated = if req.cookie(COOKIE).is_some() || req.headers().contains_key(header::AUTHORIZATION) {
                state.auth.authenticate(req).await
            } else {
                Err(AppError::unauthorized("sign in"))
            };
            let caller = match authenticated {
                // The dashboard is for people: a session, not an API key.
                Ok(caller) if caller.session.is_some() => caller,
                Ok(_) => return Err(to_sign_in(req, place)),
                Err(err) if err.kind() == ErrorKind::Unauthorized => return Err(to_sign_in(req, place)),
                Err(err) => return Err(problem_page(place, &err)),
            };
            if let Err(err) = caller.require(Action::ReadAnalytics) {
                return Err(problem_page(place, &err));
            }
            let own = caller.company_id.0;
            if wanted.is_some_and(|w| w != own) {
                return Err(html::problem(
                    StatusCode::FORBIDDEN,
                    "you see your own company's figures only",
                    place.base(),
                ));
            }
            Some(own)
        }
        Place::Operator => {
            let token = req.cookie(OPERATOR_COOKIE).map(|c| c.value().to_owned()).unwrap_or_default();
            let key = state.settings.admin_api_key.expose();
            match state.auth.sessions().check_operator(&token, key).await {
                Ok(true) => wanted,
                Ok(false) => return Err(to_sign_in(req, place)),
                Err(err) => return Err(problem_page(place, &err)),
            }
        }
    };
    let (title, timezone) = match company {
        None => ("All companies".to_owned(), "UTC".to_owned()),
        Some(id) => {
            let found = async {
                let mut conn = state.db.get().await?;
                let row: Option<(String, String)> = companies::table
                    .find(id)
                    .select((companies::name, companies::timezone))
                    .first(&mut conn)
                    .await
                    .optional()?;
                Ok::<_, AppError>(row)
            }
            .await;
            match found {
                Ok(Some(row)) => row,
                Ok(None) => return Err(problem_page(place, &crate::jobs::not_found("company", id))),
                Err(err) => return Err(problem_page(place, &err)),
            }
        }
    };
    Ok(Viewer { place, company, title, timezone })
}

/// The range shown: [start, end) in UTC, its local first and last day, and a label
/// per local day (as the usage rows' bucket starts read).
struct Range {
    span: (DateTime<Utc>, DateTime<Utc>),
    first_day: String,
    last_day: String,
    days: Vec<String>,
}

async fn range_of(conn: &mut diesel_async::AsyncPgConnection, filters: &Filters) -> Result<Range, AppError> {
    let day_only = |param: &'static str, raw: &Option<String>| -> Result<Option<String>, AppError> {
        let raw = Filters::blank_is_none(raw);
        match raw {
            Some(day) if chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").is_err() => Err(AppError::bad_request(
                param,
                "invalid_value",
                format!("`{param}` must be a day written 2026-11-01"),
            )),
            other => Ok(other),
        }
    };
    let (from, to) = (day_only("from", &filters.from)?, day_only("to", &filters.to)?);
    let span = analytics::resolve_range(conn, &from, &to).await?;
    if (span.1 - span.0).num_days() > MAX_DAYS {
        return Err(AppError::bad_request(
            "from",
            "range_too_long",
            format!("the dashboard shows at most {MAX_DAYS} days; shorten the range"),
        ));
    }
    #[derive(QueryableByName)]
    struct Day {
        #[diesel(sql_type = Text)]
        label: String,
    }
    let days: Vec<Day> = sql_query(
        "SELECT to_char(d, 'YYYY-MM-DD\"T\"HH24:MI:SSTZH:TZM') AS label \
         FROM generate_series(date_trunc('day', $1::timestamptz), $2::timestamptz - interval '1 microsecond', \
                              interval '1 day') AS d",
    )
    .bind::<Timestamptz, _>(span.0)
    .bind::<Timestamptz, _>(span.1)
    .load(conn)
    .await
    .map_err(analytics::query_failed)?;
    let days: Vec<String> = days.into_iter().map(|d| d.label).collect();
    let day_of = |label: Option<&String>| label.map(|l| l.chars().take(10).collect()).unwrap_or_default();
    Ok(Range { span, first_day: day_of(<[String]>::first(&days)), last_day: day_of(<[String]>::last(&days)), days })
}

async fn show(req: HttpRequest, state: web::Data<AppState>, place: Place, view: View) -> HttpResponse {
    let filters: Filters = match crate::page::query(&req) {
        Ok(f) => f,
        Err(err) => return problem_page(place, &err),
    };
    let viewer = match viewer(&req, &state, place, &filters).await {
        Ok(v) => v,
        Err(answer) => return answer,
    };
    match render(&state, &viewer, view, &filters).await {
        Ok(page) => html::respond(StatusCode::OK, page),
        Err(err) => problem_page(place, &err),
    }
}

async fn render(state: &AppState, viewer: &Viewer, view: View, filters: &Filters) -> Result<String, AppError> {
    let mut conn = analytics::reader(state, &viewer.timezone).await?;
    let range = range_of(&mut conn, filters).await?;
    let body = match view {
        View::Overview => overview(state, &mut conn, viewer, &range).await?,
        View::Latency => latency(&mut conn, viewer, &range).await?,
        View::Pipeline => {
            drop(conn);
            pipeline(state, viewer, &range).await?
        }
    };
    let companies = match viewer.place {
        Place::Operator => company_choices(state).await?,
        Place::Company => Vec::new(),
    };
    let nav: Vec<(String, &str, bool)> =
        View::ALL.iter().map(|v| (v.path(viewer.place), v.label(), *v == view)).collect();
    let heading = match viewer.place {
        Place::Company => format!("{} · LLM dashboard", viewer.title),
        Place::Operator => format!("Operator · {}", viewer.title),
    };
    let form = filter_form(viewer, view, &range, &companies);
    let note = format!(
        r#"<p class="note">{} to {} ({}), days cut in {}.</p>"#,
        esc(&range.first_day),
        esc(&range.last_day),
        range.days.len(),
        esc(&viewer.timezone)
    );
    Ok(html::page(
        view.label(),
        &heading,
        &nav,
        Some(&format!("{}/logout", viewer.place.base())),
        &format!("{form}{note}{body}"),
    ))
}

fn filter_form(viewer: &Viewer, view: View, range: &Range, companies: &[(i64, String)]) -> String {
    let company = if viewer.place == Place::Operator {
        let mut options = String::from(r#"<option value="">All companies</option>"#);
        for (id, name) in companies {
            let selected = if viewer.company == Some(*id) { " selected" } else { "" };
            options.push_str(&format!(r#"<option value="{id}"{selected}>{} (#{id})</option>"#, esc(name)));
        }
        format!(r#"<label>Company<select name="company">{options}</select></label>"#)
    } else {
        String::new()
    };
    format!(
        r#"<form class="filters" method="get" action="{action}"><label>From<input type="date" name="from" value="{from}"></label><label>To<input type="date" name="to" value="{to}"></label>{company}<button class="primary" type="submit">Show</button></form>"#,
        action = esc(&view.path(viewer.place)),
        from = esc(&range.first_day),
        to = esc(&range.last_day),
    )
}

/// Companies for the operator's filter, by name (at most 1,000).
async fn company_choices(state: &AppState) -> Result<Vec<(i64, String)>, AppError> {
    let mut conn = state.db.get().await?;
    Ok(companies::table
        .select((companies::id, companies::name))
        .order((companies::name, companies::id))
        .limit(1_000)
        .load(&mut conn)
        .await?)
}

/// The value of each day label in `points` (matched on the bucket start).
fn per_day(range: &Range, points: &[&Point], value: impl Fn(&Point) -> Option<f64>) -> Vec<Option<f64>> {
    let by_start: HashMap<&str, &Point> = points.iter().filter_map(|p| Some((p.start.as_deref()?, *p))).collect();
    range.days.iter().map(|d| by_start.get(d.as_str()).and_then(|p| value(p))).collect()
}

fn day_cell(label: &str) -> String {
    label.chars().take(10).collect()
}

/// A chart and its table, side by side (one above the other on a phone).
fn figure(title: &str, chart: &str, legend: &str, table: &str) -> String {
    format!(r#"<section><h2>{}</h2><div class="pair"><div>{chart}{legend}</div>{table}</div></section>"#, esc(title))
}

/// Names for the keys of a top list: users' emails, companies' names.
async fn names(state: &AppState, by: &str, keys: &[Option<String>], company: Option<i64>) -> HashMap<String, String> {
    let ids: Vec<i64> = keys.iter().flatten().filter_map(|k| k.parse().ok()).collect();
    if ids.is_empty() || !matches!(by, "user" | "company") {
        return HashMap::new();
    }
    let loaded = async {
        let mut conn = state.db.get().await?;
        let rows: Vec<(i64, String)> = if by == "user" {
            let mut q = users::table.filter(users::id.eq_any(&ids)).select((users::id, users::email)).into_boxed();
            if let Some(c) = company {
                q = q.filter(users::company_id.eq(c));
            }
            q.load(&mut conn).await?
        } else {
            companies::table
                .filter(companies::id.eq_any(&ids))
                .select((companies::id, companies::name))
                .load(&mut conn)
                .await?
        };
        Ok::<_, AppError>(rows)
    };
    match loaded.await {
        Ok(rows) => rows.into_iter().map(|(id, name)| (id.to_string(), name)).collect(),
        // The ids alone still tell who: a name is a courtesy.
        Err(err) => {
            tracing::warn!(error = %err, "the dashboard shows ids: names could not be read");
            HashMap::new()
        }
    }
}

async fn overview(
    state: &AppState,
    conn: &mut diesel_async::AsyncPgConnection,
    viewer: &Viewer,
    range: &Range,
) -> Result<String, AppError> {
    let c = viewer.company;
    let [who, actions] = top_lists(c.is_some());
    // The three queries at once, each on a connection of its own: the page takes as
    // long as the slowest. The top lists are ranked by spend; their percentiles are not
    // shown, so not computed.
    let top = async |group: &str| {
        let mut conn = analytics::reader(state, &viewer.timezone).await?;
        let (points, _) = analytics::figures(&mut conn, range.span, c, None, Some(group), true, TOP, false).await?;
        Ok::<_, AppError>(points)
    };
    let (breakdown, top_who, top_actions) =
        tokio::try_join!(analytics::breakdown(conn, range.span, c, BREAKDOWN.0, BREAKDOWN.1), top(who), top(actions))?;
    let analytics::Breakdown { cells: by_model, by_bucket: by_day, by_group: top_models, totals } = breakdown;

    let mut out = String::with_capacity(64 * 1024);
    let hit_rate = if totals.calls > 0 { Some(totals.cache_hits as f64 / totals.calls as f64) } else { None };
    out.push_str(r#"<div class="cards">"#);
    out.push_str(&card("total-cost", "Spend", &Unit::Usd.long(totals.cost_usd)));
    out.push_str(&card("total-calls", "Calls", &Unit::Count.long(totals.calls as f64)));
    out.push_str(&card("error-rate", "Error rate", &Unit::Share.long(totals.error_rate)));
    out.push_str(&card("latency-p95", "Latency p95", &maybe(Unit::Ms, totals.latency_ms.p95)));
    out.push_str(&card("cache-hit-rate", "Our cache's hit rate", &maybe(Unit::Share, hit_rate)));
    out.push_str(&card("cost-saved", "Saved by our cache", &Unit::Usd.long(totals.cost_saved_usd)));
    out.push_str(&card(
        "prompt-cache-tokens",
        "Provider prompt-cache tokens",
        &Unit::Count.long(totals.tokens_cached_input as f64),
    ));
    out.push_str(&card(
        "unpriced-calls",
        "Unpriced calls (cost unknown)",
        &Unit::Count.long(totals.unpriced_calls as f64),
    ));
    out.push_str("</div>");

    // Spend per day by model, stacked: the biggest models apart, the rest as "other".
    let drawn: Vec<Option<String>> = top_models.iter().take(MODELS_DRAWN).map(|p| p.group.clone()).collect();
    let mut groups: BTreeMap<usize, Vec<&Point>> = BTreeMap::new();
    for p in &by_model {
        let slot = drawn.iter().position(|m| *m == p.group).unwrap_or(MODELS_DRAWN);
        groups.entry(slot).or_default().push(p);
    }
    let model_name = |m: &Option<String>| m.clone().unwrap_or_else(|| "(no model)".to_owned());
    let mut bars = Vec::new();
    let mut columns = vec!["Day".to_owned()];
    for (slot, points) in &groups {
        let (name, colour) = match drawn.get(*slot) {
            Some(m) => (model_name(m), PALETTE[*slot % PALETTE.len()]),
            None => ("other".to_owned(), OTHER),
        };
        // "other" sums several models per day.
        let mut sums: HashMap<&str, f64> = HashMap::new();
        for p in points {
            if let Some(start) = p.start.as_deref() {
                *sums.entry(start).or_default() += p.figures.cost_usd;
            }
        }
        let values = range.days.iter().map(|d| sums.get(d.as_str()).copied()).collect();
        columns.push(name.clone());
        bars.push(Series { name, colour, values });
    }
    columns.push("Total".to_owned());
    let day_points: Vec<&Point> = by_day.iter().collect();
    let spend_rows: Vec<Vec<String>> = range
        .days
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut row = vec![day_cell(d)];
            let mut total = 0.0;
            for s in &bars {
                let v = s.values[i].unwrap_or(0.0);
                total += v;
                row.push(Unit::Usd.long(v));
            }
            row.push(Unit::Usd.long(total));
            row
        })
        .collect();
    let chart = Chart {
        id: "spend-chart",
        title: "Spend per day by model (USD)",
        labels: &range.days,
        bars,
        bar_unit: Unit::Usd,
        lines: vec![],
        line_unit: Unit::Usd,
    };
    let column_refs: Vec<&str> = columns.iter().map(String::as_str).collect();
    let unpriced = if totals.unpriced_calls > 0 {
        format!(
            r#"<p class="note bad">{} calls used a model without a price: their cost is unknown and not in these sums.</p>"#,
            Unit::Count.long(totals.unpriced_calls as f64)
        )
    } else {
        String::new()
    };
    out.push_str(&figure(
        "Spend per day by model",
        &chart.render(),
        &format!("{}{unpriced}", chart.legend()),
        &table("spend-table", "Spend per day by model, USD", &column_refs, &spend_rows),
    ));

    // Calls (succeeded and failed, stacked) and the error rate.
    let chart = Chart {
        id: "calls-chart",
        title: "Calls per day and error rate",
        labels: &range.days,
        bars: vec![
            Series {
                name: "succeeded".into(),
                colour: PALETTE[0],
                values: per_day(range, &day_points, |p| Some((p.figures.calls - p.figures.errors) as f64)),
            },
            Series {
                name: "failed".into(),
                colour: PALETTE[3],
                values: per_day(range, &day_points, |p| Some(p.figures.errors as f64)),
            },
        ],
        bar_unit: Unit::Count,
        lines: vec![Series {
            name: "error rate".into(),
            colour: "#0f172a",
            values: per_day(range, &day_points, |p| (p.figures.calls > 0).then_some(p.figures.error_rate)),
        }],
        line_unit: Unit::Share,
    };
    let rows: Vec<Vec<String>> = range
        .days
        .iter()
        .zip(per_day(range, &day_points, |p| Some(p.figures.calls as f64)))
        .zip(per_day(range, &day_points, |p| Some(p.figures.errors as f64)))
        .map(|((d, calls), errors)| {
            let (calls, errors) = (calls.unwrap_or(0.0), errors.unwrap_or(0.0));
            let rate = if calls > 0.0 { Some(errors / calls) } else { None };
            vec![day_cell(d), Unit::Count.long(calls), Unit::Count.long(errors), maybe(Unit::Share, rate)]
        })
        .collect();
    out.push_str(&figure(
        "Calls and error rate",
        &chart.render(),
        &chart.legend(),
        &table("calls-table", "Calls per day", &["Day", "Calls", "Errors", "Error rate"], &rows),
    ));

    // Our cache: hit rate and what it saved.
    let chart = Chart {
        id: "cache-chart",
        title: "Saved by our cache per day (USD) and its hit rate",
        labels: &range.days,
        bars: vec![Series {
            name: "saved".into(),
            colour: PALETTE[2],
            values: per_day(range, &day_points, |p| Some(p.figures.cost_saved_usd)),
        }],
        bar_unit: Unit::Usd,
        lines: vec![Series {
            name: "hit rate".into(),
            colour: "#0f172a",
            values: per_day(range, &day_points, |p| {
                (p.figures.calls > 0).then(|| p.figures.cache_hits as f64 / p.figures.calls as f64)
            }),
        }],
        line_unit: Unit::Share,
    };
    let rows: Vec<Vec<String>> = range
        .days
        .iter()
        .map(|d| {
            let p = day_points.iter().find(|p| p.start.as_deref() == Some(d.as_str()));
            let (calls, hits, saved) =
                p.map_or((0, 0, 0.0), |p| (p.figures.calls, p.figures.cache_hits, p.figures.cost_saved_usd));
            let rate = (calls > 0).then(|| hits as f64 / calls as f64);
            vec![day_cell(d), Unit::Count.long(hits as f64), maybe(Unit::Share, rate), Unit::Usd.long(saved)]
        })
        .collect();
    out.push_str(&figure(
        "Our cache: hit rate and cost saved",
        &chart.render(),
        &format!(
            r#"{}<p class="note">Calls answered from our LLM results cache cost nothing. The provider's own prompt cache is counted apart, in cached input tokens ({}).</p>"#,
            chart.legend(),
            Unit::Count.long(totals.tokens_cached_input as f64)
        ),
        &table("cache-table", "Our cache per day", &["Day", "Hits", "Hit rate", "Saved"], &rows),
    ));

    // Top spenders.
    let who_title = if c.is_none() { "Top companies" } else { "Top users" };
    let who_names = names(state, who, &top_who.iter().map(|p| p.group.clone()).collect::<Vec<_>>(), c).await;
    let mut lists = String::new();
    let top_models: Vec<&Point> = top_models.iter().take(TOP as usize).collect();
    let top_who: Vec<&Point> = top_who.iter().collect();
    let top_actions: Vec<&Point> = top_actions.iter().collect();
    for (id, title, points, naming) in [
        ("top-who", who_title, &top_who, Some(&who_names)),
        ("top-actions", "Top actions", &top_actions, None),
        ("top-models", "Top models", &top_models, None),
    ] {
        let label = |p: &Point| {
            let key = p.group.clone().unwrap_or_else(|| "(none)".to_owned());
            match naming.and_then(|n| n.get(&key)) {
                Some(name) => format!("{name} (#{key})"),
                None => key,
            }
        };
        let items: Vec<(String, f64)> = points.iter().map(|p| (label(p), p.figures.cost_usd)).collect();
        let rows: Vec<Vec<String>> = points
            .iter()
            .map(|p| {
                let share = if totals.cost_usd > 0.0 { Some(p.figures.cost_usd / totals.cost_usd) } else { None };
                vec![
                    label(p),
                    Unit::Count.long(p.figures.calls as f64),
                    Unit::Usd.long(p.figures.cost_usd),
                    maybe(Unit::Share, share),
                ]
            })
            .collect();
        lists.push_str(&figure(
            &format!("{title} by spend"),
            &ranked(&format!("{id}-chart"), &format!("{title} by spend (USD)"), &items, Unit::Usd),
            "",
            &table(&format!("{id}-table"), &format!("{title} by spend"), &["Name", "Calls", "Spend", "Share"], &rows),
        ));
    }
    out.push_str(&lists);
    Ok(out)
}

async fn latency(
    conn: &mut diesel_async::AsyncPgConnection,
    viewer: &Viewer,
    range: &Range,
) -> Result<String, AppError> {
    let analytics::Breakdown { by_bucket: by_day, by_group: by_model, totals, .. } =
        analytics::breakdown(conn, range.span, viewer.company, BREAKDOWN.0, BREAKDOWN.1).await?;
    let day_points: Vec<&Point> = by_day.iter().collect();
    let mut out = String::from(r#"<div class="cards">"#);
    out.push_str(&card("latency-p50", "Latency p50", &maybe(Unit::Ms, totals.latency_ms.p50)));
    out.push_str(&card("latency-p95", "Latency p95", &maybe(Unit::Ms, totals.latency_ms.p95)));
    out.push_str(&card("latency-p99", "Latency p99", &maybe(Unit::Ms, totals.latency_ms.p99)));
    out.push_str(&card("ttft-p95", "First token p95", &maybe(Unit::Ms, totals.ttft_ms.p95)));
    out.push_str("</div>");
    for (id, title, pick) in [
        (
            "latency",
            "Latency per day (p50, p95, p99)",
            (|f: &analytics::Figures| &f.latency_ms) as fn(&analytics::Figures) -> &analytics::Percentiles,
        ),
        ("ttft", "Time to first token of streamed calls (p50, p95, p99)", |f: &analytics::Figures| &f.ttft_ms),
    ] {
        let series = |name: &str, colour: &'static str, q: fn(&analytics::Percentiles) -> Option<f64>| Series {
            name: name.to_owned(),
            colour,
            values: per_day(range, &day_points, |p| q(pick(&p.figures))),
        };
        let lines = vec![
            series("p50", PALETTE[0], |p| p.p50),
            series("p95", PALETTE[1], |p| p.p95),
            series("p99", PALETTE[3], |p| p.p99),
        ];
        let rows: Vec<Vec<String>> = range
            .days
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut row = vec![day_cell(d)];
                row.extend(lines.iter().map(|s| maybe(Unit::Ms, s.values[i])));
                row
            })
            .collect();
        let chart = Chart {
            id: &format!("{id}-chart"),
            title,
            labels: &range.days,
            bars: vec![],
            bar_unit: Unit::Ms,
            lines,
            line_unit: Unit::Ms,
        };
        out.push_str(&figure(
            title,
            &chart.render(),
            &chart.legend(),
            &table(&format!("{id}-table"), title, &["Day", "p50", "p95", "p99"], &rows),
        ));
    }
    let rows: Vec<Vec<String>> = by_model
        .iter()
        .map(|p| {
            vec![
                p.group.clone().unwrap_or_else(|| "(no model)".to_owned()),
                Unit::Count.long(p.figures.calls as f64),
                maybe(Unit::Ms, p.figures.latency_ms.p50),
                maybe(Unit::Ms, p.figures.latency_ms.p95),
                maybe(Unit::Ms, p.figures.latency_ms.p99),
                maybe(Unit::Ms, p.figures.ttft_ms.p95),
            ]
        })
        .collect();
    out.push_str(&format!(
        r#"<section><h2>Latency per model</h2>{}<p class="note">Percentiles come from fixed histogram buckets: each lies within about 12 % of the exact value.</p></section>"#,
        table("latency-model-table", "Latency per model over the range", &["Model", "Calls", "p50", "p95", "p99", "First token p95"], &rows)
    ));
    Ok(out)
}

#[derive(QueryableByName)]
struct CvCount {
    #[diesel(sql_type = Text)]
    day: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Statuses in the order they are drawn.
const CV_STATUSES: [(&str, &str); 4] =
    [("processed", "#059669"), ("failed", "#dc2626"), ("processing", "#f59e0b"), ("queued", "#94a3b8")];

async fn pipeline(state: &AppState, viewer: &Viewer, range: &Range) -> Result<String, AppError> {
    let mut conn = state.db.get().await?;
    let counts: Vec<CvCount> = sql_query(
        "SELECT to_char(created_at AT TIME ZONE $4, 'YYYY-MM-DD') AS day, status, \
                CASE WHEN status = 'failed' THEN left(coalesce(failure_reason, 'no reason recorded'), 120) END AS reason, \
                count(*) AS n \
         FROM cvs WHERE ($1::int8 IS NULL OR company_id = $1) AND created_at >= $2 AND created_at < $3 \
         GROUP BY 1, 2, 3",
    )
    .bind::<Nullable<BigInt>, _>(viewer.company)
    .bind::<Timestamptz, _>(range.span.0)
    .bind::<Timestamptz, _>(range.span.1)
    .bind::<Text, _>(&viewer.timezone)
    .load(&mut conn)
    .await?;
    drop(conn);
    let mut per: HashMap<(&str, &str), i64> = HashMap::new();
    let mut reasons: HashMap<&str, i64> = HashMap::new();
    let mut by_status: HashMap<&str, i64> = HashMap::new();
    for c in &counts {
        *per.entry((c.day.as_str(), c.status.as_str())).or_default() += c.n;
        *by_status.entry(c.status.as_str()).or_default() += c.n;
        if let Some(r) = &c.reason {
            *reasons.entry(r.as_str()).or_default() += c.n;
        }
    }
    let mut out = String::from(r#"<div class="cards">"#);
    for (status, _) in CV_STATUSES {
        out.push_str(&card(
            &format!("cvs-{status}"),
            &format!("CVs {status}"),
            &Unit::Count.long(*by_status.get(status).unwrap_or(&0) as f64),
        ));
    }
    out.push_str("</div>");
    let bars: Vec<Series> = CV_STATUSES
        .iter()
        .map(|(status, colour)| Series {
            name: (*status).to_owned(),
            colour,
            values: range.days.iter().map(|d| per.get(&(&d[..10.min(d.len())], *status)).map(|n| *n as f64)).collect(),
        })
        .collect();
    let rows: Vec<Vec<String>> = range
        .days
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut row = vec![day_cell(d)];
            row.extend(bars.iter().map(|s| Unit::Count.long(s.values[i].unwrap_or(0.0))));
            row
        })
        .collect();
    let chart = Chart {
        id: "cvs-chart",
        title: "CVs uploaded per day, by status",
        labels: &range.days,
        bars,
        bar_unit: Unit::Count,
        lines: vec![],
        line_unit: Unit::Count,
    };
    out.push_str(&figure(
        "CV processing",
        &chart.render(),
        &chart.legend(),
        &table(
            "cvs-table",
            "CVs uploaded per day, by status",
            &["Day", "Processed", "Failed", "Processing", "Queued"],
            &rows,
        ),
    ));
    let mut reasons: Vec<(String, f64)> = reasons.into_iter().map(|(r, n)| (r.to_owned(), n as f64)).collect();
    reasons.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    reasons.truncate(12);
    let rows: Vec<Vec<String>> = reasons.iter().map(|(r, n)| vec![r.clone(), Unit::Count.long(*n)]).collect();
    out.push_str(&figure(
        "Failed CVs by reason",
        &ranked("cv-reasons-chart", "Failed CVs by reason", &reasons, Unit::Count),
        "",
        &table("cv-reasons-table", "Failed CVs by reason", &["Reason", "CVs"], &rows),
    ));
    if viewer.place == Place::Operator {
        out.push_str(&queue(state).await);
    } else {
        out.push_str(r#"<section><h2>Queue</h2><p class="note">The queue is shared by every company: the platform operator watches it.</p></section>"#);
    }
    Ok(out)
}

/// The streams' depth, lag and dead letters, and the workers' heartbeats.
async fn queue(state: &AppState) -> String {
    use common_models::cv::CV_PROCESSOR_GROUP;
    use common_models::queue::LOG_WORKER_GROUP;
    use task_queue::Message;
    let log_streams = common_models::events::LogEvent::streams();
    let read = async {
        let mut conn = state.redis.get().await?;
        let logs = task_queue::status::group_status(&mut *conn, &state.keys, LOG_WORKER_GROUP, &log_streams).await?;
        let cvs = task_queue::status::group_status(&mut *conn, &state.keys, CV_PROCESSOR_GROUP, &["cv_jobs"]).await?;
        Ok::<_, anyhow::Error>([logs, cvs])
    };
    let groups = match read.await {
        Ok(groups) => groups,
        Err(err) => {
            return format!(
                r#"<section><h2>Queue</h2><p class="error" role="alert">Redis could not be read: {}</p></section>"#,
                esc(&err.to_string())
            );
        }
    };
    let now = Utc::now().timestamp_millis();
    let stale = i64::try_from(crate::admin::WORKER_STALE_AFTER.as_millis()).unwrap_or(i64::MAX);
    let count = |n: Option<u64>| n.map_or_else(|| "–".to_owned(), |n| Unit::Count.long(n as f64));
    let mut streams = Vec::new();
    let mut workers = Vec::new();
    for g in &groups {
        for s in &g.streams {
            streams.push(vec![
                s.stream.clone(),
                g.group.clone(),
                count(Some(s.length)),
                count(s.pending),
                count(s.lag),
                count(s.consumers),
                count(Some(s.dead_letters)),
            ]);
        }
        for (name, at) in &g.heartbeats {
            let age = (now - at) as f64 / 1000.0;
            let state = if now - at <= stale { "alive" } else { "silent" };
            workers.push(vec![name.clone(), g.group.clone(), format!("{age:.0} s ago"), state.to_owned()]);
        }
    }
    let dead: u64 = groups.iter().flat_map(|g| &g.streams).map(|s| s.dead_letters).sum();
    let alive = workers.iter().filter(|w| w[3] == "alive").count();
    format!(
        r#"<section><h2>Queue</h2><div class="cards">{}{}</div>{}{}</section>"#,
        card("dead-letters", "Dead letters", &Unit::Count.long(dead as f64)),
        card("workers-alive", "Workers alive", &format!("{alive} of {}", workers.len())),
        table(
            "queue-table",
            "Streams",
            &["Stream", "Group", "Depth", "Pending", "Lag", "Consumers", "Dead letters"],
            &streams
        ),
        table("workers-table", "Workers' heartbeats", &["Worker", "Group", "Last heartbeat", "State"], &workers),
    )
}

// ---------------------------------------------------------------------------------
// Signing in and out.

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_form(req: HttpRequest, place: Place) -> HttpResponse {
    let next = web::Query::<NextQuery>::from_query(req.query_string()).ok().and_then(|q| q.into_inner().next);
    let next = next_page(place, next.as_deref());
    html::respond(
        StatusCode::OK,
        html::sign_in(&format!("{}/login", place.base()), place == Place::Operator, &next, None),
    )
}

#[derive(Deserialize, Default)]
struct LoginForm {
    email: Option<String>,
    password: Option<String>,
    admin_key: Option<String>,
    next: Option<String>,
}

async fn login(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes, place: Place) -> HttpResponse {
    // An `application/x-www-form-urlencoded` body reads as a query string does.
    let form = std::str::from_utf8(&body)
        .ok()
        .and_then(|text| web::Query::<LoginForm>::from_query(text).ok())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let next = next_page(place, form.next.as_deref());
    let action = format!("{}/login", place.base());
    let again = |status: StatusCode, message: &str| {
        html::respond(status, html::sign_in(&action, place == Place::Operator, &next, Some(message)))
    };
    let (name, token) = match place {
        Place::Company => {
            let (email, password) = (form.email.unwrap_or_default(), form.password.unwrap_or_default());
            match crate::accounts::sign_in(&req, &state, email, password).await {
                Ok((token, _)) => (COOKIE, token),
                Err(err) => return again(err.kind().status(), err.message()),
            }
        }
        Place::Operator => match operator_sign_in(&req, &state, form.admin_key.unwrap_or_default()).await {
            Ok(token) => (OPERATOR_COOKIE, token),
            Err(err) => return again(err.kind().status(), err.message()),
        },
    };
    let path = if place == Place::Operator { "/admin" } else { "/" };
    HttpResponse::SeeOther()
        .cookie(crate::accounts::session_cookie(&state, name, token, path))
        .insert_header((header::LOCATION, next))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// The admin key, checked under the same per-address throttle as logins.
async fn operator_sign_in(req: &HttpRequest, state: &AppState, key: String) -> Result<String, AppError> {
    let admin_key = state.settings.admin_api_key.expose();
    if admin_key.is_empty() {
        return Err(AppError::forbidden("the operator's dashboard is disabled: set ADMIN_API_KEY to enable it"));
    }
    let sessions = state.auth.sessions();
    let address = req.peer_addr().map(|a| a.ip());
    let limit = state.settings.accounts.login_failures_per_address;
    if let Some(wait) = sessions.login_throttled(None, address, 0, limit).await? {
        return Err(AppError::too_many_requests(
            "login_throttled",
            "too many failed sign-ins from this address; retry later",
            wait.as_secs() + 1,
        ));
    }
    if !service_kit::auth::same_secret(key.trim(), admin_key) {
        sessions.login_failed(None, address).await?;
        return Err(AppError::unauthorized("wrong admin key"));
    }
    sessions.create_operator(admin_key).await
}

async fn logout(req: HttpRequest, state: web::Data<AppState>, place: Place) -> HttpResponse {
    let sessions = state.auth.sessions();
    let (name, path) = match place {
        Place::Company => {
            // Audited as the API's logout is; without a live session there is nothing
            // to end, and the cookie is cleared all the same.
            match crate::accounts::end_session(&req, &state).await {
                Ok(()) => {}
                Err(err) if matches!(err.kind(), ErrorKind::Unauthorized | ErrorKind::BadRequest) => {}
                Err(err) => return problem_page(place, &err),
            }
            (COOKIE, "/")
        }
        Place::Operator => {
            if let Some(token) = req.cookie(OPERATOR_COOKIE).map(|c| c.value().to_owned())
                && let Err(err) = sessions.end_operator(&token).await
            {
                return problem_page(place, &err);
            }
            (OPERATOR_COOKIE, "/admin")
        }
    };
    let mut cookie = crate::accounts::session_cookie(&state, name, String::new(), path);
    cookie.make_removal();
    HttpResponse::SeeOther()
        .cookie(cookie)
        .insert_header((header::LOCATION, format!("{}/login", place.base())))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_dashboards_own_pages_are_gone_back_to() {
        assert_eq!(
            next_page(Place::Company, Some("/dashboard/latency?from=2026-11-01")),
            "/dashboard/latency?from=2026-11-01"
        );
        assert_eq!(next_page(Place::Company, Some("https://evil.example/dashboard")), "/dashboard");
        assert_eq!(next_page(Place::Company, Some("/dashboard//evil.example")), "/dashboard");
        assert_eq!(next_page(Place::Company, Some("/admin/dashboard")), "/dashboard");
        assert_eq!(next_page(Place::Operator, None), "/admin/dashboard");
        assert_eq!(percent("/dashboard?from=2026-11-01&to=x y"), "/dashboard%3Ffrom%3D2026-11-01%26to%3Dx%20y");
    }
}
