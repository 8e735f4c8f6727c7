//! The safety net under the queue. A CV row is written before its task is queued, and a
//! task can still be lost on the way: dropped by a producer whose buffer and spool
//! were full (counted in the gateway's `queue_dropped_total`), or with the acknowledged
//! writes a crashed queue Redis had not yet saved. Such a CV would stay `queued` (or
//! `processing`, if the run that had it died with the entry) for ever. Every
//! `sweep.interval` the processor looks for CVs unfinished and untouched for
//! `sweep.stale_after` (the partial index `cvs_queued_idx` serves the look-up) and
//! queues them again; one interrupted `sweep.max_attempts` times is failed instead.
//! Replicas share the work (`FOR UPDATE SKIP LOCKED`). A CV whose task was merely slow
//! (a backlog older than `stale_after`) gets a second task; the claim makes that one a
//! no-op. Analyses left `queued` or `running` as long are queued again the same way
//! (the partial index `analysis_results_unfinished_idx`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use common_models::analysis::AnalyzeApplication;
use common_models::cv::{CvStatus, ProcessCv};
use common_models::ids::{CompanyId, CvId, UserId};
use common_models::schema::main::{analysis_results, cvs};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamptz};
use diesel_async::RunQueryDsl;
use serde::Deserialize;
use task_queue::Producer;
use tokio::sync::watch;

use crate::handler::Context;

/// `[sweep]` in the settings.
#[derive(Debug, Clone, Deserialize)]
pub struct SweepSettings {
    #[serde(deserialize_with = "service_kit::config::duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "service_kit::config::duration")]
    pub stale_after: Duration,
    /// CVs queued again per round, at most.
    pub batch: i64,
    /// Claims after which a stale `processing` CV is failed rather than queued again.
    pub max_attempts: i32,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub requeued: usize,
    pub failed: usize,
    pub analyses_requeued: usize,
}

type Row = (i64, i64, String, String, String, DateTime<Utc>);

#[derive(QueryableByName)]
#[diesel(table_name = cvs)]
struct StaleCv {
    id: i64,
    company_id: i64,
    storage_key: String,
    file_name: String,
    content_type: String,
    created_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
#[diesel(table_name = analysis_results)]
struct StaleAnalysis {
    id: i64,
    application_id: i64,
    company_id: i64,
    requested_by: Option<i64>,
    created_at: DateTime<Utc>,
}

impl Context {
    /// One round: fails the stale CVs interrupted too often, queues the rest again.
    pub async fn sweep(&self, producer: &Producer, settings: &SweepSettings) -> anyhow::Result<Swept> {
        let cutoff = Utc::now() - settings.stale_after;
        let mut conn = self.db.get().await?;
        let columns = (cvs::id, cvs::company_id, cvs::storage_key, cvs::file_name, cvs::content_type, cvs::created_at);

        let worn_out: Vec<Row> = diesel::update(
            cvs::table.filter(
                cvs::status
                    .eq(CvStatus::Processing.as_str())
                    .and(cvs::updated_at.lt(cutoff))
                    .and(cvs::attempts.ge(settings.max_attempts)),
            ),
        )
        .set((
            cvs::status.eq(CvStatus::Failed.as_str()),
            cvs::failure_reason.eq(INTERRUPTED),
            cvs::updated_at.eq(diesel::dsl::now),
            cvs::processed_at.eq(diesel::dsl::now),
        ))
        .returning(columns)
        .get_results(&mut conn)
        .await?;

        // Back to `queued`: the claim takes a queued CV at once (a stale `processing`
        // one would look leased for a while after the update stamps it). The statuses
        // are literals, not a bound list: only then can the planner use the partial
        // index on unfinished CVs.
        let requeued: Vec<Row> = diesel::sql_query(
            "UPDATE cvs SET status = 'queued', updated_at = now() WHERE id IN ( \
                 SELECT id FROM cvs WHERE status IN ('queued', 'processing') AND updated_at < $1 \
                 ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING id, company_id, storage_key, file_name, content_type, created_at",
        )
        .bind::<Timestamptz, _>(cutoff)
        .bind::<BigInt, _>(settings.batch)
        .load::<StaleCv>(&mut conn)
        .await?
        .into_iter()
        .map(|r| (r.id, r.company_id, r.storage_key, r.file_name, r.content_type, r.created_at))
        .collect();
        drop(conn);

        for row in &worn_out {
            let task = task_of(row);
            tracing::warn!(cv_id = %task.cv_id, company_id = %task.company_id, "a CV interrupted too often was failed by the sweep");
            self.metrics.cvs.with_label_values(&["failed"]).inc();
            self.metrics.failures.with_label_values(&["interrupted"]).inc();
            self.emit(&task, CvStatus::Failed, Some(INTERRUPTED.to_owned())).await;
        }
        for row in &requeued {
            let task = task_of(row);
            tracing::warn!(cv_id = %task.cv_id, company_id = %task.company_id, "an unfinished CV without a live task was queued again");
            producer.publish(&task);
        }
        self.metrics.requeued.inc_by(requeued.len() as u64);
        let analyses_requeued = self.sweep_analyses(producer, settings, cutoff).await?;
        Ok(Swept { requeued: requeued.len(), failed: worn_out.len(), analyses_requeued })
    }

    /// Queues the stale unfinished analyses again; how many.
    async fn sweep_analyses(
        &self,
        producer: &Producer,
        settings: &SweepSettings,
        cutoff: DateTime<Utc>,
    ) -> anyhow::Result<usize> {
        let mut conn = self.db.get().await?;
        let stale: Vec<StaleAnalysis> = diesel::sql_query(
            "UPDATE analysis_results SET status = 'queued', updated_at = now() WHERE id IN ( \
                 SELECT id FROM analysis_results WHERE status IN ('queued', 'running') AND updated_at < $1 \
                 ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING id, application_id, company_id, requested_by, created_at",
        )
        .bind::<Timestamptz, _>(cutoff)
        .bind::<BigInt, _>(settings.batch)
        .load(&mut conn)
        .await?;
        drop(conn);
        for row in &stale {
            tracing::warn!(
                analysis_id = row.id,
                company_id = row.company_id,
                "an unfinished analysis without a live task was queued again"
            );
            producer.publish(&AnalyzeApplication {
                analysis_id: row.id,
                application_id: row.application_id,
                company_id: CompanyId(row.company_id),
                requested_by: row.requested_by.map(UserId),
                queued_at: row.created_at,
            });
        }
        self.metrics.requeued.inc_by(stale.len() as u64);
        Ok(stale.len())
    }
}

pub(crate) const INTERRUPTED: &str =
    "processing was interrupted too many times without finishing; the file may be too hard to read";

fn task_of((id, company, storage_key, file_name, content_type, created_at): &Row) -> ProcessCv {
    ProcessCv {
        cv_id: CvId(*id),
        company_id: CompanyId(*company),
        storage_key: storage_key.clone(),
        file_name: file_name.clone(),
        content_type: content_type.clone(),
        queued_at: *created_at,
    }
}

/// Sweeps every `settings.interval` until shutdown.
pub async fn keep_sweeping(
    ctx: std::sync::Arc<Context>,
    producer: Producer,
    settings: SweepSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(settings.interval.max(Duration::from_millis(100))) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match ctx.sweep(&producer, &settings).await {
            Ok(swept) if swept != Swept::default() => {
                tracing::info!(
                    requeued = swept.requeued,
                    failed = swept.failed,
                    analyses_requeued = swept.analyses_requeued,
                    "sweep"
                )
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "the sweep for unfinished CVs and analyses failed; will retry")
            }
        }
    }
}
