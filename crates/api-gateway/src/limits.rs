//! Rate limits, LLM concurrency and monthly LLM budgets, per company plan, kept in the
//! queue Redis so they hold across replicas.
//!
//! - **Requests**: GCRA (a token bucket without a refill timer) per company and per
//!   credential (API key, or the signed-in user): `per_minute` sustained with `burst`
//!   at once. One Lua script checks both and spends from both only when both allow, on
//!   Redis's clock. Every limited answer carries `RateLimit-Limit`, `-Remaining` and
//!   `-Reset`; a refusal is 429 `rate_limited` with `Retry-After`.
//! - **Concurrency**: LLM calls in flight per company, a sorted set of call ids (a call
//!   a crashed replica never released lapses after `llm_timeout`); 429
//!   `too_many_concurrent_calls` beyond.
//! - **Budget**: the month's spend per company (`spend:{company}:{YYYY-MM}`, added
//!   from every logged call's cost); at the hard limit LLM calls get 429
//!   `budget_exceeded` until the month turns (UTC) or the limit is raised; past the
//!   soft share, calls are counted in `llm_budget_soft_exceeded_total`.
//!
//! When Redis cannot answer, requests are let through and counted
//! (`limits_unavailable_total`): a Redis outage must not become an API outage. When the
//! main database cannot say a company's plan, the default plan applies, counted alike.

use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::HttpRequest;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Date, Double, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use serde::Deserialize;
use service_kit::AppError;
use service_kit::db::PgPool;

use crate::auth::Caller;
use crate::metrics::GatewayMetrics;
use crate::spend_alerts::{self, Crossing};

#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    /// The plan of a company whose `plan` names none of `plans`.
    pub default_plan: String,
    /// Past this share of its budget, a company's calls are counted for alerting.
    pub soft_budget_ratio: f64,
    /// Shares of a company's monthly budget whose crossing is a spend alert.
    pub budget_alert_shares: Vec<f64>,
    pub plans: Vec<Plan>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Plan {
    pub name: String,
    /// Requests a minute per company (0: no limit).
    pub company_per_minute: u32,
    /// Requests a minute per API key or signed-in user (0: no limit).
    pub credential_per_minute: u32,
    /// Requests allowed at once on top of the steady rate.
    pub burst: u32,
    /// LLM calls in flight per company (0: no limit).
    pub llm_concurrency: u32,
    /// Monthly LLM spend in USD per company (0: no budget); a company's own
    /// `llm_budget_usd` replaces it.
    pub llm_budget_usd: f64,
}

impl LimitSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.plans.iter().any(|p| p.name == self.default_plan),
            "limits.default_plan {:?} is not one of limits.plans",
            self.default_plan
        );
        anyhow::ensure!((0.0..=1.0).contains(&self.soft_budget_ratio), "limits.soft_budget_ratio must be 0-1");
        anyhow::ensure!(
            self.budget_alert_shares.iter().all(|s| *s > 0.0 && *s <= 1.0),
            "limits.budget_alert_shares must each be above 0 and at most 1"
        );
        for plan in &self.plans {
            anyhow::ensure!(plan.burst >= 1, "limits.plans {:?}: burst must be at least 1", plan.name);
            anyhow::ensure!(plan.llm_budget_usd >= 0.0, "limits.plans {:?}: llm_budget_usd must be ≥ 0", plan.name);
        }
        Ok(())
    }

    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }
}

/// What a company is held to.
#[derive(Debug, Clone)]
struct CompanyLimits {
    plan: Plan,
    budget_usd: f64,
    /// The models the company may call (`None`: the price table's).
    allowed_models: Option<Arc<[String]>>,
    /// The day's spend that raises a `daily_spend` alert.
    daily_alert_usd: Option<f64>,
    /// The company's local day when these were read, and the instant it ends.
    today: NaiveDate,
    day_ends: DateTime<Utc>,
}

/// A company's row as [`Limits`] reads it: its day cut in its own timezone.
#[derive(QueryableByName)]
struct CompanyRow {
    #[diesel(sql_type = Nullable<Text>)]
    plan: Option<String>,
    #[diesel(sql_type = Nullable<Double>)]
    llm_budget_usd: Option<f64>,
    #[diesel(sql_type = Nullable<Array<Text>>)]
    allowed_models: Option<Vec<String>>,
    #[diesel(sql_type = Nullable<Double>)]
    daily_spend_alert_usd: Option<f64>,
    #[diesel(sql_type = Date)]
    today: NaiveDate,
    #[diesel(sql_type = Timestamptz)]
    day_ends: DateTime<Utc>,
}

const COMPANY: &str = "SELECT plan, llm_budget_usd, allowed_models, daily_spend_alert_usd, \
        (now() AT TIME ZONE timezone)::date AS today, \
        (date_trunc('day', now() AT TIME ZONE timezone) + interval '1 day') AT TIME ZONE timezone AS day_ends \
     FROM companies WHERE id = $1";

/// The request's limit state, for the response headers.
#[derive(Debug, Clone, Copy)]
struct RateLimitInfo {
    limit: u32,
    remaining: i64,
    reset_ms: i64,
}

const GCRA: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local wait, remaining, reset = 0, -1, 0
local tats = {}
for i = 1, #KEYS do
  local emission = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local next_tat = tat + emission
  local allowed_at = next_tat - emission * burst
  if allowed_at > now and allowed_at - now > wait then wait = allowed_at - now end
  tats[i] = next_tat
  local left = math.floor((now + emission * burst - next_tat) / emission)
  if remaining < 0 or left < remaining then remaining = left end
  if next_tat - now > reset then reset = next_tat - now end
end
if wait > 0 then return {0, math.ceil(wait), 0, math.ceil(reset)} end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], tostring(tats[i]), 'PX', math.max(1, math.ceil(tats[i] - now)))
end
return {1, 0, remaining, math.ceil(reset)}
";

const SLOT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
";

/// A company's plan, its limits (0: none) and the month's LLM spend.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LimitsView {
    pub plan: String,
    pub company_per_minute: u32,
    pub credential_per_minute: u32,
    pub burst: u32,
    pub llm_concurrency: u32,
    /// The month's hard limit (0: none).
    pub llm_budget_usd: f64,
    pub llm_spent_this_month_usd: f64,
    /// The models the company may call; `null`: every model the gateway prices.
    pub allowed_models: Option<Vec<String>>,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// The day's spend that raises a `daily_spend` alert (`null`: none).
    pub llm_daily_spend_alert_usd: Option<f64>,
    /// The spend of the company's current local day.
    pub llm_spent_today_usd: f64,
    /// The company's current local day (`YYYY-MM-DD`, in its timezone).
    pub today: String,
}

pub struct Limits {
    redis: crate::hot_redis::HotRedis,
    prefix: String,
    settings: LimitSettings,
    db: PgPool,
    metrics: GatewayMetrics,
    /// Company → its limits, remembered for `COMPANY_TTL`.
    companies: moka::sync::Cache<i64, Arc<CompanyLimits>>,
    gcra: redis::Script,
    slot: redis::Script,
    /// How long a call may hold a concurrency slot (the upstream call's limit).
    slot_lapse: Duration,
}

/// How long a company's plan and budget are remembered per replica: a change by an
/// operator applies within this.
pub const COMPANY_TTL: Duration = Duration::from_secs(30);

impl Limits {
    pub fn new(
        redis: crate::hot_redis::HotRedis,
        prefix: &str,
        settings: LimitSettings,
        db: PgPool,
        metrics: GatewayMetrics,
        slot_lapse: Duration,
    ) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            settings,
            db,
            metrics,
            companies: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(COMPANY_TTL).build(),
            gcra: redis::Script::new(GCRA),
            slot: redis::Script::new(SLOT),
            slot_lapse,
        }
    }

    /// Forgets `company`'s limits on this replica (after an operator changed them).
    pub fn forget(&self, company: i64) {
        self.companies.invalidate(&company);
    }

    async fn of(&self, company: i64) -> Result<Arc<CompanyLimits>, AppError> {
        if let Some(found) = self.companies.get(&company)
            && found.day_ends > Utc::now()
        {
            return Ok(found);
        }
        let mut conn = self.db.get().await?;
        let row: CompanyRow = diesel::sql_query(COMPANY).bind::<BigInt, _>(company).get_result(&mut conn).await?;
        let CompanyRow { plan, llm_budget_usd: budget, allowed_models: models, daily_spend_alert_usd, today, day_ends } =
            row;
        let plan = plan
            .as_deref()
            .and_then(|name| self.settings.plan(name))
            .or_else(|| self.settings.plan(&self.settings.default_plan))
            .cloned()
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("no plan {plan:?} and no default plan")))?;
        let budget_usd = budget.unwrap_or(plan.llm_budget_usd);
        let allowed_models = models.map(Arc::from);
        let limits = Arc::new(CompanyLimits {
            plan,
            budget_usd,
            allowed_models,
            daily_alert_usd: daily_spend_alert_usd,
            today,
            day_ends,
        });
        self.companies.insert(company, limits.clone());
        Ok(limits)
    }

    /// The company's limits, or while the main database cannot say, the default plan's:
    /// a database outage must not stop requests that need nothing else from it.
    async fn of_or_default(&self, company: i64) -> Arc<CompanyLimits> {
        match self.of(company).await {
            Ok(limits) => limits,
            Err(err) => {
                self.metrics.limits_unavailable.inc();
                tracing::warn!(company_id = company, error = %err, "the company's plan could not be read; the default plan applies");
                let plan = self.settings.plan(&self.settings.default_plan).cloned().unwrap_or(Plan {
                    name: self.settings.default_plan.clone(),
                    company_per_minute: 0,
                    credential_per_minute: 0,
                    burst: 1,
                    llm_concurrency: 0,
                    llm_budget_usd: 0.0,
                });
                let budget_usd = plan.llm_budget_usd;
                // Without its timezone the day is the UTC one; no daily alert.
                let now = Utc::now();
                let today = now.date_naive();
                let day_ends = today.succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0)).map_or(now, |d| d.and_utc());
                Arc::new(CompanyLimits {
                    plan,
                    budget_usd,
                    allowed_models: None,
                    daily_alert_usd: None,
                    today,
                    day_ends,
                })
            }
        }
    }

    fn unavailable(&self, what: &str, err: impl std::fmt::Display) {
        self.metrics.limits_unavailable.inc();
        tracing::warn!(error = %err, "{what} could not be checked (Redis); let through");
    }

    /// Spends one request from the company's and the credential's rates, or 429.
    pub async fn admit(&self, req: &HttpRequest, caller: &Caller) -> Result<(), AppError> {
        let limits = self.of_or_default(caller.company_id.0).await;
        let plan = &limits.plan;
        let mut keys = Vec::new();
        let mut args = Vec::new();
        let mut add = |key: String, per_minute: u32| {
            if per_minute > 0 {
                keys.push(key);
                args.push(60_000.0 / f64::from(per_minute));
                args.push(f64::from(plan.burst));
            }
        };
        add(format!("{}rl:company:{}", self.prefix, caller.company_id), plan.company_per_minute);
        let credential = match (caller.api_key_id, caller.user_id) {
            (Some(key), _) => format!("{}rl:key:{key}", self.prefix),
            (None, Some(user)) => format!("{}rl:user:{user}", self.prefix),
            (None, None) => format!("{}rl:company-credential:{}", self.prefix, caller.company_id),
        };
        add(credential, plan.credential_per_minute);
        if keys.is_empty() {
            return Ok(());
        }
        let mut invocation = self.gcra.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        for arg in &args {
            invocation.arg(*arg);
        }
        let reply: Result<(i64, i64, i64, i64), AppError> = async {
            let mut conn = self.redis.conn().await.map_err(|e| AppError::unavailable("Redis", e))?;
            invocation.invoke_async(&mut conn).await.map_err(|e| AppError::unavailable("Redis", e))
        }
        .await;
        let (allowed, wait_ms, remaining, reset_ms) = match reply {
            Ok(reply) => reply,
            Err(err) => {
                self.unavailable("the rate limit", err);
                return Ok(());
            }
        };
        req.extensions_mut().insert(RateLimitInfo { limit: plan.burst, remaining, reset_ms });
        if allowed == 1 {
            Ok(())
        } else {
            self.metrics.rate_limited.inc();
            Err(AppError::too_many_requests(
                "rate_limited",
                format!("rate limit reached for this company or credential ({} plan); retry later", plan.name),
                u64::try_from(wait_ms).unwrap_or(1).div_ceil(1000),
            ))
        }
    }

    /// The models `company` may call, when it has its own list (`None`: the price
    /// table's; so too while the main database cannot say).
    pub async fn allowed_models(&self, company: i64) -> Option<Arc<[String]>> {
        self.of_or_default(company).await.allowed_models.clone()
    }

    /// Admits one LLM call of `company`: under its budget and its concurrency cap. The
    /// slot is given back when the returned guard drops.
    pub async fn admit_llm_call(&self, company: i64) -> Result<Option<Slot>, AppError> {
        let limits = self.of_or_default(company).await;
        if limits.budget_usd > 0.0 {
            match self.spent(company).await {
                Ok(spent) if spent >= limits.budget_usd => {
                    self.metrics.llm_budget_refused.inc();
                    return Err(AppError::too_many_requests(
                        "budget_exceeded",
                        format!(
                            "this company's monthly LLM budget of ${:.2} is spent (${spent:.2}); calls resume when \
                             the month turns (UTC) or the budget is raised",
                            limits.budget_usd
                        ),
                        seconds_until_next_month(Utc::now()),
                    ));
                }
                Ok(spent) if spent >= limits.budget_usd * self.settings.soft_budget_ratio => {
                    self.metrics.llm_budget_soft_exceeded.inc();
                }
                Ok(_) => {}
                Err(err) => self.unavailable("the LLM budget", err),
            }
        }
        if limits.plan.llm_concurrency == 0 {
            return Ok(None);
        }
        let key = format!("{}llm_inflight:{company}", self.prefix);
        let member = uuid::Uuid::now_v7().to_string();
        let taken: Result<i64, AppError> = async {
            let mut conn = self.redis.conn().await.map_err(|e| AppError::unavailable("Redis", e))?;
            self.slot
                .key(&key)
                .arg(limits.plan.llm_concurrency)
                .arg(&member)
                .arg(u64::try_from(self.slot_lapse.as_millis()).unwrap_or(u64::MAX))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| AppError::unavailable("Redis", e))
        }
        .await;
        match taken {
            Ok(1) => Ok(Some(Slot { redis: self.redis.clone(), key, member })),
            Ok(_) => {
                self.metrics.rate_limited.inc();
                Err(AppError::too_many_requests(
                    "too_many_concurrent_calls",
                    format!(
                        "this company already has {} LLM calls in flight (its {} plan's limit); retry shortly",
                        limits.plan.llm_concurrency, limits.plan.name
                    ),
                    1,
                ))
            }
            Err(err) => {
                self.unavailable("the LLM concurrency limit", err);
                Ok(None)
            }
        }
    }

    /// The company's plan, limits and the month's spend, for its admins.
    pub async fn describe(&self, company: i64) -> Result<LimitsView, AppError> {
        let limits = self.of(company).await?;
        let spent = self.spent(company).await.map_err(|e| AppError::unavailable("Redis", e))?;
        let spent_today = self.spent_on(company, limits.today).await.map_err(|e| AppError::unavailable("Redis", e))?;
        let plan = &limits.plan;
        Ok(LimitsView {
            plan: plan.name.clone(),
            company_per_minute: plan.company_per_minute,
            credential_per_minute: plan.credential_per_minute,
            burst: plan.burst,
            llm_concurrency: plan.llm_concurrency,
            llm_budget_usd: limits.budget_usd,
            llm_spent_this_month_usd: spent,
            allowed_models: limits.allowed_models.as_deref().map(<[String]>::to_vec),
            month: Utc::now().format("%Y-%m").to_string(),
            llm_daily_spend_alert_usd: limits.daily_alert_usd,
            llm_spent_today_usd: spent_today,
            today: limits.today.to_string(),
        })
    }

    fn spend_key(&self, company: i64) -> String {
        format!("{}spend:{company}:{}", self.prefix, Utc::now().format("%Y-%m"))
    }

    /// The spend of `company`'s local `day` (see [`Limits::record_spend`]).
    fn day_key(&self, company: i64, day: NaiveDate) -> String {
        format!("{}spend_day:{company}:{day}", self.prefix)
    }

    /// This month's spend of `company` so far.
    pub async fn spent(&self, company: i64) -> anyhow::Result<f64> {
        self.read_spend(self.spend_key(company)).await
    }

    async fn spent_on(&self, company: i64, day: NaiveDate) -> anyhow::Result<f64> {
        self.read_spend(self.day_key(company, day)).await
    }

    async fn read_spend(&self, key: String) -> anyhow::Result<f64> {
        let mut conn = self.redis.conn().await?;
        let spent: Option<f64> = redis::cmd("GET").arg(key).query_async(&mut conn).await?;
        Ok(spent.unwrap_or(0.0))
    }

    /// Adds a logged call's cost to its company's month and local day, without waiting,
    /// and records the spend alerts the addition raised.
    pub fn record_spend(self: &Arc<Self>, company: i64, cost_usd: f64) {
        if cost_usd <= 0.0 {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let limits = this.of_or_default(company).await;
            let month_key = this.spend_key(company);
            let day_key = this.day_key(company, limits.today);
            let totals: anyhow::Result<(f64, f64)> = async {
                let mut conn = this.redis.conn().await?;
                Ok(redis::pipe()
                    .cmd("INCRBYFLOAT")
                    .arg(&month_key)
                    .arg(cost_usd)
                    // Kept past the month's end for the month's last look-ups.
                    .expire(&month_key, 40 * 24 * 3600)
                    .ignore()
                    .cmd("INCRBYFLOAT")
                    .arg(&day_key)
                    .arg(cost_usd)
                    .expire(&day_key, 3 * 24 * 3600)
                    .ignore()
                    .query_async(&mut conn)
                    .await?)
            }
            .await;
            match totals {
                Ok((month, day)) => {
                    let crossings = this.crossings(&limits, cost_usd, month, day);
                    crate::spend_alerts::record(&this.db, &this.metrics, company, crossings).await;
                }
                Err(err) => {
                    this.metrics.limits_unavailable.inc();
                    tracing::warn!(company_id = company, cost_usd, error = %err, "a call's cost could not be added to the month's spend");
                }
            }
        });
    }

    /// The alert thresholds a cost of `cost` crossed, bringing the month to `month` and
    /// the day to `day`.
    fn crossings(&self, limits: &CompanyLimits, cost: f64, month: f64, day: f64) -> Vec<Crossing> {
        let mut out = Vec::new();
        if let Some(threshold) = limits.daily_alert_usd
            && spend_alerts::crossed(day, cost, threshold)
        {
            out.push(Crossing {
                kind: spend_alerts::DAILY_SPEND,
                period_start: limits.today,
                threshold_usd: threshold,
                budget_share: None,
                spent_usd: day,
            });
        }
        if limits.budget_usd > 0.0 {
            let month_start = Utc::now().date_naive().with_day(1).unwrap_or_default();
            for &share in &self.settings.budget_alert_shares {
                let threshold = limits.budget_usd * share;
                if spend_alerts::crossed(month, cost, threshold) {
                    out.push(Crossing {
                        kind: spend_alerts::BUDGET_SHARE,
                        period_start: month_start,
                        threshold_usd: threshold,
                        budget_share: Some(share),
                        spent_usd: month,
                    });
                }
            }
        }
        out
    }
}

/// A held LLM concurrency slot; given back on drop.
pub struct Slot {
    redis: crate::hot_redis::HotRedis,
    key: String,
    member: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (redis, key, member) =
            (self.redis.clone(), std::mem::take(&mut self.key), std::mem::take(&mut self.member));
        tokio::spawn(async move {
            if let Ok(mut conn) = redis.conn().await {
                let _: Result<(), _> = redis::cmd("ZREM").arg(&key).arg(&member).query_async(&mut conn).await;
            }
        });
    }
}

/// `App::wrap(from_fn(limits::headers))`: the `RateLimit-*` headers of a limited request.
pub async fn headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let info = res.request().extensions().get::<RateLimitInfo>().copied();
    if let Some(info) = info {
        let reset = u64::try_from(info.reset_ms).unwrap_or(0).div_ceil(1000);
        let headers = res.headers_mut();
        for (name, value) in [
            ("ratelimit-limit", u64::from(info.limit)),
            ("ratelimit-remaining", u64::try_from(info.remaining).unwrap_or(0)),
            ("ratelimit-reset", reset),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
    Ok(res)
}

/// Seconds from `now` to the first instant of the next month (UTC).
fn seconds_until_next_month(now: DateTime<Utc>) -> u64 {
    let (year, month) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    let next = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single().unwrap_or(now);
    u64::try_from((next - now).num_seconds()).unwrap_or(0).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_turns_at_midnight_utc_on_the_first() {
        let at = |y, m, d, h| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single().unwrap_or_default();
        assert_eq!(seconds_until_next_month(at(2026, 11, 30, 23)), 3600);
        assert_eq!(seconds_until_next_month(at(2026, 12, 31, 0)), 86_400);
    }
}
