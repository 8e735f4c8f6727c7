//! A typed client of cache-service. Every call has a short timeout, and every failure
//! (cache-service slow, down, or refusing) reads as a miss or an unstored write: the
//! cache can make a caller faster, never make it fail.

use std::time::Duration;

use bytes::Bytes;
use common_models::cache_wire;

#[derive(Clone)]
pub struct CacheClient {
    base: String,
    http: reqwest::Client,
}

impl CacheClient {
    /// `base_url` like `http://127.0.0.1:8081`; `timeout` bounds each call whole;
    /// `api_key` (cache-service's `CACHE_API_KEY`, empty for none) goes with every call.
    pub fn new(base_url: &str, timeout: Duration, api_key: &str) -> reqwest::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if !api_key.is_empty()
            && let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {api_key}"))
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Self { base: base_url.trim_end_matches('/').to_owned(), http })
    }

    fn url(&self, namespace: &str, key: &str) -> String {
        format!("{}/v1/cache/{namespace}/{}", self.base, encode(key))
    }

    /// The cached value, or `None` on a miss or any failure.
    pub async fn get(&self, namespace: &str, key: &str) -> Option<Bytes> {
        let res = self.http.get(self.url(namespace, key)).send().await;
        match res {
            Ok(r) if r.status().is_success() => r.bytes().await.ok(),
            Ok(_) => None,
            Err(err) => {
                tracing::debug!(error = %err, namespace, "cache get failed, treated as a miss");
                None
            }
        }
    }

    /// Stores a value (`ttl`: the namespace default when `None`); false if not stored.
    pub async fn put(&self, namespace: &str, key: &str, value: Bytes, ttl: Option<Duration>) -> bool {
        let mut req = self.http.put(self.url(namespace, key)).body(value);
        if let Some(ttl) = ttl {
            req = req.query(&[("ttl", ttl.as_secs().max(1))]);
        }
        match req.send().await {
            Ok(r) => r.status().is_success(),
            Err(err) => {
                tracing::debug!(error = %err, namespace, "cache put failed");
                false
            }
        }
    }

    /// Removes a key everywhere; false if that could not be confirmed.
    pub async fn delete(&self, namespace: &str, key: &str) -> bool {
        self.http.delete(self.url(namespace, key)).send().await.is_ok_and(|r| r.status().is_success())
    }

    /// Values for `keys`, in order; all misses on failure.
    pub async fn get_many(&self, namespace: &str, keys: &[&str]) -> Vec<Option<Vec<u8>>> {
        let url = format!("{}/v1/cache/{namespace}/_batch/get", self.base);
        let body = serde_json::json!({"keys": keys});
        let answer = async {
            let r = self.http.post(url).json(&body).send().await.ok()?;
            if !r.status().is_success() {
                return None;
            }
            let framed = r.bytes().await.ok()?;
            cache_wire::decode_values(&framed).ok().filter(|v| v.len() == keys.len())
        };
        answer.await.unwrap_or_else(|| vec![None; keys.len()])
    }

    /// Stores several values in one call; false if not stored.
    pub async fn put_many(&self, namespace: &str, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> bool {
        let Ok(body) = cache_wire::encode_entries(entries) else { return false };
        let mut req = self.http.post(format!("{}/v1/cache/{namespace}/_batch/put", self.base)).body(body);
        if let Some(ttl) = ttl {
            req = req.query(&[("ttl", ttl.as_secs().max(1))]);
        }
        req.send().await.is_ok_and(|r| r.status().is_success())
    }
}

/// Percent-encodes everything but unreserved characters and `:` (common in keys).
fn encode(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
