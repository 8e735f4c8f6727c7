//! Authentication and bad input: clear JSON errors, nothing forwarded, nothing logged
//! as an LLM call.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_bad_input_get_clear_json_errors() -> anyhow::Result<()> {
    let stack = Stack::start(Options {
        with_worker: false,
        tweak: Box::new(|s| {
            s.max_body_bytes = 4096;
            s.max_tokens_cap = 1000;
        }),
        ..Options::default()
    })
    .await?;
    let (_, key) = stack.create_company("Strict Ltd").await?;
    let url = format!("{}/v1/chat/completions", stack.url);

    // 401: no key, an unknown key, a malformed header.
    let res = stack.http.post(&url).json(&chat_body(false)).send().await?;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let body: Value = res.json().await?;
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("missing API key")));
    let res = stack.chat("hh_not-a-real-key", &chat_body(false)).send().await?;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await?["error"]["message"], "invalid API key");
    let res = stack.http.post(&url).header("authorization", "Basic abc").json(&chat_body(false)).send().await?;
    assert_eq!(res.status(), 401);

    // 400s name the field at fault.
    let cases: Vec<(Value, &str)> = vec![
        (json!({"messages": [{"role": "user", "content": "hi"}]}), "model"),
        (json!({"model": "gpt-4o-mini"}), "messages"),
        (json!({"model": "gpt-4o-mini", "messages": []}), "messages"),
        (json!({"model": "gpt-4o-mini", "messages": [{"content": "no role"}]}), "messages[0].role"),
        (json!({"model": "gpt-4o-mini", "messages": [{"role": "user"}], "stream": "yes"}), "stream"),
        (json!({"model": "gpt-4o-mini", "messages": [{"role": "user"}], "max_tokens": 5000}), "max_tokens"),
    ];
    for (body, field) in cases {
        let res = stack.chat(&key, &body).send().await?;
        assert_eq!(res.status(), 400, "{body}");
        let err: Value = res.json().await?;
        assert_eq!(err["error"]["param"], field, "{err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    let res = stack
        .http
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await?;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await?["error"]["code"], "invalid_json");
    let res = stack.chat(&key, &chat_body(false)).header("x-interview-id", "abc").send().await?;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await?["error"]["param"], "x-interview-id");

    // 413 beyond the documented limit, with or without a declared length.
    let huge = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let res = stack.chat(&key, &huge).send().await?;
    assert_eq!(res.status(), 413);
    let err: Value = res.json().await?;
    assert_eq!(err["error"]["code"], "body_too_large");
    let chunks = futures_util::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let res = stack.http.post(&url).bearer_auth(&key).body(reqwest::Body::wrap_stream(chunks)).send().await?;
    assert_eq!(res.status(), 413);

    // None of it reached the upstream.
    assert_eq!(stack.sim.requests(), 0);

    // Admin routes: wrong key 401, bad body 400 naming the field.
    let admin = format!("{}/api/v1/admin/companies", stack.url);
    let res = stack.http.post(&admin).bearer_auth("wrong").json(&json!({"name": "x"})).send().await?;
    assert_eq!(res.status(), 401);
    let res = stack.http.post(&admin).bearer_auth(ADMIN_KEY).json(&json!({"name": "   "})).send().await?;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await?["error"]["param"], "name");
    let res = stack.http.post(&admin).bearer_auth(ADMIN_KEY).json(&json!({})).send().await?;
    assert_eq!(res.status(), 400);
    let res = stack
        .http
        .post(&admin)
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body("nope")
        .send()
        .await?;
    assert_eq!(res.status(), 400);
    let res = stack.http.get(format!("{}/nowhere", stack.url)).send().await?;
    assert_eq!(res.status(), 404);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_off_without_an_admin_key() -> anyhow::Result<()> {
    let stack = Stack::start(Options {
        with_worker: false,
        tweak: Box::new(|s| s.admin_api_key = service_kit::config::Secret::default()),
        ..Options::default()
    })
    .await?;
    let res = stack
        .http
        .post(format!("{}/api/v1/admin/companies", stack.url))
        .bearer_auth("")
        .json(&json!({"name": "x"}))
        .send()
        .await?;
    assert_eq!(res.status(), 403);
    stack.stop().await
}
