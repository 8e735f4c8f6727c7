//! Batches handed from the write loops to the fold of the same process ([`Handoff`]),
//! so that the fold need not read back the rows this process has just written.
//!
//! After its COPY commits, a write loop hands over the batch's calls as their rows were
//! stored ([`Call::of`]), under the batch's transaction id. A fold step takes the batches
//! of the transactions it folds, and counts the raw rows of each of those transactions
//! in the database, with the rows changed since their insert (`xmin` no longer the
//! inserting transaction: a re-pricing's update). A handed batch is folded from memory
//! only when the database holds exactly its rows, none changed; any other transaction's
//! rows (the idempotent path's, the legacy move's, another worker's, a changed or
//! shortened batch's) are read from the database as before. What the rollups add is
//! still what was inserted.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Mutex;

use common_models::events::LlmCallEvent;

use crate::copy::{decimal_parts, stored_keys};
use crate::fold::{COST_SCALE, RawCall, STEP_ROWS, hour_of_micros};
use crate::writer::decimal;

/// One stored call, as much of it as the rollups keep (an owned [`RawCall`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    hour: i64,
    company_id: Option<i64>,
    user_id: Option<i64>,
    interview_id: Option<i64>,
    action: Box<str>,
    model: Option<Box<str>>,
    error_type: Option<Box<str>>,
    usage_reported: bool,
    cost: Option<i128>,
    tokens_input: Option<i32>,
    tokens_output: Option<i32>,
    cache_hit: bool,
    cost_saved: Option<i128>,
    streaming: bool,
    latency_ms: Option<i32>,
    ttft_ms: Option<i32>,
    tokens_cached_input: Option<i32>,
    tokens_reasoning: Option<i32>,
}

impl Call {
    /// The call as the COPY path stores `e` (`copy::llm_rows`): texts cut as written,
    /// the time to the microsecond, costs as the decimal text of the float rounded to
    /// the column's scale, half away from zero, as PostgreSQL rounds them. `None` for a
    /// cost no column could hold (such a batch fails to COPY anyway).
    pub fn of(e: &LlmCallEvent) -> Option<Self> {
        let (action, model, error_type) = stored_keys(e);
        let owned = |t: Option<Cow<'_, str>>| t.map(|t| t.into_owned().into_boxed_str());
        Some(Self {
            // Stored to the microsecond.
            hour: hour_of_micros(e.created_at.timestamp_micros()),
            company_id: e.company_id.map(|v| v.0),
            user_id: e.user_id.map(|v| v.0),
            interview_id: e.interview_id.map(|v| v.0),
            action: action.into_owned().into_boxed_str(),
            model: owned(model),
            error_type: owned(error_type),
            usage_reported: e.usage_reported,
            cost: units(e.cost_usd)?,
            tokens_input: e.tokens_input,
            tokens_output: e.tokens_output,
            cache_hit: e.cache_hit,
            cost_saved: units(e.cost_saved_usd)?,
            streaming: e.streaming,
            latency_ms: e.latency_ms,
            ttft_ms: e.time_to_first_token_ms,
            tokens_cached_input: e.tokens_cached_input,
            tokens_reasoning: e.tokens_reasoning,
        })
    }

    pub fn raw(&self) -> RawCall<'_> {
        RawCall {
            hour: self.hour,
            company_id: self.company_id,
            user_id: self.user_id,
            interview_id: self.interview_id,
            action: &self.action,
            model: self.model.as_deref(),
            error_type: self.error_type.as_deref(),
            usage_reported: self.usage_reported,
            cost: self.cost,
            tokens_input: self.tokens_input,
            tokens_output: self.tokens_output,
            cache_hit: self.cache_hit,
            cost_saved: self.cost_saved,
            streaming: self.streaming,
            latency_ms: self.latency_ms,
            ttft_ms: self.ttft_ms,
            tokens_cached_input: self.tokens_cached_input,
            tokens_reasoning: self.tokens_reasoning,
        }
    }
}

/// A cost as stored, in units of 10⁻¹⁰ USD: `Some(None)` for NULL (no cost, or not a
/// finite number), `None` when it is too large to count here.
fn units(v: Option<f64>) -> Option<Option<i128>> {
    let Some(text) = decimal(v) else {
        return Some(None);
    };
    let (negative, int, frac) = decimal_parts(&text);
    let scale = COST_SCALE as usize;
    let kept = frac.get(..scale.min(frac.len())).unwrap_or("");
    let mut units: i128 = 0;
    for c in int.bytes().chain(kept.bytes()).chain(std::iter::repeat_n(b'0', scale - kept.len())) {
        units = units.checked_mul(10)?.checked_add(i128::from(c.checked_sub(b'0')?))?;
    }
    if frac.as_bytes().get(scale).is_some_and(|&next| next >= b'5') {
        units = units.checked_add(1)?;
    }
    Some(Some(if negative { -units } else { units }))
}

/// Calls held at most (about [`STEP_ROWS`]): past that, batches are not handed over
/// and the fold reads them from the database (while no step runs here, say).
const CAPACITY: usize = STEP_ROWS.unsigned_abs() as usize;

/// Committed batches by transaction id, waiting for the fold of this process.
#[derive(Debug, Default)]
pub struct Handoff {
    inner: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    batches: BTreeMap<u64, Vec<Call>>,
    calls: usize,
}

impl Handoff {
    /// Hands over the calls of the committed transaction `xid`, as stored.
    pub fn hand(&self, xid: u64, calls: Vec<Call>) {
        let Ok(mut held) = self.inner.lock() else {
            return;
        };
        if held.calls + calls.len() <= CAPACITY {
            held.calls += calls.len();
            held.batches.insert(xid, calls);
        }
    }

    /// Takes the batches of transactions in [`from`, `to`); drops those below `from`
    /// (folded already, from the database).
    pub(crate) fn take(&self, from: u64, to: u64) -> BTreeMap<u64, Vec<Call>> {
        let Ok(mut held) = self.inner.lock() else {
            return BTreeMap::new();
        };
        let mut taken = held.batches.split_off(&from);
        let after = taken.split_off(&to);
        held.batches = after;
        held.calls = held.batches.values().map(Vec::len).sum();
        taken
    }

    /// Puts back batches taken but not folded.
    pub(crate) fn give_back(&self, batches: BTreeMap<u64, Vec<Call>>) {
        if let Ok(mut held) = self.inner.lock() {
            held.calls += batches.values().map(Vec::len).sum::<usize>();
            held.batches.extend(batches);
        }
    }

    /// Drops every batch (another session folds).
    pub(crate) fn clear(&self) {
        if let Ok(mut held) = self.inner.lock() {
            *held = Held::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_rounded_to_the_columns_scale_half_away_from_zero() {
        assert_eq!(units(Some(0.000123)), Some(Some(1_230_000)));
        assert_eq!(units(Some(0.000_000_000_05)), Some(Some(1)));
        assert_eq!(units(Some(0.000_000_000_049)), Some(Some(0)));
        assert_eq!(units(Some(-0.000_000_000_05)), Some(Some(-1)));
        assert_eq!(units(Some(12.5)), Some(Some(125_000_000_000)));
        assert_eq!(units(Some(0.1 + 0.2)), Some(Some(3_000_000_000)));
        assert_eq!(units(Some(f64::NAN)), Some(None));
        assert_eq!(units(None), Some(None));
        assert_eq!(units(Some(1e300)), None);
    }

    #[test]
    fn batches_are_taken_by_range_and_dropped_below_it() {
        let handoff = Handoff::default();
        for xid in [5, 7, 9, 11] {
            handoff.hand(xid, Vec::new());
        }
        let taken = handoff.take(7, 11);
        assert_eq!(taken.keys().copied().collect::<Vec<_>>(), [7, 9]);
        handoff.give_back(BTreeMap::from([(9, Vec::new())]));
        assert_eq!(handoff.take(0, 100).keys().copied().collect::<Vec<_>>(), [9, 11]);
    }
}
