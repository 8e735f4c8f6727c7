//! `llm-log-worker reprice`, run as an operator would after a price correction: the
//! corrected calls and the rollups of their hours change, and nothing else does.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common_models::db::Database;
use common_models::events::LlmCallEvent;
use common_models::ids::CompanyId;
use common_models::pricing::{ModelPrice, PriceTable, Tokens};
use diesel::sql_types::{Bool, Double, Nullable, Text};
use diesel_async::RunQueryDsl;
use llm_log_worker::writer::AnalyticsWriter;
use test_support::fixtures::llm_event;
use test_support::{TempDir, TestDb};

#[derive(diesel::QueryableByName)]
struct Snapshot {
    #[diesel(sql_type = Text)]
    s: String,
}

/// The rows of `sql` as sorted text lines.
async fn lines(db: &TestDb, sql: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = db.connect().await?;
    let all: Snapshot = diesel::sql_query(format!(
        "SELECT coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '') AS s FROM ({sql}) AS r"
    ))
    .get_result(&mut conn)
    .await?;
    Ok(all.s.lines().map(str::to_owned).collect())
}

/// Every column but the three a re-pricing may change (and the metadata's mark).
const UNTOUCHED: &str = "SELECT event_id, created_at, action, company_id, user_id, model, tokens_input, \
    tokens_output, tokens_cached_input, tokens_reasoning, latency_ms, cache_hit, http_status, error_type, \
    metadata - 'unpriced_model' AS metadata FROM llm_logs";
const PRICED: &str = "SELECT event_id, cost_usd, cost_saved_usd, price_table_version FROM llm_logs";
const ROLLUPS: &str = "SELECT * FROM llm_usage_hourly";
const ROLLUPS_COARSE: &str = "SELECT 'models', m::text FROM llm_usage_hourly_models m UNION ALL SELECT 'grains', g::text FROM llm_usage_hourly_grains g \
    UNION ALL SELECT 'totals', o::text FROM llm_usage_hourly_totals o";

fn entry(name: &str, from: Option<&str>, input: f64, cached: f64, output: f64) -> ModelPrice {
    ModelPrice {
        name: name.to_owned(),
        effective_from: from.and_then(|d| d.parse().ok()),
        input_per_million: input,
        cached_input_per_million: Some(cached),
        output_per_million: output,
    }
}

/// The table the calls were logged under.
fn logged_prices() -> PriceTable {
    PriceTable {
        version: "v1".into(),
        models: vec![entry("gpt-4o-mini", None, 0.15, 0.075, 0.6), entry("gpt-4o", None, 2.5, 1.25, 10.0)],
    }
}

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, day, hour, minute, 0).single().unwrap_or_default()
}

/// `e` priced under `prices` as the gateway logs a call.
fn priced(mut e: LlmCallEvent, prices: &PriceTable) -> LlmCallEvent {
    let tokens = match (e.tokens_input, e.tokens_output) {
        (Some(input), Some(output)) => Some(Tokens { input, cached_input: e.tokens_cached_input.unwrap_or(0), output }),
        _ => None,
    };
    let model = e.model.clone().unwrap_or_default();
    let charge = prices.charge(&[&model], tokens, e.created_at.date_naive(), e.cache_hit);
    (e.cost_usd, e.cost_saved_usd, e.price_table_version) = (charge.cost_usd, charge.cost_saved_usd, charge.version);
    e
}

/// Three days of calls (Oct 10-12), priced as the gateway priced them: two models, one
/// without a price, prompt-cache tokens, cache hits, errors without usage.
fn calls(prices: &PriceTable) -> Vec<LlmCallEvent> {
    (0..900)
        .map(|i| {
            let mut e = llm_event(i);
            e.created_at = at(10 + (i % 3) as u32, (i % 24) as u32, (i % 60) as u32);
            e.company_id = Some(CompanyId(1 + (i % 2) as i64));
            e.model = Some(["gpt-4o-mini", "gpt-4o", "local-llama"][(i / 3) % 3].into());
            e.tokens_input = Some(100 + (i % 500) as i32);
            e.tokens_output = Some(10 + (i % 90) as i32);
            e.tokens_total = Some(e.tokens_input.unwrap_or(0) + e.tokens_output.unwrap_or(0));
            e.tokens_cached_input = (i % 4 == 0).then_some(50);
            e.cache_hit = i % 10 == 0;
            if i % 13 == 0 {
                (e.tokens_input, e.tokens_output, e.tokens_total, e.tokens_cached_input) = (None, None, None, None);
                (e.usage_reported, e.error_type, e.http_status) = (false, Some("upstream_error".into()), Some(502));
            }
            let e = priced(e, prices);
            let unpriced = e.tokens_input.is_some() && e.price_table_version.is_none();
            LlmCallEvent { metadata: unpriced.then(|| serde_json::json!({"unpriced_model": true})), ..e }
        })
        .collect()
}

fn reprice(db: &TestDb, prices: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-log-worker"))
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("LOG_FORMAT", "text")
        .arg("reprice")
        .arg("--prices")
        .arg(prices)
        .args(args)
        .output()?;
    anyhow::ensure!(out.status.success(), "reprice failed: {}", String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(String::from_utf8_lossy(&out.stderr).contains("repricing: day 1/"), "no progress shown");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(diesel::QueryableByName, Debug)]
struct Stored {
    #[diesel(sql_type = Nullable<Double>)]
    cost: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    saved: Option<f64>,
    #[diesel(sql_type = Nullable<Text>)]
    version: Option<String>,
    #[diesel(sql_type = Bool)]
    unpriced: bool,
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 1e-10,
        (a, b) => a == b,
    }
}

#[tokio::test]
async fn a_price_correction_changes_the_corrected_calls_and_their_rollups_and_nothing_else() -> anyhow::Result<()> {
    let db = TestDb::migrated(Database::Analytics).await?;
    let pool = service_kit::db::build_pool(&db.url, "reprice-test", 2)?;
    let writer = AnalyticsWriter::new(pool, Duration::from_secs(5), Duration::from_secs(30));
    let events = calls(&logged_prices());
    for batch in events.chunks(200) {
        let refs: Vec<&LlmCallEvent> = batch.iter().collect();
        writer.write(&refs, &[]).await?;
    }
    let mut conn = db.connect().await?;
    let mut folder = llm_log_worker::rollup::Folder::new(&db.url);
    assert!(folder.catch_up(Duration::from_secs(120)).await?, "the rollups lag");

    // The price file an operator writes: gpt-4o was overcharged from Oct 11 (a new entry
    // from that day), local-llama has a price from Oct 12; gpt-4o-mini's is unchanged.
    let dir = TempDir::new("prices")?;
    let file = dir.path.join("prices.toml");
    std::fs::write(
        &file,
        "[pricing]\nversion = \"v2\"\n\
         [[pricing.models]]\nname = \"gpt-4o-mini\"\ninput_per_million = 0.15\ncached_input_per_million = 0.075\noutput_per_million = 0.6\n\
         [[pricing.models]]\nname = \"gpt-4o\"\ninput_per_million = 2.5\ncached_input_per_million = 1.25\noutput_per_million = 10.0\n\
         [[pricing.models]]\nname = \"gpt-4o\"\neffective_from = \"2026-10-11\"\ninput_per_million = 2.0\ncached_input_per_million = 0.5\noutput_per_million = 8.0\n\
         [[pricing.models]]\nname = \"local-llama\"\neffective_from = \"2026-10-12\"\ninput_per_million = 0.01\noutput_per_million = 0.02\n",
    )?;
    let corrected = llm_log_worker::reprice::load_prices(&file)?;

    let untouched = lines(&db, UNTOUCHED).await?;
    let costs_before = lines(&db, PRICED).await?;
    let mini_costs = "SELECT event_id, cost_usd, cost_saved_usd FROM llm_logs WHERE model = 'gpt-4o-mini'";
    let mini_before = lines(&db, mini_costs).await?;
    let rollups_before = (lines(&db, ROLLUPS).await?, lines(&db, ROLLUPS_COARSE).await?);
    let oct10 = "SELECT * FROM llm_usage_hourly WHERE hour < '2026-10-11T00:00:00Z'";
    let oct10_before = lines(&db, oct10).await?;

    // A dry run says what would change, and changes nothing.
    let said = reprice(&db, &file, &["--from", "2026-10-11", "--to", "2026-10-13", "--dry-run"])?;
    assert!(said.contains("would change"), "{said}");
    assert_eq!(lines(&db, PRICED).await?, costs_before);

    let said = reprice(&db, &file, &["--from", "2026-10-11", "--to", "2026-10-13"])?;
    assert!(said.contains("rollups rebuilt for 2 days"), "{said}");

    // Every column but the price's is as it was; gpt-4o-mini's costs to the last digit.
    assert_eq!(lines(&db, UNTOUCHED).await?, untouched);
    assert_eq!(lines(&db, mini_costs).await?, mini_before);
    // Each call of Oct 11-12 is priced as the gateway prices it under the new table (the
    // version says which entry); Oct 10's are as logged.
    let mut changed = 0;
    for before in &events {
        let after = if before.created_at >= at(11, 0, 0) { priced(before.clone(), &corrected) } else { before.clone() };
        let stored: Stored = diesel::sql_query(
            "SELECT cost_usd::float8 AS cost, cost_saved_usd::float8 AS saved, price_table_version AS version, \
                    coalesce(metadata ? 'unpriced_model', false) AS unpriced \
             FROM llm_logs WHERE event_id = $1::text::uuid",
        )
        .bind::<Text, _>(before.event_id.to_string())
        .get_result(&mut conn)
        .await?;
        let what = format!("{:?} on {}: {stored:?} vs {after:?}", after.model, after.created_at);
        assert!(close(stored.cost, after.cost_usd) && close(stored.saved, after.cost_saved_usd), "{what}");
        assert_eq!(stored.version, after.price_table_version, "{what}");
        assert_eq!(stored.unpriced, after.tokens_input.is_some() && after.price_table_version.is_none(), "{what}");
        let key = |e: &LlmCallEvent| (e.cost_usd, e.cost_saved_usd, e.price_table_version.clone());
        changed += usize::from(key(before) != key(&after));
    }
    assert!(changed > 300, "only {changed} calls were corrected");
    assert!(said.contains(&format!(", {changed} changed")), "{changed}: {said}");

    // The rollups follow: equal to a rebuild from the corrected rows, Oct 10's untouched.
    let rollups_after = (lines(&db, ROLLUPS).await?, lines(&db, ROLLUPS_COARSE).await?);
    assert_ne!(rollups_after, rollups_before);
    assert_eq!(lines(&db, oct10).await?, oct10_before);
    llm_log_worker::rollup::rebuild(&mut conn, at(10, 0, 0), at(13, 0, 0), |_, _| {}).await?;
    assert_eq!((lines(&db, ROLLUPS).await?, lines(&db, ROLLUPS_COARSE).await?), rollups_after);
    assert_eq!(
        lines(&db, "SELECT sum(cost_usd) FROM llm_usage_hourly").await?,
        lines(&db, "SELECT sum(cost_usd) FROM llm_logs").await?
    );

    // Run again: nothing changes.
    let costs_after = lines(&db, PRICED).await?;
    let said = reprice(&db, &file, &["--from", "2026-10-11", "--to", "2026-10-13"])?;
    assert!(said.contains(", 0 changed") && said.contains("rollups rebuilt for 0 days"), "{said}");
    assert_eq!(lines(&db, PRICED).await?, costs_after);
    Ok(())
}
