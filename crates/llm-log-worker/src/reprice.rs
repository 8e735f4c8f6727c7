//! `llm-log-worker reprice`: prices logged calls again from a corrected price table,
//! and brings the rollups along.
//!
//! Each UTC day of the range is one transaction: it holds the rollups against
//! concurrent additions (as a rebuild does), reads the day's calls page by page, prices
//! each exactly as the gateway does ([`PriceTable::price`]: the entry in force on the
//! call's day, each usage component at its price), writes the cost, the saving of a
//! cache hit, the entry's version and the `unpriced_model` mark where any of them
//! differs, and rebuilds the day's rollups from the rows. Nothing else in a row
//! changes; a day without a change keeps its rollups as they are. Running it twice
//! changes nothing the second time. Correct the gateway's table first, so calls logged
//! meanwhile are priced right as well.

use chrono::{DateTime, TimeDelta, Utc};
use common_models::pricing::{PriceTable, Tokens};
use diesel::QueryableByName;
use diesel::sql_query;
use diesel::sql_types::{Array, BigInt, Bool, Int4, Nullable, Text, Timestamptz, Uuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::rollup::{lock_for_rebuild, rebuild_locked, sql_time, whole_hours};

/// Calls read (and written back) at a time.
const PAGE: i64 = 5_000;

const READ_PAGE: &str = "SELECT event_id, created_at, model, metadata->>'response_model' AS response_model, \
        tokens_input, tokens_cached_input, tokens_output, cache_hit \
     FROM llm_logs \
     WHERE created_at >= $1::text::timestamptz AND created_at < $2::text::timestamptz \
       AND ($3::text IS NULL OR model = $3) \
       AND (created_at, event_id) > ($4::text::timestamptz, $5::uuid) \
     ORDER BY created_at, event_id LIMIT $6";

/// Costs travel as text, as the COPY path writes them, so an unchanged price gives the
/// stored value back to the last digit.
const WRITE_PAGE: &str = "UPDATE llm_logs AS t SET cost_usd = u.cost::numeric, cost_saved_usd = u.saved::numeric, \
        price_table_version = u.version, \
        metadata = CASE WHEN u.version IS NULL AND t.tokens_input IS NOT NULL AND t.tokens_output IS NOT NULL \
                        THEN coalesce(t.metadata, '{}'::jsonb) || '{\"unpriced_model\": true}'::jsonb \
                        ELSE t.metadata - 'unpriced_model' END \
     FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[]) AS u(id, at, cost, saved, version) \
     WHERE t.created_at >= $6::text::timestamptz AND t.created_at < $7::text::timestamptz \
       AND t.event_id = u.id AND t.created_at = u.at \
       AND (t.cost_usd, t.cost_saved_usd, t.price_table_version) \
           IS DISTINCT FROM (u.cost::numeric(16, 10), u.saved::numeric(16, 10), u.version)";

#[derive(QueryableByName)]
struct Call {
    #[diesel(sql_type = Uuid)]
    event_id: uuid::Uuid,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    model: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    response_model: Option<String>,
    #[diesel(sql_type = Nullable<Int4>)]
    tokens_input: Option<i32>,
    #[diesel(sql_type = Nullable<Int4>)]
    tokens_cached_input: Option<i32>,
    #[diesel(sql_type = Nullable<Int4>)]
    tokens_output: Option<i32>,
    #[diesel(sql_type = Bool)]
    cache_hit: bool,
}

/// What a run did (or, dry, would do).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub days: usize,
    /// Calls read.
    pub calls: u64,
    /// Calls whose cost, saving or version changed.
    pub changed: u64,
    /// Days whose rollups were rebuilt.
    pub days_rebuilt: usize,
}

/// What one call costs under `prices`: (cost, saving, version), as the gateway logs it.
fn price(prices: &PriceTable, call: &Call) -> (Option<String>, Option<String>, Option<String>) {
    let names: Vec<&str> = [call.model.as_deref(), call.response_model.as_deref()].into_iter().flatten().collect();
    let tokens = match (call.tokens_input, call.tokens_output) {
        (Some(input), Some(output)) => {
            Some(Tokens { input, cached_input: call.tokens_cached_input.unwrap_or(0), output })
        }
        _ => None,
    };
    let charge = prices.charge(&names, tokens, call.created_at.date_naive(), call.cache_hit);
    let text = |c: Option<f64>| c.map(|c| c.to_string());
    (text(charge.cost_usd), text(charge.cost_saved_usd), charge.version)
}

enum DayEnd {
    Db(diesel::result::Error),
    /// A dry run's day, rolled back: (calls, changed).
    DryRun(u64, u64),
}

impl From<diesel::result::Error> for DayEnd {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(err)
    }
}

/// Prices again the calls of the whole UTC hours covering [`from`, `to`) (of `model`
/// only, when given), one day per transaction, calling `progress(done, total, changed)`
/// after each day. `dry_run` counts what would change and rolls each day back.
pub async fn reprice(
    conn: &mut AsyncPgConnection,
    prices: &PriceTable,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    model: Option<&str>,
    dry_run: bool,
    mut progress: impl FnMut(usize, usize, u64),
) -> anyhow::Result<Outcome> {
    prices.validate()?;
    let (start, end) = whole_hours(from, to);
    let total = usize::try_from((end - start).num_hours().max(0).unsigned_abs().div_ceil(24)).unwrap_or(0);
    let mut outcome = Outcome::default();
    let mut at = start;
    while at < end {
        let until = (at + TimeDelta::days(1)).min(end);
        let (lo, hi) = (sql_time(at), sql_time(until));
        let day = conn
            .transaction::<(u64, u64), DayEnd, _>(async move |conn| {
                lock_for_rebuild(conn).await?;
                let (calls, changed) = reprice_span(conn, prices, &lo, &hi, model).await?;
                if dry_run {
                    return Err(DayEnd::DryRun(calls, changed));
                }
                if changed > 0 {
                    rebuild_locked(conn, &lo, &hi).await?;
                }
                Ok((calls, changed))
            })
            .await;
        let (calls, changed) = match day {
            Ok(counts) => counts,
            Err(DayEnd::DryRun(calls, changed)) => (calls, changed),
            Err(DayEnd::Db(err)) => return Err(err.into()),
        };
        outcome.days += 1;
        outcome.calls += calls;
        outcome.changed += changed;
        if changed > 0 && !dry_run {
            outcome.days_rebuilt += 1;
        }
        at = until;
        progress(outcome.days, total, outcome.changed);
    }
    Ok(outcome)
}

/// Prices the calls of [`lo`, `hi`) page by page; returns (calls read, calls changed).
async fn reprice_span(
    conn: &mut AsyncPgConnection,
    prices: &PriceTable,
    lo: &str,
    hi: &str,
    model: Option<&str>,
) -> diesel::QueryResult<(u64, u64)> {
    let (mut calls, mut changed) = (0u64, 0u64);
    let mut after = (lo.to_owned(), uuid::Uuid::nil());
    loop {
        let page: Vec<Call> = sql_query(READ_PAGE)
            .bind::<Text, _>(lo)
            .bind::<Text, _>(hi)
            .bind::<Nullable<Text>, _>(model)
            .bind::<Text, _>(&after.0)
            .bind::<Uuid, _>(after.1)
            .bind::<BigInt, _>(PAGE)
            .load(conn)
            .await?;
        let Some(last) = page.last() else { break };
        after = (sql_time(last.created_at), last.event_id);
        calls += page.len() as u64;
        let (mut costs, mut saved, mut versions) = (Vec::new(), Vec::new(), Vec::new());
        for call in &page {
            let (cost, saving, version) = price(prices, call);
            costs.push(cost);
            saved.push(saving);
            versions.push(version);
        }
        let written = sql_query(WRITE_PAGE)
            .bind::<Array<Uuid>, _>(page.iter().map(|c| c.event_id).collect::<Vec<_>>())
            .bind::<Array<Timestamptz>, _>(page.iter().map(|c| c.created_at).collect::<Vec<_>>())
            .bind::<Array<Nullable<Text>>, _>(costs)
            .bind::<Array<Nullable<Text>>, _>(saved)
            .bind::<Array<Nullable<Text>>, _>(versions)
            .bind::<Text, _>(lo)
            .bind::<Text, _>(hi)
            .execute(conn)
            .await?;
        changed += written as u64;
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    Ok((calls, changed))
}

/// The `[pricing]` table of a TOML file (the gateway's own configuration file does).
pub fn load_prices(path: &std::path::Path) -> anyhow::Result<PriceTable> {
    let file = config::File::from(path).format(config::FileFormat::Toml);
    let table: PriceTable = config::Config::builder()
        .add_source(file)
        .build()
        .and_then(|c| c.get("pricing"))
        .map_err(|e| anyhow::anyhow!("{}: no readable [pricing] table: {e}", path.display()))?;
    table.validate()?;
    Ok(table)
}
