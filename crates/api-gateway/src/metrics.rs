//! The gateway's Prometheus metrics, all under `headhunter_gateway_`.

use prometheus::{CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct GatewayMetrics {
    pub registry: Registry,
    /// API requests by method, route pattern and status.
    pub http_requests: IntCounterVec,
    /// API request duration by route pattern.
    pub http_duration: HistogramVec,
    /// LLM calls by outcome (`ok` or the error type).
    pub llm_calls: IntCounterVec,
    /// Tokens reported by the upstream, by direction (`input`, `output`).
    pub llm_tokens: IntCounterVec,
    /// Cost of priced calls in USD.
    pub llm_cost_usd: CounterVec,
    /// LLM results cache look-ups and stores: `hit`, `miss`, `stored`, `store_failed`.
    pub llm_cache: IntCounterVec,
    /// Log events handed to Redis, per stream.
    pub log_events_published: IntCounterVec,
    /// Log events given up, per stream and reason (`buffer_full`, `shutdown`, `encode`).
    pub log_events_dropped: IntCounterVec,
    /// Log events in memory not yet accepted by Redis (waiting, or in the batch being sent).
    pub log_events_buffered: IntGauge,
    /// Failed XADD round trips.
    pub log_publish_errors: IntCounterVec,
}

impl GatewayMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("headhunter_gateway".into()), None)?;
        let m = Self {
            http_requests: IntCounterVec::new(
                Opts::new("http_requests_total", "API requests"),
                &["method", "route", "status"],
            )?,
            http_duration: HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "API request duration").buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
                &["route"],
            )?,
            llm_calls: IntCounterVec::new(Opts::new("llm_calls_total", "LLM calls by outcome"), &["outcome"])?,
            llm_tokens: IntCounterVec::new(Opts::new("llm_tokens_total", "Tokens reported upstream"), &["direction"])?,
            llm_cost_usd: CounterVec::new(Opts::new("llm_cost_usd_total", "Cost of priced LLM calls"), &["model"])?,
            llm_cache: IntCounterVec::new(Opts::new("llm_cache_total", "LLM results cache activity"), &["result"])?,
            log_events_published: IntCounterVec::new(
                Opts::new("log_events_published_total", "Log events handed to Redis"),
                &["stream"],
            )?,
            log_events_dropped: IntCounterVec::new(
                Opts::new("log_events_dropped_total", "Log events given up"),
                &["stream", "reason"],
            )?,
            log_events_buffered: IntGauge::new("log_events_buffered", "Log events waiting for Redis")?,
            log_publish_errors: IntCounterVec::new(
                Opts::new("log_publish_errors_total", "Failed XADD round trips"),
                &["kind"],
            )?,
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 10] = [
            Box::new(m.llm_cache.clone()),
            Box::new(m.http_requests.clone()),
            Box::new(m.http_duration.clone()),
            Box::new(m.llm_calls.clone()),
            Box::new(m.llm_tokens.clone()),
            Box::new(m.llm_cost_usd.clone()),
            Box::new(m.log_events_published.clone()),
            Box::new(m.log_events_dropped.clone()),
            Box::new(m.log_events_buffered.clone()),
            Box::new(m.log_publish_errors.clone()),
        ];
        for c in collectors {
            m.registry.register(c)?;
        }
        Ok(m)
    }
}
