//! The analytics API against the raw rows: every figure it gives is checked against a
//! SQL query over `llm_logs` written here, in a zone half an hour off UTC
//! (Asia/Kolkata) and across a DST change (Europe/Berlin, 2026-10-25); who may read
//! what; the raw calls page by page and as CSV; bad input.

mod common;

use std::collections::{HashMap, HashSet};

use chrono::{TimeZone, Utc};
use common::team::{Team, team};
use common::*;
use common_models::usage::histogram_bucket;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};

/// Calls every 7 min 13 s from 2026-10-20 00:00 UTC for 16 days (~3,190) for `company`:
/// three models (one without a price), two actions, three users and a user-less key,
/// an interview, errors without usage, cache hits, streams with a first token,
/// latencies from 1 ms to 20 s.
async fn generate_calls(stack: &Stack, team: &Team, scale: i64) -> anyhow::Result<()> {
    let mut conn = stack.analytics_db.connect().await?;
    for month in ["2026-10-01", "2026-11-01"] {
        diesel::sql_query(format!("SELECT ensure_monthly_partition('llm_logs', '{month}')")).execute(&mut conn).await?;
    }
    diesel::sql_query(
        "INSERT INTO llm_logs (event_id, created_at, action, company_id, user_id, interview_id, model, \
           tokens_input, tokens_output, tokens_used, usage_reported, cost_usd, price_table_version, latency_ms, \
           time_to_first_token_ms, streaming, http_status, error_type, cache_hit, cost_saved_usd, \
           tokens_cached_input, tokens_reasoning) \
         SELECT gen_random_uuid(), timestamptz '2026-10-20 00:00:00+00' + i * interval '7 minutes 13 seconds', \
           CASE WHEN i % 3 = 0 THEN 'cv_analysis' ELSE 'chat' END, $1, \
           CASE i % 4 WHEN 0 THEN NULL WHEN 1 THEN $2 WHEN 2 THEN $3 ELSE $4 END, \
           CASE WHEN i % 5 = 0 THEN 77 END, m, ti, tout, ti + tout, ti IS NOT NULL, \
           CASE WHEN hit THEN 0 WHEN m = 'local-llama' OR ti IS NULL THEN NULL \
                ELSE $5 * (ti * 2 + tout * 8) / 1000000.0 END, '2026-11-01', \
           1 + (i * 7919) % 20000, CASE WHEN i % 2 = 0 THEN (1 + (i * 7919) % 20000) / 5 END, i % 2 = 0, \
           CASE WHEN err THEN 502 ELSE 200 END, CASE WHEN err THEN 'upstream_error' END, hit, \
           CASE WHEN hit THEN $5 * 0.002 END, CASE WHEN i % 7 = 1 THEN ti / 4 END, CASE WHEN i % 4 = 1 THEN tout / 5 END \
         FROM (SELECT i, i % 17 = 0 AS err, i % 11 = 0 AND i % 17 <> 0 AS hit, \
                      (ARRAY['gpt-4.1', 'gpt-4.1-mini', 'local-llama'])[1 + (i / 2) % 3] AS m, \
                      CASE WHEN i % 17 <> 0 THEN 100 + i % 900 END AS ti, \
                      CASE WHEN i % 17 <> 0 THEN 20 + i % 300 END AS tout \
               FROM generate_series(0, 3190) AS i) AS g",
    )
    .bind::<BigInt, _>(team.company_id)
    .bind::<BigInt, _>(team.owner.user_id)
    .bind::<BigInt, _>(team.admin.user_id)
    .bind::<BigInt, _>(team.recruiter.user_id)
    .bind::<BigInt, _>(scale)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Rollups for the whole period, from the raw rows (the worker's rebuild).
async fn roll_up(stack: &Stack) -> anyhow::Result<()> {
    let mut conn = stack.analytics_db.connect().await?;
    let (from, to) =
        (Utc.with_ymd_and_hms(2026, 10, 19, 0, 0, 0).unwrap(), Utc.with_ymd_and_hms(2026, 11, 7, 0, 0, 0).unwrap());
    llm_log_worker::rollup::rebuild(&mut conn, from, to, |_, _| {}).await?;
    Ok(())
}

/// What the raw rows say for one local bucket and group.
#[derive(diesel::QueryableByName, Debug)]
struct Raw {
    #[diesel(sql_type = Text)]
    start: String,
    #[diesel(sql_type = Nullable<Text>)]
    grp: Option<String>,
    #[diesel(sql_type = BigInt)]
    calls: i64,
    #[diesel(sql_type = BigInt)]
    errors: i64,
    #[diesel(sql_type = BigInt)]
    tokens_input: i64,
    #[diesel(sql_type = BigInt)]
    tokens_output: i64,
    #[diesel(sql_type = BigInt)]
    tokens_cached_input: i64,
    #[diesel(sql_type = BigInt)]
    tokens_reasoning: i64,
    #[diesel(sql_type = Double)]
    cost: f64,
    #[diesel(sql_type = BigInt)]
    cache_hits: i64,
    #[diesel(sql_type = Double)]
    saved: f64,
    #[diesel(sql_type = BigInt)]
    unpriced: i64,
    #[diesel(sql_type = Nullable<Integer>)]
    p50: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    p99: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    ttft95: Option<i32>,
}

/// The raw rows of `company` between local midnights `from` and `to` (excluded) in
/// `tz`, per local day (`bucket` = day) or in all (`None`), split by `group` (a column).
async fn raw(
    stack: &Stack,
    company: i64,
    tz: &str,
    from: &str,
    to: &str,
    day: bool,
    group: &str,
) -> anyhow::Result<Vec<Raw>> {
    let mut conn = stack.analytics_db.connect().await?;
    let start = if day { "to_char(date_trunc('day', created_at AT TIME ZONE $2), 'YYYY-MM-DD')" } else { "''" };
    let rows = diesel::sql_query(format!(
        "SELECT {start} AS start, {group}::text AS grp, count(*) AS calls, \
                count(*) FILTER (WHERE error_type IS NOT NULL) AS errors, \
                coalesce(sum(tokens_input), 0)::int8 AS tokens_input, coalesce(sum(tokens_output), 0)::int8 AS tokens_output, \
                coalesce(sum(tokens_cached_input), 0)::int8 AS tokens_cached_input, \
                coalesce(sum(tokens_reasoning), 0)::int8 AS tokens_reasoning, \
                coalesce(sum(cost_usd), 0)::float8 AS cost, count(*) FILTER (WHERE cache_hit) AS cache_hits, \
                coalesce(sum(cost_saved_usd), 0)::float8 AS saved, \
                count(*) FILTER (WHERE cost_usd IS NULL AND tokens_input IS NOT NULL AND NOT cache_hit) AS unpriced, \
                percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50, \
                percentile_disc(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99, \
                percentile_disc(0.95) WITHIN GROUP (ORDER BY time_to_first_token_ms) AS ttft95 \
         FROM llm_logs WHERE company_id = $1 \
           AND created_at >= ($3::timestamp AT TIME ZONE $2) AND created_at < ($4::timestamp AT TIME ZONE $2) \
         GROUP BY 1, 2 ORDER BY 1, 2"
    ))
    .bind::<BigInt, _>(company)
    .bind::<Text, _>(tz)
    .bind::<Text, _>(from)
    .bind::<Text, _>(to)
    .load(&mut conn)
    .await?;
    Ok(rows)
}

/// Asserts the API's figures (a usage point, a top entry or totals) equal `raw`'s.
fn assert_figures(api: &Value, raw: &Raw, what: &str) {
    let int = |k: &str| api[k].as_i64().unwrap_or(-1);
    assert_eq!(int("calls"), raw.calls, "{what}: calls");
    assert_eq!(int("errors"), raw.errors, "{what}: errors");
    assert_eq!(int("tokens_input"), raw.tokens_input, "{what}: tokens_input");
    assert_eq!(int("tokens_output"), raw.tokens_output, "{what}: tokens_output");
    assert_eq!(int("tokens_cached_input"), raw.tokens_cached_input, "{what}: tokens_cached_input");
    assert_eq!(int("tokens_reasoning"), raw.tokens_reasoning, "{what}: tokens_reasoning");
    assert!(raw.calls < 20 || raw.tokens_cached_input > 0, "{what}: the generated calls have cached tokens");
    assert_eq!(int("cache_hits"), raw.cache_hits, "{what}: cache_hits");
    assert_eq!(int("unpriced_calls"), raw.unpriced, "{what}: unpriced_calls");
    let cost = api["cost_usd"].as_f64().unwrap_or(-1.0);
    assert!((cost - raw.cost).abs() < 1e-9, "{what}: cost {cost} vs {}", raw.cost);
    let saved = api["cost_saved_usd"].as_f64().unwrap_or(-1.0);
    assert!((saved - raw.saved).abs() < 1e-9, "{what}: saved {saved} vs {}", raw.saved);
    let rate = api["error_rate"].as_f64().unwrap_or(-1.0);
    assert!((rate - raw.errors as f64 / raw.calls as f64).abs() < 1e-12, "{what}: error rate");
    // A percentile lands in the bucket of the exact one.
    let bucket = |v: &Value| v.as_f64().map(histogram_bucket);
    let exact = |v: Option<i32>| v.map(|ms| histogram_bucket(f64::from(ms)));
    assert_eq!(bucket(&api["latency_ms"]["p50"]), exact(raw.p50), "{what}: p50 {}", api["latency_ms"]);
    assert_eq!(bucket(&api["latency_ms"]["p99"]), exact(raw.p99), "{what}: p99 {}", api["latency_ms"]);
    assert_eq!(bucket(&api["ttft_ms"]["p95"]), exact(raw.ttft95), "{what}: ttft p95 {}", api["ttft_ms"]);
}

async fn get(stack: &Stack, token: &str, path_and_query: &str) -> anyhow::Result<(u16, Value)> {
    let res = stack.http.get(format!("{}{path_and_query}", stack.url)).bearer_auth(token).send().await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_figures_equal_the_raw_rows_of_local_days_in_any_zone() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let a = team(&stack, "Analytics A").await?;
    let b = team(&stack, "Analytics B").await?;
    generate_calls(&stack, &a, 1).await?;
    generate_calls(&stack, &b, 3).await?;
    roll_up(&stack).await?;

    // Three days in India (UTC+5:30): every local day starts mid-UTC-hour.
    let (status, body) = get(
        &stack,
        &a.owner.token,
        "/api/v1/analytics/usage?from=2026-10-28&to=2026-10-30&tz=Asia/Kolkata&bucket=day&group_by=model",
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["timezone"], "Asia/Kolkata");
    let expected = raw(&stack, a.company_id, "Asia/Kolkata", "2026-10-28", "2026-10-31", true, "model").await?;
    let points = body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(points.len(), expected.len(), "3 days × 3 models: {body}");
    assert_eq!(points.len(), 9);
    for (point, raw) in points.iter().zip(&expected) {
        let start = point["start"].as_str().unwrap_or_default();
        assert!(start.starts_with(&format!("{}T00:00:00", raw.start)) && start.ends_with("+05:30"), "{start}");
        assert_eq!(point["group"].as_str(), raw.grp.as_deref());
        assert_figures(point, raw, &format!("{} {:?}", raw.start, raw.grp));
    }
    let all = raw(&stack, a.company_id, "Asia/Kolkata", "2026-10-28", "2026-10-31", false, "NULL").await?;
    assert_figures(&body["totals"], &all[0], "IST totals");

    // The day Berlin leaves summer time has 25 hours; its figures are those 25 hours'.
    let (status, day) =
        get(&stack, &a.admin.token, "/api/v1/analytics/usage?from=2026-10-25&to=2026-10-25&tz=Europe/Berlin").await?;
    assert_eq!(status, 200, "{day}");
    let expected = raw(&stack, a.company_id, "Europe/Berlin", "2026-10-25", "2026-10-26", false, "NULL").await?;
    assert_eq!(day["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(day["data"][0]["start"], "2026-10-25T00:00:00+02:00");
    assert_figures(&day["data"][0], &expected[0], "Berlin DST day");
    let (_, hours) = get(
        &stack,
        &a.admin.token,
        "/api/v1/analytics/usage?from=2026-10-25&to=2026-10-25&tz=Europe/Berlin&bucket=hour",
    )
    .await?;
    let hours = hours["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(hours.len(), 25, "a 25-hour day");
    let starts: HashSet<&str> = hours.iter().filter_map(|h| h["start"].as_str()).collect();
    assert!(starts.contains("2026-10-25T02:00:00+02:00") && starts.contains("2026-10-25T02:00:00+01:00"));
    assert_eq!(hours.iter().map(|h| h["calls"].as_i64().unwrap_or(0)).sum::<i64>(), expected[0].calls);

    // A whole-hour zone reads the rollups only; the same day in UTC through the operator.
    let (status, op) = get(
        &stack,
        ADMIN_KEY,
        &format!("/api/v1/admin/analytics/usage?company_id={}&from=2026-10-22&to=2026-10-22&tz=UTC", b.company_id),
    )
    .await?;
    assert_eq!(status, 200, "{op}");
    let expected = raw(&stack, b.company_id, "UTC", "2026-10-22", "2026-10-23", false, "NULL").await?;
    assert_figures(&op["data"][0], &expected[0], "B's UTC day (operator)");

    // Top spenders among users: the raw ranking, shares of the range's cost.
    let (status, top) = get(
        &stack,
        &a.owner.token,
        "/api/v1/analytics/top?by=user&from=2026-10-20&to=2026-11-04&tz=Asia/Kolkata&limit=3",
    )
    .await?;
    assert_eq!(status, 200, "{top}");
    let mut users = raw(&stack, a.company_id, "Asia/Kolkata", "2026-10-20", "2026-11-05", false, "user_id").await?;
    users.sort_by(|x, y| y.cost.total_cmp(&x.cost));
    let entries = top["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 3);
    let total: f64 = users.iter().map(|u| u.cost).sum();
    for (entry, user) in entries.iter().zip(&users) {
        assert_eq!(entry["key"].as_str(), user.grp.as_deref());
        assert_figures(entry, user, &format!("top user {:?}", user.grp));
        let share = entry["cost_share"].as_f64().unwrap_or(-1.0);
        assert!((share - user.cost / total).abs() < 1e-9);
    }

    // The operator ranks companies: B spent three times what A did.
    let (_, companies) =
        get(&stack, ADMIN_KEY, "/api/v1/admin/analytics/top?by=company&from=2026-10-20&to=2026-11-05").await?;
    let keys: Vec<&str> =
        companies["data"].as_array().map(|d| d.iter().filter_map(|e| e["key"].as_str()).collect()).unwrap_or_default();
    assert_eq!(keys, [b.company_id.to_string(), a.company_id.to_string()]);

    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_behind_a_figure_page_and_export_and_only_admins_see_them() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let a = team(&stack, "Calls A").await?;
    let b = team(&stack, "Calls B").await?;
    generate_calls(&stack, &a, 1).await?;
    roll_up(&stack).await?;
    let filter = "from=2026-10-21&to=2026-10-23&tz=UTC&model=gpt-4.1&error_type=none&interview_id=77";
    let expected = test_support::query_count(
        &stack.analytics_db.url,
        &format!(
            "SELECT count(*) AS n FROM llm_logs WHERE company_id = {} AND model = 'gpt-4.1' AND error_type IS NULL \
             AND interview_id = 77 AND created_at >= '2026-10-21T00:00:00Z' AND created_at < '2026-10-24T00:00:00Z'",
            a.company_id
        ),
    )
    .await?;
    assert!(expected > 20, "the filter leaves {expected} calls");

    // Pages of 7, newest first, each call once.
    let (mut seen, mut cursor, mut last) = (HashSet::new(), String::new(), None::<String>);
    loop {
        let (status, page) =
            get(&stack, &a.admin.token, &format!("/api/v1/analytics/calls?{filter}&limit=7&cursor={cursor}")).await?;
        assert_eq!(status, 200, "{page}");
        for call in page["data"].as_array().cloned().unwrap_or_default() {
            assert!(seen.insert(call["event_id"].as_str().unwrap_or_default().to_owned()), "a call twice");
            assert_eq!((call["model"].as_str(), call["interview_id"].as_i64()), (Some("gpt-4.1"), Some(77)));
            assert!(call["error_type"].is_null());
            let at = call["created_at"].as_str().unwrap_or_default().to_owned();
            assert!(last.as_ref().is_none_or(|l| at.as_str() <= l.as_str()), "newest first");
            last = Some(at);
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, expected);

    // The same calls as CSV: a header and one line each, the same ids.
    let res = stack
        .http
        .get(format!("{}/api/v1/analytics/calls?{filter}&format=csv", stack.url))
        .bearer_auth(&a.owner.token)
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = res.text().await?;
    let mut lines = csv.lines();
    assert!(lines.next().unwrap_or_default().starts_with("event_id,created_at,company_id,"));
    let ids: HashSet<String> = lines.map(|l| l.split(',').next().unwrap_or_default().to_owned()).collect();
    assert_eq!(ids, seen);

    // Usage as CSV: one line per day and model, the JSON's figures.
    let (_, json_usage) =
        get(&stack, &a.owner.token, "/api/v1/analytics/usage?from=2026-10-21&to=2026-10-22&tz=UTC&group_by=model")
            .await?;
    let csv = stack
        .http
        .get(format!(
            "{}/api/v1/analytics/usage?from=2026-10-21&to=2026-10-22&tz=UTC&group_by=model&format=csv",
            stack.url
        ))
        .bearer_auth(&a.owner.token)
        .send()
        .await?
        .text()
        .await?;
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 6);
    let calls_by_row: HashMap<String, i64> = rows
        .iter()
        .map(|r| {
            let f: Vec<&str> = r.split(',').collect();
            (format!("{}|{}", f[0], f[1]), f[2].parse().unwrap_or(-1))
        })
        .collect();
    for point in json_usage["data"].as_array().cloned().unwrap_or_default() {
        let key =
            format!("{}|{}", point["start"].as_str().unwrap_or_default(), point["group"].as_str().unwrap_or_default());
        assert_eq!(calls_by_row.get(&key).copied(), point["calls"].as_i64(), "{key}");
    }

    // Roles and companies: recruiters, viewers and company keys are refused; B sees
    // none of A's calls; a company reader cannot name another company.
    for (token, who) in [(&a.recruiter.token, "recruiter"), (&a.viewer.token, "viewer"), (&a.api_key, "company key")] {
        let (status, body) = get(&stack, token, "/api/v1/analytics/usage").await?;
        assert_eq!(status, 403, "{who}: {body}");
    }
    let (status, body) = get(&stack, &b.owner.token, &format!("/api/v1/analytics/calls?{filter}")).await?;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!([]));
    let (_, body) = get(&stack, &b.owner.token, "/api/v1/analytics/usage?from=2026-10-20&to=2026-11-05").await?;
    assert_eq!(body["totals"]["calls"], 0);
    let (status, body) =
        get(&stack, &b.owner.token, &format!("/api/v1/analytics/usage?company_id={}", a.company_id)).await?;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("company_id")));
    let (status, _) = get(&stack, &a.owner.token, "/api/v1/admin/analytics/usage").await?;
    assert_eq!(status, 401, "the operator's routes take the admin key");

    // Bad input is a 400 naming the parameter.
    for (query, param) in [
        ("tz=Mars/Olympus", "tz"),
        ("tz=UTC%2B5", "tz"),
        ("bucket=year", "bucket"),
        ("from=2026-11-02&to=2026-11-01", "to"),
        ("from=yesterday", "from"),
        ("from=2026-01-01&to=2026-06-01&bucket=hour", "bucket"),
        ("from=2021-01-01&to=2026-01-01&bucket=month", "from"),
        ("from=0001-01-01", "from"),
        ("to=9999-12-31T00:00:00Z", "to"),
        ("group_by=company", "group_by"),
        ("format=xml", "format"),
        ("colour=blue", "colour"),
    ] {
        let (status, body) = get(&stack, &a.owner.token, &format!("/api/v1/analytics/usage?{query}")).await?;
        assert_eq!((status, body["error"]["param"].as_str()), (400, Some(param)), "{query}: {body}");
    }
    let (status, body) = get(&stack, &a.owner.token, "/api/v1/analytics/top").await?;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("by")));
    let (status, body) = get(&stack, &a.owner.token, "/api/v1/analytics/calls?cursor=c12").await?;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("cursor")));

    // The company's own timezone is the default; a POSIX string is refused.
    let patch = |tz: &str| {
        stack
            .http
            .patch(format!("{}/api/v1/admin/companies/{}", stack.url, a.company_id))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"timezone": tz}))
            .send()
    };
    assert_eq!(patch("UTC+5").await?.status(), 400);
    assert_eq!(patch("Asia/Kolkata").await?.status(), 200);
    let (_, body) = get(&stack, &a.owner.token, "/api/v1/analytics/usage?from=2026-10-28&to=2026-10-28").await?;
    assert_eq!(body["timezone"], "Asia/Kolkata");
    assert_eq!(body["data"][0]["start"], "2026-10-28T00:00:00+05:30");

    stack.stop().await
}

#[derive(diesel::QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

/// The plan PostgreSQL picks for the operator's log search with `filter`.
async fn search_plan(
    stack: &Stack,
    level: Option<&str>,
    component: Option<&str>,
    error_type: Option<&str>,
) -> anyhow::Result<String> {
    let mut conn = stack.analytics_db.connect().await?;
    let lines: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN {}", api_gateway::logs_search::SEARCH))
        .bind::<diesel::sql_types::Timestamptz, _>(Utc::now() - chrono::TimeDelta::days(30))
        .bind::<diesel::sql_types::Timestamptz, _>(Utc::now() + chrono::TimeDelta::days(1))
        .bind::<Nullable<Text>, _>(level)
        .bind::<Nullable<Text>, _>(component)
        .bind::<Nullable<Text>, _>(error_type)
        .bind::<Nullable<BigInt>, _>(None::<i64>)
        .bind::<Nullable<Text>, _>(None::<&str>)
        .bind::<Nullable<diesel::sql_types::Timestamptz>, _>(None::<chrono::DateTime<Utc>>)
        .bind::<BigInt, _>(0)
        .bind::<BigInt, _>(50)
        .load(&mut conn)
        .await?;
    Ok(lines.into_iter().map(|l| l.line).collect::<Vec<_>>().join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_log_search_finds_rows_through_the_three_indexes() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let mut conn = stack.analytics_db.connect().await?;
    diesel::sql_query("SELECT ensure_monthly_partition('system_logs', (now() - interval '25 days')::date)")
        .execute(&mut conn)
        .await?;
    // 60,000 API log rows over the last 20 days: 1 % errors, 4 % warnings; three
    // components, one of them rare.
    diesel::sql_query(
        "INSERT INTO system_logs (event_id, created_at, level, component, message, status_code, error_type, company_id) \
         SELECT gen_random_uuid(), now() - i * interval '29 seconds', \
                CASE WHEN i % 100 = 0 THEN 'error' WHEN i % 25 = 0 THEN 'warning' ELSE 'info' END, \
                CASE WHEN i % 20 = 3 THEN 'cache-service' WHEN i % 4 = 1 THEN 'cv-processor' ELSE 'api-gateway' END, \
                'GET /x', 200, \
                CASE WHEN i % 100 = 0 THEN 'server_error' WHEN i % 25 = 0 THEN 'client_error' END, 1 + i % 7 \
         FROM generate_series(1, 60000) AS i",
    )
    .execute(&mut conn)
    .await?;
    diesel::sql_query("ANALYZE system_logs").execute(&mut conn).await?;

    // Errors, walked in pages of 40: every one, newest first, none twice.
    let expected = test_support::query_count(
        &stack.analytics_db.url,
        "SELECT count(*) AS n FROM system_logs WHERE level = 'error' AND created_at >= now() - interval '29 days'",
    )
    .await?;
    let (mut seen, mut cursor) = (HashSet::new(), String::new());
    loop {
        let (status, page) =
            get(&stack, ADMIN_KEY, &format!("/api/v1/admin/logs?level=error&limit=40&cursor={cursor}")).await?;
        assert_eq!(status, 200, "{page}");
        for row in page["data"].as_array().cloned().unwrap_or_default() {
            assert_eq!((row["level"].as_str(), row["error_type"].as_str()), (Some("error"), Some("server_error")));
            assert!(seen.insert(row["event_id"].as_str().unwrap_or_default().to_owned()));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, expected);
    let (_, page) = get(&stack, ADMIN_KEY, "/api/v1/admin/logs?component=cache-service&company_id=3&limit=500").await?;
    let rows = page["data"].as_array().cloned().unwrap_or_default();
    assert!(!rows.is_empty() && rows.iter().all(|r| r["component"] == "cache-service" && r["company_id"] == 3));
    let (status, _) = get(&stack, ADMIN_KEY, "/api/v1/admin/logs?severity=high").await?;
    assert_eq!(status, 400);

    // Each filter is served by the index it leads.
    let plan = search_plan(&stack, Some("error"), None, None).await?;
    assert!(plan.contains("level_created_at_idx"), "{plan}");
    let plan = search_plan(&stack, None, Some("cache-service"), None).await?;
    assert!(plan.contains("component_created_at_idx"), "{plan}");
    let plan = search_plan(&stack, None, None, Some("server_error")).await?;
    assert!(plan.contains("error_type_created_at_idx"), "{plan}");
    stack.stop().await
}
