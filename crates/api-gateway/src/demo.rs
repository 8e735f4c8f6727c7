//! `api-gateway demo`: a demo company with a month of LLM traffic, so a new installation
//! shows a full dashboard at once.
//!
//! It creates (or finds) the company and its people in the main database, with a
//! password to sign in with, then publishes the calls' log events to the queue exactly
//! as the gateway does; `llm-log-worker` stores them and keeps the rollups current.
//! The traffic follows office hours and weekdays in the company's timezone, mixes
//! models, actions and people, has our cache answering repeated deterministic calls,
//! streamed calls with their first-token times, a steady trickle of upstream errors and
//! a bad day about every three weeks. Every call is priced from the gateway's price table. CVs arrive over the
//! month's weekdays (stored and queued as the upload route does; cv-processor reads
//! them), a few of them broken. Each event's id
//! and time are derived from the company, the day and the call's number, so running
//! the command again on the same day adds nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common_models::events::{LlmCallEvent, at_stored_precision};
use common_models::ids::{CompanyId, UserId};
use common_models::pricing::Tokens;
use common_models::schema::main::{companies, users};
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::{Integer, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use task_queue::{Keys, Producer, ProducerMetrics};

use crate::settings::GatewaySettings;

/// What to seed.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub company: String,
    pub timezone: String,
    pub owner_email: String,
    pub password: String,
    pub days: u32,
    /// Calls on a busy weekday (weekends have a fifth).
    pub calls_per_day: u32,
    /// CVs uploaded over the period (a few of them broken), queued for cv-processor.
    pub cvs: u32,
}

/// What was seeded.
#[derive(Debug)]
pub struct DemoOutcome {
    pub company_id: i64,
    pub created: bool,
    pub events: usize,
    /// CVs stored and queued now (0 when they were there already).
    pub cvs: usize,
    pub dropped: u64,
}

/// The demo's people: (email local part, role, name).
const PEOPLE: [(&str, &str, &str); 5] = [
    ("admin", "admin", "Ada Admin"),
    ("rosa", "recruiter", "Rosa Recruiter"),
    ("ravi", "recruiter", "Ravi Recruiter"),
    ("rhea", "recruiter", "Rhea Recruiter"),
    ("vic", "viewer", "Vic Viewer"),
];

/// (action, share of calls %, input tokens, output tokens, streamed %, deterministic)
const ACTIONS: [(&str, u64, f64, f64, u64, bool); 5] = [
    ("cv_summary", 34, 1_900.0, 320.0, 0, true),
    ("candidate_match", 24, 2_600.0, 160.0, 0, true),
    ("interview_questions", 16, 650.0, 720.0, 70, false),
    ("job_description", 10, 420.0, 540.0, 40, false),
    ("chat_completion", 16, 320.0, 260.0, 80, false),
];

/// (model, share %, milliseconds per output token, fixed overhead ms)
const MODELS: [(&str, u64, f64, f64); 4] = [
    ("gpt-4o-mini", 52, 4.0, 350.0),
    ("gpt-4.1-mini", 22, 5.0, 400.0),
    ("gpt-4o", 17, 9.0, 600.0),
    ("gpt-4.1", 9, 10.0, 650.0),
];

/// Share of calls per local hour (office hours, a lunch dip).
const HOURS: [u64; 24] = [1, 1, 1, 1, 1, 2, 4, 9, 16, 20, 21, 19, 12, 17, 20, 19, 15, 10, 6, 4, 3, 2, 1, 1];

/// A small deterministic generator (SplitMix64): the same seed, the same traffic.
struct Draw(u64);

impl Draw {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An index drawn by `weights`.
    fn pick(&mut self, weights: impl Iterator<Item = u64> + Clone) -> usize {
        let total: u64 = weights.clone().sum();
        let mut at = self.next() % total.max(1);
        for (i, w) in weights.enumerate() {
            if at < w {
                return i;
            }
            at -= w;
        }
        0
    }

    /// About `mean`, spread log-normally (a few slow ones).
    fn around(&mut self, mean: f64, spread: f64) -> f64 {
        // Box-Muller.
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        mean * (spread * normal - spread * spread / 2.0).exp()
    }
}

/// The event id of the demo's call `n` on day `day` (days since 1970) for `company`
/// (UUID version 8).
fn event_id(company: i64, day: u32, n: u32) -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&(company as u32).to_be_bytes());
    bytes[4..6].copy_from_slice(b"dm");
    bytes[6] = 0x80;
    bytes[8] = 0x80;
    bytes[9..12].copy_from_slice(&day.to_be_bytes()[1..]);
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    uuid::Uuid::from_bytes(bytes)
}

/// Creates the company and its people if missing, then publishes the month's calls.
pub async fn seed(settings: &GatewaySettings, opts: &DemoOptions) -> anyhow::Result<DemoOutcome> {
    anyhow::ensure!((1..=400).contains(&opts.days), "--days must be 1-400");
    anyhow::ensure!((1..=100_000).contains(&opts.calls_per_day), "--calls-per-day must be 1-100000");
    crate::password::check_new("password", &opts.password).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    let mut conn = AsyncPgConnection::establish(settings.database.url.expose()).await?;
    let (company_id, created, timezone) = company(&mut conn, opts).await?;
    let people = people(&mut conn, company_id, opts).await?;
    let days = local_days(&mut conn, &timezone, opts.days).await?;
    drop(conn);

    let registry = prometheus::Registry::new();
    let metrics = ProducerMetrics::register(&registry)?;
    let mut config = settings.producer.clone();
    // Its own memory buffer, no spool: the gateway's spool belongs to the gateway.
    config.spool = None;
    config.buffer_max_bytes = config.buffer_max_bytes.max(512 << 20);
    config.shutdown_deadline = config.shutdown_deadline.max(Duration::from_secs(120));
    let redis = service_kit::redis::build_pool(
        settings.redis.url.expose(),
        2,
        service_kit::redis::ReplyTimeout::After(Duration::from_secs(5)),
    )?;
    let (producer, task) =
        Producer::start(redis, Keys::new(settings.redis.key_prefix.clone()), config, metrics.clone()).await?;
    let now = Utc::now();
    let mut events = 0;
    for (shown, (start, end, weekend)) in days.iter().enumerate() {
        // The day's own number (days since 1970 of its start), not its place in the
        // window: a run on a later day makes the same calls for the days both cover,
        // so they are stored once, and adds only the new days.
        let day = u32::try_from(start.timestamp().div_euclid(86_400)).unwrap_or(0);
        let mut draw = Draw::new((company_id as u64) << 32 | u64::from(day));
        let calls = if *weekend { opts.calls_per_day / 5 } else { opts.calls_per_day };
        // About one bad day in three weeks.
        let errors_per_mille = if day % 23 == 7 { 70 } else { 12 };
        for n in 0..calls {
            let event = call(settings, &mut draw, company_id, &people, (*start, *end), errors_per_mille);
            if event.created_at > now {
                continue;
            }
            let event = LlmCallEvent { event_id: event_id(company_id, day, n), ..event };
            producer.publish(&event);
            events += 1;
        }
        eprintln!("  demo: day {}/{} published", shown + 1, days.len());
    }
    let cvs = upload_cvs(settings, &producer, company_id, &days, opts.cvs).await?;
    task.shutdown().await;
    // Whatever was not handed to Redis, for any reason (a full buffer, Redis away at
    // the shutdown deadline, an entry refused).
    let dropped: u64 = registry
        .gather()
        .iter()
        .filter(|family| family.name().ends_with("dropped_total"))
        .flat_map(|family| family.get_metric().iter().map(|m| m.get_counter().get_value() as u64))
        .sum();
    Ok(DemoOutcome { company_id, created, events, cvs, dropped })
}

/// First names, surnames, titles and skills the demo's CVs are made of.
const FIRST: [&str; 8] = ["Amara", "Bjorn", "Chen", "Dolores", "Emeka", "Farah", "Goran", "Hana"];
const LAST: [&str; 8] = ["Okafor", "Lindqvist", "Wei", "Ibarra", "Nwosu", "Haddad", "Petrovic", "Sato"];
const TITLES: [&str; 5] =
    ["Backend engineer", "Data engineer", "Site reliability engineer", "Frontend engineer", "Engineering manager"];
const SKILLS: [&str; 10] =
    ["Rust", "Go", "PostgreSQL", "Kafka", "Kubernetes", "AWS", "TypeScript", "React", "Terraform", "Python"];

/// `n` CVs spread over the period's weekdays, stored as the upload route stores them
/// and queued for cv-processor: most a plain-text CV, one in six a file it cannot read
/// (an old Word .doc, a PDF cut off), which fails with its reason. A CV already there (same content) is skipped.
async fn upload_cvs(
    settings: &GatewaySettings,
    producer: &Producer,
    company: i64,
    days: &[(DateTime<Utc>, DateTime<Utc>, bool)],
    n: u32,
) -> anyhow::Result<usize> {
    use common_models::cv::ProcessCv;
    use common_models::ids::CvId;
    use common_models::schema::main::cvs;
    use common_models::storage::{FileStore, LocalFileStore, key_for};
    use sha2::{Digest, Sha256};

    let weekdays: Vec<&(DateTime<Utc>, DateTime<Utc>, bool)> = days.iter().filter(|d| !d.2).collect();
    if n == 0 || weekdays.is_empty() {
        return Ok(0);
    }
    let store = LocalFileStore::open(&settings.cvs.storage_dir)?;
    let mut conn = AsyncPgConnection::establish(settings.database.url.expose()).await?;
    let mut queued = 0;
    let now = Utc::now();
    for i in 0..n {
        let mut draw = Draw::new(((company as u64) << 32) ^ 0xc0ffee ^ u64::from(i));
        let (start, end, _) = weekdays[i as usize % weekdays.len()];
        let at = *start + (*end - *start) * 9 / 24 + chrono::Duration::seconds((draw.next() % (8 * 3600)) as i64);
        if at > now {
            continue;
        }
        let name = format!("{} {}", FIRST[draw.next() as usize % 8], LAST[draw.next() as usize % 8]);
        let stem = name.replace(' ', "-").to_lowercase();
        let (file_name, content_type, bytes) = if i % 12 == 5 {
            // An old Word file, which cv-processor refuses with its reason.
            let mut bytes = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1".to_vec();
            bytes.extend_from_slice(format!("demo {company}/{i}").as_bytes());
            (format!("{stem}-cv.doc"), "application/msword", bytes)
        } else if i % 12 == 11 {
            // A PDF cut off in its upload.
            (
                format!("{stem}-cv.pdf"),
                "application/pdf",
                format!("%PDF-1.7\n%demo {company}/{i}\n1 0 obj\n<<").into_bytes(),
            )
        } else {
            let title = TITLES[draw.next() as usize % TITLES.len()];
            let skills: Vec<&str> = (0..4).map(|_| SKILLS[draw.next() as usize % SKILLS.len()]).collect();
            let years = 2 + draw.next() % 12;
            let email = format!("{}@example.org", name.replace(' ', ".").to_lowercase());
            let text = format!(
                "{name}\n{title}\n{email}\n\nSummary\n{title} with {years} years of building and running \
                 services in production.\n\nSkills\n{skills}\n\nExperience\n{title}, Northwind Systems \
                 ({from}-present)\nBuilt and operated {s0} services handling millions of requests a day; led the \
                 move to {s1}.\nEngineer, Contoso Labs ({earlier}-{from})\nWorked on {s2} and {s3} pipelines.\n\n\
                 Education\nBSc Computer Science\n(demo CV {company}/{i})\n",
                skills = skills.join(", "),
                from = 2026 - years / 2,
                earlier = 2026 - years,
                s0 = skills[0],
                s1 = skills[1],
                s2 = skills[2],
                s3 = skills[3],
            );
            (format!("{stem}-cv.txt"), "text/plain", text.into_bytes())
        };
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let key = key_for(CompanyId(company), &sha256);
        let staged = store.staging_dir().join(format!("demo-{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&staged, &bytes).await?;
        store.put_file(&key, &staged).await?;
        let created: Option<i64> = diesel::insert_into(cvs::table)
            .values((
                cvs::company_id.eq(company),
                cvs::file_name.eq(&file_name),
                cvs::content_type.eq(content_type),
                cvs::size_bytes.eq(i64::try_from(bytes.len())?),
                cvs::content_hash.eq(sha256.to_vec()),
                cvs::storage_key.eq(&key),
                cvs::created_at.eq(at),
                cvs::updated_at.eq(at),
            ))
            .on_conflict((cvs::company_id, cvs::content_hash))
            .do_nothing()
            .returning(cvs::id)
            .get_result(&mut conn)
            .await
            .optional()?;
        if let Some(id) = created {
            producer.publish(&ProcessCv {
                cv_id: CvId(id),
                company_id: CompanyId(company),
                storage_key: key,
                file_name,
                content_type: content_type.to_owned(),
                queued_at: now,
            });
            queued += 1;
        }
    }
    Ok(queued)
}

/// The company named `opts.company` (the first, if several): (id, created now, its
/// timezone).
async fn company(conn: &mut AsyncPgConnection, opts: &DemoOptions) -> anyhow::Result<(i64, bool, String)> {
    let found: Option<(i64, String)> = companies::table
        .filter(companies::name.eq(&opts.company))
        .select((companies::id, companies::timezone))
        .order(companies::id)
        .first(conn)
        .await
        .optional()?;
    if let Some((id, timezone)) = found {
        return Ok((id, false, timezone));
    }
    let id: i64 = diesel::insert_into(companies::table)
        .values((
            companies::name.eq(&opts.company),
            companies::timezone.eq(&opts.timezone),
            companies::llm_budget_usd.eq(Some(400.0)),
            companies::daily_spend_alert_usd.eq(Some(12.0)),
        ))
        .returning(companies::id)
        .get_result(conn)
        .await?;
    Ok((id, true, opts.timezone.clone()))
}

/// The owner and the demo's people, created when missing; their ids, recruiters
/// weighted as the busiest.
async fn people(conn: &mut AsyncPgConnection, company: i64, opts: &DemoOptions) -> anyhow::Result<Vec<(i64, u64)>> {
    let hash = crate::password::Passwords::new()?
        .hash(opts.password.clone())
        .await
        .map_err(|e| anyhow::anyhow!("hashing the demo password: {}", e.message()))?;
    let domain = opts.owner_email.split_once('@').map_or("demo.example.com", |(_, d)| d).to_owned();
    let mut wanted = vec![(opts.owner_email.to_lowercase(), "owner", "Olivia Owner".to_owned(), 2)];
    for (local, role, name) in PEOPLE {
        let weight = if role == "recruiter" { 6 } else { 1 };
        wanted.push((format!("{local}@{domain}"), role, name.to_owned(), weight));
    }
    let mut ids = Vec::new();
    for (email, role, name, weight) in wanted {
        let existing: Option<(i64, i64)> = users::table
            .filter(users::email.eq(&email))
            .select((users::id, users::company_id))
            .first(conn)
            .await
            .optional()?;
        let id = match existing {
            Some((id, c)) if c == company => id,
            Some(_) => anyhow::bail!("{email} already belongs to another company; choose another --owner-email"),
            None => {
                diesel::insert_into(users::table)
                    .values((
                        users::company_id.eq(company),
                        users::email.eq(&email),
                        users::full_name.eq(Some(name)),
                        users::role.eq(role),
                        users::password_hash.eq(Some(&hash)),
                        users::password_changed_at.eq(Some(Utc::now())),
                    ))
                    .returning(users::id)
                    .get_result(conn)
                    .await?
            }
        };
        ids.push((id, weight));
    }
    Ok(ids)
}

/// The last `days` local days in `tz` (today included): their UTC start and end, and
/// whether each is a Saturday or Sunday. PostgreSQL cuts them, so a DST change gives a
/// 23- or 25-hour day.
async fn local_days(
    conn: &mut AsyncPgConnection,
    tz: &str,
    days: u32,
) -> anyhow::Result<Vec<(DateTime<Utc>, DateTime<Utc>, bool)>> {
    #[derive(QueryableByName)]
    struct Day {
        #[diesel(sql_type = Timestamptz)]
        start: DateTime<Utc>,
        #[diesel(sql_type = Timestamptz)]
        end: DateTime<Utc>,
        #[diesel(sql_type = Integer)]
        dow: i32,
    }
    let rows: Vec<Day> = sql_query(
        "SELECT (d AT TIME ZONE $1) AS start, ((d + interval '1 day') AT TIME ZONE $1) AS end, \
                extract(isodow FROM d)::int4 AS dow \
         FROM generate_series(date_trunc('day', now() AT TIME ZONE $1) - make_interval(days => $2 - 1), \
                              date_trunc('day', now() AT TIME ZONE $1), interval '1 day') AS d ORDER BY d",
    )
    .bind::<Text, _>(tz)
    .bind::<Integer, _>(i32::try_from(days)?)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|d| (d.start, d.end, d.dow >= 6)).collect())
}

/// One call somewhere in the local day [start, end).
fn call(
    settings: &GatewaySettings,
    draw: &mut Draw,
    company: i64,
    people: &[(i64, u64)],
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    errors_per_mille: u64,
) -> LlmCallEvent {
    // The hour by office hours, the moment within it at random; an hour is a 24th of
    // the local day (so 23- and 25-hour days stretch evenly).
    let hour = draw.pick(HOURS.iter().copied()) as f64;
    let day_us = (end - start).num_microseconds().unwrap_or(86_400_000_000) as f64;
    let offset = ((hour + draw.unit()) / 24.0 * day_us) as i64;
    let created_at = at_stored_precision(start + chrono::Duration::microseconds(offset));
    let (action, _, input, output, streamed, deterministic) = ACTIONS[draw.pick(ACTIONS.iter().map(|a| a.1))];
    let (model, _, ms_per_token, overhead) = MODELS[draw.pick(MODELS.iter().map(|m| m.1))];
    let user = people[draw.pick(people.iter().map(|p| p.1))].0;
    let streaming = draw.next() % 100 < streamed;
    let roll = draw.next() % 1000;
    let error = if roll < errors_per_mille {
        Some(match roll % 4 {
            0 | 1 => ("upstream_server_error", Some(502), "the upstream answered 502 Bad Gateway"),
            2 => ("upstream_timeout", None, "the upstream did not answer within 60 s"),
            _ => ("upstream_client_error", Some(400), "the upstream refused the request: context length exceeded"),
        })
    } else {
        None
    };
    let cache_hit = error.is_none() && deterministic && draw.next() % 100 < 14;
    let tokens_in = draw.around(input, 0.35).round().max(20.0) as i32;
    let tokens_out = draw.around(output, 0.45).round().max(5.0) as i32;
    let cached_in =
        if !cache_hit && draw.next() % 100 < 30 { (f64::from(tokens_in) * draw.unit() * 0.6) as i32 } else { 0 };
    let (latency, ttft) = if cache_hit {
        (draw.around(6.0, 0.4).max(1.0), None)
    } else {
        let total = draw.around(overhead + ms_per_token * f64::from(tokens_out), 0.3);
        let first = streaming.then(|| draw.around(overhead * 0.8, 0.35).min(total));
        (total, first)
    };
    let mut event = LlmCallEvent {
        event_id: uuid::Uuid::nil(),
        created_at,
        action: action.to_owned(),
        message: None,
        company_id: Some(CompanyId(company)),
        user_id: Some(UserId(user)),
        interview_id: None,
        request_id: Some(format!("demo-{}", created_at.timestamp_micros())),
        model: Some(model.to_owned()),
        tokens_input: None,
        tokens_output: None,
        tokens_total: None,
        usage_reported: false,
        cost_usd: None,
        price_table_version: None,
        latency_ms: Some(latency.round() as i32),
        time_to_first_token_ms: ttft.map(|t| t.round() as i32),
        streaming,
        http_status: Some(200),
        error_type: None,
        error_message: None,
        metadata: Some(serde_json::json!({"demo": true})),
        deployment_version: None,
        deployment_environment: Some("demo".to_owned()),
        cache_hit,
        cost_saved_usd: None,
        tokens_cached_input: None,
        tokens_reasoning: None,
    };
    match error {
        Some((kind, status, message)) => {
            event.error_type = Some(kind.to_owned());
            event.error_message = Some(message.to_owned());
            event.http_status = status.or(Some(504));
            if kind == "upstream_timeout" {
                event.latency_ms = Some(60_000);
                event.time_to_first_token_ms = None;
            }
        }
        None => {
            let tokens = Tokens { input: tokens_in, cached_input: cached_in, output: tokens_out };
            let charge = settings.pricing.charge(&[model], Some(tokens), created_at.date_naive(), cache_hit);
            event.tokens_input = Some(tokens_in);
            event.tokens_output = Some(tokens_out);
            event.tokens_total = Some(tokens_in + tokens_out);
            event.tokens_cached_input = Some(cached_in);
            event.usage_reported = true;
            event.cost_usd = charge.cost_usd;
            event.cost_saved_usd = charge.cost_saved_usd;
            event.price_table_version = charge.version;
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_event_ids_are_distinct_valid_and_repeatable() {
        let a = event_id(7, 3, 11);
        assert_eq!(a, event_id(7, 3, 11));
        assert_ne!(a, event_id(7, 3, 12));
        assert_ne!(a, event_id(7, 4, 11));
        assert_eq!(a.get_version_num(), 8);
        let mut one = Draw::new(42);
        let mut two = Draw::new(42);
        let first: Vec<u64> = (0..5).map(|_| one.next()).collect();
        assert_eq!(first, (0..5).map(|_| two.next()).collect::<Vec<_>>());
    }
}
