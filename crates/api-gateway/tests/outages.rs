//! The log path through Redis outages, a full queue Redis and a gateway killed in the
//! middle of one: every answered call becomes exactly one row, and no call waits.

mod common;

use std::time::{Duration, Instant};

use common::*;
use service_kit::redis::{ReplyTimeout, build_pool};
use task_queue::{Keys, Producer, ProducerMetrics};
use test_support::fixtures::{llm_event, system_event};
use test_support::{RedisServer, Service, TempDir, TestDb, TestRedis};

/// The gateway's own producer (its shipped settings), spooling into `spool`.
async fn gateway_producer(
    redis_url: &str,
    prefix: &str,
    spool: &TempDir,
) -> anyhow::Result<(Producer, task_queue::ProducerTask, ProducerMetrics)> {
    let mut config = api_gateway::GatewaySettings::defaults()?.producer;
    if let Some(s) = config.spool.as_mut() {
        s.dir = spool.path.clone();
    }
    let metrics = ProducerMetrics::register(&prometheus::Registry::new())?;
    let pool = build_pool(redis_url, 4, ReplyTimeout::After(Duration::from_secs(1)))?;
    let (producer, task) = Producer::start(pool, Keys::new(prefix), config, metrics.clone()).await?;
    Ok((producer, task, metrics))
}

async fn start_worker(db: &TestDb, redis: &TestRedis) -> anyhow::Result<Service> {
    let w = worker_settings(db, redis)?;
    Service::start("llm-log-worker", |l, rx| llm_log_worker::run(w, l, rx)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_events_become_rows_once_and_the_streams_shrink_to_their_tail() -> anyhow::Result<()> {
    const LLM: usize = 70_000;
    const SYSTEM: usize = 30_000;
    let db = TestDb::empty("analytics").await?;
    let redis = TestRedis::new();
    let spool = TempDir::new("spool")?;
    let worker = start_worker(&db, &redis).await?;
    let (producer, task, metrics) = gateway_producer(&redis.url, &redis.prefix, &spool).await?;
    for i in 0..LLM.max(SYSTEM) {
        if i < LLM {
            producer.publish(&llm_event(i));
        }
        if i < SYSTEM {
            producer.publish(&system_event(i));
        }
        if i % 2000 == 0 {
            // A steady flow, as from requests, rather than one burst into the buffer.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    db.wait_rows("llm_logs", LLM as i64, Duration::from_secs(240)).await?;
    db.wait_rows("system_logs", SYSTEM as i64, Duration::from_secs(60)).await?;
    assert_eq!(db.counts("llm_logs").await?, (LLM as i64, LLM as i64));
    assert_eq!(db.counts("system_logs").await?, (SYSTEM as i64, SYSTEM as i64));
    let dropped: f64 = metrics.dropped.collect_total();
    assert_eq!(dropped, 0.0);

    // Acknowledged entries leave the streams: what stays is at most one internal node.
    let lengths = test_support::wait_for(Duration::from_secs(20), "the streams to be trimmed", || async {
        let (l, s) =
            (redis.xlen(&redis.key("llm_logs")).await.ok()?, redis.xlen(&redis.key("system_logs")).await.ok()?);
        (l <= 100 && s <= 100).then_some((l, s))
    })
    .await?;
    eprintln!("after 100,000 events: XLEN llm_logs {} system_logs {}", lengths.0, lengths.1);
    let unsettled = test_support::unsettled_entries(&redis.url, &redis.prefix).await?;
    assert!(unsettled.is_empty(), "{unsettled:?}");
    task.shutdown().await;
    worker.stop().await
}

/// Sums every series of a counter vector.
trait Total {
    fn collect_total(&self) -> f64;
}

impl Total for prometheus::IntCounterVec {
    fn collect_total(&self) -> f64 {
        use prometheus::core::Collector;
        self.collect().iter().flat_map(|f| f.get_metric()).map(|m| m.get_counter().get_value()).sum()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_replayed_twice_adds_no_row_twice() -> anyhow::Result<()> {
    let db = TestDb::empty("analytics").await?;
    let redis = TestRedis::new();
    let spool = TempDir::new("spool")?;
    let dead = format!("redis://127.0.0.1:{}/0", test_support::local_listener()?.local_addr()?.port());
    let (producer, task, metrics) = gateway_producer(&dead, &redis.prefix, &spool).await?;
    for i in 0..2000 {
        producer.publish(&llm_event(i));
    }
    test_support::wait_for(Duration::from_secs(10), "2000 events spooled", || async {
        (metrics.spool_entries.get() == 2000).then_some(())
    })
    .await?;
    task.shutdown().await;
    // As if the process died after a replay reached Redis but before its cursor moved.
    let copy = TempDir::new("spool-copy")?;
    for entry in std::fs::read_dir(&spool.path)? {
        let path = entry?.path();
        std::fs::copy(&path, copy.path.join(path.file_name().unwrap_or_default()))?;
    }
    for dir in [&spool, &copy] {
        let (_producer, task, metrics) = gateway_producer(&redis.url, &redis.prefix, dir).await?;
        test_support::wait_for(Duration::from_secs(10), "the spool to be replayed", || async {
            (metrics.replayed.with_label_values(&["llm_logs"]).get() == 2000).then_some(())
        })
        .await?;
        task.shutdown().await;
    }
    assert_eq!(redis.xlen(&redis.key("llm_logs")).await?, 4000, "every event is in the stream twice");

    let worker = start_worker(&db, &redis).await?;
    db.wait_rows("llm_logs", 2000, Duration::from_secs(60)).await?;
    test_support::wait_for(Duration::from_secs(20), "every entry settled", || async {
        test_support::unsettled_entries(&redis.url, &redis.prefix).await.ok().filter(Vec::is_empty)
    })
    .await?;
    assert_eq!(db.counts("llm_logs").await?, (2000, 2000));
    let m = reqwest::get(format!("{}/metrics", worker.url)).await?.text().await?;
    assert!(m.contains("headhunter_log_worker_duplicates_ignored_total{table=\"llm_logs\"} 2000"), "{m}");
    worker.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_for_ten_seconds_slows_no_call_and_loses_none() -> anyhow::Result<()> {
    const CALLS: usize = 5000;
    const CLIENTS: usize = 10;
    let mut server = RedisServer::start(&[]).await?;
    let stack = Stack::start(Options { redis_url: Some(server.url()), ..Options::default() }).await?;
    let (_, key) = stack.create_company("Through The Storm").await?;

    // 5,000 calls over about 12 s from 10 clients; Redis is killed after one second and
    // comes back ten seconds later. The calls before the kill are the baseline.
    let url = format!("{}/v1/chat/completions", stack.url);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (http, url, key) = (stack.http.clone(), url.clone(), key.clone());
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(CALLS / CLIENTS);
                for _ in 0..CALLS / CLIENTS {
                    let started = Instant::now();
                    let res = http.post(&url).bearer_auth(&key).json(&chat_body(false)).send().await?;
                    anyhow::ensure!(res.status() == 200, "call failed: {}", res.status());
                    res.bytes().await?;
                    times.push((started, started.elapsed()));
                    tokio::time::sleep(Duration::from_millis(22)).await;
                }
                anyhow::Ok(times)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.kill().await?;
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    server.restart().await?;
    let up_at = Instant::now();
    let (mut baseline, mut during) = (Vec::new(), Vec::new());
    let mut answered = 0;
    for client in clients {
        for (at, took) in client.await?? {
            answered += 1;
            if at < down_at {
                baseline.push(took);
            } else if at < up_at {
                during.push(took);
            }
        }
    }
    assert_eq!(answered, CALLS);
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (base_median, out_median) = (median(&mut baseline), median(&mut during));
    let slowest = during.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{} calls while Redis was down: median {out_median:?} (before: {base_median:?}), slowest {slowest:?}",
        during.len()
    );
    assert!(during.len() > CALLS / 2, "the outage did not overlap the calls");
    assert!(slowest < Duration::from_secs(1), "a call waited on Redis: {slowest:?}");
    assert!(out_median <= base_median * 3 + Duration::from_millis(5), "{out_median:?} vs {base_median:?}");

    let total = CALLS as i64;
    stack.wait_llm_rows(total).await?;
    test_support::wait_for(Duration::from_secs(30), "every event settled", || async {
        test_support::unsettled_entries(&stack.redis.url, &stack.redis.prefix).await.ok().filter(Vec::is_empty)
    })
    .await?;
    assert_eq!(stack.analytics_db.counts("llm_logs").await?, (total, total));
    let m = stack.metrics().await?;
    assert_eq!(metric_sum(&m, "headhunter_gateway_queue_dropped_total"), 0.0, "{m}");
    assert!(metric_sum(&m, "headhunter_gateway_queue_spool_replayed_total") > 0.0, "nothing went through the spool");
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_during_an_outage_replays_its_spool_after_a_restart() -> anyhow::Result<()> {
    let mut server = RedisServer::start(&[]).await?;
    let redis = TestRedis::on(server.url());
    let main_db = TestDb::migrated(common_models::db::Database::Main).await?;
    let analytics_db = TestDb::empty("analytics").await?;
    let spool = TempDir::new("spool")?;
    let logs = TempDir::new("logs")?;
    let sim = llm_simulator::Simulator::start(test_support::local_listener()?, llm_simulator::Behaviour::default())?;
    let env = vec![
        ("DATABASE_URL", main_db.url.clone()),
        ("REDIS_URL", redis.url.clone()),
        ("REDIS_KEY_PREFIX", redis.prefix.clone()),
        ("PRODUCER__SPOOL__DIR", spool.path.to_string_lossy().into_owned()),
        ("LLM_BASE_URL", sim.base_url()),
        ("LLM_API_KEY", "sk-simulated".to_owned()),
        ("ADMIN_API_KEY", ADMIN_KEY.to_owned()),
    ];
    let gateway = GatewayProcess::start(&env, logs.path.join("first.log")).await?;
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .post(format!("{}/api/v1/admin/companies", gateway.url))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"name": "Crash Test Ltd"}))
        .send()
        .await?
        .json()
        .await?;
    let key = created["api_key"]["key"].as_str().ok_or_else(|| anyhow::anyhow!("no key: {created}"))?.to_owned();

    server.kill().await?;
    for _ in 0..1000 {
        let res = http
            .post(format!("{}/v1/chat/completions", gateway.url))
            .bearer_auth(&key)
            .json(&chat_body(false))
            .send()
            .await?;
        let status = res.status();
        let body = res.text().await?;
        assert_eq!(status, 200, "{body}");
    }
    // Every answered call is on disk (the company creation's event may have reached Redis).
    let spooled = test_support::wait_for(Duration::from_secs(10), "2000 events in the spool", || async {
        let m = http.get(format!("{}/metrics", gateway.url)).send().await.ok()?.text().await.ok()?;
        let spooled = metric_sum(&m, "headhunter_gateway_queue_spool_entries");
        (spooled >= 2000.0).then_some(spooled)
    })
    .await?;
    gateway.kill().await?;

    // Restarted on the same spool, then Redis comes back: the spool is replayed.
    let gateway = GatewayProcess::start(&env, logs.path.join("second.log")).await?;
    server.restart().await?;
    let worker = start_worker(&analytics_db, &redis).await?;
    analytics_db.wait_rows("llm_logs", 1000, Duration::from_secs(60)).await?;
    analytics_db.wait_rows("system_logs", 1001, Duration::from_secs(60)).await?;
    test_support::wait_for(Duration::from_secs(20), "every event settled", || async {
        test_support::unsettled_entries(&redis.url, &redis.prefix).await.ok().filter(Vec::is_empty)
    })
    .await?;
    assert_eq!(analytics_db.counts("llm_logs").await?, (1000, 1000));
    assert_eq!(analytics_db.counts("system_logs").await?, (1001, 1001));
    let m = http.get(format!("{}/metrics", gateway.url)).send().await?.text().await?;
    assert_eq!(metric_sum(&m, "headhunter_gateway_queue_spool_replayed_total"), spooled, "{m}");
    assert_eq!(metric_sum(&m, "headhunter_gateway_queue_spool_entries"), 0.0);
    worker.stop().await?;
    gateway.kill().await?;
    sim.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_redis_at_its_maxmemory_delays_rows_without_failing_a_call() -> anyhow::Result<()> {
    let server = RedisServer::start(&["--maxmemory-policy", "noeviction"]).await?;
    let stack = Stack::start(Options { redis_url: Some(server.url()), ..Options::default() }).await?;
    let (_, key) = stack.create_company("Full House").await?;
    stack.wait_llm_rows(0).await?;

    server.limit_memory(1 << 20).await?;
    let filled = server.fill().await?;

    for _ in 0..50 {
        let res = stack.chat(&key, &chat_body(false)).send().await?;
        assert_eq!(res.status(), 200, "a call failed while the queue Redis was full");
        res.bytes().await?;
    }
    // Refused events wait in the spool. (Not all 100: each trim the worker makes frees a
    // little memory, and a few get in before Redis is full again.)
    let m = test_support::wait_for(Duration::from_secs(10), "the refused events in the spool", || async {
        let m = stack.metrics().await.ok()?;
        (metric_sum(&m, "headhunter_gateway_queue_spool_entries") >= 20.0).then_some(m)
    })
    .await?;
    assert!(metric_sum(&m, "headhunter_gateway_queue_send_errors_total{kind=\"refused\"}") > 0.0, "{m}");
    eprintln!(
        "at maxmemory: {} events spooled, {} rows written meanwhile",
        metric_sum(&m, "headhunter_gateway_queue_spooled_total"),
        stack.llm_rows().await?
    );

    server.free(filled).await?;
    stack.wait_llm_rows(50).await?;
    test_support::wait_for(Duration::from_secs(20), "every event settled", || async {
        test_support::unsettled_entries(&stack.redis.url, &stack.redis.prefix).await.ok().filter(Vec::is_empty)
    })
    .await?;
    assert_eq!(stack.analytics_db.counts("llm_logs").await?, (50, 50));
    let m = stack.metrics().await?;
    assert_eq!(metric_sum(&m, "headhunter_gateway_queue_dropped_total"), 0.0, "{m}");
    stack.stop().await
}

/// The worker away long enough for the backlog to fill the queue Redis to its
/// maxmemory: the gateway spools what Redis refuses, and the returning worker can still
/// acknowledge (at maxmemory) and trim, which frees Redis and lets the spool in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_that_fills_the_queue_redis_drains_when_the_worker_returns() -> anyhow::Result<()> {
    let server = RedisServer::start(&["--maxmemory-policy", "noeviction"]).await?;
    let redis = TestRedis::on(server.url());
    let db = TestDb::empty("analytics").await?;
    let spool = TempDir::new("spool")?;
    // The worker has run once (its group exists), then goes away.
    start_worker(&db, &redis).await?.stop().await?;
    server.limit_memory(4 << 20).await?;

    let (producer, task, metrics) = gateway_producer(&server.url(), &redis.prefix, &spool).await?;
    const EVENTS: usize = 20_000;
    for i in 0..EVENTS {
        producer.publish(&llm_event(i));
        if i % 1000 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let spooled = test_support::wait_for(Duration::from_secs(20), "Redis to be full and the rest spooled", || async {
        let (published, spooled) =
            (metrics.published.with_label_values(&["llm_logs"]).get(), metrics.spool_entries.get() as u64);
        (published + spooled >= EVENTS as u64 && spooled > 0).then_some(spooled)
    })
    .await?;
    eprintln!("queue Redis full after {} events; {spooled} in the spool", EVENTS as u64 - spooled);

    let worker = start_worker(&db, &redis).await?;
    db.wait_rows("llm_logs", EVENTS as i64, Duration::from_secs(120)).await?;
    test_support::wait_for(Duration::from_secs(30), "every event settled and the spool empty", || async {
        let unsettled = test_support::unsettled_entries(&redis.url, &redis.prefix).await.ok()?;
        (unsettled.is_empty() && metrics.spool_entries.get() == 0).then_some(())
    })
    .await?;
    assert_eq!(db.counts("llm_logs").await?, (EVENTS as i64, EVENTS as i64));
    assert_eq!(metrics.dropped.collect_total(), 0.0);
    task.shutdown().await;
    worker.stop().await
}
