//! The gateway's own metrics, under `headhunter_gateway_` (the log producer's `queue_*`
//! metrics sit beside them in the same registry).

use prometheus::{CounterVec, HistogramVec, IntCounterVec};

service_kit::metrics! {
    pub struct GatewayMetrics {
        /// API requests by method, route pattern and status.
        http_requests: IntCounterVec = "http_requests_total" ["method", "route", "status"],
        /// API request duration by route pattern.
        http_duration: HistogramVec = "http_request_duration_seconds" ["route"]
            buckets [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
        /// LLM calls by outcome (ok or the error type).
        llm_calls: IntCounterVec = "llm_calls_total" ["outcome"],
        /// Tokens reported by the upstream, by direction (input, output).
        llm_tokens: IntCounterVec = "llm_tokens_total" ["direction"],
        /// Cost of priced LLM calls in USD, by the price table entry.
        llm_cost_usd: CounterVec = "llm_cost_usd_total" ["model"],
        /// LLM results cache activity: hit, miss, unsealed (a value this gateway did not
        /// seal, ignored), stored, store_failed.
        llm_cache: IntCounterVec = "llm_cache_total" ["result"],
        /// Uploaded CV files: accepted (queued for processing) or duplicate (the
        /// company's existing CV for the same file was returned).
        cv_uploads: IntCounterVec = "cv_uploads_total" ["result"],
        /// Match results of a CV's page of jobs: hit (the cached result was current) or
        /// miss (asked cv-processor).
        match_cache: IntCounterVec = "match_cache_total" ["result"],
    }
}
