//! The gateway's own metrics, under `headhunter_gateway_` (the log producer's `queue_*`
//! metrics sit beside them in the same registry).

use prometheus::{CounterVec, IntCounter, IntCounterVec};

service_kit::metrics! {
    pub struct GatewayMetrics {
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
        /// List pages from the API response cache: hit, miss, bypassed (Redis did not
        /// answer; read from the database).
        api_cache: IntCounterVec = "api_cache_total" ["result"],
        /// Analyses read: hit (from the cache) or miss (from the main database).
        analysis_cache: IntCounterVec = "analysis_cache_total" ["result"],
        /// Requests and LLM calls refused with 429 by a rate or concurrency limit.
        rate_limited: IntCounter = "rate_limited_total",
        /// LLM calls made while their company was past the soft share of its monthly
        /// budget (alert on any increase).
        llm_budget_soft_exceeded: IntCounter = "llm_budget_soft_exceeded_total",
        /// LLM calls refused because their company's monthly budget was spent.
        llm_budget_refused: IntCounter = "llm_budget_refused_total",
        /// Spend alerts raised (a company's LLM spend crossed one of its thresholds), by
        /// kind (daily_spend, budget_share); alert on any increase.
        spend_alerts: IntCounterVec = "spend_alerts_total" ["kind"],
        /// Spend alerts that were crossed but could not be recorded (main database).
        spend_alerts_unrecorded: IntCounter = "spend_alerts_unrecorded_total",
        /// Limit checks or spend updates Redis could not answer (requests let through).
        limits_unavailable: IntCounter = "limits_unavailable_total",
    }
}
