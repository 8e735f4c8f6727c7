//! How a set of `llm_logs` rows becomes usage figures: the one definition both the
//! worker's hourly rollups (`llm_usage_hourly`) and the analytics API's reads of raw
//! rows use, so a figure read from rollups and one read from raw rows cannot disagree.

/// SQL aggregates over `llm_logs` rows yielding, in order: calls, calls without usage
/// (tokens unknown, not zero), unpriced calls (tokens known, no price: cost unknown,
/// never $0), tokens in, tokens out, cost, our cache's hits, the cost they saved,
/// streaming calls, the latency sum, and the input tokens from the upstream's prompt
/// cache and the reasoning tokens (parts of tokens in and out).
#[macro_export]
macro_rules! llm_usage_sums {
    () => {
        "count(*), count(*) FILTER (WHERE NOT usage_reported), \
         count(*) FILTER (WHERE cost_usd IS NULL AND tokens_input IS NOT NULL AND NOT cache_hit), \
         coalesce(sum(tokens_input), 0), coalesce(sum(tokens_output), 0), coalesce(sum(cost_usd), 0), \
         count(*) FILTER (WHERE cache_hit), coalesce(sum(cost_saved_usd), 0), count(*) FILTER (WHERE streaming), \
         coalesce(sum(latency_ms), 0), coalesce(sum(tokens_cached_input), 0), coalesce(sum(tokens_reasoning), 0)"
    };
}

/// `ARRAY[coalesce(sum(column[1]), 0)::int8, …]`: histograms added up across rows bucket
/// by bucket with plain sums (no per-row function call, no unnesting), all sixty buckets
/// spelled out, as the readers take them. A stored histogram spans only its non-empty
/// buckets (see the analytics migration that trims them); a bucket outside a row's span
/// reads as NULL and adds nothing.
pub fn histogram_sum_sql(column: &str) -> String {
    let sums: Vec<String> = (1..=HISTOGRAM_BUCKETS).map(|k| format!("coalesce(sum({column}[{k}]), 0)::int8")).collect();
    format!("ARRAY[{}]", sums.join(", "))
}

/// [`histogram_sum_sql`] trimmed to its non-empty span, as the rollups store histograms.
pub fn stored_histogram_sum_sql(column: &str) -> String {
    format!("llm_histogram_trim({})", histogram_sum_sql(column))
}

/// The keys a row of `llm_usage_hourly_grains` may carry besides its hour, in the order
/// of the `GROUPING(…)` that names its grain.
pub const GRAIN_KEYS: [&str; 4] = ["company_id", "user_id", "action", "model"];

/// A grain of `llm_usage_hourly_grains`: the keys its rows are summed by, whether they
/// keep histograms, and whether their sums are kept once more in
/// `llm_usage_hourly_totals` (the grains without a company key or with it alone, which
/// rank every company's calls). See the analytics migrations that create the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grain {
    pub keys: &'static [&'static str],
    pub histograms: bool,
    pub totals: bool,
}

/// The grains kept, smallest first (a reader takes the first that has its keys).
pub const GRAINS: [Grain; 6] = [
    Grain { keys: &["model"], histograms: true, totals: true },
    Grain { keys: &["action"], histograms: true, totals: true },
    Grain { keys: &["company_id"], histograms: true, totals: true },
    Grain { keys: &["company_id", "model"], histograms: true, totals: false },
    Grain { keys: &["company_id", "action"], histograms: true, totals: false },
    Grain { keys: &["company_id", "user_id"], histograms: false, totals: false },
];

impl Grain {
    /// The `grain` column's value: PostgreSQL's `GROUPING(company_id, user_id, action,
    /// model)` of the grouping set, a bit set for each key summed away.
    pub fn id(&self) -> i16 {
        self.grouping(&GRAIN_KEYS)
    }

    /// PostgreSQL's `GROUPING(…)` of `keys` for this grain's grouping set: a bit set for
    /// each of `keys` the grain sums away, the first key's the highest.
    pub fn grouping(&self, keys: &[&str]) -> i16 {
        keys.iter()
            .enumerate()
            .filter(|(_, key)| !self.keys.contains(key))
            .map(|(i, _)| 1i16 << (keys.len() - 1 - i))
            .sum()
    }

    /// The smallest grain holding every key of `keys` (and histograms when asked).
    pub fn covering(keys: &[&str], histograms: bool) -> Option<Grain> {
        GRAINS.into_iter().find(|g| (g.histograms || !histograms) && keys.iter().all(|k| g.keys.contains(k)))
    }

    /// The smallest grain of `llm_usage_hourly_totals` holding every key of `keys`.
    pub fn covering_totals(keys: &[&str]) -> Option<Grain> {
        GRAINS.into_iter().find(|g| g.totals && keys.iter().all(|k| g.keys.contains(k)))
    }
}

/// Buckets of the latency histograms: element 1 counts values under 1 ms, element k
/// (2..59) values in [1.25^(k-2), 1.25^(k-1)) ms, element 60 values from 1.25^58 ms.
pub const HISTOGRAM_BUCKETS: usize = 60;
const GROWTH: f64 = 1.25;

/// The 1-based bucket a latency of `ms` falls in (`llm_latency_bucket` in SQL).
pub fn histogram_bucket(ms: f64) -> usize {
    if ms < 1.0 {
        return 1;
    }
    let k = 2.0 + (ms.ln() / GROWTH.ln()).floor();
    if k >= HISTOGRAM_BUCKETS as f64 { HISTOGRAM_BUCKETS } else { k as usize }
}

/// The value reported for bucket `k`: its geometric middle (the last bucket, open
/// above, reports its lower bound; the first, its upper half-point 0.5 ms).
pub fn bucket_value(k: usize) -> f64 {
    match k {
        0 | 1 => 0.5,
        k if k >= HISTOGRAM_BUCKETS => GROWTH.powi(HISTOGRAM_BUCKETS as i32 - 2),
        k => GROWTH.powf(k as f64 - 1.5),
    }
}

/// The `q`-quantile (0 < q ≤ 1) of a histogram: the value of the first bucket whose
/// running count reaches `ceil(q · n)` (as `percentile_disc` picks its row), so it lies
/// in the same bucket as the exact percentile. `None` for an empty histogram.
pub fn quantile(histogram: &[i64], q: f64) -> Option<f64> {
    let n: i64 = histogram.iter().sum();
    if n <= 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as i64).clamp(1, n);
    let mut seen = 0;
    for (i, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(bucket_value(i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn grains_are_named_as_postgres_groups_them() {
        let ids: Vec<i16> = GRAINS.iter().map(Grain::id).collect();
        assert_eq!(ids, [14, 13, 7, 6, 5, 3]);
        assert_eq!(Grain::covering(&[], true).map(|g| g.id()), Some(14));
        assert_eq!(Grain::covering(&["company_id"], true).map(|g| g.id()), Some(7));
        assert_eq!(Grain::covering(&["company_id", "user_id"], false).map(|g| g.id()), Some(3));
        assert_eq!(Grain::covering(&["company_id", "user_id"], true), None);
        assert_eq!(Grain::covering(&["company_id", "action"], false).map(|g| g.id()), Some(5));
        assert_eq!(Grain::covering(&["company_id", "interview_id"], false), None);
        let totals: Vec<i16> = GRAINS.iter().filter(|g| g.totals).map(Grain::id).collect();
        assert_eq!(totals, [14, 13, 7], "the grains llm_usage_hourly_totals allows");
        assert_eq!(Grain::covering_totals(&[]).map(|g| g.id()), Some(14));
        assert_eq!(Grain::covering_totals(&["company_id"]).map(|g| g.id()), Some(7));
        assert_eq!(Grain::covering_totals(&["company_id", "model"]), None);
    }

    #[test]
    fn bucket_values_fall_in_their_buckets() {
        for k in 1..=HISTOGRAM_BUCKETS {
            assert_eq!(histogram_bucket(bucket_value(k)), k, "bucket {k}");
        }
        assert_eq!(histogram_bucket(0.0), 1);
        assert_eq!(histogram_bucket(1.0), 2);
        assert_eq!(histogram_bucket(1.24), 2);
        assert_eq!(histogram_bucket(1.25), 3);
        assert_eq!(histogram_bucket(1e12), HISTOGRAM_BUCKETS);
    }

    #[test]
    fn quantiles_pick_the_bucket_of_the_ranked_value() {
        let mut h = vec![0i64; HISTOGRAM_BUCKETS];
        // 90 calls near 100 ms, 10 near 2 s.
        h[histogram_bucket(100.0) - 1] = 90;
        h[histogram_bucket(2000.0) - 1] = 10;
        assert_eq!(histogram_bucket(quantile(&h, 0.5).unwrap()), histogram_bucket(100.0));
        assert_eq!(histogram_bucket(quantile(&h, 0.9).unwrap()), histogram_bucket(100.0));
        assert_eq!(histogram_bucket(quantile(&h, 0.91).unwrap()), histogram_bucket(2000.0));
        assert_eq!(quantile(&[0; HISTOGRAM_BUCKETS], 0.5), None);
    }
}
