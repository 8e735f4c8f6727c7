//! One record per API request, for whatever a service keeps them in (headhunter
//! services send them to `system_logs` through the queue). The middleware,
//! [`log_requests`], sits inside the request-id layer: it counts every request by
//! method, route pattern and status, times it by route, and hands every request but
//! the probes (`/healthz`, `/readyz`, `/metrics`: they would drown the table) to the
//! [`RequestSink`] in the app's [`RequestLog`]. A handler that learns who is calling
//! says so with [`Requester::attach`], and the record carries it.

use std::time::{Duration, SystemTime};

#[cfg(feature = "http")]
pub use http::{HttpMetrics, RequestLog, log_requests};

/// The longest request path a record keeps (an attacker's 64 KiB path must not travel
/// into the logs); longer ones are cut (see [`cut`]).
pub const MAX_PATH_BYTES: usize = 512;

/// Paths that are counted but not recorded.
pub const PROBE_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Who made a request, as far as the service found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requester {
    pub company_id: Option<i64>,
    pub user_id: Option<i64>,
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub started_at: SystemTime,
    pub method: String,
    /// The path, cut to [`MAX_PATH_BYTES`].
    pub path: String,
    pub status: u16,
    pub elapsed: Duration,
    pub request_id: Option<String>,
    pub requester: Requester,
}

/// Where records go. Called on the request's task: it must not block.
pub trait RequestSink: Send + Sync + 'static {
    fn record(&self, record: RequestRecord);
}

/// The methods counted by name; any other is counted as `other`, so made-up methods
/// cannot create metric series.
pub const KNOWN_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// `method` as a metric label: itself if known, else `other`.
pub fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS.into_iter().find(|m| *m == method).unwrap_or("other")
}

/// `text`, cut to at most `max` bytes at a character boundary, ending with `…` when
/// something was cut. NUL characters are dropped: PostgreSQL text cannot hold them, and
/// a row carrying one would be refused.
pub fn cut(text: &str, max: usize) -> String {
    if text.contains('\0') {
        return cut(&text.replace('\0', ""), max);
    }
    if text.len() <= max {
        return text.to_owned();
    }
    const MARK: &str = "…";
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

#[cfg(feature = "http")]
mod http {
    use std::sync::Arc;

    use super::*;

    use actix_web::body::MessageBody;
    use actix_web::dev::{ServiceRequest, ServiceResponse};
    use actix_web::middleware::Next;
    use actix_web::{HttpMessage, HttpRequest, web};
    use prometheus::{HistogramVec, IntCounterVec};

    use crate::request_id::RequestId;

    impl Requester {
        /// Records on `req` who is calling, for its log record.
        pub fn attach(self, req: &HttpRequest) {
            req.extensions_mut().insert(self);
        }
    }

    crate::metrics! {
        /// Every service's API metrics (under the service's prefix).
        pub struct HttpMetrics {
            /// API requests by method, route pattern and status.
            requests: IntCounterVec = "http_requests_total" ["method", "route", "status"],
            /// API request duration by route pattern.
            duration: HistogramVec = "http_request_duration_seconds" ["route"]
                buckets [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
        }
    }

    /// What [`log_requests`] needs, as app data (`web::Data<RequestLog>`).
    #[derive(Clone)]
    pub struct RequestLog {
        pub sink: Arc<dyn RequestSink>,
        pub metrics: HttpMetrics,
    }

    impl RequestLog {
        /// Registers the HTTP metrics in `registry`; records go to `sink`.
        pub fn register(registry: &prometheus::Registry, sink: Arc<dyn RequestSink>) -> prometheus::Result<Self> {
            Ok(Self { sink, metrics: HttpMetrics::register(registry)? })
        }
    }

    /// `App::wrap(from_fn(request_log::log_requests))`, inside `request_id::assign`.
    pub async fn log_requests(
        req: ServiceRequest,
        next: Next<impl MessageBody + 'static>,
    ) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
        let started = std::time::Instant::now();
        let started_at = SystemTime::now();
        let method = cut(req.method().as_str(), 16);
        let path = cut(req.path(), MAX_PATH_BYTES);
        let log = req.app_data::<web::Data<RequestLog>>().cloned();

        let res = next.call(req).await?;

        let Some(log) = log else { return Ok(res) };
        let status = res.status().as_u16();
        let elapsed = started.elapsed();
        let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
        log.metrics.requests.with_label_values(&[method_label(&method), &route, &status.to_string()]).inc();
        log.metrics.duration.with_label_values(&[&route]).observe(elapsed.as_secs_f64());
        if PROBE_PATHS.contains(&path.as_str()) {
            return Ok(res);
        }
        let requester = res.request().extensions().get::<Requester>().copied().unwrap_or_default();
        log.sink.record(RequestRecord {
            started_at,
            method,
            path,
            status,
            elapsed,
            request_id: RequestId::of(res.request()),
            requester,
        });
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(cut("short", 10), "short");
        let cut_path = cut(&format!("/{}", "é".repeat(40_000)), MAX_PATH_BYTES);
        assert!(cut_path.len() <= MAX_PATH_BYTES && cut_path.ends_with('…'), "{}", cut_path.len());
        assert_eq!(cut("chatcmpl-\0abc\0", 200), "chatcmpl-abc");
    }

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!((method_label("FOO1"), method_label("FOO2")), ("other", "other"));
    }
}
