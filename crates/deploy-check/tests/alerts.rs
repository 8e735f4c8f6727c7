//! The alert rules and the Grafana dashboard speak of the metrics the binaries export:
//! an alert on a renamed metric would never fire, and its promtool tests (which feed it
//! made-up series) would not notice; a panel would stay empty.

use std::collections::BTreeSet;

#[test]
fn every_metric_the_alerts_and_the_dashboard_use_is_exported_by_a_service() {
    let sources = [
        ("deploy/prometheus/alerts.yaml", include_str!("../../../deploy/prometheus/alerts.yaml")),
        ("deploy/grafana/headhunter.json", include_str!("../../../deploy/grafana/headhunter.json")),
    ];
    let http = service_kit::request_log::HttpMetrics::NAMES;
    let exported: BTreeSet<String> = [
        ("headhunter_gateway_", api_gateway::metrics::GatewayMetrics::NAMES),
        ("headhunter_gateway_", task_queue::ProducerMetrics::NAMES),
        ("headhunter_gateway_", http),
        ("headhunter_log_worker_", llm_log_worker::metrics::WorkerMetrics::NAMES),
        ("headhunter_log_worker_", task_queue::ConsumerMetrics::NAMES),
        ("headhunter_cache_", cache_service::metrics::CacheMetrics::NAMES),
        ("headhunter_cv_processor_", cv_processor::metrics::ProcessorMetrics::NAMES),
        ("headhunter_cv_processor_", task_queue::ConsumerMetrics::NAMES),
        ("headhunter_cv_processor_", task_queue::ProducerMetrics::NAMES),
        ("headhunter_cv_processor_", http),
    ]
    .iter()
    .flat_map(|(prefix, names)| names.iter().map(move |n| format!("{prefix}{n}")))
    .collect();
    for (file, text) in sources {
        let mut used = BTreeSet::new();
        for (i, _) in text.match_indices("headhunter_") {
            let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
            used.insert(base.to_owned());
        }
        assert!(used.len() >= 20, "{file}: found only {used:?}");
        let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(missing.is_empty(), "{file} uses metrics no service exports: {missing:?}");
    }
}
