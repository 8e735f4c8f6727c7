//! The admin dashboard, in a real browser (headless Chromium through ChromeDriver) over
//! the demo company's month of traffic (`api-gateway demo`, through the queue and the
//! worker): sign-in through the form, every chart's numbers read from the DOM and
//! checked against SQL over the raw rows, a phone-sized window without sideways
//! scrolling, no request to anywhere, and screenshots under `test-artifacts/dashboard/`.
//! Then who may see what, without a browser.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use api_gateway::demo::{DemoOptions, seed};
use common::team::team;
use common::*;
use diesel::sql_types::{BigInt, Double, Text};
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use test_support::browser::{Browser, artifacts_dir};

const PASSWORD: &str = "demo passphrase";
const TZ: &str = "Asia/Kolkata";

fn demo(days: u32, calls_per_day: u32, cvs: u32) -> DemoOptions {
    DemoOptions {
        company: "Demo Recruiting".into(),
        timezone: TZ.into(),
        owner_email: "owner@demo.example.com".into(),
        password: PASSWORD.into(),
        days,
        calls_per_day,
        cvs,
    }
}

/// Seeds the demo through the stack's queue and waits until the worker has stored and
/// rolled up every call; returns the company id.
async fn seeded(stack: &Stack, options: &DemoOptions) -> anyhow::Result<i64> {
    let (settings, _spool) = demo_settings(stack)?;
    let outcome = seed(&settings, options).await?;
    assert!(outcome.created && outcome.dropped == 0, "{outcome:?}");
    assert!(outcome.events > 0);
    stack.wait_llm_rows(i64::try_from(outcome.events)?).await?;
    let url = stack.analytics_db.url.clone();
    test_support::wait_for(Duration::from_secs(120), "the rollups to take every call", || async {
        let backlog = "SELECT (raw_rows + pending_rows)::int8 AS n FROM llm_usage_backlog";
        (test_support::query_count(&url, backlog).await.ok()? == 0).then_some(())
    })
    .await?;
    // Seeding again the same day adds nothing.
    let again = seed(&settings, options).await?;
    assert!(!again.created);
    assert_eq!((again.events, again.cvs), (outcome.events, 0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.llm_rows().await?, i64::try_from(outcome.events)?);
    Ok(outcome.company_id)
}

/// The settings `api-gateway demo` runs with against this stack.
fn demo_settings(stack: &Stack) -> anyhow::Result<(api_gateway::GatewaySettings, test_support::TempDir)> {
    let spool = test_support::TempDir::new("demo-spool")?;
    let settings =
        gateway_settings(&stack.main_db, &stack.analytics_db, &stack.redis, &spool, &stack.files, &stack.sim)?;
    Ok((settings, spool))
}

#[derive(diesel::QueryableByName, Debug)]
struct Day {
    #[diesel(sql_type = Text)]
    day: String,
    #[diesel(sql_type = BigInt)]
    calls: i64,
    #[diesel(sql_type = BigInt)]
    errors: i64,
    #[diesel(sql_type = BigInt)]
    hits: i64,
    #[diesel(sql_type = Double)]
    cost: f64,
    #[diesel(sql_type = Double)]
    saved: f64,
}

/// The raw rows of `company` per local day in `TZ`.
async fn raw_days(stack: &Stack, company: i64) -> anyhow::Result<Vec<Day>> {
    let mut conn = stack.analytics_db.connect().await?;
    Ok(diesel::sql_query(
        "SELECT to_char(created_at AT TIME ZONE $2, 'YYYY-MM-DD') AS day, count(*) AS calls, \
                count(*) FILTER (WHERE error_type IS NOT NULL) AS errors, count(*) FILTER (WHERE cache_hit) AS hits, \
                coalesce(sum(cost_usd), 0)::float8 AS cost, coalesce(sum(cost_saved_usd), 0)::float8 AS saved \
         FROM llm_logs WHERE company_id = $1 GROUP BY 1 ORDER BY 1",
    )
    .bind::<BigInt, _>(company)
    .bind::<Text, _>(TZ)
    .load(&mut conn)
    .await?)
}

/// A table's body cells by row, as the browser renders them.
const READ_TABLE: &str = "const t = document.getElementById(arguments[0]); if (!t) return null; \
     return Array.from(t.tBodies[0].rows).map(r => Array.from(r.cells).map(c => c.textContent.trim()));";

/// A chart's marks: (series, label, value).
const READ_MARKS: &str = "const s = document.getElementById(arguments[0]); if (!s) return null; \
     return Array.from(s.querySelectorAll('[data-value]')).map(m => [m.dataset.series || '', m.dataset.label, \
     Number(m.dataset.value)]);";

fn number(cell: &Value) -> f64 {
    let text: String = cell.as_str().unwrap_or_default().chars().filter(|c| c.is_ascii_digit() || *c == '.').collect();
    text.parse().unwrap_or(f64::NAN)
}

async fn sign_in(browser: &Browser, url: &str, fields: &[(&str, &str)]) -> anyhow::Result<()> {
    browser.open(url).await?;
    assert!(browser.current_url().await?.contains("/login?next="), "signed out, a page sends to its sign-in");
    for (name, value) in fields {
        browser.type_into(&format!("input[name={name}]"), value).await?;
    }
    browser.click("button[type=submit]").await?;
    // A click does not wait for the page it posts to: wait until the sign-in page has
    // given way to a fully loaded page.
    test_support::wait_for(Duration::from_secs(15), "the page after signing in", || async {
        let state = browser.run("return [location.pathname, document.readyState]", json!([])).await.ok()?;
        (!state[0].as_str()?.ends_with("/login") && state[1] == "complete").then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_the_demo_month_in_a_browser() -> anyhow::Result<()> {
    let stack = Stack::start(Options {
        // Plain HTTP here: the cookie may not ask for HTTPS.
        tweak: Box::new(|s| s.accounts.cookie_secure = false),
        ..Options::default()
    })
    .await?;
    let company = seeded(&stack, &demo(30, 160, 24)).await?;
    let raw = raw_days(&stack, company).await?;
    let shots = artifacts_dir("dashboard");
    let browser = Browser::start(1280, 900).await?;

    sign_in(
        &browser,
        &format!("{}/dashboard", stack.url),
        &[("email", "owner@demo.example.com"), ("password", PASSWORD)],
    )
    .await?;
    assert!(browser.current_url().await?.ends_with("/dashboard"), "{}", browser.current_url().await?);

    // Spend per day: each day's stacked marks add up to the raw rows' cost that local
    // day, and the table's total column says the same to the cent.
    let marks = browser.run(READ_MARKS, json!(["spend-chart"])).await?;
    let mut drawn: HashMap<String, f64> = HashMap::new();
    for m in marks.as_array().unwrap_or(&Vec::new()) {
        *drawn.entry(m[1].as_str().unwrap_or_default()[..10].to_owned()).or_default() += m[2].as_f64().unwrap_or(0.0);
    }
    let spend = browser.run(READ_TABLE, json!(["spend-table"])).await?;
    let spend = spend.as_array().cloned().unwrap_or_default();
    assert_eq!(spend.len(), 30, "a row per local day");
    let models: Vec<Value> = browser
        .run("return Array.from(document.querySelectorAll('#spend-table thead th')).map(c => c.textContent)", json!([]))
        .await?
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(models.iter().any(|m| m == "gpt-4o-mini") && models.iter().any(|m| m == "gpt-4.1"), "{models:?}");
    let calls_table = browser.run(READ_TABLE, json!(["calls-table"])).await?;
    let cache_table = browser.run(READ_TABLE, json!(["cache-table"])).await?;
    for day in &raw {
        let drawn_cost = drawn.get(&day.day).copied().unwrap_or(0.0);
        assert!((drawn_cost - day.cost).abs() < 1e-6, "{}: drawn {drawn_cost}, raw {}", day.day, day.cost);
        let row = spend.iter().find(|r| r[0] == day.day.as_str()).unwrap_or_else(|| panic!("no row for {}", day.day));
        let total = number(row.as_array().and_then(|r| r.last()).unwrap_or(&Value::Null));
        assert!((total - day.cost).abs() < 0.006, "{}: table {total}, raw {}", day.day, day.cost);
        let calls = calls_table.as_array().and_then(|t| t.iter().find(|r| r[0] == day.day.as_str())).cloned();
        let calls = calls.unwrap_or_else(|| panic!("no calls row for {}", day.day));
        assert_eq!((number(&calls[1]), number(&calls[2])), (day.calls as f64, day.errors as f64), "{}", day.day);
        let cache = cache_table.as_array().and_then(|t| t.iter().find(|r| r[0] == day.day.as_str())).cloned();
        let cache = cache.unwrap_or_else(|| panic!("no cache row for {}", day.day));
        assert_eq!(number(&cache[1]), day.hits as f64, "{}", day.day);
        assert!((number(&cache[3]) - day.saved).abs() < 0.006, "{}", day.day);
    }
    // The bad day (seven times the usual errors) shows in the error rate.
    let worst = raw.iter().max_by(|a, b| (a.errors * 1000 / a.calls.max(1)).cmp(&(b.errors * 1000 / b.calls.max(1))));
    assert!(worst.is_some_and(|w| w.errors * 100 > w.calls * 4), "{worst:?}");
    let total_calls: i64 = raw.iter().map(|d| d.calls).sum();
    let card = browser.run("return document.querySelector('#total-calls .v').textContent", json!([])).await?;
    assert_eq!(number(&card), total_calls as f64);
    // Top users: the biggest spender per the raw rows comes first, by email.
    let top = browser.run(READ_TABLE, json!(["top-who-table"])).await?;
    let top_user = test_support::query_count(
        &stack.analytics_db.url,
        &format!(
            "SELECT user_id AS n FROM llm_logs WHERE company_id = {company} GROUP BY user_id \
             ORDER BY sum(cost_usd) DESC NULLS LAST LIMIT 1"
        ),
    )
    .await?;
    let first = top[0][0].as_str().unwrap_or_default().to_owned();
    assert!(first.ends_with(&format!("(#{top_user})")) && first.contains("@demo.example.com"), "{first}");
    // Nothing was fetched: no script, font, image or stylesheet from anywhere.
    let fetched = browser.run("return performance.getEntriesByType('resource').map(e => e.name)", json!([])).await?;
    assert_eq!(fetched, json!([]));
    browser.screenshot(&shots.join("overview.png")).await?;

    // Latency and pipeline pages.
    browser.open(&format!("{}/dashboard/latency", stack.url)).await?;
    let latency = browser.run(READ_TABLE, json!(["latency-table"])).await?;
    assert_eq!(latency.as_array().map(Vec::len), Some(30));
    let lines = browser.run(READ_MARKS, json!(["latency-chart"])).await?;
    let series: std::collections::BTreeSet<String> =
        lines.as_array().unwrap_or(&Vec::new()).iter().map(|m| m[0].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(series.into_iter().collect::<Vec<_>>(), ["p50", "p95", "p99"]);
    let per_model = browser.run(READ_TABLE, json!(["latency-model-table"])).await?;
    assert_eq!(per_model.as_array().map(Vec::len), Some(4), "{per_model}");
    browser.screenshot(&shots.join("latency.png")).await?;
    browser.open(&format!("{}/dashboard/pipeline", stack.url)).await?;
    // The demo's CVs wait for a cv-processor (none runs here): queued, each on its day.
    let uploaded = test_support::query_count(
        &stack.main_db.url,
        &format!("SELECT count(*) AS n FROM cvs WHERE company_id = {company} AND status = 'queued'"),
    )
    .await?;
    assert!(uploaded > 10, "{uploaded}");
    let queued = browser.run("return document.querySelector('#cvs-queued .v').textContent", json!([])).await?;
    assert_eq!(number(&queued), uploaded as f64);
    let per_day = browser.run(READ_TABLE, json!(["cvs-table"])).await?;
    let summed: f64 = per_day.as_array().unwrap_or(&Vec::new()).iter().map(|r| number(&r[4])).sum();
    assert_eq!(summed, uploaded as f64);
    assert_eq!(browser.run(READ_TABLE, json!(["queue-table"])).await?, Value::Null, "the queue is the operator's");
    browser.screenshot(&shots.join("pipeline.png")).await?;

    // On a phone: one column, nothing wider than the screen.
    browser.resize(390, 844).await?;
    browser.open(&format!("{}/dashboard", stack.url)).await?;
    let widths = browser.run("return [document.documentElement.scrollWidth, window.innerWidth]", json!([])).await?;
    assert!(widths[0].as_u64() <= widths[1].as_u64(), "sideways scrolling on a phone: {widths}");
    browser.screenshot(&shots.join("overview-phone.png")).await?;
    browser.resize(1280, 900).await?;

    // The operator: all companies, then the demo company alone, and the queue.
    sign_in(&browser, &format!("{}/admin/dashboard/pipeline", stack.url), &[("admin_key", ADMIN_KEY)]).await?;
    assert!(browser.current_url().await?.ends_with("/admin/dashboard/pipeline"));
    let queue = browser.run(READ_TABLE, json!(["queue-table"])).await?;
    assert!(queue.as_array().is_some_and(|q| q.iter().any(|r| r[0] == "llm_logs")), "{queue}");
    browser.screenshot(&shots.join("operator-pipeline.png")).await?;
    browser.open(&format!("{}/admin/dashboard", stack.url)).await?;
    let top = browser.run(READ_TABLE, json!(["top-who-table"])).await?;
    assert!(top[0][0].as_str().is_some_and(|t| t.starts_with("Demo Recruiting")), "{top}");
    browser.open(&format!("{}/admin/dashboard?company={company}", stack.url)).await?;
    let card = browser.run("return document.querySelector('#total-calls .v').textContent", json!([])).await?;
    assert_eq!(number(&card), total_calls as f64);
    browser.screenshot(&shots.join("operator-overview.png")).await?;
    browser.close().await?;
    stack.stop().await
}

/// Signs in through the dashboard's form; the `hh_session` cookie.
async fn form_sign_in(stack: &Stack, email: &str, password: &str) -> anyhow::Result<(u16, Option<String>)> {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let body = format!("email={}&password={}", email.replace('@', "%40"), password.replace(' ', "+"));
    let answer = http
        .post(format!("{}/dashboard/login", stack.url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    let cookie = answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("hh_session="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned());
    Ok((answer.status().as_u16(), cookie))
}

async fn page(stack: &Stack, path: &str, cookie: Option<&str>) -> anyhow::Result<(u16, String, String)> {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let mut request = http.get(format!("{}{path}", stack.url));
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    let answer = request.send().await?;
    let status = answer.status().as_u16();
    let location = answer.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    Ok((status, location, answer.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_companys_owners_and_admins_see_its_dashboard() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let company = seeded(&stack, &demo(3, 40, 0)).await?;
    // Run later over a longer window, the demo makes the same calls for the days both
    // cover: they are stored once, and only the new days add rows.
    let (settings, _spool) = demo_settings(&stack)?;
    let wider = seed(&settings, &demo(5, 40, 0)).await?;
    let wider = i64::try_from(wider.events)?;
    stack.wait_llm_rows(wider).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stack.llm_rows().await?, wider);
    let other = team(&stack, "Other Hiring").await?;

    // Signed out: to the sign-in page, coming back here afterwards.
    let (status, location, _) = page(&stack, "/dashboard/latency?from=2026-11-01", None).await?;
    assert_eq!((status, location.as_str()), (303, "/dashboard/login?next=/dashboard/latency%3Ffrom%3D2026-11-01"));
    // A wrong password: the form again, 401, no cookie.
    let (status, cookie) = form_sign_in(&stack, "owner@demo.example.com", "not the password").await?;
    assert_eq!((status, cookie), (401, None));

    let (status, owner) = form_sign_in(&stack, "owner@demo.example.com", PASSWORD).await?;
    assert_eq!(status, 303);
    let owner = owner.ok_or_else(|| anyhow::anyhow!("no session cookie"))?;
    let (status, _, body) = page(&stack, "/dashboard", Some(&owner)).await?;
    assert_eq!(status, 200);
    assert!(body.contains("Demo Recruiting") && body.contains(r#"id="spend-chart""#));
    let (status, _, _) = page(&stack, &format!("/dashboard?company={company}"), Some(&owner)).await?;
    assert_eq!(status, 200, "its own company may be named");

    // Recruiters and viewers: 403, whatever the page.
    for email in ["rosa@demo.example.com", "vic@demo.example.com"] {
        let (_, cookie) = form_sign_in(&stack, email, PASSWORD).await?;
        for path in ["/dashboard", "/dashboard/latency", "/dashboard/pipeline"] {
            let (status, _, body) = page(&stack, path, cookie.as_deref()).await?;
            assert_eq!(status, 403, "{email} {path}");
            assert!(!body.contains("spend-chart") && body.contains("admin role or above"), "{body}");
        }
    }
    // The admin of another company sees its own (empty) figures, and 403 for the demo's.
    let theirs = format!("hh_session={}", other.admin.token);
    let (status, _, body) = page(&stack, "/dashboard", Some(&theirs)).await?;
    assert_eq!(status, 200);
    assert!(body.contains("Other Hiring") && !body.contains("Demo Recruiting"));
    assert!(body.contains(r#"<div class="v">0</div>"#), "no calls of theirs");
    let (status, _, body) = page(&stack, &format!("/dashboard?company={company}"), Some(&theirs)).await?;
    assert_eq!(status, 403);
    assert!(!body.contains("Demo Recruiting"));

    // An API key is not a sign-in; the operator's pages want the operator.
    let (status, location, _) = page(&stack, "/dashboard", Some("hh_session=hhk_not_a_session")).await?;
    assert_eq!((status, location.as_str()), (303, "/dashboard/login?next=/dashboard"));
    let (status, location, _) = page(&stack, "/admin/dashboard", Some(&owner)).await?;
    assert_eq!((status, location.as_str()), (303, "/admin/dashboard/login?next=/admin/dashboard"));

    // Bad input: a 400 page naming the parameter.
    let (status, _, body) = page(&stack, "/dashboard?from=yesterday", Some(&owner)).await?;
    assert_eq!(status, 400);
    assert!(body.contains("(from)"), "{body}");
    let (status, _, body) = page(&stack, "/dashboard?colour=red", Some(&owner)).await?;
    assert_eq!(status, 400);
    assert!(body.contains("colour"), "{body}");
    let (status, _, body) = page(&stack, "/dashboard?from=2024-06-01&to=2026-01-01", Some(&owner)).await?;
    assert_eq!(status, 400);
    assert!(body.contains("at most 400 days"), "{body}");

    // Signing out ends the session.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let out = http.post(format!("{}/dashboard/logout", stack.url)).header("Cookie", &owner).send().await?;
    assert_eq!(out.status().as_u16(), 303);
    let (status, _, _) = page(&stack, "/dashboard", Some(&owner)).await?;
    assert_eq!(status, 303);
    let ended = test_support::query_count(
        &stack.main_db.url,
        &format!("SELECT count(*) AS n FROM audit_log WHERE company_id = {company} AND action = 'session.end'"),
    )
    .await?;
    assert_eq!(ended, 1, "the sign-out is audited");
    // Signing out again (no session left) just clears the cookie.
    let again = http.post(format!("{}/dashboard/logout", stack.url)).header("Cookie", &owner).send().await?;
    assert_eq!(again.status().as_u16(), 303);
    stack.stop().await
}
