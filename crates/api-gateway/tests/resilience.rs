//! The API path never waits on the analytics side: the analytics database down or
//! locked, or Redis unreachable, leaves answers as fast as before; rows arrive later
//! (events wait in the spool meanwhile).

mod common;

use std::time::{Duration, Instant};

use common::*;
use diesel_async::SimpleAsyncConnection;
use serde_json::Value;

async fn timed_calls(stack: &Stack, key: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let res = stack.chat(key, &chat_body(false)).send().await?;
        anyhow::ensure!(res.status() == 200, "call failed: {}", res.status());
        res.bytes().await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

fn slowest(times: &[Duration]) -> Duration {
    times.iter().copied().max().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_outages_do_not_slow_the_api_and_every_row_lands_once() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let (_, key) = stack.create_company("Steady Co").await?;
    let baseline = timed_calls(&stack, &key, 20).await?;
    stack.wait_llm_rows(20).await?;

    // The table locked: the worker's writes wait, the API does not.
    assert_eq!(stack.llm_rows_nowait().await, Some(20));
    let mut locker = stack.analytics_db.connect().await?;
    locker.batch_execute("BEGIN; LOCK TABLE llm_logs IN ACCESS EXCLUSIVE MODE").await?;
    let locked = timed_calls(&stack, &key, 30).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stack.llm_rows_nowait().await, None, "rows were readable through the lock");
    locker.batch_execute("COMMIT").await?;

    // The database refusing connections.
    stack.analytics_db.set_accepting_connections(false).await?;
    let refused = timed_calls(&stack, &key, 30).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.analytics_db.set_accepting_connections(true).await?;

    // A request holding out for seconds would show here; none may take over a second
    // (the lock and the outage each lasted over a second).
    eprintln!(
        "slowest call: baseline {:?}, table locked {:?}, db refusing {:?}",
        slowest(&baseline),
        slowest(&locked),
        slowest(&refused)
    );
    assert!(slowest(&locked) < Duration::from_secs(1), "{locked:?}");
    assert!(slowest(&refused) < Duration::from_secs(1), "{refused:?}");

    stack.wait_llm_rows(80).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.analytics_db.counts("llm_logs").await?, (80, 80));
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_keeps_answering_and_spools_every_event() -> anyhow::Result<()> {
    // A port with nothing listening behind it.
    let dead_port = test_support::local_listener()?.local_addr()?.port();
    let stack = Stack::start(Options {
        with_worker: false,
        redis_url: Some(format!("redis://127.0.0.1:{dead_port}/0")),
        ..Options::default()
    })
    .await?;
    let (_, key) = stack.create_company("Offline Queue SA").await?;
    let times = timed_calls(&stack, &key, 30).await?;
    assert!(slowest(&times) < Duration::from_secs(1), "{times:?}");

    // 30 LLM events + 31 system events (30 calls, 1 company creation): all on disk.
    let spooled = test_support::wait_for(Duration::from_secs(10), "61 events in the spool", || async {
        let m = stack.metrics().await.ok()?;
        (metric_sum(&m, "headhunter_gateway_queue_spool_entries") == 61.0).then_some(m)
    })
    .await?;
    assert_eq!(metric_sum(&spooled, "headhunter_gateway_queue_dropped_total"), 0.0, "{spooled}");
    assert_eq!(metric_sum(&spooled, "headhunter_gateway_queue_spooled_total"), 61.0, "{spooled}");

    // Still ready: a logging outage must not become an API outage.
    let ready = stack.http.get(format!("{}/readyz", stack.url)).send().await?;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await?["redis"], false);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_health_reports_the_pipeline() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let (_, key) = stack.create_company("Watchers").await?;
    timed_calls(&stack, &key, 3).await?;
    stack.wait_llm_rows(3).await?;
    let health: Value = test_support::wait_for(Duration::from_secs(10), "a healthy report", || async {
        let res =
            stack.http.get(format!("{}/api/v1/admin/health", stack.url)).bearer_auth(ADMIN_KEY).send().await.ok()?;
        let body: Value = res.json().await.ok()?;
        (body["status"] == "ok" && body["last_analytics_write"].is_string()).then_some(body)
    })
    .await?;
    assert_eq!(health["analytics_db"]["reachable"], true);
    assert_eq!(health["worker"]["alive"], true);
    assert!(health["queues"]["llm_logs"]["depth"].as_u64().is_some_and(|d| d >= 3), "{health}");
    assert_eq!(health["queues"]["llm_logs"]["dead_letter"], 0);
    assert!(health["queues"]["llm_logs"]["pending"].is_u64(), "{health}");

    // The analytics database gone: reported, not hidden.
    stack.analytics_db.set_accepting_connections(false).await?;
    let res = stack.http.get(format!("{}/api/v1/admin/health", stack.url)).bearer_auth(ADMIN_KEY).send().await?;
    let body: Value = res.json().await?;
    assert_eq!(body["analytics_db"]["reachable"], false, "{body}");
    assert_eq!(body["status"], "degraded");
    stack.analytics_db.set_accepting_connections(true).await?;

    let res = stack.http.get(format!("{}/api/v1/admin/health", stack.url)).send().await?;
    assert_eq!(res.status(), 401);
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_cache_service_only_costs_a_miss() -> anyhow::Result<()> {
    let dead_port = test_support::local_listener()?.local_addr()?.port();
    let stack = Stack::start(Options {
        with_worker: false,
        tweak: Box::new(move |s| s.cache_url = format!("http://127.0.0.1:{dead_port}")),
        ..Options::default()
    })
    .await?;
    let (_, key) = stack.create_company("No Cache GmbH").await?;
    let times = timed_calls(&stack, &key, 2).await?; // temperature 0: both look the cache up
    assert!(slowest(&times) < Duration::from_secs(1), "{times:?}");
    assert_eq!(stack.sim.requests(), 2);
    let metrics = stack.metrics().await?;
    assert!(metrics.contains("headhunter_gateway_llm_cache_total{result=\"miss\"} 2"), "{metrics}");
    stack.stop().await
}
