//! Spend alerts: a company's LLM spend crossing one of its thresholds becomes an event
//! in the main database, once per threshold and period, and a count in
//! `headhunter_gateway_spend_alerts_total{kind}` to alert on.
//!
//! - `daily_spend`: the day's spend reached the company's `daily_spend_alert_usd`; the
//!   day is the company's own (its `timezone`).
//! - `budget_share`: the month's spend (the UTC month, as the budget) reached one of
//!   `limits.budget_alert_shares` of the company's monthly budget.
//!
//! The totals are the Redis counters the budget reads, grown by each logged call's cost
//! with `INCRBYFLOAT`: each increment owns the interval from the total before it to the
//! total after it, so a threshold is crossed by exactly one call, on whichever replica.
//! The table's key (company, kind, period, threshold) holds it to one row even where
//! float rounding makes two neighbouring intervals both seem to contain it.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, NaiveDate, Utc};
use common_models::schema::main::spend_alerts;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use service_kit::AppError;
use service_kit::auth::require_admin;
use service_kit::db::PgPool;

use crate::access::Action;
use crate::metrics::GatewayMetrics;
use crate::page::{Page, PageQuery};
use crate::state::AppState;

pub const DAILY_SPEND: &str = "daily_spend";
pub const BUDGET_SHARE: &str = "budget_share";

/// A threshold a call's cost took its company's spend past.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    pub kind: &'static str,
    /// The local day, or the first of the UTC month.
    pub period_start: NaiveDate,
    pub threshold_usd: f64,
    pub budget_share: Option<f64>,
    /// The period's spend just after the call.
    pub spent_usd: f64,
}

/// Whether a cost of `cost`, bringing a total to `after`, crossed `threshold`.
pub fn crossed(after: f64, cost: f64, threshold: f64) -> bool {
    after - cost < threshold && after >= threshold
}

/// Writes each crossing (a threshold already recorded for its period is skipped) and
/// counts the new ones; one that cannot be written is counted as unrecorded.
pub async fn record(db: &PgPool, metrics: &GatewayMetrics, company: i64, crossings: Vec<Crossing>) {
    if crossings.is_empty() {
        return;
    }
    let written: Result<(), anyhow::Error> = async {
        let mut conn = db.get().await?;
        for c in crossings {
            let inserted = diesel::insert_into(spend_alerts::table)
                .values((
                    spend_alerts::company_id.eq(company),
                    spend_alerts::kind.eq(c.kind),
                    spend_alerts::period_start.eq(c.period_start),
                    spend_alerts::threshold_usd.eq(c.threshold_usd),
                    spend_alerts::budget_share.eq(c.budget_share),
                    spend_alerts::spent_usd.eq(c.spent_usd),
                ))
                .on_conflict_do_nothing()
                .execute(&mut conn)
                .await?;
            if inserted == 1 {
                metrics.spend_alerts.with_label_values(&[c.kind]).inc();
                tracing::warn!(
                    company_id = company,
                    kind = c.kind,
                    period_start = %c.period_start,
                    threshold_usd = c.threshold_usd,
                    spent_usd = c.spent_usd,
                    "spend alert: a company's LLM spend crossed a threshold"
                );
            }
        }
        Ok(())
    }
    .await;
    if let Err(err) = written {
        metrics.spend_alerts_unrecorded.inc();
        tracing::error!(company_id = company, error = %err, "a spend alert could not be recorded");
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/analytics/alerts", web::get().to(list))
        .route("/api/v1/admin/analytics/alerts", web::get().to(admin_list));
}

/// One spend alert.
#[derive(Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = spend_alerts)]
struct Alert {
    id: i64,
    company_id: i64,
    /// `daily_spend` or `budget_share`.
    kind: String,
    /// The company's local day (`daily_spend`), or the first of the UTC month.
    period_start: NaiveDate,
    threshold_usd: f64,
    /// `budget_share` only: the share of the monthly budget the threshold is.
    budget_share: Option<f64>,
    /// The period's spend as it crossed.
    spent_usd: f64,
    created_at: DateTime<Utc>,
}

/// Numbers arrive as text: `flatten` hands serde strings only.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AlertsQuery {
    /// Only this kind: `daily_spend` or `budget_share`.
    #[param(value_type = Option<String>, pattern = "^(daily_spend|budget_share)$")]
    kind: Option<String>,
    /// The operator's route only (`/api/v1/admin/analytics/alerts`): one company.
    #[param(ignore)]
    company_id: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// The company's spend alerts, newest first (owners and admins).
#[utoipa::path(get, path = "/api/v1/analytics/alerts", tag = "analytics", params(AlertsQuery, PageQuery),
    responses((status = 200, description = "A page of spend alerts.", body = Page<Alert>)))]
async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let q: AlertsQuery = crate::page::query(&req)?;
    let caller = state.allow(&req, Action::ReadAnalytics).await?;
    crate::analytics::own_company_only(&q.company_id)?;
    answer(&state, q, Some(caller.company_id.0)).await
}

/// Every company's spend alerts, or one's (`company_id`), newest first (the operator).
async fn admin_list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    require_admin(&req, &state.settings.admin_api_key, "ADMIN_API_KEY")?;
    let q: AlertsQuery = crate::page::query(&req)?;
    let company = q.company_id.as_deref().map(|v| crate::page::integer("company_id", v)).transpose()?;
    answer(&state, q, company).await
}

async fn answer(state: &AppState, q: AlertsQuery, company: Option<i64>) -> Result<HttpResponse, AppError> {
    let (limit, after) = q.page.resolve()?;
    let mut query = spend_alerts::table.into_boxed();
    if let Some(company) = company {
        query = query.filter(spend_alerts::company_id.eq(company));
    }
    match q.kind.as_deref() {
        None => {}
        Some(kind @ (DAILY_SPEND | BUDGET_SHARE)) => query = query.filter(spend_alerts::kind.eq(kind.to_owned())),
        Some(_) => {
            return Err(AppError::bad_request(
                "kind",
                "invalid_value",
                format!("`kind` must be {DAILY_SPEND} or {BUDGET_SHARE}"),
            ));
        }
    }
    if let Some(after) = after {
        query = query.filter(spend_alerts::id.lt(after));
    }
    let mut conn = state.db.get().await?;
    let rows: Vec<Alert> =
        query.order(spend_alerts::id.desc()).limit(limit + 1).select(Alert::as_select()).load(&mut conn).await?;
    Ok(HttpResponse::Ok().json(Page::of(rows, limit, |r| r.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_is_crossed_by_the_cost_that_reaches_it_and_by_no_other() {
        let thresholds = [5.0, 8.0, 10.0];
        let crossing = |after: f64, cost: f64| -> Vec<f64> {
            thresholds.into_iter().filter(|t| crossed(after, cost, *t)).collect()
        };
        assert_eq!(crossing(4.0, 1.0).len(), 0);
        assert_eq!(crossing(5.0, 1.0), vec![5.0]);
        assert_eq!(crossing(5.5, 0.5).len(), 0);
        // One large call past several thresholds raises each.
        assert_eq!(crossing(12.0, 7.0), vec![8.0, 10.0]);
        assert_eq!(crossing(13.0, 1.0).len(), 0);
    }
}
