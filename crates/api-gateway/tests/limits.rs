//! Rate limits, LLM concurrency and monthly budgets, held across two gateway instances
//! sharing one Redis.
#![expect(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use api_gateway::GatewaySettings;
use api_gateway::limits::Plan;
use common::{ADMIN_KEY, Options, Stack, chat_body};
use serde_json::{Value, json};

fn plan(name: &str, company: u32, credential: u32, burst: u32, concurrency: u32) -> Plan {
    Plan {
        name: name.to_owned(),
        company_per_minute: company,
        credential_per_minute: credential,
        burst,
        llm_concurrency: concurrency,
        llm_budget_usd: 0.0,
    }
}

/// Every gateway of the test gets the same plans, `default` being the default.
fn plans(default: &'static str) -> impl Fn(&mut GatewaySettings) + Clone {
    move |s: &mut GatewaySettings| {
        s.limits.plans.push(plan("five-a-minute", 5, 0, 5, 0));
        s.limits.plans.push(plan("three-per-key", 0, 3, 3, 0));
        s.limits.plans.push(plan("two-at-once", 0, 0, 1, 2));
        s.limits.default_plan = default.to_owned();
    }
}

async fn start(default: &'static str) -> Stack {
    let tweak = plans(default);
    Stack::start(Options { with_worker: false, tweak: Box::new(tweak), ..Options::default() }).await.unwrap()
}

async fn get(stack: &Stack, base: &str, key: &str) -> reqwest::Response {
    stack.http.get(format!("{base}/api/v1/jobs")).bearer_auth(key).send().await.unwrap()
}

fn header(res: &reqwest::Response, name: &str) -> Option<u64> {
    res.headers().get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test]
async fn the_company_limit_holds_across_two_gateways_and_says_when_to_retry() {
    let stack = start("five-a-minute").await;
    let (second, _spool) = stack.another_gateway_with(plans("five-a-minute")).await.unwrap();
    let (_, key) = stack.create_company("Limited").await.unwrap();
    let (_, other) = stack.create_company("Neighbour").await.unwrap();
    // Five in the window, alternating replicas, each told what is left.
    for i in 0..5u64 {
        let base = if i % 2 == 0 { &stack.url } else { &second.url };
        let res = get(&stack, base, &key).await;
        assert_eq!(res.status(), 200, "request {}", i + 1);
        assert_eq!(header(&res, "ratelimit-limit"), Some(5));
        assert_eq!(header(&res, "ratelimit-remaining"), Some(4 - i));
        assert!(header(&res, "ratelimit-reset").is_some_and(|r| r >= 1));
    }
    // The sixth, on either replica: 429, with when to come back (one request's share
    // of the minute: 12 s).
    for base in [&stack.url, &second.url] {
        let res = get(&stack, base, &key).await;
        assert_eq!(res.status(), 429);
        let retry = header(&res, "retry-after").unwrap();
        assert!((1..=12).contains(&retry), "{retry}");
        assert_eq!(header(&res, "ratelimit-remaining"), Some(0));
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            (body["error"]["code"].as_str(), body["error"]["type"].as_str()),
            (Some("rate_limited"), Some("rate_limit_error"))
        );
    }
    // Another company has its own allowance.
    assert_eq!(get(&stack, &second.url, &other).await.status(), 200);
    let metrics = stack.metrics().await.unwrap();
    assert!(common::metric_sum(&metrics, "headhunter_gateway_rate_limited_total") >= 1.0);
    second.stop().await.unwrap();
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn each_key_has_its_own_allowance_and_an_operator_changes_a_companys_plan() {
    let stack = start("unlimited").await;
    let (company, key) = stack.create_company("Keys").await.unwrap();
    // Unlimited: no headers, no refusals.
    let res = get(&stack, &stack.url, &key).await;
    assert!(res.headers().get("ratelimit-limit").is_none());
    let (status, answer) = patch_company(&stack, company, json!({"plan": "three-per-key"})).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = patch_company(&stack, company, json!({"plan": "gold"})).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["param"], "plan");
    // A second key of the same company.
    let mut conn = stack.main_db.connect().await.unwrap();
    let (second_key, prefix, digest) = api_gateway::auth::generate_key().unwrap();
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "INSERT INTO api_keys (company_id, name, key_prefix, key_hash) VALUES ($1, 'second', $2, $3)",
        )
        .bind::<diesel::sql_types::BigInt, _>(company)
        .bind::<diesel::sql_types::Text, _>(&prefix)
        .bind::<diesel::sql_types::Bytea, _>(digest.to_vec()),
        &mut conn,
    )
    .await
    .unwrap();
    for _ in 0..3 {
        assert_eq!(get(&stack, &stack.url, &key).await.status(), 200);
    }
    assert_eq!(get(&stack, &stack.url, &key).await.status(), 429);
    assert_eq!(get(&stack, &stack.url, &second_key).await.status(), 200, "the other key has its own allowance");
    stack.stop().await.unwrap();
}

async fn spent(stack: &Stack, token: &str) -> f64 {
    let res = stack.http.get(format!("{}/api/v1/company/limits", stack.url)).bearer_auth(token).send().await.unwrap();
    let body: Value = res.json().await.unwrap();
    body["llm_spent_this_month_usd"].as_f64().unwrap()
}

/// The operator's `PATCH /api/v1/admin/companies/{company}`: (status, answer).
async fn patch_company(stack: &Stack, company: i64, body: Value) -> (u16, Value) {
    let res = stack
        .http
        .patch(format!("{}/api/v1/admin/companies/{company}", stack.url))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn set_budget(stack: &Stack, company: i64, budget: Value) {
    let (status, answer) = patch_company(stack, company, json!({"llm_budget_usd": budget})).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn a_company_over_its_hard_budget_gets_429_and_no_upstream_call_until_it_is_raised() {
    let stack = start("unlimited").await;
    let team = common::team::team(&stack, "Spender").await.unwrap();
    let owner = team.owner.token.clone();
    set_budget(&stack, team.company_id, json!(0.000_000_1)).await;
    // Under the budget: the call goes through, and its cost is added to the month.
    let res = stack.chat(&team.api_key, &chat_body(false)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while spent(&stack, &owner).await <= 0.0 {
        assert!(Instant::now() < deadline, "the call's cost never reached the month's spend");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let month = spent(&stack, &owner).await;
    // Over it: 429 with the reason, and the upstream never hears of it.
    let upstream = stack.sim.requests();
    let res = stack.chat(&team.api_key, &chat_body(true)).send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(header(&res, "retry-after").is_some_and(|s| (1..=31 * 86_400).contains(&s)));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(stack.sim.requests(), upstream);
    // The rest of the API is not affected by an LLM budget.
    assert_eq!(get(&stack, &stack.url, &team.api_key).await.status(), 200);
    // Raised so the month's spend is past the soft share only: calls go on, counted.
    set_budget(&stack, team.company_id, json!(month / 0.9)).await;
    let res = stack.chat(&team.api_key, &chat_body(false)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let metrics = stack.metrics().await.unwrap();
    assert_eq!(common::metric_sum(&metrics, "headhunter_gateway_llm_budget_soft_exceeded_total"), 1.0);
    assert_eq!(common::metric_sum(&metrics, "headhunter_gateway_llm_budget_refused_total"), 1.0);
    // Back to the plan's (none): no limit.
    set_budget(&stack, team.company_id, Value::Null).await;
    assert_eq!(stack.chat(&team.api_key, &chat_body(false)).send().await.unwrap().status(), 200);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn a_company_over_its_hard_budget_still_gets_cached_answers_free() {
    let tweak = plans("unlimited");
    let options = Options { with_worker: false, with_cache: true, tweak: Box::new(tweak), ..Options::default() };
    let stack = Stack::start(options).await.unwrap();
    let team = common::team::team(&stack, "Thrifty").await.unwrap();
    set_budget(&stack, team.company_id, json!(0.000_000_1)).await;
    // One deterministic call under the budget: answered upstream, costed, cached.
    let res = stack.chat(&team.api_key, &chat_body(false)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let first: Value = res.json().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = stack.metrics().await.unwrap();
        let stored = common::metric_sum(&metrics, "headhunter_gateway_llm_cache_total{result=\"stored\"}");
        if stored >= 1.0 && spent(&stack, &team.owner.token).await > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the answer was never cached or its cost never counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Over the budget now: the same request is answered from the cache, upstream silent;
    // a new one is refused.
    let upstream = stack.sim.requests();
    let res = stack.chat(&team.api_key, &chat_body(false)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers().get("x-cache").and_then(|v| v.to_str().ok()), Some("hit"));
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["choices"], first["choices"]);
    let mut other = chat_body(false);
    other["messages"][0]["content"] = json!("A question never asked before.");
    let res = stack.chat(&team.api_key, &other).send().await.unwrap();
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(stack.sim.requests(), upstream, "neither call reached the upstream");
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn a_company_has_at_most_its_plans_llm_calls_in_flight_across_replicas() {
    let stack = start("two-at-once").await;
    let (second, _spool) = stack.another_gateway_with(plans("two-at-once")).await.unwrap();
    let (_, key) = stack.create_company("Busy").await.unwrap();
    stack.sim.configure(|b| b.latency_ms = 1500);
    let slow = |base: String| {
        let (http, key) = (stack.http.clone(), key.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&chat_body(false))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let first = slow(stack.url.clone());
    let second_call = slow(second.url.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let res = stack.chat(&key, &chat_body(false)).send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "too_many_concurrent_calls");
    assert_eq!((first.await.unwrap(), second_call.await.unwrap()), (200, 200));
    // Both slots are given back when the calls end.
    stack.sim.configure(|b| b.latency_ms = 0);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (a, b) = (
            stack.chat(&key, &chat_body(false)).send().await.unwrap().status().as_u16(),
            stack.chat(&key, &chat_body(false)).send().await.unwrap().status().as_u16(),
        );
        if (a, b) == (200, 200) {
            break;
        }
        assert!(Instant::now() < deadline, "slots were not given back: {a} {b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.stop().await.unwrap();
    stack.stop().await.unwrap();
}

async fn set_models(stack: &Stack, company: i64, models: Value) -> (u16, Value) {
    patch_company(stack, company, json!({"allowed_models": models})).await
}

#[tokio::test]
async fn a_company_calls_only_its_allowed_models_and_null_restores_every_priced_one() {
    let stack = start("unlimited").await;
    let (company, key) = stack.create_company("Careful").await.unwrap();
    let (_, neighbour) = stack.create_company("Neighbour").await.unwrap();
    let with_model = |model: &str| {
        let mut body = chat_body(false);
        body["model"] = json!(model);
        body
    };

    // Names the gateway does not serve are refused, naming the entry.
    let (status, err) = set_models(&stack, company, json!(["gpt-4o-mini", "gpt-9-ultra"])).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("allowed_models[1]")), "{err}");
    let (status, err) = set_models(&stack, company, json!([])).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("allowed_models")), "{err}");

    let (status, set) = set_models(&stack, company, json!(["gpt-4o-mini"])).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["allowed_models"], json!(["gpt-4o-mini"]));
    let before = stack.sim.requests();
    let res = stack.chat(&key, &with_model("gpt-4o")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let err: Value = res.json().await.unwrap();
    assert_eq!(
        (err["error"]["code"].as_str(), err["error"]["param"].as_str()),
        (Some("model_not_allowed"), Some("model"))
    );
    assert_eq!(stack.sim.requests(), before, "a refused model reached the upstream");
    // The listed model, and its dated versions, go through; other companies are untouched.
    for model in ["gpt-4o-mini", "gpt-4o-mini-2024-07-18"] {
        assert_eq!(stack.chat(&key, &with_model(model)).send().await.unwrap().status(), 200, "{model}");
    }
    assert_eq!(stack.chat(&neighbour, &with_model("gpt-4o")).send().await.unwrap().status(), 200);

    // null: back to every priced model.
    let (status, set) = set_models(&stack, company, Value::Null).await;
    assert_eq!((status, set["allowed_models"].clone()), (200, Value::Null));
    assert_eq!(stack.chat(&key, &with_model("gpt-4o")).send().await.unwrap().status(), 200);
    stack.stop().await.unwrap();
}

/// Waits until `token`'s company has spent more than `above` this month.
async fn spent_above(stack: &Stack, token: &str, above: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = spent(stack, token).await;
        if now > above * (1.0 + 1e-9) {
            return now;
        }
        assert!(Instant::now() < deadline, "the month's spend stayed at {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn alerts(stack: &Stack, token: &str, query: &str) -> (u16, Value) {
    let res = stack.http.get(format!("{}/api/v1/analytics/alerts{query}", stack.url)).bearer_auth(token).send().await;
    let res = res.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

/// (kind, threshold in calls' costs) of each alert on a page, oldest first.
fn crossed(page: &Value, cost: f64) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_owned(),
                (a["threshold_usd"].as_f64().unwrap() / cost * 100.0).round() / 100.0,
            )
        })
        .collect();
    out.reverse();
    out
}

#[tokio::test]
async fn spend_crossing_a_threshold_raises_one_alert_in_the_companys_day_seen_by_its_admins_only() {
    let stack = start("unlimited").await;
    let (second, _spool) = stack.another_gateway_with(plans("unlimited")).await.unwrap();
    let team = common::team::team(&stack, "Watched").await.unwrap();
    let owner = team.owner.token.clone();
    // Its days are cut in Kolkata's time.
    assert_eq!(patch_company(&stack, team.company_id, json!({"timezone": "Asia/Kolkata"})).await.0, 200);
    // One call says what a call costs.
    assert_eq!(stack.chat(&team.api_key, &chat_body(false)).send().await.unwrap().status(), 200);
    let cost = spent_above(&stack, &owner, 0.0).await;
    // Budget 3.5 calls (alerts at 50 %, 80 %, 100 %: 1.75, 2.8, 3.5 calls); a day's
    // alert at 1.5 calls.
    let (status, answer) = patch_company(
        &stack,
        team.company_id,
        json!({"llm_budget_usd": cost * 3.5, "daily_spend_alert_usd": cost * 1.5}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["daily_spend_alert_usd"].as_f64(), Some(cost * 1.5));
    let mut total = cost;
    let mut raised = Vec::new();
    for expected in
        [vec![("daily_spend", 1.5), ("budget_share", 1.75)], vec![("budget_share", 2.8)], vec![("budget_share", 3.5)]]
    {
        assert_eq!(stack.chat(&team.api_key, &chat_body(false)).send().await.unwrap().status(), 200);
        total = spent_above(&stack, &owner, total).await;
        raised.extend(expected.into_iter().map(|(k, t)| (k.to_owned(), t)));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, page) = alerts(&stack, &owner, "").await;
            assert_eq!(status, 200, "{page}");
            let mut got = crossed(&page, cost);
            got.sort_by(|a, b| a.1.total_cmp(&b.1));
            if got == raised {
                break;
            }
            assert!(Instant::now() < deadline, "alerts {got:?}, expected {raised:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The budget is spent: the next call is refused and raises nothing more.
    assert_eq!(stack.chat(&team.api_key, &chat_body(false)).send().await.unwrap().status(), 429);
    let (_, page) = alerts(&stack, &team.admin.token, "").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 4, "{page}");

    // The day is Kolkata's, the month UTC's; the spend is the period's as it crossed.
    let mut conn = stack.main_db.connect().await.unwrap();
    let kolkata_today: String = diesel_async::RunQueryDsl::get_result(
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
            "((now() AT TIME ZONE 'Asia/Kolkata')::date)::text",
        )),
        &mut conn,
    )
    .await
    .unwrap();
    let month_start = chrono::Utc::now().format("%Y-%m-01").to_string();
    let (_, daily) = alerts(&stack, &owner, "?kind=daily_spend").await;
    let daily = &daily["data"][0];
    assert_eq!(daily["period_start"], kolkata_today.as_str());
    assert!((daily["spent_usd"].as_f64().unwrap() - 2.0 * cost).abs() < cost * 1e-6, "{daily}");
    let (_, shares) = alerts(&stack, &owner, "?kind=budget_share&limit=2").await;
    assert_eq!(shares["data"].as_array().unwrap().len(), 2);
    assert_eq!(shares["data"][0]["budget_share"], 1.0);
    assert_eq!(shares["data"][0]["period_start"], month_start.as_str());
    let (_, rest) =
        alerts(&stack, &owner, &format!("?kind=budget_share&cursor={}", shares["next_cursor"].as_str().unwrap())).await;
    assert_eq!(rest["data"][0]["budget_share"], 0.5);
    let res = stack.http.get(format!("{}/api/v1/company/limits", stack.url)).bearer_auth(&owner).send().await.unwrap();
    let limits: Value = res.json().await.unwrap();
    assert_eq!(limits["today"], kolkata_today.as_str());
    assert!((limits["llm_spent_today_usd"].as_f64().unwrap() - 4.0 * cost).abs() < cost * 1e-6, "{limits}");

    // Many calls at once on two replicas cross a threshold once.
    let busy = common::team::team(&stack, "Busy").await.unwrap();
    let (status, _) = patch_company(&stack, busy.company_id, json!({"daily_spend_alert_usd": cost * 2.5})).await;
    assert_eq!(status, 200);
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let base = if i % 2 == 0 { stack.url.clone() } else { second.url.clone() };
            let (http, key) = (stack.http.clone(), busy.api_key.clone());
            tokio::spawn(async move {
                let res = http.post(format!("{base}/v1/chat/completions")).bearer_auth(key).json(&chat_body(false));
                res.send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    spent_above(&stack, &busy.owner.token, 7.5 * cost).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, page) = alerts(&stack, &busy.owner.token, "").await;
    assert_eq!(crossed(&page, cost), vec![("daily_spend".to_owned(), 2.5)]);
    let mut counted = 0.0;
    for base in [&stack.url, &second.url] {
        let metrics = stack.http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        counted += common::metric_sum(&metrics, "headhunter_gateway_spend_alerts_total{kind=\"daily_spend\"}");
    }
    assert_eq!(counted, 2.0, "one daily alert per company, counted once");

    // Who sees what: another company's admin sees its own only; a recruiter, a viewer
    // and a recruiter's key may not look; the operator sees any company's.
    let (_, theirs) = alerts(&stack, &busy.admin.token, "").await;
    assert_eq!(theirs["data"].as_array().unwrap().len(), 1);
    for token in [&team.recruiter.token, &team.viewer.token, &team.api_key] {
        assert_eq!(alerts(&stack, token, "").await.0, 403);
    }
    let (status, err) = alerts(&stack, &owner, "?kind=weekly").await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("kind")), "{err}");
    let (status, err) = alerts(&stack, &owner, &format!("?company_id={}", busy.company_id)).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("company_id")), "{err}");
    let operator = |query: String| {
        let url = format!("{}/api/v1/admin/analytics/alerts{query}", stack.url);
        stack.http.get(url).bearer_auth(ADMIN_KEY).send()
    };
    let all: Value = operator(String::new()).await.unwrap().json().await.unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 5);
    let one: Value = operator(format!("?company_id={}", busy.company_id)).await.unwrap().json().await.unwrap();
    assert_eq!(one["data"][0]["company_id"], busy.company_id);
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    let (status, err) = patch_company(&stack, busy.company_id, json!({"daily_spend_alert_usd": 0})).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("daily_spend_alert_usd")));
    second.stop().await.unwrap();
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn owners_and_admins_set_their_own_timezone_and_daily_alert() {
    let stack = Stack::start(Options::default()).await.unwrap();
    let team = common::team::team(&stack, "Self-service").await.unwrap();
    let patch = |token: &str, body: Value| {
        stack.http.patch(format!("{}/api/v1/company/settings", stack.url)).bearer_auth(token).json(&body).send()
    };
    let res =
        patch(&team.admin.token, json!({"timezone": "Asia/Kolkata", "daily_spend_alert_usd": 1.5})).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"timezone": "Asia/Kolkata", "daily_spend_alert_usd": 1.5}));
    // The gateway's limits read it at once (this replica forgot its copy).
    let limits: Value = stack
        .http
        .get(format!("{}/api/v1/company/limits", stack.url))
        .bearer_auth(&team.owner.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(limits["llm_daily_spend_alert_usd"], json!(1.5), "{limits}");
    // Only the field sent changes; null turns the alert off.
    let res = patch(&team.owner.token, json!({"daily_spend_alert_usd": null})).await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"timezone": "Asia/Kolkata", "daily_spend_alert_usd": null}));
    // An empty PATCH changes nothing and says what is set.
    let res = patch(&team.admin.token, json!({})).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"timezone": "Asia/Kolkata", "daily_spend_alert_usd": null}));
    let (status, _) = patch_company(&stack, team.company_id, json!({})).await;
    assert_eq!(status, 200, "the operator's empty PATCH too");
    // Audited, with before and after (the empty ones wrote nothing).
    let audited = test_support::query_count(
        &stack.main_db.url,
        &format!(
            "SELECT count(*) AS n FROM audit_log WHERE company_id = {} AND action = 'company.settings'",
            team.company_id
        ),
    )
    .await
    .unwrap();
    assert_eq!(audited, 2);

    // Recruiters, viewers and keys may not; bad values are 400 naming the field.
    for token in [&team.recruiter.token, &team.viewer.token, &team.api_key] {
        assert_eq!(patch(token, json!({"daily_spend_alert_usd": 5})).await.unwrap().status(), 403);
    }
    for (body, field) in [
        (json!({"daily_spend_alert_usd": 0}), "daily_spend_alert_usd"),
        (json!({"daily_spend_alert_usd": -2}), "daily_spend_alert_usd"),
        (json!({"timezone": "UTC+5"}), "timezone"),
        (json!({"timezone": "Mars/Olympus"}), "timezone"),
    ] {
        let res = patch(&team.admin.token, body.clone()).await.unwrap();
        assert_eq!(res.status(), 400, "{body}");
        assert_eq!(res.json::<Value>().await.unwrap()["error"]["param"], json!(field), "{body}");
    }
    let res = patch(&team.admin.token, json!({"plan": "unlimited"})).await.unwrap();
    assert_eq!(res.status(), 400, "the plan is the operator's");
    stack.stop().await.unwrap();
}
