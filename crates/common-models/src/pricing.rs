//! What an LLM call costs: an effective-dated price table, shared by the gateway (which
//! prices each call as it is logged) and the worker's `reprice` command (which prices
//! logged calls again after a correction).
//!
//! A model may have several entries, each from its `effective_from` date (UTC; none:
//! since always): a call is priced by the entry in force on its day, so a price change
//! never reaches back to calls made before it. Each usage component has its price:
//! input tokens, the input tokens the upstream served from its prompt cache (cheaper;
//! the input price when none is given) and output tokens (reasoning tokens are part of
//! the output and billed as output). Every priced row carries the version of its entry.

use chrono::NaiveDate;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct PriceTable {
    /// Stored with every row priced from this table (with the entry's date, if dated).
    pub version: String,
    pub models: Vec<ModelPrice>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelPrice {
    pub name: String,
    /// The first UTC day this entry prices (none: every day before any later entry).
    #[serde(default)]
    pub effective_from: Option<NaiveDate>,
    /// USD per million input (prompt) tokens.
    pub input_per_million: f64,
    /// USD per million input tokens served from the upstream's prompt cache (none: the
    /// input price).
    #[serde(default)]
    pub cached_input_per_million: Option<f64>,
    /// USD per million output (completion) tokens, reasoning tokens included.
    pub output_per_million: f64,
}

/// The usage components of one call, as the upstream reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt tokens, those served from the prompt cache included.
    pub input: i32,
    /// Of `input`, those served from the upstream's prompt cache.
    pub cached_input: i32,
    /// Completion tokens, reasoning tokens included.
    pub output: i32,
}

/// A call's price: its cost and the version of the entry it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Priced {
    pub cost_usd: f64,
    pub version: String,
}

/// What a logged call is charged, as its row stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    /// 0 for an answer from our cache; `None` when unpriced or without usage.
    pub cost_usd: Option<f64>,
    /// For an answer from our cache, what the call would have cost.
    pub cost_saved_usd: Option<f64>,
    pub version: Option<String>,
}

impl PriceTable {
    pub fn validate(&self) -> anyhow::Result<()> {
        for m in &self.models {
            let prices = [Some(m.input_per_million), m.cached_input_per_million, Some(m.output_per_million)];
            anyhow::ensure!(
                prices.into_iter().flatten().all(|p| p.is_finite() && p >= 0.0),
                "pricing for {} must not be negative",
                m.name
            );
        }
        for (i, a) in self.models.iter().enumerate() {
            anyhow::ensure!(
                !self.models[..i].iter().any(|b| b.name == a.name && b.effective_from == a.effective_from),
                "pricing for {} has two entries from the same date",
                a.name
            );
        }
        Ok(())
    }

    /// The entry for `model` in force on `day`: the name exact, else the longest
    /// entry name that prefixes it; of its entries, the latest from `day` or before.
    pub fn lookup(&self, model: &str, day: NaiveDate) -> Option<&ModelPrice> {
        let name = &best_match(&self.models, model, |m| &m.name)?.name;
        self.models
            .iter()
            .filter(|m| &m.name == name && m.effective_from.is_none_or(|from| from <= day))
            .max_by_key(|m| m.effective_from)
    }

    /// The models the table prices, each once.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::with_capacity(self.models.len());
        for m in &self.models {
            if !names.contains(&m.name.as_str()) {
                names.push(&m.name);
            }
        }
        names
    }

    /// Whether any entry prices `model` (on some day).
    pub fn prices(&self, model: &str) -> bool {
        best_match(&self.models, model, |m| &m.name).is_some()
    }

    /// The price of a call made on `day` under the first of `models` with an entry,
    /// when its usage is known.
    pub fn price(&self, models: &[&str], tokens: Option<Tokens>, day: NaiveDate) -> Option<Priced> {
        let entry = models.iter().find_map(|m| self.lookup(m, day))?;
        let t = tokens?;
        let cached = t.cached_input.clamp(0, t.input);
        let fresh = f64::from(t.input - cached);
        let cached_price = entry.cached_input_per_million.unwrap_or(entry.input_per_million);
        let cost = (fresh * entry.input_per_million
            + f64::from(cached) * cached_price
            + f64::from(t.output) * entry.output_per_million)
            / 1_000_000.0;
        Some(Priced { cost_usd: cost, version: self.version_of(entry) })
    }

    /// What a call made on `day` under `models` is charged: its price, or for an answer
    /// from our cache nothing, its price kept as the saving. The one rule the gateway
    /// logs by and the worker's re-pricing applies again.
    pub fn charge(&self, models: &[&str], tokens: Option<Tokens>, day: NaiveDate, cache_hit: bool) -> Charge {
        let priced = self.price(models, tokens, day);
        let cost = priced.as_ref().map(|p| p.cost_usd);
        let version = priced.map(|p| p.version);
        if cache_hit {
            Charge { cost_usd: Some(0.0), cost_saved_usd: cost, version }
        } else {
            Charge { cost_usd: cost, cost_saved_usd: None, version }
        }
    }

    /// The version stored with rows `entry` priced.
    pub fn version_of(&self, entry: &ModelPrice) -> String {
        match entry.effective_from {
            Some(from) => format!("{}@{from}", self.version),
            None => self.version.clone(),
        }
    }
}

/// The entry naming `model`: exactly, else the longest name that prefixes it (a dated
/// version, `gpt-4o-2024-08-06`, goes with `gpt-4o`).
pub fn best_match<'a, T>(entries: &'a [T], model: &str, name: impl Fn(&T) -> &str) -> Option<&'a T> {
    entries
        .iter()
        .find(|e| name(e) == model)
        .or_else(|| entries.iter().filter(|e| model.starts_with(name(e))).max_by_key(|e| name(e).len()))
}

/// Whether a company's list allows `model`: a name on it, or a dated version of one
/// (`gpt-4o-mini-2024-07-18` for `gpt-4o-mini`), but not another model that merely
/// starts the same (`gpt-4o-audio-preview` for `gpt-4o`).
pub fn listed(allowed: &[String], model: &str) -> bool {
    allowed.iter().any(|name| {
        model == name || model.strip_prefix(name.as_str()).and_then(|rest| rest.strip_prefix('-')).is_some_and(is_date)
    })
}

/// `YYYY-MM-DD`.
fn is_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| if i == 4 || i == 7 { *b == b'-' } else { b.is_ascii_digit() })
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_company_list_takes_its_names_and_their_dated_versions_only() {
        let allowed = ["gpt-4o".to_owned()];
        assert!(listed(&allowed, "gpt-4o") && listed(&allowed, "gpt-4o-2024-08-06"));
        assert!(!listed(&allowed, "gpt-4o-mini") && !listed(&allowed, "gpt-4o-audio-preview"));
        assert!(!listed(&allowed, "gpt-4o-2024-08") && !listed(&allowed, "gpt-4"));
    }

    fn day(d: &str) -> NaiveDate {
        d.parse().unwrap_or_default()
    }

    fn entry(name: &str, from: Option<&str>, input: f64, cached: Option<f64>, output: f64) -> ModelPrice {
        ModelPrice {
            name: name.into(),
            effective_from: from.map(day),
            input_per_million: input,
            cached_input_per_million: cached,
            output_per_million: output,
        }
    }

    fn table() -> PriceTable {
        PriceTable {
            version: "t".into(),
            models: vec![
                entry("gpt-4o", None, 2.5, Some(1.25), 10.0),
                entry("gpt-4o-mini", None, 0.15, None, 0.6),
                entry("gpt-4o-mini", Some("2026-12-01"), 0.1, None, 0.5),
            ],
        }
    }

    fn tokens(input: i32, cached_input: i32, output: i32) -> Option<Tokens> {
        Some(Tokens { input, cached_input, output })
    }

    const NOV: &str = "2026-11-15";

    #[test]
    fn dated_model_names_use_the_longest_prefix() {
        let t = table();
        assert_eq!(t.lookup("gpt-4o-mini-2024-07-18", day(NOV)).map(|m| m.name.as_str()), Some("gpt-4o-mini"));
        assert_eq!(t.lookup("gpt-4o-2024-08-06", day(NOV)).map(|m| m.name.as_str()), Some("gpt-4o"));
        assert!(t.lookup("claude", day(NOV)).is_none());
    }

    #[test]
    fn cost_needs_price_and_tokens_and_prices_each_component() {
        let t = table();
        let c = t.price(&["gpt-4o-mini"], tokens(1_000_000, 0, 1_000_000), day(NOV)).unwrap();
        assert!((c.cost_usd - 0.75).abs() < 1e-12);
        assert_eq!(c.version, "t");
        assert_eq!(t.price(&["gpt-4o-mini"], None, day(NOV)), None);
        assert_eq!(t.price(&["unknown"], tokens(1, 0, 1), day(NOV)), None);
        // Falls through to the second name (the upstream's reported model).
        assert!(t.price(&["alias", "gpt-4o"], tokens(1, 0, 0), day(NOV)).is_some());
        // Half the prompt from the prompt cache: that half at the cached price.
        let c = t.price(&["gpt-4o"], tokens(1_000_000, 500_000, 0), day(NOV)).unwrap();
        assert!((c.cost_usd - (1.25 + 0.625)).abs() < 1e-12, "{c:?}");
        // Without a cached price, cached tokens cost what input does.
        let c = t.price(&["gpt-4o-mini"], tokens(1_000_000, 400_000, 0), day(NOV)).unwrap();
        assert!((c.cost_usd - 0.15).abs() < 1e-12);
    }

    #[test]
    fn a_price_change_applies_from_its_day_and_names_its_version() {
        let t = table();
        let before = t.price(&["gpt-4o-mini"], tokens(1_000_000, 0, 0), day("2026-11-30")).unwrap();
        let after = t.price(&["gpt-4o-mini"], tokens(1_000_000, 0, 0), day("2026-12-01")).unwrap();
        assert!((before.cost_usd - 0.15).abs() < 1e-12 && (after.cost_usd - 0.1).abs() < 1e-12);
        assert_eq!((before.version.as_str(), after.version.as_str()), ("t", "t@2026-12-01"));
        let mut twice = table();
        twice.models.push(entry("gpt-4o-mini", Some("2026-12-01"), 1.0, None, 1.0));
        assert!(twice.validate().is_err());
        assert!(table().validate().is_ok());
    }
}
