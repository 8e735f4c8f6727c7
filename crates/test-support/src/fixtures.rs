//! Log events for tests: valid, distinct (a new event id each), numbered.

use chrono::Utc;
use common_models::events::{LlmCallEvent, SystemLogEvent, new_event_id};
use common_models::ids::CompanyId;

/// An answered LLM call of company 7 (42 tokens), numbered `i`.
pub fn llm_event(i: usize) -> LlmCallEvent {
    LlmCallEvent {
        event_id: new_event_id(),
        created_at: Utc::now(),
        action: "chat_completion".into(),
        message: Some(format!("call {i}")),
        company_id: Some(CompanyId(7)),
        user_id: None,
        interview_id: None,
        request_id: Some(format!("req-{i}")),
        model: Some("gpt-4o-mini".into()),
        tokens_input: Some(12),
        tokens_output: Some(30),
        tokens_total: Some(42),
        usage_reported: true,
        cost_usd: Some(0.0000198),
        price_table_version: Some("test".into()),
        latency_ms: Some(15),
        time_to_first_token_ms: None,
        streaming: false,
        http_status: Some(200),
        error_type: None,
        error_message: None,
        metadata: Some(serde_json::json!({"i": i})),
        deployment_version: Some("test".into()),
        deployment_environment: Some("test".into()),
        cache_hit: false,
        cost_saved_usd: None,
        tokens_cached_input: None,
        tokens_reasoning: None,
    }
}

/// An API request log, numbered `i`.
pub fn system_event(i: usize) -> SystemLogEvent {
    SystemLogEvent {
        event_id: new_event_id(),
        created_at: Utc::now(),
        level: "info".into(),
        component: "api".into(),
        message: format!("GET /x/{i}"),
        request_method: Some("GET".into()),
        request_path: Some(format!("/x/{i}")),
        status_code: Some(200),
        latency_ms: Some(0.25),
        company_id: None,
        user_id: None,
        request_id: None,
        error_type: None,
        metadata: None,
    }
}
