//! cache-service against real Redis: TTLs in both tiers, binary values, batches,
//! Redis dying and coming back, replica coherence, bad input.

use std::time::{Duration, Instant};

use cache_client::CacheClient;
use cache_service::CacheSettings;
use serde_json::Value;
use service_kit::config::{ConnectionUrl, LogFormat, Secret};
use test_support::{RedisServer, Service, TestRedis};

struct Running {
    url: String,
    http: reqwest::Client,
    service: Service,
}

impl Running {
    async fn start(redis_url: &str, prefix: &str, tweak: impl FnOnce(&mut CacheSettings)) -> anyhow::Result<Self> {
        let mut s = CacheSettings::defaults()?;
        s.redis.url = ConnectionUrl::new(redis_url);
        s.redis.key_prefix = prefix.to_owned();
        s.server.workers = 1;
        s.cache_admin_api_key = Secret::new("cache-admin");
        s.logging.format = LogFormat::Text;
        tweak(&mut s);
        let service = Service::start("cache-service", |l, rx| cache_service::run(s, l, rx)).await?;
        // Give the invalidation subscriber a moment to subscribe.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(Self { url: service.url.clone(), http: reqwest::Client::new(), service })
    }

    fn client(&self) -> anyhow::Result<CacheClient> {
        Ok(CacheClient::new(&self.url, Duration::from_secs(2), "")?)
    }

    async fn get(&self, ns: &str, key: &str) -> anyhow::Result<(u16, Option<String>, Vec<u8>)> {
        let res = self.http.get(format!("{}/v1/cache/{ns}/{key}", self.url)).send().await?;
        let tier = res.headers().get("x-cache-tier").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok((res.status().as_u16(), tier, res.bytes().await?.to_vec()))
    }

    async fn put(&self, ns: &str, key: &str, value: &[u8], ttl: Option<&str>) -> anyhow::Result<u16> {
        let mut url = format!("{}/v1/cache/{ns}/{key}", self.url);
        if let Some(t) = ttl {
            url.push_str(&format!("?ttl={t}"));
        }
        Ok(self.http.put(url).body(value.to_vec()).send().await?.status().as_u16())
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.http.get(format!("{}/metrics", self.url)).send().await?.text().await?)
    }

    async fn json(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.http.get(format!("{}{path}", self.url)).send().await?.json().await?)
    }

    /// Waits until the service reports that it left fallback (its replay is done).
    async fn left_fallback(&self) -> anyhow::Result<()> {
        test_support::wait_for(Duration::from_secs(10), "the service to leave fallback", || async {
            (self.json("/healthz").await.ok()?["status"] == "ok").then_some(())
        })
        .await
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.service.stop().await
    }
}

async fn pttl(redis: &TestRedis, key: &str) -> anyhow::Result<i64> {
    let mut conn = redis.connection().await?;
    Ok(redis::cmd("PTTL").arg(format!("{}{key}", redis.prefix)).query_async(&mut conn).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_per_namespace_hold_in_both_tiers() -> anyhow::Result<()> {
    let redis = TestRedis::new();
    let svc = Running::start(&redis.url, &redis.prefix, |_| {}).await?;

    // Namespace defaults reach Redis.
    for (ns, secs) in
        [("embedding", 3600), ("match", 1800), ("llm", 7200), ("analysis", 604_800), ("session", 3600), ("api", 300)]
    {
        assert_eq!(svc.put(ns, "k", b"v", None).await?, 204);
        let ttl = pttl(&redis, &format!("{ns}:k")).await?;
        assert!((secs * 1000 - 5000..=secs * 1000).contains(&ttl), "{ns}: PTTL {ttl}");
    }

    // An override of 1 s: served from L1 at first, gone from both tiers after it.
    assert_eq!(svc.put("embedding", "short", b"soon gone", Some("1")).await?, 204);
    let ttl = pttl(&redis, "embedding:short").await?;
    assert!((1..=1000).contains(&ttl), "PTTL {ttl}");
    assert_eq!(svc.get("embedding", "short").await?, (200, Some("l1".into()), b"soon gone".to_vec()));

    // L1 honours the TTL by itself: with the Redis copy removed behind its back, L1
    // still answers until the TTL, then not.
    let mut conn = redis.connection().await?;
    redis::cmd("DEL").arg(format!("{}embedding:short", redis.prefix)).query_async::<()>(&mut conn).await?;
    assert_eq!(svc.get("embedding", "short").await?.1.as_deref(), Some("l1"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(svc.get("embedding", "short").await?.0, 404);

    // And Redis by itself: a value only Redis has is read from it, then from L1.
    redis::cmd("SET")
        .arg(format!("{}session:abc", redis.prefix))
        .arg("from redis")
        .arg("PX")
        .arg(800)
        .query_async::<()>(&mut conn)
        .await?;
    assert_eq!(svc.get("session", "abc").await?.1.as_deref(), Some("redis"));
    assert_eq!(svc.get("session", "abc").await?.1.as_deref(), Some("l1"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(svc.get("session", "abc").await?.0, 404, "L1 kept a value past its Redis TTL");
    svc.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_values_round_trip_and_batches_work() -> anyhow::Result<()> {
    let redis = TestRedis::new();
    let svc = Running::start(&redis.url, &redis.prefix, |_| {}).await?;
    let client = svc.client()?;

    // An embedding: 384 f32, every byte pattern allowed.
    let embedding: Vec<u8> = (0..384).flat_map(|i| (i as f32 * 0.37 - 50.0).to_le_bytes()).collect();
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    assert!(client.put("embedding", "cv42:chunk0", embedding.clone().into(), None).await);
    assert!(client.put("analysis", "raw", all_bytes.clone().into(), None).await);
    assert_eq!(client.get("embedding", "cv42:chunk0").await.as_deref(), Some(embedding.as_slice()));
    assert_eq!(client.get("analysis", "raw").await.as_deref(), Some(all_bytes.as_slice()));
    let floats: Vec<f32> = embedding.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(floats[10], 10.0 * 0.37 - 50.0);

    // A CV's 32 chunk embeddings at once, then read back with one key missing.
    let values: Vec<(String, Vec<u8>)> = (0..32).map(|i| (format!("cv7:chunk{i}"), vec![i as u8; 1536])).collect();
    let entries: Vec<(&str, &[u8])> = values.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    assert!(client.put_many("embedding", &entries, None).await);
    let mut keys: Vec<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
    keys.insert(5, "cv7:missing");
    let got = client.get_many("embedding", &keys).await;
    assert_eq!(got.len(), 33);
    assert_eq!(got[5], None);
    assert_eq!(got[0].as_deref(), Some(&[0u8; 1536][..]));
    assert_eq!(got[32].as_deref(), Some(&[31u8; 1536][..]));

    // Delete.
    assert!(client.delete("embedding", "cv42:chunk0").await);
    assert_eq!(client.get("embedding", "cv42:chunk0").await, None);

    // Statistics saw it all.
    let stats = svc.json("/v1/stats").await?;
    assert!(stats["namespaces"]["embedding"]["l1"]["hits"].as_u64().is_some_and(|h| h >= 32), "{stats}");
    assert!(stats["namespaces"]["embedding"]["redis"]["misses"].as_u64().is_some_and(|m| m >= 1), "{stats}");
    assert!(stats["l1"]["entries"].as_u64().is_some_and(|e| e >= 30), "{stats}");
    assert!(stats["redis"]["used_memory"].as_u64().is_some_and(|m| m > 0), "{stats}");
    assert_eq!(stats["fallback_active"], false);
    let metrics = svc.metrics().await?;
    assert!(metrics.contains("headhunter_cache_lookups_total{namespace=\"embedding\",result=\"hit\",tier=\"l1\"}"));
    svc.stop().await
}

/// What Redis itself holds under `key`.
async fn stored(redis: &RedisServer, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    Ok(redis::cmd("GET").arg(key).query_async(&mut redis.connection().await?).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_test_falls_back_to_l1_and_recovers() -> anyhow::Result<()> {
    let mut redis = RedisServer::start(&[]).await?;
    let url = redis.url();
    let svc = Running::start(&url, "", |_| {}).await?;
    assert_eq!(svc.put("match", "cv1:job1", b"score 0.87", None).await?, 204);

    redis.kill().await?;
    // Reads keep being served from L1; writes keep working (into L1); no errors.
    assert_eq!(svc.get("match", "cv1:job1").await?, (200, Some("l1".into()), b"score 0.87".to_vec()));
    assert_eq!(svc.put("match", "cv2:job1", b"score 0.42", None).await?, 204);
    assert_eq!(svc.get("match", "cv2:job1").await?.0, 200);
    assert_eq!(svc.get("match", "never-stored").await?.0, 404);
    let health = svc.json("/healthz").await?;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(svc.json("/v1/stats").await?["fallback_active"], true);

    // Redis comes back (empty): the service notices by itself, replays what was written
    // meanwhile, and writes reach Redis again.
    redis.restart().await?;
    svc.left_fallback().await?;
    assert_eq!(svc.put("match", "cv3:job1", b"after recovery", None).await?, 204);
    for (key, value) in [("match:cv2:job1", "score 0.42"), ("match:cv3:job1", "after recovery")] {
        assert_eq!(stored(&redis, key).await?.as_deref(), Some(value.as_bytes()), "{key}");
    }
    svc.stop().await?;
    redis.kill().await
}

/// Writes made while Redis does not answer are kept and replayed when it does, before
/// fallback ends: Redis, and through its invalidations every other replica, end up with
/// them. Redis is paused (its data stays) rather than killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_during_an_outage_reach_redis_and_the_replicas_afterwards() -> anyhow::Result<()> {
    let mut redis = RedisServer::start(&[]).await?;
    let url = redis.url();
    // A reply timeout well above a loaded machine's stalls and well below the pause:
    // only the pause may look like an outage here.
    let patient = |s: &mut CacheSettings| s.redis_timeout = Duration::from_secs(1);
    let a = Running::start(&url, "", patient).await?;
    let b = Running::start(&url, "", patient).await?;
    assert_eq!(a.put("session", "s1", b"logged in", None).await?, 204);
    assert_eq!(b.get("session", "s1").await?.2, b"logged in"); // now in B's L1 too
    let mut conn = redis.connection().await?;

    redis::cmd("CLIENT").arg("PAUSE").arg(3000).arg("ALL").query_async::<()>(&mut conn).await?;
    // The first write finds Redis silent (its command may still run after the pause).
    assert_eq!(a.put("session", "probe", b"x", None).await?, 204);
    assert_eq!(a.json("/healthz").await?["status"], "degraded");
    // These two reach nothing but A's L1 and its log until Redis answers.
    assert_eq!(a.http.delete(format!("{}/v1/cache/session/s1", a.url)).send().await?.status(), 204);
    assert_eq!(a.put("session", "s2", b"new session", None).await?, 204);
    assert_eq!(a.get("session", "s1").await?.0, 404);
    assert_eq!(a.get("session", "s2").await?, (200, Some("l1".into()), b"new session".to_vec()));

    a.left_fallback().await?;
    assert_eq!(stored(&redis, "session:s1").await?, None, "the delete made during the outage reached Redis");
    assert_eq!(stored(&redis, "session:s2").await?.as_deref(), Some(&b"new session"[..]));
    let ttl: i64 = redis::cmd("PTTL").arg("session:s2").query_async(&mut conn).await?;
    assert!((3_500_000..=3_600_000).contains(&ttl), "session TTL kept, {ttl} ms left");
    test_support::wait_for(Duration::from_secs(1), "B to drop s1", || async {
        (b.get("session", "s1").await.ok()?.0 == 404).then_some(())
    })
    .await?;
    assert_eq!(b.get("session", "s2").await?.2, b"new session");
    let metrics = a.metrics().await?;
    assert!(metrics.contains("headhunter_cache_fallback_writes_replayed_total 3"), "{metrics}");
    assert!(metrics.contains("headhunter_cache_fallback_writes_pending 0"), "{metrics}");
    a.stop().await?;
    b.stop().await?;
    redis.kill().await
}

/// Keeps Redis busy for ARGV[1] milliseconds: every other client waits, and those with
/// a short reply timeout give up.
const BUSY_SCRIPT: &str = "local t = redis.call('TIME') local s = t[1] * 1000 + t[2] / 1000 \
    repeat t = redis.call('TIME') until t[1] * 1000 + t[2] / 1000 - s > tonumber(ARGV[1]) return 1";

/// A replica whose Redis replies came too late falls back alone and keeps its write for
/// the replay. Another replica, still in touch, writes the key afterwards; that newer
/// write must survive the first replica's return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_does_not_undo_a_newer_write_from_another_replica() -> anyhow::Result<()> {
    let mut redis = RedisServer::start(&[]).await?;
    let url = redis.url();
    let a = Running::start(&url, "", |s| s.redis_timeout = Duration::from_millis(50)).await?;
    let b = Running::start(&url, "", |s| s.redis_timeout = Duration::from_secs(5)).await?;

    let busy = tokio::spawn({
        let mut conn = redis.connection().await?;
        async move { redis::cmd("EVAL").arg(BUSY_SCRIPT).arg(0).arg(700).query_async::<i64>(&mut conn).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.put("match", "cv5:job3", b"older", None).await?, 204);
    assert_eq!(a.json("/healthz").await?["status"], "degraded", "A waited 50 ms for Redis");
    assert_eq!(b.put("match", "cv5:job3", b"newer", None).await?, 204, "B waits out the busy script");
    drop(busy.await?); // its own reply may time out; the script ran

    a.left_fallback().await?;
    assert_eq!(stored(&redis, "match:cv5:job3").await?.as_deref(), Some(&b"newer"[..]), "B's write is the newer one");
    assert_eq!(a.get("match", "cv5:job3").await?.2, b"newer");
    let metrics = a.metrics().await?;
    assert!(metrics.contains("headhunter_cache_fallback_writes_superseded_total 1"), "{metrics}");
    assert!(metrics.contains("headhunter_cache_fallback_writes_pending 0"), "{metrics}");
    a.stop().await?;
    b.stop().await?;
    redis.kill().await
}

/// Redis answering with an error (here: out of memory under noeviction) fails that
/// write only; it does not send the service into fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_is_counted_without_falling_back() -> anyhow::Result<()> {
    let mut redis = RedisServer::start(&[]).await?;
    let url = redis.url();
    let svc = Running::start(&url, "", |_| {}).await?;
    let mut conn = redis.connection().await?;
    redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").query_async::<()>(&mut conn).await?;
    redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1).query_async::<()>(&mut conn).await?;

    assert_eq!(svc.put("match", "cv9:job2", b"0.71", None).await?, 204);
    assert_eq!(svc.get("match", "cv9:job2").await?, (200, Some("l1".into()), b"0.71".to_vec()));
    assert_eq!(svc.json("/healthz").await?["status"], "ok");
    let metrics = svc.metrics().await?;
    assert!(metrics.contains("headhunter_cache_redis_errors_total{kind=\"refused\"} 1"), "{metrics}");
    assert!(
        metrics.contains("headhunter_cache_writes_total{namespace=\"match\",stored_in=\"l1_only\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("kind=\"outage\""), "{metrics}");
    svc.stop().await?;
    redis.kill().await
}

/// A read from Redis still in flight when the same key is written must not put what it
/// read into L1: the write is newer. Redis is paused so that the two overlap for sure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_racing_a_write_does_not_bring_the_old_value_back() -> anyhow::Result<()> {
    let mut redis = RedisServer::start(&[]).await?;
    let url = redis.url();
    // The pause must not count as Redis being down.
    let svc = Running::start(&url, "", |s| s.redis_timeout = Duration::from_secs(5)).await?;
    let mut conn = redis.connection().await?;
    // Stored behind the service's back, so its L1 does not have it and a GET reads Redis.
    redis::cmd("SET").arg("analysis:report-7").arg("old").query_async::<()>(&mut conn).await?;

    redis::cmd("CLIENT").arg("PAUSE").arg(1000).arg("ALL").query_async::<()>(&mut conn).await?;
    let read = tokio::spawn({
        let (http, url) = (svc.http.clone(), format!("{}/v1/cache/analysis/report-7", svc.url));
        async move { anyhow::Ok(http.get(url).send().await?.bytes().await?) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // the GET now waits in Redis
    let (read, written) = tokio::join!(read, svc.put("analysis", "report-7", b"new", None));
    assert_eq!(read??, "old", "the GET was answered with what Redis held when it asked");
    assert_eq!(written?, 204);

    assert_eq!(svc.get("analysis", "report-7").await?, (200, Some("l1".into()), b"new".to_vec()));
    assert_eq!(stored(&redis, "analysis:report-7").await?.as_deref(), Some(&b"new"[..]));
    svc.stop().await?;
    redis.kill().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_stay_coherent() -> anyhow::Result<()> {
    let redis = TestRedis::new();
    let a = Running::start(&redis.url, &redis.prefix, |_| {}).await?;
    let b = Running::start(&redis.url, &redis.prefix, |_| {}).await?;

    assert_eq!(a.put("llm", "q1", b"first answer", None).await?, 204);
    assert_eq!(b.get("llm", "q1").await?.2, b"first answer"); // now in B's L1 too

    assert_eq!(a.put("llm", "q1", b"second answer", None).await?, 204);
    let started = Instant::now();
    test_support::wait_for(Duration::from_secs(1), "B to see the new value", || async {
        (b.get("llm", "q1").await.ok()?.2 == b"second answer").then_some(())
    })
    .await?;
    eprintln!("B saw the new value {:?} after A's put returned", started.elapsed());

    a.http.delete(format!("{}/v1/cache/llm/q1", a.url)).send().await?;
    test_support::wait_for(Duration::from_secs(1), "B to miss after the delete", || async {
        (b.get("llm", "q1").await.ok()?.0 == 404).then_some(())
    })
    .await?;

    // A flush on A empties B's L1 as well.
    assert_eq!(a.put("api", "docs:list:1", b"page", None).await?, 204);
    assert_eq!(b.get("api", "docs:list:1").await?.0, 200);
    let res = a.http.delete(format!("{}/v1/cache/api", a.url)).bearer_auth("cache-admin").send().await?;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await?["removed"], 1);
    test_support::wait_for(Duration::from_secs(1), "B to miss after the flush", || async {
        (b.get("api", "docs:list:1").await.ok()?.0 == 404).then_some(())
    })
    .await?;
    a.stop().await?;
    b.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_json_errors() -> anyhow::Result<()> {
    let redis = TestRedis::new();
    let svc = Running::start(&redis.url, &redis.prefix, |s| {
        s.max_value_bytes = 1024;
        s.max_batch_keys = 4;
    })
    .await?;
    let error = |v: &Value| v["error"]["param"].as_str().map(str::to_owned);

    let res = svc.http.put(format!("{}/v1/cache/nope/k", svc.url)).body("x").send().await?;
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await?;
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("unknown namespace")), "{body}");

    for ttl in ["0", "abc", "99999999999", "-5"] {
        let res = svc.http.put(format!("{}/v1/cache/llm/k?ttl={ttl}", svc.url)).body("x").send().await?;
        assert_eq!(res.status(), 400, "ttl={ttl}");
        assert_eq!(error(&res.json().await?).as_deref(), Some("ttl"));
    }

    let res = svc.http.put(format!("{}/v1/cache/llm/k", svc.url)).body(vec![0u8; 2048]).send().await?;
    assert_eq!(res.status(), 413);
    assert_eq!(error(&res.json().await?).as_deref(), Some("body"));

    let res = svc.http.get(format!("{}/v1/cache/llm/{}", svc.url, "k".repeat(600))).send().await?;
    assert_eq!(res.status(), 400);
    assert_eq!(error(&res.json().await?).as_deref(), Some("key"));

    let res = svc
        .http
        .post(format!("{}/v1/cache/llm/_batch/get", svc.url))
        .json(&serde_json::json!({"keys": ["a", "b", "c", "d", "e"]}))
        .send()
        .await?;
    assert_eq!(res.status(), 400);
    let res =
        svc.http.post(format!("{}/v1/cache/llm/_batch/put", svc.url)).body(vec![0u8, 0, 0, 9, b'a']).send().await?;
    assert_eq!(res.status(), 400);
    assert_eq!(error(&res.json().await?).as_deref(), Some("body"));
    // Five tiny entries: refused for their number, the rest of the body never decoded.
    let five: Vec<(String, Vec<u8>)> = (0..5).map(|i| (format!("k{i}"), vec![1u8])).collect();
    let framed = common_models::cache_wire::encode_entries(&five)?;
    let res = svc.http.post(format!("{}/v1/cache/llm/_batch/put", svc.url)).body(framed).send().await?;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await?;
    assert_eq!(body["error"]["code"], "too_many_keys", "{body}");
    // A batch get body far beyond what four keys can take is refused unread.
    let res = svc.http.post(format!("{}/v1/cache/llm/_batch/get", svc.url)).body(vec![b' '; 64 * 1024]).send().await?;
    assert_eq!(res.status(), 413);
    // URL parsers fold `.` and `..` away, so no client could read such keys back.
    let framed = common_models::cache_wire::encode_entries(&[("..", b"x")])?;
    let res = svc.http.post(format!("{}/v1/cache/llm/_batch/put", svc.url)).body(framed).send().await?;
    assert_eq!((res.status().as_u16(), error(&res.json().await?).as_deref()), (400, Some("key")));

    let res = svc.http.delete(format!("{}/v1/cache/llm", svc.url)).send().await?;
    assert_eq!(res.status(), 401);
    // Nothing half-written.
    assert_eq!(svc.get("llm", "k").await?.0, 404);
    svc.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_hung_cache_service_is_a_miss_for_the_client() -> anyhow::Result<()> {
    // Dead: nothing listens on the port.
    let dead_port = test_support::local_listener()?.local_addr()?.port();
    let dead = CacheClient::new(&format!("http://127.0.0.1:{dead_port}"), Duration::from_millis(50), "")?;
    assert_eq!(dead.get("llm", "k").await, None);
    assert!(!dead.put("llm", "k", bytes_of("v"), None).await);
    assert_eq!(dead.get_many("llm", &["a", "b"]).await, vec![None, None]);

    // Hung: accepts connections and never answers; the client gives up after its timeout.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hung_addr = hung.local_addr()?;
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    let slow = CacheClient::new(&format!("http://{hung_addr}"), Duration::from_millis(50), "")?;
    let started = Instant::now();
    assert_eq!(slow.get("llm", "k").await, None);
    assert!(started.elapsed() < Duration::from_millis(500), "the client waited {:?}", started.elapsed());
    Ok(())
}

/// A client pool keeps idle connections for up to a minute or so: the server must not
/// close one sooner, or a request sent on it as it closes meets a broken pipe.
#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_a_few_seconds() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let redis = TestRedis::new();
    let svc = Running::start(&redis.url, &redis.prefix, |_| {}).await?;
    let mut socket = tokio::net::TcpStream::connect(svc.url.trim_start_matches("http://")).await?;
    for round in 0..2 {
        if round == 1 {
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
        socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: cache\r\n\r\n").await?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await??;
            anyhow::ensure!(n > 0, "the server closed the connection before answering request {}", round + 1);
            answer.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let have = answer.len() - (answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4);
        let mut rest = vec![0u8; length.saturating_sub(have)];
        socket.read_exact(&mut rest).await?;
    }
    svc.stop().await
}

fn bytes_of(s: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(s.as_bytes())
}
