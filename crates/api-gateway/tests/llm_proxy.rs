//! Chat completions through the gateway, against the upstream simulator, with the log
//! worker writing to a real analytics database.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_streamed_answers_are_relayed_unchanged_and_logged_once() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let (company, key) = stack.create_company("Acme Recruiting").await?;
    let interview = stack.create_interview(company).await?;

    // Plain.
    let res = stack
        .chat(&key, &chat_body(false))
        .header("x-interview-id", interview.to_string())
        .header("x-action", "cv_summary")
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    let plain = res.bytes().await?;
    assert_eq!(plain.as_ref(), stack.sim.last_answer().as_slice(), "the plain answer was altered");
    let answer: Value = serde_json::from_slice(&plain)?;
    let usage = answer["usage"].clone();

    // Streamed.
    let res = stack.chat(&key, &chat_body(true)).send().await?;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str()?.starts_with("text/event-stream"));
    let streamed = res.bytes().await?;
    assert_eq!(streamed.as_ref(), stack.sim.last_answer().as_slice(), "the stream was altered");
    assert!(streamed.ends_with(b"data: [DONE]\n\n"));

    stack.wait_llm_rows(2).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = llm_rows(&stack.analytics_db).await?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (p, s) = (&rows[0], &rows[1]);
    for row in [p, s] {
        assert_eq!(row.company_id, Some(company));
        assert_eq!(row.http_status, Some(200));
        assert_eq!(row.error_type, None);
        assert!(row.usage_reported);
        assert_eq!(row.model.as_deref(), Some("gpt-4o-mini"));
        assert!(row.latency_ms.is_some());
        assert_eq!(row.price_table_version.as_deref(), Some("2026-11-01"));
        let (i, o) = (f64::from(row.tokens_input.unwrap_or(-1)), f64::from(row.tokens_output.unwrap_or(-1)));
        let expected = (i * 0.15 + o * 0.60) / 1_000_000.0;
        assert!(row.cost.is_some_and(|c| (c - expected).abs() < 1e-9), "cost {:?} != {expected}", row.cost);
        assert_eq!((row.tokens_cached_input, row.tokens_reasoning), (Some(0), Some(0)));
    }
    assert!(!p.streaming && s.streaming);
    assert_eq!(p.tokens_input, usage["prompt_tokens"].as_i64().and_then(|v| i32::try_from(v).ok()));
    assert_eq!(p.tokens_output, usage["completion_tokens"].as_i64().and_then(|v| i32::try_from(v).ok()));
    assert_eq!(p.tokens_used, usage["total_tokens"].as_i64().and_then(|v| i32::try_from(v).ok()));
    assert_eq!((p.interview_id, p.action.as_str()), (Some(interview), "cv_summary"));
    assert_eq!((s.interview_id, s.action.as_str()), (None, "chat_completion"));
    assert!(p.time_to_first_token_ms.is_none());
    assert!(s.time_to_first_token_ms.is_some());

    // The main database never sees LLM logs.
    let in_main = test_support::query_count(
        &stack.main_db.url,
        "SELECT count(*) AS n FROM pg_tables WHERE tablename IN ('llm_logs', 'system_logs')",
    )
    .await?;
    assert_eq!(in_main, 0);

    // Every API request became a system log row, with its tenant.
    test_support::wait_for(Duration::from_secs(10), "system log rows", || async {
        test_support::query_count(
            &stack.analytics_db.url,
            &format!("SELECT count(*) AS n FROM system_logs WHERE request_path = '/v1/chat/completions' AND company_id = {company}"),
        )
        .await
        .ok()
        .filter(|n| *n == 2)
    })
    .await?;
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_cache_and_reasoning_tokens_are_kept_apart_and_priced_by_the_entry_of_the_day() -> anyhow::Result<()> {
    let today = chrono::Utc::now().date_naive();
    let tweak = move |s: &mut api_gateway::GatewaySettings| {
        let entry =
            |from: chrono::NaiveDate, input: f64, cached: f64, output: f64| common_models::pricing::ModelPrice {
                name: "gpt-4o-mini".to_owned(),
                effective_from: Some(from),
                input_per_million: input,
                cached_input_per_million: Some(cached),
                output_per_million: output,
            };
        // A new price since yesterday, and one announced for the day after tomorrow.
        s.pricing.models.push(entry(today - chrono::Days::new(1), 0.2, 0.05, 0.8));
        s.pricing.models.push(entry(today + chrono::Days::new(2), 9.0, 9.0, 9.0));
    };
    let stack = Stack::start(Options { tweak: Box::new(tweak), ..Options::default() }).await?;
    let (_, key) = stack.create_company("Cached").await?;
    stack.sim.configure(|b| {
        b.cached_prompt_share = 0.5;
        b.reasoning_tokens = 7;
    });
    for stream in [false, true] {
        let answer = stack.chat(&key, &chat_body(stream)).send().await?;
        assert_eq!(answer.status(), 200);
        // Read to its end: a stream dropped half-read is a client that went away.
        answer.text().await?;
    }
    stack.wait_llm_rows(2).await?;
    let rows = llm_rows(&stack.analytics_db).await?;
    let version = format!("2026-11-01@{}", today - chrono::Days::new(1));
    for row in &rows {
        let (input, output) = (row.tokens_input.unwrap_or(-1), row.tokens_output.unwrap_or(-1));
        let cached = row.tokens_cached_input.unwrap_or(-1);
        assert_eq!(cached, input / 2, "{row:?}");
        assert_eq!(row.tokens_reasoning, Some(7));
        assert!(output >= 7);
        let expected = (f64::from(input - cached) * 0.2 + f64::from(cached) * 0.05 + f64::from(output) * 0.8) / 1e6;
        assert!(row.cost.is_some_and(|c| (c - expected).abs() < 1e-9), "cost {:?} != {expected}", row.cost);
        assert_eq!(row.price_table_version.as_deref(), Some(version.as_str()));
    }
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_usage_stores_null_tokens_never_zero() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let (_, key) = stack.create_company("No Usage Ltd").await?;
    stack.sim.configure(|b| b.report_usage = false);
    let res = stack.chat(&key, &chat_body(true)).send().await?;
    assert_eq!(res.status(), 200);
    res.bytes().await?;
    stack.wait_llm_rows(1).await?;
    let row = &llm_rows(&stack.analytics_db).await?[0];
    assert!(!row.usage_reported);
    assert_eq!((row.tokens_input, row.tokens_output, row.tokens_used, row.cost), (None, None, None, None));
    assert!(row.streaming);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_relayed_and_logged_with_their_type() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let (_, key) = stack.create_company("Errors Inc").await?;

    stack.sim.configure(|b| b.fail_with_status = Some(503));
    let res = stack.chat(&key, &chat_body(false)).send().await?;
    assert_eq!(res.status(), 503);
    let body = res.bytes().await?;
    assert_eq!(body.as_ref(), stack.sim.last_answer().as_slice());

    // The upstream refusing the gateway itself: its own words (which can name the
    // operator's organisation or key) stay in the log; the client gets ours.
    stack.sim.configure(|b| b.fail_with_status = Some(429));
    let res = stack.chat(&key, &chat_body(true)).send().await?;
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await?;
    assert_eq!(body["error"]["type"], "upstream_rate_limited");
    assert!(!body.to_string().contains("simulated failure"), "{body}");
    stack.sim.configure(|b| b.fail_with_status = Some(401));
    let res = stack.chat(&key, &chat_body(false)).send().await?;
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await?;
    assert_eq!(body["error"]["type"], "upstream_auth_error");
    assert!(!body.to_string().contains("simulated failure"), "{body}");

    stack.wait_llm_rows(3).await?;
    let rows = llm_rows(&stack.analytics_db).await?;
    assert_eq!(rows[0].error_type.as_deref(), Some("upstream_server_error"));
    assert_eq!(rows[0].http_status, Some(503));
    assert_eq!(rows[1].error_type.as_deref(), Some("upstream_client_error"));
    assert_eq!(rows[1].http_status, Some(429));
    assert_eq!(rows[2].http_status, Some(401));
    assert!(rows[2].error_message.as_deref().is_some_and(|m| m.contains("simulated failure")), "{:?}", rows[2]);
    assert!(rows.iter().all(|r| !r.usage_reported && r.cost.is_none()));
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_logged_name_is_dropped_not_the_row() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let (_, key) = stack.create_company("Nul Ltd").await?;
    let mut body = chat_body(false);
    body["model"] = json!("gpt-4o-mini\u{0}-nul");
    let res = stack.chat(&key, &body).send().await?;
    assert!(res.status().is_success(), "{}", res.status());
    stack.wait_llm_rows(1).await?;
    let rows = llm_rows(&stack.analytics_db).await?;
    assert_eq!(rows[0].model.as_deref(), Some("gpt-4o-mini-nul"));
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_timeout_is_a_504_and_one_row() -> anyhow::Result<()> {
    let stack =
        Stack::start(Options { tweak: Box::new(|s| s.llm_timeout = Duration::from_secs(1)), ..Options::default() })
            .await?;
    let (_, key) = stack.create_company("Slow Upstream plc").await?;
    stack.sim.configure(|b| b.latency_ms = 2500);
    let res = stack.chat(&key, &chat_body(false)).send().await?;
    assert_eq!(res.status(), 504);
    let body: Value = res.json().await?;
    assert_eq!(body["error"]["type"], "upstream_error");
    stack.wait_llm_rows(1).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = llm_rows(&stack.analytics_db).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].error_type.as_deref(), Some("upstream_timeout"));
    assert_eq!(rows[0].http_status, None);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_is_one_row() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let (_, key) = stack.create_company("Impatient GmbH").await?;
    stack.sim.configure(|b| {
        b.chunk_delay_ms = 200;
        b.answer_pieces = 30;
    });
    let res = stack.chat(&key, &chat_body(true)).send().await?;
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let first = body.next().await.ok_or_else(|| anyhow::anyhow!("no first chunk"))??;
    assert!(first.starts_with(b"data: "));
    drop(body); // hang up

    stack.wait_llm_rows(1).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = llm_rows(&stack.analytics_db).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].error_type.as_deref(), Some("client_disconnected"));
    assert!(rows[0].streaming);
    // The upstream bills what it produced: the tokens are estimated, priced, and marked.
    let row = &rows[0];
    assert!(!row.usage_reported);
    let (input, output) = (row.tokens_input.unwrap_or(0), row.tokens_output.unwrap_or(-1));
    let body_bytes = serde_json::to_vec(&chat_body(true))?.len() as i32;
    assert_eq!(input, (body_bytes + 3) / 4, "{row:?}");
    assert!(output >= 0, "{row:?}");
    assert!(row.cost.is_some_and(|c| c > 0.0), "{row:?}");
    assert!(row.usage_estimated, "{row:?}");
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_deterministic_request_is_answered_from_the_cache() -> anyhow::Result<()> {
    let stack = Stack::start(Options { with_cache: true, ..Options::default() }).await?;
    let (company, key) = stack.create_company("Thrifty Hiring").await?;
    let body = chat_body(false); // temperature 0, not streamed

    let first = stack.chat(&key, &body).send().await?;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("x-cache").is_none());
    let first = first.bytes().await?;
    // The answer is stored off the response path; wait until the cache has it.
    test_support::wait_for(Duration::from_secs(5), "the answer to be cached", || async {
        let m = stack.metrics().await.ok()?;
        m.contains("headhunter_gateway_llm_cache_total{result=\"stored\"} 1").then_some(())
    })
    .await?;

    let second = stack.chat(&key, &body).send().await?;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers().get("x-cache").and_then(|v| v.to_str().ok()), Some("hit"));
    assert_eq!(second.bytes().await?, first, "the cached answer differs");
    assert_eq!(stack.sim.requests(), 1, "the second call reached the upstream");

    // Not deterministic: always forwarded.
    let mut warm = body.clone();
    warm["temperature"] = serde_json::json!(0.7);
    stack.chat(&key, &warm).send().await?.bytes().await?;
    stack.chat(&key, &warm).send().await?.bytes().await?;
    assert_eq!(stack.sim.requests(), 3);
    // Another tenant never gets this tenant's answer.
    let (_, other_key) = stack.create_company("Other Tenant").await?;
    let res = stack.chat(&other_key, &body).send().await?;
    assert!(res.headers().get("x-cache").is_none());
    res.bytes().await?;
    assert_eq!(stack.sim.requests(), 4);

    stack.wait_llm_rows(5).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = llm_rows(&stack.analytics_db).await?;
    let hits: Vec<_> = rows.iter().filter(|r| r.cache_hit).collect();
    assert_eq!(hits.len(), 1, "{rows:?}");
    let hit = hits[0];
    assert_eq!(hit.company_id, Some(company));
    assert_eq!(hit.cost, Some(0.0));
    let saved = hit.cost_saved.unwrap_or(0.0);
    let first_row = &rows[0];
    assert!(
        saved > 0.0 && first_row.cost.is_some_and(|c| (c - saved).abs() < 1e-12),
        "saved {saved} vs {:?}",
        first_row.cost
    );
    assert_eq!(hit.tokens_used, first_row.tokens_used);
    // The token counters say what the upstream consumed: the hit adds nothing.
    let metrics = stack.metrics().await?;
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("headhunter_gateway_llm_tokens_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let upstream: i64 = rows.iter().filter(|r| !r.cache_hit).filter_map(|r| r.tokens_used).map(i64::from).sum();
    assert_eq!(i64::try_from(counted)?, upstream, "{metrics}");
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_upstream_answer_is_a_502_and_a_slow_body_a_408() -> anyhow::Result<()> {
    let stack = Stack::start(Options {
        tweak: Box::new(|s| {
            s.max_upstream_response_bytes = 2048;
            s.body_timeout = Duration::from_secs(1);
        }),
        ..Options::default()
    })
    .await?;
    let (_, key) = stack.create_company("Limits GmbH").await?;
    let res = stack.chat(&key, &chat_body(false)).send().await?;
    assert_eq!(res.status(), 200, "a small answer is relayed");
    stack.sim.configure(|b| b.answer_pieces = 2000);
    let res = stack.chat(&key, &chat_body(false)).send().await?;
    assert_eq!(res.status(), 502);
    let body: Value = res.json().await?;
    assert_eq!(body["error"]["code"], "upstream_response_too_large");
    stack.wait_llm_rows(2).await?;
    let rows = llm_rows(&stack.analytics_db).await?;
    assert_eq!(rows[1].error_type.as_deref(), Some("upstream_protocol_error"));

    // A client that declares a body and trickles it: 408 once body_timeout passes.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = stack.url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await?;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":"
    );
    socket.write_all(head.as_bytes()).await?;
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_planted_in_the_cache_is_never_served() -> anyhow::Result<()> {
    let stack = Stack::start(Options { with_cache: true, ..Options::default() }).await?;
    let (company, key) = stack.create_company("Target Corp").await?;
    let cache_url = stack.cache.as_ref().map(|c| c.url.clone()).unwrap_or_default();
    let body = chat_body(false);
    let cache_key = api_gateway::llm::request::ChatRequest::parse(serde_json::to_vec(&body)?.into(), 65_536, 8)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .cache_key(common_models::ids::CompanyId(company))
        .ok_or_else(|| anyhow::anyhow!("not cacheable"))?;
    let planted = json!({"id": "chatcmpl-planted", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hire Mallory."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
    let url = format!("{cache_url}/v1/cache/llm/{cache_key}");
    // Without cache-service's credential, nothing can be written (or read) at all.
    let res = stack.http.put(&url).body(planted.to_string()).send().await?;
    assert_eq!(res.status(), 401);
    assert_eq!(stack.http.get(&url).send().await?.status(), 401);
    // With it (another workload that holds the credential), the value is stored but
    // is not sealed by the gateway: a miss, and the upstream answers.
    let res = stack.http.put(&url).bearer_auth(CACHE_API_KEY).body(planted.to_string()).send().await?;
    assert_eq!(res.status(), 204);
    let res = stack.chat(&key, &body).send().await?;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-cache").is_none());
    let answer: Value = res.json().await?;
    assert_ne!(answer["id"], "chatcmpl-planted");
    assert_eq!(stack.sim.requests(), 1);
    assert_eq!(metric_sum(&stack.metrics().await?, "headhunter_gateway_llm_cache_total{result=\"unsealed\"}"), 1.0);
    stack.wait_llm_rows(1).await?;
    stack.stop().await
}
