//! Folding raw rows into the rollups ([`Folder`]): the rows past the watermark are
//! streamed out (or, for this process's own batches, taken from memory once the
//! database confirms them: [`crate::handoff`]), summed here in memory for
//! `llm_usage_hourly`, `llm_usage_hourly_models` and `llm_usage_hourly_grains` (whose
//! all-company grains' sums also go to `llm_usage_hourly_totals`) in one pass, and
//! copied back in (binary COPY into session tables), one row per key, then
//! added to the rollups. The figures are those of the SQL aggregate the rebuild uses
//! (`common_models::llm_usage_sums!` and `llm_histogram`), which the rollup tests hold
//! them to: costs are summed exactly in units of 10⁻¹⁰ USD (the raw columns' scale),
//! latencies counted into `histogram_bucket`, which agrees with `llm_latency_bucket` on
//! every value. Summing here rather than in SQL took a 200,000-row step from 4.1 s to
//! 1.8 s: the plpgsql histogram step and the re-grouping of 60-element arrays were most
//! of it.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::UNIX_EPOCH;

use bytes::{BufMut, BytesMut};
use common_models::usage::{GRAINS, histogram_bucket};
use rustc_hash::FxHashMap;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls};

use crate::copy::POSTGRES_EPOCH_MICROS;
use crate::handoff::{Call, Handoff};
use crate::rollup::{COARSE, FIGURES, FINE, FOLD_PENDING, LOCK_ORDER, Target, add_grouped};

/// Digits after the point of the cost columns (`NUMERIC(16, 10)` raw, `(24, 10)` rolled up).
pub(crate) const COST_SCALE: u32 = 10;

/// One raw row, as much of it as the rollups keep (its text borrowed from the row read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawCall<'a> {
    /// Start of the row's UTC hour, in seconds since the epoch.
    pub hour: i64,
    pub company_id: Option<i64>,
    pub user_id: Option<i64>,
    pub interview_id: Option<i64>,
    pub action: &'a str,
    pub model: Option<&'a str>,
    pub error_type: Option<&'a str>,
    pub usage_reported: bool,
    /// In units of 10⁻¹⁰ USD ([`Units`]).
    pub cost: Option<i128>,
    pub tokens_input: Option<i32>,
    pub tokens_output: Option<i32>,
    pub cache_hit: bool,
    pub cost_saved: Option<i128>,
    pub streaming: bool,
    pub latency_ms: Option<i32>,
    pub ttft_ms: Option<i32>,
    pub tokens_cached_input: Option<i32>,
    pub tokens_reasoning: Option<i32>,
}

/// The figures of a rollup row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sums {
    pub calls: i64,
    /// Calls with an error type (a column of the grains only).
    pub errors: i64,
    pub calls_without_usage: i64,
    pub unpriced_calls: i64,
    pub tokens_input: i64,
    pub tokens_output: i64,
    pub cost: i128,
    pub cache_hits: i64,
    pub cost_saved: i128,
    pub streaming_calls: i64,
    pub latency_ms_sum: i64,
    pub tokens_cached_input: i64,
    pub tokens_reasoning: i64,
    pub latency: Histogram,
    pub ttft: Histogram,
}

/// Counts per histogram bucket, only of the buckets counted into (most rows of the
/// finest rollup hold a call or two).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram(Vec<(u8, i64)>);

impl Histogram {
    fn count(&mut self, ms: i32) {
        let bucket = u8::try_from(histogram_bucket(f64::from(ms))).unwrap_or(u8::MAX);
        match self.0.iter_mut().find(|(b, _)| *b == bucket) {
            Some((_, n)) => *n += 1,
            None => self.0.push((bucket, 1)),
        }
    }

    /// The histogram as the rollups store it: the counts of its first to its last
    /// counted bucket, subscripted by bucket number (`llm_histogram_trim`).
    pub fn span(&self) -> Span {
        let (Some(first), Some(last)) = (self.0.iter().map(|(b, _)| *b).min(), self.0.iter().map(|(b, _)| *b).max())
        else {
            return Span::default();
        };
        let mut counts = vec![0; usize::from(last - first) + 1];
        for (bucket, n) in &self.0 {
            counts[usize::from(bucket - first)] += n;
        }
        Span { first: i32::from(first), counts }
    }
}

/// A `BIGINT[]` whose first element has the subscript `first` (PostgreSQL arrays carry
/// their lower bound; `Vec<i64>` always starts at 1). Empty: `'{}'`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Span {
    pub first: i32,
    pub counts: Vec<i64>,
}

impl ToSql for Span {
    /// The binary array format: dimensions, a has-nulls flag, the element type, then
    /// each dimension's length and lower bound, then each element with its length.
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let len = i32::try_from(self.counts.len())?;
        out.put_i32(i32::from(len > 0));
        out.put_i32(0);
        out.put_u32(Type::INT8.oid());
        if len > 0 {
            out.put_i32(len);
            out.put_i32(self.first);
            for n in &self.counts {
                out.put_i32(8);
                out.put_i64(*n);
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INT8_ARRAY
    }

    to_sql_checked!();
}

impl Sums {
    fn add(&mut self, c: &RawCall<'_>) {
        let int = |v: Option<i32>| i64::from(v.unwrap_or(0));
        self.calls += 1;
        self.errors += i64::from(c.error_type.is_some());
        self.calls_without_usage += i64::from(!c.usage_reported);
        self.unpriced_calls += i64::from(c.cost.is_none() && c.tokens_input.is_some() && !c.cache_hit);
        self.tokens_input += int(c.tokens_input);
        self.tokens_output += int(c.tokens_output);
        self.cost += c.cost.unwrap_or(0);
        self.cache_hits += i64::from(c.cache_hit);
        self.cost_saved += c.cost_saved.unwrap_or(0);
        self.streaming_calls += i64::from(c.streaming);
        self.latency_ms_sum += int(c.latency_ms);
        self.tokens_cached_input += int(c.tokens_cached_input);
        self.tokens_reasoning += int(c.tokens_reasoning);
        if let Some(ms) = c.latency_ms {
            self.latency.count(ms);
        }
        if let Some(ms) = c.ttft_ms {
            self.ttft.count(ms);
        }
    }
}

/// A text key (action, model, error type) by its number in [`Names`].
type Name = u32;
type FineKey = (i64, Option<i64>, Option<i64>, Option<i64>, Name, Option<Name>, Option<Name>);
type CoarseKey = (i64, Option<i64>, Name, Option<Name>, Option<Name>);
/// Grain id, hour, company, user, action, model (the keys a grain lacks are `None`).
type GrainKey = (i16, i64, Option<i64>, Option<i64>, Option<Name>, Option<Name>);

/// The text keys of a fold, numbered as they first appear: the rows are summed by
/// plain numbers, so no string is copied or hashed per call and table.
#[derive(Debug, Default)]
pub struct Names {
    ids: FxHashMap<String, Name>,
    texts: Vec<String>,
}

impl Names {
    fn id(&mut self, text: &str) -> Name {
        if let Some(id) = self.ids.get(text) {
            return *id;
        }
        let id = Name::try_from(self.texts.len()).unwrap_or(Name::MAX);
        self.ids.insert(text.to_owned(), id);
        self.texts.push(text.to_owned());
        id
    }

    pub fn text(&self, id: Name) -> &str {
        self.texts.get(id as usize).map_or("", String::as_str)
    }
}

/// Rollup rows of every table, summed from raw rows as they come.
#[derive(Debug, Default)]
pub struct Fold {
    pub fine: FxHashMap<FineKey, Sums>,
    pub coarse: FxHashMap<CoarseKey, Sums>,
    pub grains: FxHashMap<GrainKey, Sums>,
    pub names: Names,
    pub calls: u64,
    /// Of `calls`, those handed over by this process's write loops ([`Handoff`]).
    pub handed: u64,
}

impl Fold {
    /// Empties the fold for the next step, keeping the memory its tables grew to (a
    /// step's tables hold tens of thousands of keys; growing them afresh each step
    /// rehashed them a dozen times into memory the system had to hand over again).
    pub fn clear(&mut self) {
        self.fine.clear();
        self.coarse.clear();
        self.grains.clear();
        self.names.ids.clear();
        self.names.texts.clear();
        self.calls = 0;
        self.handed = 0;
    }

    pub fn add(&mut self, c: &RawCall<'_>) {
        self.calls += 1;
        let action = self.names.id(c.action);
        let model = c.model.map(|m| self.names.id(m));
        let error = c.error_type.map(|e| self.names.id(e));
        self.fine.entry((c.hour, c.company_id, c.user_id, c.interview_id, action, model, error)).or_default().add(c);
        self.coarse.entry((c.hour, c.company_id, action, model, error)).or_default().add(c);
        for grain in GRAINS {
            let has = |key: &str| grain.keys.contains(&key);
            let key = (
                grain.id(),
                c.hour,
                c.company_id.filter(|_| has("company_id")),
                c.user_id.filter(|_| has("user_id")),
                has("action").then_some(action),
                model.filter(|_| has("model")),
            );
            self.grains.entry(key).or_default().add(c);
        }
    }
}

/// Units of 10⁻¹⁰ USD as a decimal with [`COST_SCALE`] digits after the point.
pub fn format_cost(units: i128) -> String {
    let scale = 10u128.pow(COST_SCALE);
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    format!("{sign}{}.{:0width$}", abs / scale, abs % scale, width = COST_SCALE as usize)
}

/// Raw rows one [`Folder::step`] folds at most (a backlog after an outage is folded
/// in steps of about this size, each its own transaction). A step's transaction holds
/// every other fold in the cluster back while it writes its sums, so steps stay short
/// (a 200,000-row step of a debug build's legacy move held the others back for 27 s).
pub const STEP_ROWS: i64 = 100_000;

/// What the rollups keep of the raw rows whose writer's transaction id lies in [`$1`,
/// `$2`) (text), and that id, one transaction's rows after another.
/// Read in binary and converted here ([`HourOf`], [`Units`], [`Xid8`]): in text, the
/// hour (`date_trunc` in a named zone), the costs and the ids were a fifth of the
/// server's work for a step.
macro_rules! read_raw {
    ($rows:literal) => {
        concat!(
            "SELECT created_at, company_id, user_id, interview_id, action, model, error_type, usage_reported, \
             cost_usd, tokens_input, tokens_output, cache_hit, cost_saved_usd, streaming, latency_ms, \
             time_to_first_token_ms, tokens_cached_input, tokens_reasoning, inserted_by FROM llm_logs WHERE ",
            $rows
        )
    };
}
const READ_RAW: &str = read_raw!("inserted_by >= $1::text::xid8 AND inserted_by < $2::text::xid8 ORDER BY inserted_by");

/// The oldest transaction still running: every transaction below it has ended, so no
/// row can appear there any more.
const SETTLED: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text";

/// Rows fetched from the server at a time while a step reads.
const READ_CHUNK: i32 = 10_000;

/// Session tables a step copies its sums into (binary COPY; costs as their decimal
/// text, which the upsert reads into `NUMERIC`) before adding them to the rollups.
static STAGING: LazyLock<String> = LazyLock::new(|| {
    let figures = "calls int8, calls_without_usage int8, unpriced_calls int8, tokens_input int8, tokens_output int8, \
        cost_usd text, cache_hits int8, cost_saved_usd text, streaming_calls int8, latency_ms_sum int8, \
        tokens_cached_input int8, tokens_reasoning int8, latency_ms_histogram int8[], ttft_ms_histogram int8[]";
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS fold_fine (hour timestamptz, company_id int8, user_id int8, \
           interview_id int8, action text, model text, error_type text, {figures}) ON COMMIT DELETE ROWS; \
         CREATE TEMP TABLE IF NOT EXISTS fold_coarse (hour timestamptz, company_id int8, action text, model text, \
           error_type text, {figures}) ON COMMIT DELETE ROWS; \
         CREATE TEMP TABLE IF NOT EXISTS fold_grains (grain int2, hour timestamptz, company_id int8, user_id int8, \
           action text, model text, errors int8, {figures}) ON COMMIT DELETE ROWS"
    )
});

/// The sums as the upserts read them from the staging tables.
macro_rules! sums_read {
    () => {
        "calls, calls_without_usage, unpriced_calls, tokens_input, tokens_output, cost_usd::numeric, cache_hits, \
         cost_saved_usd::numeric, streaming_calls, latency_ms_sum, tokens_cached_input, tokens_reasoning"
    };
}
/// [`FIGURES`] as the upserts read them from the staging tables.
const FIGURES_READ: &str = concat!(sums_read!(), ", latency_ms_histogram, ttft_ms_histogram");

/// The binary types of the figures, in [`FIGURES`] order.
const FIGURE_TYPES: [Type; 14] = [
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
];

/// The statements adding each staging table to its rollup table (one row per key
/// already, so no grouping): fine, coarse, grains, and the all-company grains' sums
/// once more into the totals.
static UPSERTS: LazyLock<[String; 4]> = LazyLock::new(|| {
    let totals: Vec<String> = GRAINS.iter().filter(|g| g.totals).map(|g| g.id().to_string()).collect();
    [
        add_grouped(FINE, "fold_fine", FIGURES_READ),
        add_grouped(COARSE, "fold_coarse", FIGURES_READ),
        add_grouped(Target::Grains, "fold_grains", FIGURES_READ),
        add_grouped(Target::Totals, &format!("fold_grains WHERE grain IN ({})", totals.join(", ")), sums_read!()),
    ]
});

/// What one [`Folder::step`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Raw calls folded into the rollups (and pending calls moved).
    pub calls: u64,
    /// The step stopped at its size ([`Folder::step_rows`]): more rows are waiting.
    pub more: bool,
    /// Of `calls`, those folded from batches handed over in memory ([`Folder::handed`]).
    pub handed: u64,
}

/// Keeps the rollups current over a connection of its own: raw rows are streamed out,
/// summed here (the sums above) and copied back in.
pub struct Folder {
    url: String,
    client: Option<Client>,
    step_rows: u64,
    follow: std::time::Duration,
    follow_idle: std::time::Duration,
    handoff: Option<Arc<Handoff>>,
    /// The last step's fold, emptied, for the next ([`Fold::clear`]).
    spare: Fold,
}

/// How often a step that follows the writes looks for transactions that ended.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// How long the worker's steps wait for the next transaction to end before they write
/// what they have ([`Folder::following`]): a batch commits every few milliseconds
/// under load, and the last rows of a burst wait no longer than this for their step.
pub const FOLLOW_IDLE: std::time::Duration = std::time::Duration::from_millis(50);

impl Folder {
    pub fn new(url: &str) -> Self {
        Self {
            url: service_kit::config::postgres_url_for(url, "llm-log-worker-rollups"),
            client: None,
            step_rows: STEP_ROWS.unsigned_abs(),
            follow: std::time::Duration::ZERO,
            follow_idle: std::time::Duration::ZERO,
            handoff: None,
            spare: Fold::default(),
        }
    }

    /// Folds the batches this process's write loops hand over from memory, once the
    /// database confirms it holds exactly those rows, unchanged ([`crate::handoff`]).
    pub fn handed(mut self, handoff: Arc<Handoff>) -> Self {
        self.handoff = Some(handoff);
        self
    }

    /// A backlog is folded in steps of about `rows` raw rows ([`STEP_ROWS`] unless set
    /// here); a step that follows the writes may go on past that ([`Folder::following`]).
    pub fn step_rows(mut self, rows: u64) -> Self {
        self.step_rows = rows.max(1);
        self
    }

    /// A step keeps reading the transactions that end while it reads, for up to
    /// `follow` from its start (and up to twice its size, see below), as long as the
    /// next one ends within `idle` ([`FOLLOW_IDLE`] for the worker), instead of stopping as soon
    /// as it has caught up: under a steady flow, steps are fewer and larger, and the
    /// rows left for the next step are those committed while this one writes its sums
    /// (the ingest benchmark's ratio 0.51 → 0.54, two steps for 200,000 calls instead
    /// of three). The rollups then trail the raw rows by up to `follow` plus a step's
    /// writing. Reading takes no transaction id, so a waiting step holds back no other
    /// fold's view; it holds a rebuild back.
    ///
    /// Only the rows waiting when a step began count against its size; a step that has
    /// caught up follows on past it (up to twice the size, which bounds its memory and
    /// the length of its writing). A burst that ends while a step follows it is folded
    /// by that step, where a cut at the size left its last rows to a second step that
    /// wrote the same hours' keys again after the burst (the ingest benchmark's last
    /// 100,000 calls: one step writing for about 0.7 s after the last commit, where two
    /// wrote for 1.2-1.3 s).
    pub fn following(mut self, follow: std::time::Duration, idle: std::time::Duration) -> Self {
        self.follow = follow;
        self.follow_idle = idle;
        self
    }

    async fn client(&mut self) -> anyhow::Result<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "rollup connection ended");
                }
            });
            client.batch_execute(STAGING.as_str()).await?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| anyhow::anyhow!("no connection"))
    }

    /// Folds the raw rows past the watermark, up to every transaction that has ended
    /// before it or while it reads (see [`Folder::following`]), into
    /// `llm_usage_hourly`, its coarser grain `llm_usage_hourly_models` and the small
    /// grains, and moves the watermark past them; also moves any pending rows. All in
    /// one transaction; does nothing while another session folds (advisory lock, held
    /// to the end of the transaction).
    pub async fn step(&mut self) -> anyhow::Result<Compacted> {
        let result = self.try_step().await;
        if result.is_err() {
            // Whatever state the connection is in, start afresh next time.
            self.client = None;
        }
        result
    }

    async fn try_step(&mut self) -> anyhow::Result<Compacted> {
        let started = std::time::Instant::now();
        let (follow, idle, size) = (self.follow, self.follow_idle, self.step_rows);
        let handoff = self.handoff.clone();
        let handoff = handoff.as_deref();
        let mut fold = std::mem::take(&mut self.spare);
        fold.clear();
        let client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("LOCK TABLE {LOCK_ORDER} IN ROW EXCLUSIVE MODE")).await?;
        // The advisory lock makes this the only fold; the table locks keep rebuilds
        // out. Nothing here writes until the rows are read and summed, so this
        // transaction holds back other folds in the cluster (its id below their
        // snapshots' xmin) only while it writes.
        let mine: bool =
            tx.query_one("SELECT pg_try_advisory_xact_lock(hashtext('llm_usage_compact'))", &[]).await?.try_get(0)?;
        if !mine {
            if let Some(handoff) = handoff {
                handoff.clear();
            }
            return Ok(Compacted::default());
        }
        let mark = tx
            .query_one(
                "SELECT rolled_up_to::text, pg_snapshot_xmin(pg_current_snapshot())::text, \
                   rolled_up_to > pg_snapshot_xmin(pg_current_snapshot()) FROM llm_usage_watermark",
                &[],
            )
            .await?;
        let (from, settled, ahead): (String, String, bool) = (mark.try_get(0)?, mark.try_get(1)?, mark.try_get(2)?);
        anyhow::ensure!(
            !ahead,
            "the rollup watermark {from} is ahead of this cluster's transactions ({settled}): the database was \
             restored into another cluster; rebuild the rollups and reset llm_usage_watermark"
        );
        let (mut settled, mut upto) = (settled, from.clone());
        if settled != from {
            upto = read(&tx, &mut fold, &from, &settled, size, handoff).await?;
        }
        // Once caught up, transactions that end while the step reads are read too, up
        // to twice its size ([`Folder::following`]).
        let mut moved = std::time::Instant::now();
        while upto == settled && fold.calls < 2 * size {
            let now: String = tx.query_one(SETTLED, &[]).await?.try_get(0)?;
            if now.parse::<u64>()? <= settled.parse::<u64>()? {
                if started.elapsed() + FOLLOW_POLL >= follow || moved.elapsed() >= idle {
                    break;
                }
                tokio::time::sleep(FOLLOW_POLL).await;
                continue;
            }
            upto = read(&tx, &mut fold, &settled, &now, 2 * size, handoff).await?;
            settled = now;
            moved = std::time::Instant::now();
        }
        let more = upto != settled;
        if fold.calls > 0 {
            stage(&tx, &fold).await?;
            for upsert in UPSERTS.iter() {
                tx.execute(upsert.as_str(), &[]).await?;
            }
        }
        if upto != from {
            tx.execute("UPDATE llm_usage_watermark SET rolled_up_to = $1::text::xid8, updated_at = now()", &[&upto])
                .await?;
        }
        let pending: i64 = tx.query_one(FOLD_PENDING.as_str(), &[]).await?.try_get(0)?;
        tx.commit().await?;
        let step = Compacted { calls: fold.calls + u64::try_from(pending).unwrap_or(0), more, handed: fold.handed };
        self.spare = fold;
        Ok(step)
    }

    /// Steps until nothing more is waiting for a step (or another session holds the
    /// turn); returns the calls folded.
    pub async fn step_all(&mut self) -> anyhow::Result<u64> {
        let mut calls = 0;
        loop {
            let step = self.step().await?;
            calls += step.calls;
            if !step.more {
                return Ok(calls);
            }
        }
    }

    /// Folds until the rollups hold every committed row (another worker's folding
    /// counts too), or `within` has passed (a transaction left open anywhere in the
    /// cluster holds the watermark back); returns whether they caught up.
    pub async fn catch_up(&mut self, within: std::time::Duration) -> anyhow::Result<bool> {
        let started = std::time::Instant::now();
        loop {
            self.step_all().await?;
            if self.backlog().await? == 0 {
                return Ok(true);
            }
            if started.elapsed() >= within {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Rows committed but not yet in the rollups (raw rows past the watermark, and
    /// pending rows of the previous version's writers).
    pub async fn backlog(&mut self) -> anyhow::Result<i64> {
        let client = self.client().await?;
        let row = client.query_one("SELECT (raw_rows + pending_rows)::int8 FROM llm_usage_backlog", &[]).await?;
        Ok(row.try_get(0)?)
    }
}

/// Copies the sums of `fold` into the staging tables.
async fn stage(tx: &tokio_postgres::Transaction<'_>, fold: &Fold) -> anyhow::Result<()> {
    let open = async |table: &str, keys: &str, key_types: &[Type]| -> anyhow::Result<BinaryCopyInWriter> {
        let sink = tx.copy_in(&format!("COPY {table} ({keys}, {FIGURES}) FROM STDIN (FORMAT binary)")).await?;
        let types: Vec<Type> = key_types.iter().chain(FIGURE_TYPES.iter()).cloned().collect();
        Ok(BinaryCopyInWriter::new(sink, &types))
    };
    let hour = |secs: i64| UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0).unsigned_abs());

    let writer = open(
        "fold_fine",
        &FINE.key_columns(),
        &[Type::TIMESTAMPTZ, Type::INT8, Type::INT8, Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT],
    )
    .await?;
    futures_util::pin_mut!(writer);
    let names = &fold.names;
    let text = |id: &Option<Name>| id.map(|id| names.text(id));
    for ((at, company, user, interview, action, model, error), sums) in &fold.fine {
        let figures = Figures::of(sums, true);
        let (action, model, error) = (names.text(*action), text(model), text(error));
        let keys: [&(dyn ToSql + Sync); 7] = [&hour(*at), company, user, interview, &action, &model, &error];
        writer.as_mut().write(&[&keys[..], &figures.values()[..]].concat()).await?;
    }
    writer.finish().await?;

    let writer = open(
        "fold_coarse",
        &COARSE.key_columns(),
        &[Type::TIMESTAMPTZ, Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT],
    )
    .await?;
    futures_util::pin_mut!(writer);
    for ((at, company, action, model, error), sums) in &fold.coarse {
        let figures = Figures::of(sums, true);
        let (action, model, error) = (names.text(*action), text(model), text(error));
        let keys: [&(dyn ToSql + Sync); 5] = [&hour(*at), company, &action, &model, &error];
        writer.as_mut().write(&[&keys[..], &figures.values()[..]].concat()).await?;
    }
    writer.finish().await?;

    let writer = open(
        "fold_grains",
        &Target::Grains.key_columns(),
        &[Type::INT2, Type::TIMESTAMPTZ, Type::INT8, Type::INT8, Type::TEXT, Type::TEXT, Type::INT8],
    )
    .await?;
    futures_util::pin_mut!(writer);
    for ((grain, at, company, user, action, model), sums) in &fold.grains {
        let histograms = GRAINS.iter().find(|g| g.id() == *grain).is_some_and(|g| g.histograms);
        let figures = Figures::of(sums, histograms);
        let (action, model) = (text(action), text(model));
        let keys: [&(dyn ToSql + Sync); 7] = [grain, &hour(*at), company, user, &action, &model, &sums.errors];
        writer.as_mut().write(&[&keys[..], &figures.values()[..]].concat()).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// A rollup row's figures as the staging tables take them.
struct Figures<'a> {
    sums: &'a Sums,
    cost: String,
    cost_saved: String,
    latency: Option<Span>,
    ttft: Option<Span>,
}

impl<'a> Figures<'a> {
    fn of(sums: &'a Sums, histograms: bool) -> Self {
        Self {
            sums,
            cost: format_cost(sums.cost),
            cost_saved: format_cost(sums.cost_saved),
            latency: histograms.then(|| sums.latency.span()),
            ttft: histograms.then(|| sums.ttft.span()),
        }
    }

    fn values(&self) -> [&(dyn ToSql + Sync); 14] {
        let s = self.sums;
        [
            &s.calls,
            &s.calls_without_usage,
            &s.unpriced_calls,
            &s.tokens_input,
            &s.tokens_output,
            &self.cost,
            &s.cache_hits,
            &self.cost_saved,
            &s.streaming_calls,
            &s.latency_ms_sum,
            &s.tokens_cached_input,
            &s.tokens_reasoning,
            &self.latency,
            &self.ttft,
        ]
    }
}

/// The start of the UTC hour of a time in microseconds since the Unix epoch, in seconds
/// since the epoch (how [`RawCall::hour`] is taken from a stored time).
pub(crate) fn hour_of_micros(micros: i64) -> i64 {
    let secs = micros.div_euclid(1_000_000);
    secs - secs.rem_euclid(3600)
}

/// A `TIMESTAMPTZ` read as the start of its UTC hour, in seconds since the Unix epoch.
struct HourOf(i64);

impl<'a> FromSql<'a> for HourOf {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        // Microseconds since 2000-01-01 UTC.
        let micros = i64::from_be_bytes(raw.try_into()?);
        Ok(Self(hour_of_micros(micros + POSTGRES_EPOCH_MICROS)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ
    }
}

/// A `NUMERIC` of at most [`COST_SCALE`] decimals, in units of 10⁻¹⁰ USD. The binary
/// form: digit count, weight (the power of 10,000 of the first digit), sign, display
/// scale, then the digits in base 10,000.
struct Units(i128);

impl<'a> FromSql<'a> for Units {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let word = |i: usize| -> Result<i16, Box<dyn std::error::Error + Sync + Send>> {
            let bytes = raw.get(2 * i..2 * i + 2).ok_or("a numeric cut short")?;
            Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
        };
        let (digits, weight, sign) = (usize::try_from(word(0)?)?, i32::from(word(1)?), word(2)? as u16);
        let negative = match sign {
            0x0000 => false,
            0x4000 => true,
            _ => return Err("a cost that is not a number".into()),
        };
        let mut units: i128 = 0;
        for i in 0..digits {
            let digit = i128::from(word(4 + i)?);
            // This digit's power of ten, counted in units of 10⁻¹⁰.
            let power = 4 * (weight - i32::try_from(i)?) + COST_SCALE as i32;
            units += match power {
                0.. => digit * 10i128.checked_pow(power.unsigned_abs()).ok_or("a cost too large")?,
                -3..0 if digit % 10i128.pow(power.unsigned_abs()) == 0 => digit / 10i128.pow(power.unsigned_abs()),
                _ => return Err("a cost with more decimals than its column keeps".into()),
            };
        }
        Ok(Self(if negative { -units } else { units }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// An `xid8` (a transaction id with its epoch).
#[derive(PartialEq, Eq, Clone, Copy)]
struct Xid8(u64);

impl<'a> FromSql<'a> for Xid8 {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(u64::from_be_bytes(raw.try_into()?)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::XID8
    }
}

/// The raw rows of the transactions in [`from`, `settled`), added to `fold`; returns
/// where the adding stopped: `settled`, or the first transaction that begins when
/// `fold` holds `limit` calls or more (a step ends between two transactions' rows;
/// one transaction's rows are folded together, however many). Batches `handoff` holds
/// for those transactions are folded from memory where the database confirms them.
async fn read(
    tx: &tokio_postgres::Transaction<'_>,
    fold: &mut Fold,
    from: &str,
    settled: &str,
    limit: u64,
    handoff: Option<&Handoff>,
) -> anyhow::Result<String> {
    if let Some(handoff) = handoff {
        let batches = handoff.take(from.parse()?, settled.parse()?);
        if !batches.is_empty() {
            return read_handed(tx, fold, from, settled, limit, handoff, batches).await;
        }
    }
    let portal = tx.bind(READ_RAW, &[&from, &settled]).await?;
    Ok(add_rows(tx, fold, &portal, limit).await?.map_or_else(|| settled.to_owned(), |by| by.0.to_string()))
}

/// Adds the rows of `portal` (a [`read_raw!`] query) to `fold`, fetched in chunks, until
/// a transaction's rows begin when `fold` holds `limit` calls or more (the rows ordered
/// by transaction, if a limit is to cut between them); returns that transaction.
async fn add_rows(
    tx: &tokio_postgres::Transaction<'_>,
    fold: &mut Fold,
    portal: &tokio_postgres::Portal,
    limit: u64,
) -> anyhow::Result<Option<Xid8>> {
    let mut last = None;
    loop {
        let rows = tx.query_portal(portal, READ_CHUNK).await?;
        for row in &rows {
            let by: Xid8 = row.try_get(18)?;
            if last != Some(by) {
                if fold.calls >= limit {
                    return Ok(Some(by));
                }
                last = Some(by);
            }
            add_row(fold, row)?;
        }
        if rows.len() < READ_CHUNK.unsigned_abs() as usize {
            return Ok(None);
        }
    }
}

/// Per transaction in [`$1`, `$2`): its raw rows, and those changed since their insert.
const COUNT_RAW: &str = "SELECT inserted_by, count(*), count(*) FILTER (WHERE xmin <> xid(inserted_by)) \
    FROM llm_logs WHERE inserted_by >= $1::text::xid8 AND inserted_by < $2::text::xid8 \
    GROUP BY inserted_by ORDER BY inserted_by";

/// [`READ_RAW`]'s columns, of the transactions listed in `$1` (text).
const READ_LISTED: &str = read_raw!("inserted_by = ANY($1::text[]::xid8[])");

/// [`read`] with batches handed over: each transaction whose rows the database holds
/// exactly as handed (as many, none changed) is folded from its batch; the others are
/// read from the database. Batches past where the step stops go back to `handoff`.
async fn read_handed(
    tx: &tokio_postgres::Transaction<'_>,
    fold: &mut Fold,
    from: &str,
    settled: &str,
    limit: u64,
    handoff: &Handoff,
    mut batches: BTreeMap<u64, Vec<Call>>,
) -> anyhow::Result<String> {
    let mut upto = settled.to_owned();
    let mut unread = Vec::new();
    let mut planned = fold.calls;
    for row in tx.query(COUNT_RAW, &[&from, &settled]).await? {
        let (by, rows, changed): (Xid8, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if planned >= limit {
            upto = by.0.to_string();
            handoff.give_back(batches.split_off(&by.0));
            break;
        }
        planned += rows.unsigned_abs();
        match batches.remove(&by.0) {
            Some(calls) if calls.len() as u64 == rows.unsigned_abs() && changed == 0 => {
                for call in &calls {
                    fold.add(&call.raw());
                }
                fold.handed += rows.unsigned_abs();
            }
            _ => unread.push(by.0.to_string()),
        }
    }
    if !unread.is_empty() {
        let portal = tx.bind(READ_LISTED, &[&unread]).await?;
        add_rows(tx, fold, &portal, u64::MAX).await?;
    }
    Ok(upto)
}

/// Adds one row of [`READ_RAW`] to `fold`.
fn add_row(fold: &mut Fold, row: &tokio_postgres::Row) -> anyhow::Result<()> {
    let cost = |v: Option<Units>| v.map(|u| u.0);
    fold.add(&RawCall {
        hour: row.try_get::<_, HourOf>(0)?.0,
        company_id: row.try_get(1)?,
        user_id: row.try_get(2)?,
        interview_id: row.try_get(3)?,
        action: row.try_get(4)?,
        model: row.try_get(5)?,
        error_type: row.try_get(6)?,
        usage_reported: row.try_get(7)?,
        cost: cost(row.try_get(8)?),
        tokens_input: row.try_get(9)?,
        tokens_output: row.try_get(10)?,
        cache_hit: row.try_get(11)?,
        cost_saved: cost(row.try_get(12)?),
        streaming: row.try_get(13)?,
        latency_ms: row.try_get(14)?,
        ttft_ms: row.try_get(15)?,
        tokens_cached_input: row.try_get(16)?,
        tokens_reasoning: row.try_get(17)?,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cost read from `NUMERIC`'s binary form: (digit count, weight, sign, scale, digits…).
    fn units(words: &[i16]) -> Option<i128> {
        let raw: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        Units::from_sql(&Type::NUMERIC, &raw).ok().map(|u| u.0)
    }

    #[test]
    fn costs_are_read_and_written_exactly() {
        assert_eq!(units(&[2, -1, 0, 10, 1, 2300]), Some(1_230_000)); // 0.0001230000
        assert_eq!(units(&[2, 0, 0, 1, 12, 5000]), Some(125_000_000_000)); // 12.5
        assert_eq!(units(&[1, -3, 0x4000, 10, 100]), Some(-1)); // -0.0000000001
        assert_eq!(units(&[1, 0, 0, 0, 7]), Some(70_000_000_000)); // 7
        assert_eq!(units(&[2, 1, 0, 10, 1, 2345]), Some(123_450_000_000_000)); // 12345
        assert_eq!(units(&[0, 0, 0, 10]), Some(0));
        assert_eq!(units(&[1, -3, 0, 11, 10]), None, "more digits than the columns hold");
        assert_eq!(units(&[0, 0, 0xC000u16 as i16, 0]), None, "NaN");
        assert_eq!(units(&[2, 0, 0, 1, 12]), None, "cut short");
        assert_eq!(format_cost(1_230_000), "0.0001230000");
        assert_eq!(format_cost(-1), "-0.0000000001");
        assert_eq!(format_cost(123_456_789_012_345), "12345.6789012345");
    }

    #[test]
    fn a_timestamp_is_read_as_the_start_of_its_utc_hour() {
        // 2025-11-23T10:59:59.999999Z, in microseconds since 2000-01-01.
        let micros: i64 = (1_763_895_599 - 946_684_800) * 1_000_000 + 999_999;
        let hour = HourOf::from_sql(&Type::TIMESTAMPTZ, &micros.to_be_bytes()).map(|h| h.0).ok();
        assert_eq!(hour, Some(1_763_892_000)); // 10:00:00
        let before_2000 = HourOf::from_sql(&Type::TIMESTAMPTZ, &(-1_i64).to_be_bytes()).map(|h| h.0).ok();
        assert_eq!(before_2000, Some(946_684_800 - 3600));
    }

    #[test]
    fn a_histogram_spans_its_first_to_its_last_counted_bucket() {
        let mut h = Histogram::default();
        for ms in [1000, 300, 300] {
            h.count(ms);
        }
        let (b300, b1000) = (histogram_bucket(300.0), histogram_bucket(1000.0));
        let mut counts = vec![0; b1000 - b300 + 1];
        counts[0] = 2;
        counts[b1000 - b300] = 1;
        assert_eq!(h.span(), Span { first: b300 as i32, counts });
        assert_eq!(Histogram::default().span(), Span::default());
    }

    #[test]
    fn a_call_counts_in_every_table_once() {
        let call = RawCall {
            hour: 1_764_000_000,
            company_id: Some(3),
            user_id: Some(9),
            action: "chat",
            model: Some("m"),
            error_type: Some("timeout"),
            tokens_input: Some(10),
            latency_ms: Some(0),
            ..RawCall::default()
        };
        let mut fold = Fold::default();
        fold.add(&call);
        fold.add(&call);
        assert_eq!((fold.calls, fold.fine.len(), fold.coarse.len(), fold.grains.len()), (2, 1, 1, GRAINS.len()));
        let sums = fold.fine.values().next().cloned().unwrap_or_default();
        assert_eq!((sums.calls, sums.errors, sums.calls_without_usage, sums.unpriced_calls), (2, 2, 2, 2));
        assert_eq!((sums.latency.span(), sums.ttft.span()), (Span { first: 1, counts: vec![2] }, Span::default()));
        let per_user = GRAINS.iter().find(|g| !g.histograms).map(|g| g.id());
        let user_key = fold.grains.keys().find(|k| Some(k.0) == per_user).cloned();
        assert_eq!(user_key, per_user.map(|id| (id, 1_764_000_000, Some(3), Some(9), None, None)));
    }
}
