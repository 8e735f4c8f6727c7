//! Analyses end to end: the gateway queues them, cv-processor asks the LLM (a
//! simulator) through the gateway's own route in the company's name, stores, caches and
//! announces the result; malformed answers are asked again; a spent budget fails the
//! analysis without an upstream call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{ADMIN_KEY, CvStack, fixture, ids};
use llm_simulator::{Behaviour, Simulator};
use reqwest::Method;
use serde_json::{Value, json};

const SERVICE_KEY: &str = "test-internal-service-key";

/// A stack whose gateway calls `sim` and accepts the processor's service calls, and a
/// processor that analyses through that gateway.
async fn analysing_stack(sim: &Simulator) -> CvStack {
    analysing_stack_with(sim, |_| {}).await
}

async fn analysing_stack_with(sim: &Simulator, tweak: impl FnOnce(&mut cv_processor::ProcessorSettings)) -> CvStack {
    let mut stack = CvStack::start(false).await.unwrap();
    let base = sim.base_url();
    stack
        .start_gateway_with(|g| {
            g.llm_base_url = base;
            g.llm_api_key = service_kit::config::Secret::new("sim-key");
            g.internal_api_key = service_kit::config::Secret::new(SERVICE_KEY);
        })
        .await
        .unwrap();
    let gateway = stack.url.clone();
    stack
        .start_processor_with(|p| {
            p.analysis.gateway_url = gateway;
            p.internal_api_key = service_kit::config::Secret::new(SERVICE_KEY);
            tweak(p);
        })
        .await
        .unwrap();
    stack
}

/// A company with a processed CV applying to a job: (company id, key, application id).
async fn application(stack: &CvStack, name: &str) -> (i64, String, i64) {
    let (company, key) = test_support::create_company(&stack.http, &stack.url, ADMIN_KEY, name).await.unwrap();
    let job = json!({"title": "Staff Backend Engineer", "description": "Payments platform in Rust.",
                     "requirements": ["Rust", "PostgreSQL", "Kubernetes"]});
    let (status, job) = stack.send(&key, Method::POST, "/api/v1/jobs", Some(job)).await.unwrap();
    assert_eq!(status, 201, "{job}");
    let (status, body) = stack.upload(&key, &[("priya.pdf", fixture("one_column.pdf"))]).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let cv = ids(&body)[0];
    assert_eq!(stack.wait_done(&key, cv).await.unwrap()["status"], "processed");
    let (status, app) = stack
        .send(&key, Method::POST, "/api/v1/applications", Some(json!({"job_id": job["id"], "cv_id": cv})))
        .await
        .unwrap();
    assert_eq!(status, 201, "{app}");
    (company, key, app["id"].as_i64().unwrap())
}

/// Requests an analysis; returns its id.
async fn request(stack: &CvStack, key: &str, application: i64) -> i64 {
    let res = stack
        .http
        .post(format!("{}/api/v1/applications/{application}/analysis", stack.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "queued", "{body}");
    let id = body["id"].as_i64().unwrap();
    assert_eq!(location, format!("/api/v1/analyses/{id}"));
    id
}

/// Waits until the analysis is completed or failed; returns (x-cache, analysis).
async fn finished(stack: &CvStack, key: &str, id: i64) -> (String, Value) {
    test_support::wait_for(Duration::from_secs(60), &format!("analysis {id} to finish"), || async {
        let res = stack.http.get(format!("{}/api/v1/analyses/{id}", stack.url)).bearer_auth(key).send().await.ok()?;
        let cache = res.headers().get("x-cache")?.to_str().ok()?.to_owned();
        let body: Value = res.json().await.ok()?;
        matches!(body["status"].as_str(), Some("completed" | "failed")).then_some((cache, body))
    })
    .await
    .unwrap()
}

/// The company's analysis events on its replay stream, as (analysis id, status).
async fn analysis_events(stack: &CvStack, company: i64) -> Vec<(i64, String)> {
    let key = stack.redis.key(&format!("cv_events:{company}"));
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut stack.redis.connection().await.unwrap())
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .filter_map(|entry| serde_json::from_str::<Value>(&entry.get::<String>("event")?).ok())
        .filter_map(|event| Some((event["analysis_id"].as_i64()?, event["status"].as_str()?.to_owned())))
        .collect()
}

#[tokio::test]
async fn an_analysis_runs_through_the_gateway_and_is_stored_cached_logged_and_announced() {
    let sim = Simulator::start(test_support::local_listener().unwrap(), Behaviour::default()).unwrap();
    let stack = analysing_stack(&sim).await;
    let (company, key, app) = application(&stack, "Acme Recruiting").await;

    let id = request(&stack, &key, app).await;
    let (_, analysis) = finished(&stack, &key, id).await;
    assert_eq!(analysis["status"], "completed", "{analysis}");
    assert_eq!(analysis["application_id"], app);
    assert_eq!(analysis["attempts"], 1);
    assert_eq!(analysis["model"], "gpt-4o-mini");
    assert!(analysis["latency_ms"].as_i64().is_some() && analysis["completed_at"].is_string(), "{analysis}");
    // The simulator's instance of the schema, checked and stored whole.
    assert_eq!(analysis["result"]["score"], 50);
    assert_eq!(analysis["result"]["recommendation"], "strong_no");
    assert_eq!(analysis["result"]["requirements"][0]["met"], true);
    assert_eq!(sim.requests(), 1);

    // Served from the cache from now on; the row is the same.
    let res = stack.http.get(format!("{}/api/v1/analyses/{id}", stack.url)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.headers()["x-cache"], "hit");
    assert_eq!(res.json::<Value>().await.unwrap(), analysis);
    let (status, list) = stack.get(&key, &format!("/api/v1/applications/{app}/analyses")).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(list["data"][0], analysis);

    // The LLM call went through the gateway's log path, in the company's name.
    let logged = stack.redis.stream_payloads(&stack.redis.key("llm_logs")).await.unwrap();
    let call = logged.iter().find(|e| e["action"] == "application_analysis").expect("the analysis call was logged");
    assert_eq!(call["company_id"], company);
    assert!(call["cost_usd"].as_f64().unwrap() > 0.0, "{call}");
    assert!(call["request_id"].as_str().unwrap().starts_with(&format!("analysis-{id}-")), "{call}");

    // The request is in the audit trail, once.
    let audited = test_support::query_count(
        &stack.db.url,
        &format!("SELECT count(*) AS n FROM audit_log WHERE action = 'analysis.request' AND object_id = {id}"),
    )
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // Watching clients were told: queued (by the gateway), running, completed.
    let statuses: Vec<String> =
        analysis_events(&stack, company).await.into_iter().filter(|(a, _)| *a == id).map(|(_, s)| s).collect();
    assert_eq!(statuses, ["queued", "running", "completed"]);

    // Another company sees none of it, cached or not, and cannot ask for it.
    let other = stack.company("Other Co").await.unwrap();
    assert_eq!(stack.get(&other, &format!("/api/v1/analyses/{id}")).await.unwrap().0, 404);
    assert_eq!(stack.get(&other, &format!("/api/v1/applications/{app}/analyses")).await.unwrap().0, 404);
    let (status, _) =
        stack.send(&other, Method::POST, &format!("/api/v1/applications/{app}/analysis"), None).await.unwrap();
    assert_eq!(status, 404);

    // The service key is good for LLM calls in a company's name only.
    let jobs = format!("{}/api/v1/jobs", stack.url);
    let res = stack.http.get(&jobs).bearer_auth(SERVICE_KEY).header("x-on-behalf-of-company", company.to_string());
    assert_eq!(res.send().await.unwrap().status().as_u16(), 403, "the service key reached a business route");
    for (method, route) in [(Method::GET, "/api/v1/me"), (Method::POST, "/api/v1/auth/logout")] {
        let res = stack.http.request(method, format!("{}{route}", stack.url)).bearer_auth(SERVICE_KEY);
        let res = res.header("x-on-behalf-of-company", company.to_string()).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 403, "{route}");
    }
    let res = stack.http.post(format!("{}/v1/chat/completions", stack.url)).bearer_auth(SERVICE_KEY);
    let err: Value =
        res.json(&json!({"model": "gpt-4o-mini", "messages": []})).send().await.unwrap().json().await.unwrap();
    assert_eq!(err["error"]["param"], "x-on-behalf-of-company", "{err}");

    // Deleting the CV deletes its applications' analyses, from the cache too.
    let (_, application) = stack.get(&key, &format!("/api/v1/applications/{app}")).await.unwrap();
    let cv_id = application["cv_id"].as_i64().unwrap();
    assert_eq!(stack.send(&key, Method::DELETE, &format!("/api/v1/cvs/{cv_id}"), None).await.unwrap().0, 204);
    assert_eq!(stack.get(&key, &format!("/api/v1/analyses/{id}")).await.unwrap().0, 404);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_answers_are_asked_again_and_a_spent_budget_fails_the_analysis_without_a_call() {
    let sim = Simulator::start(test_support::local_listener().unwrap(), Behaviour::default()).unwrap();
    let stack = analysing_stack(&sim).await;
    let (company, key, app) = application(&stack, "Acme Recruiting").await;

    // One malformed answer: asked again, completed on the second call.
    sim.configure(|b| b.malformed_structured_answers = 1);
    let id = request(&stack, &key, app).await;
    let (_, analysis) = finished(&stack, &key, id).await;
    assert_eq!(analysis["status"], "completed", "{analysis}");
    assert_eq!(analysis["attempts"], 2);
    assert_eq!(sim.requests(), 2);

    // Malformed every time: failed with the reason after three calls, nothing stored.
    sim.configure(|b| b.malformed_structured_answers = 10);
    let id = request(&stack, &key, app).await;
    let (_, analysis) = finished(&stack, &key, id).await;
    assert_eq!(analysis["status"], "failed", "{analysis}");
    assert_eq!(analysis["attempts"], 3);
    assert!(analysis["result"].is_null());
    let reason = analysis["failure_reason"].as_str().unwrap();
    assert!(reason.contains("did not match the assessment schema after 3 attempts"), "{reason}");
    // Its first call was the same deterministic request as the first analysis's first
    // call: the gateway answered it from its cache (the malformed answer, free); the
    // two warmer retries reached the upstream.
    assert_eq!(sim.requests(), 4);
    sim.configure(|b| b.malformed_structured_answers = 0);

    // Over its hard budget: the analysis fails with the reason, the upstream is not called.
    let (status, body) = stack
        .http
        .patch(format!("{}/api/v1/admin/companies/{company}", stack.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"llm_budget_usd": 0.01}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 200, "{:?}", body.text().await);
    let month = chrono::Utc::now().format("%Y-%m");
    let spend = stack.redis.key(&format!("spend:{company}:{month}"));
    let _: f64 = redis::cmd("INCRBYFLOAT")
        .arg(&spend)
        .arg(1.0)
        .query_async(&mut stack.redis.connection().await.unwrap())
        .await
        .unwrap();
    let id = request(&stack, &key, app).await;
    let (_, analysis) = finished(&stack, &key, id).await;
    assert_eq!(analysis["status"], "failed", "{analysis}");
    assert!(analysis["failure_reason"].as_str().unwrap().contains("budget"), "{analysis}");
    assert_eq!(sim.requests(), 4, "a company over its budget reached the upstream");
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn an_application_whose_cv_is_not_processed_cannot_be_analysed_yet() {
    let stack = CvStack::start(false).await.unwrap();
    let (_, key) = test_support::create_company(&stack.http, &stack.url, ADMIN_KEY, "Acme").await.unwrap();
    let job = json!({"title": "Engineer", "description": "Backend."});
    let (_, job) = stack.send(&key, Method::POST, "/api/v1/jobs", Some(job)).await.unwrap();
    let (_, body) = stack.upload(&key, &[("priya.pdf", fixture("one_column.pdf"))]).await.unwrap();
    let cv = ids(&body)[0];
    let (_, app) = stack
        .send(&key, Method::POST, "/api/v1/applications", Some(json!({"job_id": job["id"], "cv_id": cv})))
        .await
        .unwrap();
    let path = format!("/api/v1/applications/{}/analysis", app["id"]);
    let (status, err) = stack.send(&key, Method::POST, &path, None).await.unwrap();
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "cv_not_processed");
    assert_eq!(stack.get(&key, "/api/v1/analyses/1").await.unwrap().0, 404);
    // No processor ran: the CV's task stays queued.
    stack.redis.leaves_work_behind();
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn an_analysis_whose_task_was_lost_is_queued_again_by_the_sweep() {
    let sim = Simulator::start(test_support::local_listener().unwrap(), Behaviour::default()).unwrap();
    let stack = analysing_stack_with(&sim, |p| p.sweep.interval = Duration::from_millis(300)).await;
    let (company, key, app) = application(&stack, "Acme Recruiting").await;
    // A row whose task never reached the queue (a producer that dropped it), an hour old.
    let id = test_support::query_count(
        &stack.db.url,
        &format!(
            "INSERT INTO analysis_results (company_id, application_id, status, created_at, updated_at) \
             VALUES ({company}, {app}, 'queued', now() - interval '1 hour', now() - interval '1 hour') RETURNING id AS n"
        ),
    )
    .await
    .unwrap();
    let (_, analysis) = finished(&stack, &key, id).await;
    assert_eq!(analysis["status"], "completed", "{analysis}");
    assert_eq!(stack.processor_metric("headhunter_cv_processor_requeued_total").await, 1.0);
    stack.stop().await.unwrap();
}
