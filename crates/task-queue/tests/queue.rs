//! The queue against real Redis: the producer's bounds and spool, the consumer runtime's
//! dead letters and housekeeping, and trimming.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use service_kit::redis::{ReplyTimeout, build_pool};
use task_queue::{
    BatchHandler, Consumer, ConsumerConfig, ConsumerMetrics, Delivery, Fsync, Handled, HandlerError, Keys, Producer,
    ProducerConfig, ProducerMetrics, SpoolConfig, Task,
};
use test_support::{RedisServer, TempDir, TestRedis};
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    n: usize,
    pad: String,
}

impl Task for Job {
    const STREAM: &'static str = "jobs";
    const TYPE_TAG: &'static str = "job.v1";
}

fn job(n: usize) -> Job {
    Job { n, pad: "x".repeat(100) }
}

fn producer_config(spool: Option<&TempDir>) -> ProducerConfig {
    ProducerConfig {
        buffer_max_bytes: 64 << 20,
        batch_max_entries: 256,
        batch_max_bytes: 1 << 20,
        linger: Duration::from_millis(2),
        retry_interval: Duration::from_millis(100),
        shutdown_deadline: Duration::from_secs(5),
        spool: spool.map(|dir| SpoolConfig {
            dir: dir.path.clone(),
            max_bytes: 64 << 20,
            segment_bytes: 64 << 10,
            fsync: Fsync::Never,
        }),
        wait_replicas: 0,
        replica_timeout: Duration::from_millis(20),
    }
}

async fn start_producer(
    redis_url: &str,
    prefix: &str,
    config: ProducerConfig,
) -> anyhow::Result<(Producer, task_queue::ProducerTask, ProducerMetrics)> {
    let metrics = ProducerMetrics::register(&prometheus::Registry::new())?;
    let pool = build_pool(redis_url, 4, ReplyTimeout::After(Duration::from_millis(500)))?;
    let (producer, task) = Producer::start(pool, Keys::new(prefix), config, metrics.clone()).await?;
    Ok((producer, task, metrics))
}

fn dead_redis() -> anyhow::Result<String> {
    Ok(format!("redis://127.0.0.1:{}/0", test_support::local_listener()?.local_addr()?.port()))
}

/// The jobs under `prefix` once at least `n` have landed, in stream order.
async fn landed(url: &str, prefix: &str, n: usize) -> anyhow::Result<Vec<usize>> {
    let key = format!("{prefix}jobs");
    test_support::wait_for(Duration::from_secs(10), &format!("{n} entries to land"), || async {
        let jobs = stream_jobs(url, &key).await.ok()?;
        (jobs.len() >= n).then_some(jobs)
    })
    .await
}

/// The `n` fields of every entry of `stream`, in stream order.
async fn stream_jobs(url: &str, key: &str) -> anyhow::Result<Vec<usize>> {
    let mut conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let reply: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(key).arg("-").arg("+").query_async(&mut conn).await?;
    Ok(reply
        .ids
        .iter()
        .filter_map(|e| e.get::<Vec<u8>>("payload"))
        .filter_map(|p| serde_json::from_slice::<Job>(&p).ok())
        .map(|j| j.n)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buffer_is_bounded_in_bytes_and_every_drop_is_counted() -> anyhow::Result<()> {
    // No spool and no Redis: entries can only wait in memory, up to 20 KiB of them.
    let mut config = producer_config(None);
    config.buffer_max_bytes = 20 << 10;
    let (producer, task, metrics) = start_producer(&dead_redis()?, "bounded:", config).await?;
    for n in 0..1000 {
        producer.publish(&job(n));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = metrics.buffered_entries.get();
    let dropped = metrics.dropped.with_label_values(&["jobs", "buffer_full"]).get();
    assert!(metrics.buffered_bytes.get() <= 20 << 10, "{} bytes buffered", metrics.buffered_bytes.get());
    assert!(held > 0 && dropped > 0);
    assert_eq!(held as u64 + dropped, 1000, "every entry is either held or counted as dropped");
    task.shutdown().await;
    assert_eq!(metrics.dropped.with_label_values(&["jobs", "shutdown"]).get(), held as u64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_cut_mid_record_replays_everything_before_the_cut_in_order() -> anyhow::Result<()> {
    let redis = TestRedis::new();
    let spool = TempDir::new("spool")?;
    let (producer, task, metrics) =
        start_producer(&dead_redis()?, &redis.prefix, producer_config(Some(&spool))).await?;
    for n in 0..500 {
        producer.publish(&job(n));
    }
    test_support::wait_for(Duration::from_secs(10), "500 entries spooled", || async {
        (metrics.spool_entries.get() == 500).then_some(())
    })
    .await?;
    task.shutdown().await;

    // The process dies in the middle of writing its last record.
    let mut segments: Vec<_> = std::fs::read_dir(&spool.path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "spool"))
        .collect();
    segments.sort();
    let last = segments.last().ok_or_else(|| anyhow::anyhow!("no segment"))?;
    let len = std::fs::metadata(last)?.len();
    std::fs::OpenOptions::new().write(true).open(last)?.set_len(len - 40)?;

    // Restarted with Redis back: everything before the cut arrives, in order, once.
    let (_producer, task, metrics) = start_producer(&redis.url, &redis.prefix, producer_config(Some(&spool))).await?;
    let key = format!("{}jobs", redis.prefix);
    let landed = test_support::wait_for(Duration::from_secs(10), "the spool to be replayed", || async {
        let jobs = stream_jobs(&redis.url, &key).await.ok()?;
        (jobs.len() == 499 && metrics.spool_entries.get() == 0).then_some(jobs)
    })
    .await?;
    assert_eq!(landed, (0..499).collect::<Vec<_>>());
    assert!(metrics.spool_discarded_bytes.with_label_values(&["torn"]).get() > 0);
    task.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_out_of_memory_sends_entries_to_the_spool_until_memory_frees() -> anyhow::Result<()> {
    let server = RedisServer::start(&["--maxmemory-policy", "noeviction"]).await?;
    let redis = TestRedis::on(server.url());
    server.limit_memory(1 << 20).await?;
    let filled = server.fill().await?;

    let spool = TempDir::new("spool")?;
    let (producer, task, metrics) = start_producer(&server.url(), &redis.prefix, producer_config(Some(&spool))).await?;
    for n in 0..300 {
        producer.publish(&job(n));
    }
    test_support::wait_for(Duration::from_secs(10), "300 entries spooled", || async {
        (metrics.spool_entries.get() == 300).then_some(())
    })
    .await?;
    assert!(metrics.send_errors.with_label_values(&["refused"]).get() > 0);
    let dropped: u64 = ["rejected", "spool_full", "buffer_full"]
        .iter()
        .map(|r| metrics.dropped.with_label_values(&["jobs", r]).get())
        .sum();
    assert_eq!(dropped, 0, "an OOM refusal is a reason to wait, not to drop");

    server.free(filled).await?;
    let key = format!("{}jobs", redis.prefix);
    let landed = test_support::wait_for(Duration::from_secs(10), "the spool to land", || async {
        let jobs = stream_jobs(&server.url(), &key).await.ok()?;
        (jobs.len() >= 300 && metrics.spool_entries.get() == 0).then_some(jobs)
    })
    .await?;
    let mut distinct = landed.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct, (0..300).collect::<Vec<_>>());
    task.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_consumes_is_never_trimmed() -> anyhow::Result<()> {
    let redis = TestRedis::new();
    let key = format!("{}orphans", redis.prefix);
    let mut conn = redis.connection().await?;
    for n in 0..300 {
        redis::cmd("XADD").arg(&key).arg("*").arg("n").arg(n).query_async::<String>(&mut conn).await?;
    }
    let removed: u64 = task_queue::scripts::TRIM.key(&key).invoke_async(&mut conn).await?;
    let len: u64 = redis::cmd("XLEN").arg(&key).query_async(&mut conn).await?;
    assert_eq!((removed, len), (0, 300));
    Ok(())
}

/// Counts what it is given; rejects jobs whose `n` is in `refuse`.
struct Counting {
    handled: Arc<AtomicUsize>,
    refuse: Vec<usize>,
}

impl BatchHandler<Job> for Counting {
    async fn handle(&mut self, batch: &[Delivery<Job>]) -> Result<Handled, HandlerError> {
        if let Some(bad) = batch.iter().find(|d| self.refuse.contains(&d.message.n)) {
            return Err(HandlerError::Rejected(format!("job {} is refused", bad.message.n)));
        }
        self.handled.fetch_add(batch.len(), Ordering::SeqCst);
        Ok(Handled::default())
    }
}

fn consumer_config(group: &str) -> ConsumerConfig {
    ConsumerConfig {
        group: group.to_owned(),
        consumer: format!("{group}-test"),
        concurrency: 2,
        batch_size: 50,
        block: Duration::from_millis(100),
        linger: Duration::from_millis(10),
        reclaim_idle: Duration::from_millis(500),
        reclaim_interval: Duration::from_millis(200),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        max_attempts: 3,
        max_deliveries: 3,
        heartbeat_interval: Duration::from_millis(100),
        trim_interval: Duration::from_millis(50),
        forget_consumers_after: Duration::from_millis(500),
    }
}

async fn add_jobs(redis: &TestRedis, range: std::ops::Range<usize>) -> anyhow::Result<()> {
    let mut conn = redis.connection().await?;
    for n in range {
        let entry = task_queue::Entry::encode(&job(n))?;
        redis::cmd("XADD")
            .arg(format!("{}jobs", redis.prefix))
            .arg("*")
            .arg("type")
            .arg(entry.tag.as_ref())
            .arg("payload")
            .arg(&entry.payload[..])
            .query_async::<String>(&mut conn)
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_dead_letters_what_cannot_be_done_and_forgets_silent_consumers() -> anyhow::Result<()> {
    let redis = TestRedis::new();
    let config = consumer_config("jobs-worker");
    let key = format!("{}jobs", redis.prefix);
    let mut conn = redis.connection().await?;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("jobs-worker")
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(&mut conn)
        .await?;

    // An entry that "crashed" its consumer four times: delivered, never acknowledged.
    add_jobs(&redis, 0..1).await?;
    for id in [">", "0", "0", "0"] {
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("jobs-worker")
            .arg("crasher")
            .arg("STREAMS")
            .arg(&key)
            .arg(id)
            .query_async::<redis::Value>(&mut conn)
            .await?;
    }
    // A consumer that read nothing pending and fell silent long ago.
    redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&key)
        .arg("jobs-worker")
        .arg("ghost")
        .query_async::<()>(&mut conn)
        .await?;
    add_jobs(&redis, 1..1001).await?;

    let handled = Arc::new(AtomicUsize::new(0));
    let metrics = ConsumerMetrics::register(&prometheus::Registry::new())?;
    let pool = build_pool(&redis.url, 6, ReplyTimeout::Never)?;
    let consumer = Consumer::<Job>::new(pool, Keys::new(redis.prefix.clone()), config, metrics.clone());
    let (stop, shutdown) = watch::channel(false);
    let counter = handled.clone();
    let run = tokio::spawn(consumer.run(move |_| Counting { handled: counter.clone(), refuse: vec![42] }, shutdown));

    test_support::wait_for(Duration::from_secs(30), "999 handled and two dead letters", || async {
        let dead: u64 = redis::cmd("XLEN").arg(format!("{key}:dead")).query_async(&mut conn.clone()).await.ok()?;
        (handled.load(Ordering::SeqCst) == 999 && dead == 2).then_some(())
    })
    .await?;
    let letters: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(format!("{key}:dead")).arg("-").arg("+").query_async(&mut conn).await?;
    let mut reasons: Vec<String> = letters.ids.iter().filter_map(|e| e.get("dead_reason")).collect();
    reasons.sort();
    assert_eq!(reasons, ["delivery_limit", "rejected"]);
    let refused = letters.ids.iter().find(|e| e.get::<String>("dead_reason").as_deref() == Some("rejected"));
    let detail: Option<String> = refused.and_then(|e| e.get("dead_detail"));
    assert_eq!(detail.as_deref(), Some("job 42 is refused"));
    let payload: Option<Vec<u8>> = refused.and_then(|e| e.get("payload"));
    assert_eq!(
        payload.and_then(|p| serde_json::from_slice::<Job>(&p).ok()),
        Some(job(42)),
        "the letter keeps the entry"
    );

    test_support::wait_for(Duration::from_secs(10), "the silent consumers to be removed", || async {
        let consumers: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&key)
            .arg("jobs-worker")
            .query_async(&mut conn.clone())
            .await
            .ok()?;
        let names: Vec<String> = consumers.consumers.into_iter().map(|c| c.name).collect();
        (!names.iter().any(|n| n == "ghost" || n == "crasher")).then_some(())
    })
    .await?;
    assert!(metrics.consumers_removed.with_label_values(&["jobs-worker"]).get() >= 2);
    assert_eq!(metrics.dead_lettered.with_label_values(&["jobs-worker", "jobs", "delivery_limit"]).get(), 1);

    // Acknowledged entries leave the stream: what remains is the trimming tail.
    test_support::wait_for(Duration::from_secs(10), "the stream to be trimmed", || async {
        let len: u64 = redis::cmd("XLEN").arg(&key).query_async(&mut conn.clone()).await.ok()?;
        (len <= 100).then_some(())
    })
    .await?;
    stop.send_replace(true);
    run.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_spool_entries_wait_in_memory_and_land_in_order() -> anyhow::Result<()> {
    let mut server = RedisServer::start(&[]).await?;
    let redis = TestRedis::on(server.url());
    let (producer, task, metrics) = start_producer(&server.url(), &redis.prefix, producer_config(None)).await?;
    server.kill().await?;
    for n in 0..2000 {
        producer.publish(&job(n));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metrics.buffered_entries.get(), 2000, "held in memory while Redis is away");
    server.restart().await?;
    let landed = landed(&server.url(), &redis.prefix, 2000).await?;
    assert_eq!(landed, (0..2000).collect::<Vec<_>>());
    assert_eq!(metrics.buffered_entries.get(), 0);
    task.shutdown().await;
    Ok(())
}

/// Asking for a replica's copy where there is none: every entry still lands, none is
/// dropped, and each is counted unreplicated; after the first batch that waited in vain
/// the producer stops waiting for `retry_interval`, so the batches behind it do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_no_replica_confirmed_land_and_are_counted_unreplicated() -> anyhow::Result<()> {
    let server = RedisServer::start(&[]).await?;
    let redis = TestRedis::on(server.url());
    let mut config = producer_config(None);
    (config.wait_replicas, config.replica_timeout) = (1, Duration::from_millis(200));
    config.retry_interval = Duration::from_secs(60);
    let (producer, task, metrics) = start_producer(&server.url(), &redis.prefix, config).await?;
    for n in 0..2000 {
        producer.publish(&job(n));
    }
    let landed = landed(&server.url(), &redis.prefix, 2000).await?;
    assert_eq!(landed, (0..2000).collect::<Vec<_>>());
    assert_eq!(metrics.unreplicated.with_label_values(&["jobs"]).get(), 2000);
    assert_eq!(metrics.published.with_label_values(&["jobs"]).get(), 2000);
    // Eight batches of 256 or more: one asked for the missing replica, the rest did not.
    let mut conn = server.connection().await?;
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await?;
    assert!(stats.contains("cmdstat_wait:calls=1,"), "{stats}");
    task.shutdown().await;
    Ok(())
}
