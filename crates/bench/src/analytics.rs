//! The dashboard's main queries over a month of raw `llm_logs` (10 million rows by
//! default): from the hourly rollups, as the analytics API runs them, against the same
//! figures computed from the raw rows, side by side on one database; then each
//! dashboard page's queries together, as the page runs them.

use std::time::{Duration, Instant};

use chrono::{DurationRound, TimeDelta, Utc};
use common_models::db::{Database, run_migrations};
use diesel::sql_types::{BigInt, Double, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use crate::{count, create_database, drop_database};

const COMPANIES: i64 = 50;
const CHUNK: u64 = 500_000;

/// With `keep`, the database is left for inspection (its name is printed); `reuse`
/// measures again on a database an earlier `keep` run left.
pub async fn run(rows: u64, rounds: usize, keep: bool, reuse: Option<String>) -> anyhow::Result<()> {
    if let Some(name) = reuse {
        return measure(&format!("{}/{name}", crate::postgres_server_url()), rows, rounds.max(1), false).await;
    }
    let (url, name) = create_database("analytics").await?;
    let result = measure(&url, rows, rounds.max(1), true).await;
    if keep {
        eprintln!("kept the database {name}");
    } else {
        drop_database(&name).await?;
    }
    result
}

/// Past this much time on the raw side of a query, its rounds stop (at least three run).
const RAW_BUDGET: Duration = Duration::from_secs(60);

/// One query of the dashboard.
struct Query {
    name: &'static str,
    bucket: Option<&'static str>,
    group: Option<&'static str>,
    /// One company (varied per round) or all.
    company: bool,
    by_cost: bool,
    tz: &'static str,
}

const QUERIES: [Query; 6] = [
    Query {
        name: "company: 30 days by day",
        bucket: Some("day"),
        group: None,
        company: true,
        by_cost: false,
        tz: "Europe/Berlin",
    },
    Query {
        name: "company: by day and model",
        bucket: Some("day"),
        group: Some("model"),
        company: true,
        by_cost: false,
        tz: "Europe/Berlin",
    },
    Query {
        name: "company: by day, Asia/Kolkata",
        bucket: Some("day"),
        group: None,
        company: true,
        by_cost: false,
        tz: "Asia/Kolkata",
    },
    Query {
        name: "company: top users",
        bucket: None,
        group: Some("user"),
        company: true,
        by_cost: true,
        tz: "Europe/Berlin",
    },
    Query {
        name: "all companies: by day",
        bucket: Some("day"),
        group: None,
        company: false,
        by_cost: false,
        tz: "UTC",
    },
    Query {
        name: "all companies: top companies",
        bucket: None,
        group: Some("company"),
        company: false,
        by_cost: true,
        tz: "UTC",
    },
];

#[derive(diesel::QueryableByName)]
struct Figure {
    #[diesel(sql_type = BigInt)]
    calls: i64,
    #[diesel(sql_type = Double)]
    cost_usd: f64,
}

async fn measure(url: &str, rows: u64, rounds: usize, fresh: bool) -> anyhow::Result<()> {
    run_migrations(url, Database::Analytics).await?;
    let mut conn = AsyncPgConnection::establish(url).await?;
    let (start, end) = if fresh {
        let end = Utc::now().duration_trunc(TimeDelta::hours(1))?;
        let start = end - TimeDelta::days(30);
        generate(&mut conn, start, end, rows).await?;
        (start, end)
    } else {
        #[derive(diesel::QueryableByName)]
        struct First {
            #[diesel(sql_type = Timestamptz)]
            at: chrono::DateTime<Utc>,
        }
        let first: First =
            diesel::sql_query("SELECT min(created_at) AS at FROM llm_logs").get_result(&mut conn).await?;
        (first.at, first.at + TimeDelta::days(30))
    };
    report(url, &mut conn, start, end, rounds).await
}

/// A month of generated traffic in [`start`, `end`), rolled up.
async fn generate(
    conn: &mut AsyncPgConnection,
    start: chrono::DateTime<Utc>,
    end: chrono::DateTime<Utc>,
    rows: u64,
) -> anyhow::Result<()> {
    for months_back in 0..=2 {
        for table in ["llm_logs", "system_logs"] {
            diesel::sql_query(format!(
                "SELECT ensure_monthly_partition('{table}', (now() - interval '{months_back} months')::date)"
            ))
            .execute(conn)
            .await?;
        }
    }

    // A month of traffic: 50 companies, ~30 users each (a tenth of calls by a user-less
    // key), a fifth of calls in one of 50 interviews a company, three actions, four
    // models (one unpriced), 2 % errors, 5 % our cache's hits, half streamed.
    let started = Instant::now();
    let mut done = 0;
    while done < rows {
        let upto = (done + CHUNK).min(rows);
        diesel::sql_query(
            "INSERT INTO llm_logs (event_id, created_at, action, company_id, user_id, interview_id, model, \
               tokens_input, tokens_output, tokens_used, usage_reported, cost_usd, price_table_version, latency_ms, \
               time_to_first_token_ms, streaming, http_status, error_type, cache_hit, cost_saved_usd) \
             SELECT gen_random_uuid(), $1 + (i::float8 / $4) * ($2 - $1), \
               (ARRAY['chat_completion', 'cv_summary', 'match_explain'])[1 + h % 3], c, \
               CASE WHEN h % 10 = 0 THEN NULL ELSE c * 100 + (h / 7) % 30 END, \
               CASE WHEN h % 5 = 0 THEN c * 1000 + (h / 11) % 50 END, m, ti, tout, ti + tout, ti IS NOT NULL, \
               CASE WHEN hit THEN 0 WHEN m = 'local-llama' OR ti IS NULL THEN NULL \
                    ELSE (ti * 2 + tout * 8) / 1000000.0 END, '2026-11-01', \
               50 + (h / 13) % 5000, CASE WHEN h % 2 = 0 THEN 20 + (h / 17) % 800 END, h % 2 = 0, \
               CASE WHEN err THEN 502 ELSE 200 END, CASE WHEN err THEN 'upstream_error' END, hit, \
               CASE WHEN hit THEN 0.002 END \
             FROM (SELECT i, h, 1 + h % $3 AS c, h % 50 = 7 AS err, h % 20 = 3 AS hit, \
                          CASE WHEN h % 20 = 9 THEN 'local-llama' \
                               ELSE (ARRAY['gpt-4.1', 'gpt-4.1-mini', 'o4-mini'])[1 + (h / 3) % 3] END AS m, \
                          CASE WHEN h % 50 <> 7 THEN 200 + (h / 19) % 1500 END AS ti, \
                          CASE WHEN h % 50 <> 7 THEN 20 + (h / 23) % 600 END AS tout \
                   FROM (SELECT i, (i * 2654435761) % 4294967291 AS h FROM generate_series($5, $6) AS i) AS s) AS g",
        )
        .bind::<Timestamptz, _>(start)
        .bind::<Timestamptz, _>(end)
        .bind::<BigInt, _>(COMPANIES)
        .bind::<Double, _>(rows as f64)
        .bind::<BigInt, _>(done as i64)
        .bind::<BigInt, _>(upto as i64 - 1)
        .execute(conn)
        .await?;
        done = upto;
        eprint!("\rgenerating raw rows: {done} / {rows} ({:.0} s)", started.elapsed().as_secs_f64());
    }
    eprintln!();
    conn.batch_execute("ANALYZE llm_logs").await?;
    let rolled = Instant::now();
    llm_log_worker::rollup::rebuild(conn, start, end, |day, days| {
        eprint!("\rrolling up: day {day} / {days}");
    })
    .await?;
    eprintln!();
    // Vacuumed and analysed as autovacuum keeps them in steady state.
    conn.batch_execute(
        "VACUUM (ANALYZE) llm_usage_hourly, llm_usage_hourly_models, llm_usage_hourly_grains, llm_usage_hourly_totals",
    )
    .await?;
    eprintln!("rolled up in {:.0} s", rolled.elapsed().as_secs_f64());
    Ok(())
}

async fn report(
    url: &str,
    conn: &mut AsyncPgConnection,
    start: chrono::DateTime<Utc>,
    end: chrono::DateTime<Utc>,
    rounds: usize,
) -> anyhow::Result<()> {
    let raw_rows = count(url, "SELECT count(*) AS n FROM llm_logs").await?;
    let rollup_rows = count(url, "SELECT count(*) AS n FROM llm_usage_hourly").await?;
    let coarse_rows = count(url, "SELECT count(*) AS n FROM llm_usage_hourly_models").await?;
    let raw_mib = count(
        url,
        "SELECT (sum(pg_total_relation_size(inhrelid)) / 1048576)::int8 AS n FROM pg_inherits \
                               WHERE inhparent = 'llm_logs'::regclass",
    )
    .await?;
    let mib = |table: &str| format!("SELECT (pg_total_relation_size('{table}') / 1048576)::int8 AS n");
    let rollup_mib = count(url, &mib("llm_usage_hourly")).await?;
    let coarse_mib = count(url, &mib("llm_usage_hourly_models")).await?;
    let grain_rows = count(url, "SELECT count(*) AS n FROM llm_usage_hourly_grains").await?;
    let grain_mib = count(url, &mib("llm_usage_hourly_grains")).await?;
    let share = |n: i64| 100.0 * n as f64 / raw_rows.max(1) as f64;
    println!(
        "analytics: {raw_rows} raw llm_logs rows over 30 days ({raw_mib} MiB); rollups: {rollup_rows} rows by user and \
         interview ({rollup_mib} MiB, {:.1} % of the raw rows), {coarse_rows} by company, action, model and error \
         ({coarse_mib} MiB, {:.2} %), {grain_rows} in the small grains ({grain_mib} MiB, {:.2} %)",
        share(rollup_rows),
        share(coarse_rows),
        share(grain_rows)
    );
    println!(
        "{:<34} {:>13} {:>13} {:>13} {:>13} {:>8}",
        "query (server time, ms)", "rollups p50", "rollups p99", "raw p50", "raw p99", "raw/rollups"
    );

    for q in QUERIES {
        let mut timings = [Vec::new(), Vec::new()];
        let mut raw_spent = Duration::ZERO;
        for round in 0..rounds {
            if round >= 3 && raw_spent > RAW_BUDGET {
                break;
            }
            let company = q.company.then_some(1 + (round as i64 % COMPANIES));
            let mut answers = Vec::new();
            for (source, from_raw) in [false, true].into_iter().enumerate() {
                let sql =
                    api_gateway::analytics::usage_sql_for(q.bucket, q.group, q.company, q.by_cost, from_raw, true)
                        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
                diesel::sql_query("SELECT set_config('TimeZone', $1, false), set_config('jit', 'off', false)")
                    .bind::<Text, _>(q.tz)
                    .execute(conn)
                    .await?;
                let began = Instant::now();
                let figures: Vec<Figure> = diesel::sql_query(sql)
                    .bind::<Timestamptz, _>(start)
                    .bind::<Timestamptz, _>(end)
                    .bind::<Nullable<BigInt>, _>(company)
                    .bind::<BigInt, _>(20_001)
                    .load(conn)
                    .await?;
                timings[source].push(began.elapsed());
                if from_raw {
                    raw_spent += began.elapsed();
                }
                answers.push(figures.iter().map(|f| (f.calls, (f.cost_usd * 1e6).round() as i64)).collect::<Vec<_>>());
            }
            anyhow::ensure!(answers[0] == answers[1], "{}: the rollups and the raw rows disagree", q.name);
        }
        let [rollups, raw] = timings.map(|mut t| {
            t.sort();
            (percentile(&t, 0.5), percentile(&t, 0.99))
        });
        println!(
            "{:<34} {:>13.1} {:>13.1} {:>13.1} {:>13.1} {:>7.0}×",
            q.name,
            ms(rollups.0),
            ms(rollups.1),
            ms(raw.0),
            ms(raw.1),
            raw.1.as_secs_f64() / rollups.1.as_secs_f64().max(1e-9)
        );
    }
    pages(url, start, end, rounds).await?;
    println!(
        "(the same figures from both sides, checked each round; up to {rounds} rounds per query, fewer past {} s \
         on the raw side; target: every dashboard page ≤ 100 ms)",
        RAW_BUDGET.as_secs()
    );
    Ok(())
}

/// A dashboard page's database time: its queries at once, each on a connection of its
/// own, as the page runs them (rendering the HTML adds well under a millisecond).
async fn pages(
    url: &str,
    start: chrono::DateTime<Utc>,
    end: chrono::DateTime<Utc>,
    rounds: usize,
) -> anyhow::Result<()> {
    use api_gateway::dashboard::{BREAKDOWN, TOP, top_lists};
    // (page, one company, queries: bucket, group, by cost, most rows, percentiles)
    let breakdown = (Some(BREAKDOWN.0), BREAKDOWN.1, false, 20_000, true);
    let overview = |one: bool| {
        let [who, actions] = top_lists(one);
        vec![breakdown, (None, who, true, TOP, false), (None, actions, true, TOP, false)]
    };
    let pages = [
        ("page: company overview", true, overview(true)),
        ("page: company latency", true, vec![breakdown]),
        ("page: operator overview, all", false, overview(false)),
    ];
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(AsyncPgConnection::establish(url).await?);
    }
    for (name, one, queries) in pages {
        let mut timings = [Vec::new(), Vec::new()];
        let mut raw_spent = Duration::ZERO;
        for round in 0..rounds {
            if round >= 3 && raw_spent > RAW_BUDGET {
                break;
            }
            let company = one.then_some(1 + (round as i64 % COMPANIES));
            let tz = if one { "Europe/Berlin" } else { "UTC" };
            for (source, from_raw) in [false, true].into_iter().enumerate() {
                for conn in &mut conns {
                    diesel::sql_query("SELECT set_config('TimeZone', $1, false), set_config('jit', 'off', false)")
                        .bind::<Text, _>(tz)
                        .execute(conn)
                        .await?;
                }
                let began = Instant::now();
                let runs = queries.iter().zip(conns.iter_mut()).map(
                    |((bucket, group, by_cost, most, pct), conn)| async move {
                        let sql =
                            api_gateway::analytics::usage_sql_for(*bucket, Some(group), one, *by_cost, from_raw, *pct)
                                .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
                        let _: Vec<Figure> = diesel::sql_query(sql)
                            .bind::<Timestamptz, _>(start)
                            .bind::<Timestamptz, _>(end)
                            .bind::<Nullable<BigInt>, _>(company)
                            .bind::<BigInt, _>(*most)
                            .load(conn)
                            .await?;
                        anyhow::Ok(())
                    },
                );
                futures_util::future::try_join_all(runs).await?;
                timings[source].push(began.elapsed());
                if from_raw {
                    raw_spent += began.elapsed();
                }
            }
        }
        let [rollups, raw] = timings.map(|mut t| {
            t.sort();
            (percentile(&t, 0.5), percentile(&t, 0.99))
        });
        println!(
            "{:<34} {:>13.1} {:>13.1} {:>13.1} {:>13.1} {:>7.0}×",
            name,
            ms(rollups.0),
            ms(rollups.1),
            ms(raw.0),
            ms(raw.1),
            raw.1.as_secs_f64() / rollups.1.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
