//! Cost of a call from its token counts and the configured price table.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct PriceTable {
    /// Stored with every row priced from this table.
    pub version: String,
    pub models: Vec<ModelPrice>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelPrice {
    pub name: String,
    /// USD per million input (prompt) tokens.
    pub input_per_million: f64,
    /// USD per million output (completion) tokens.
    pub output_per_million: f64,
}

impl PriceTable {
    pub fn validate(&self) -> anyhow::Result<()> {
        for m in &self.models {
            anyhow::ensure!(
                m.input_per_million >= 0.0 && m.output_per_million >= 0.0,
                "pricing for {} must not be negative",
                m.name
            );
        }
        Ok(())
    }

    /// The entry for `model`: exact, else the longest entry that prefixes it.
    pub fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        best_match(&self.models, model, |m| &m.name)
    }

    /// Cost in USD, when both the price and the token counts are known.
    pub fn cost(&self, models: &[&str], input_tokens: Option<i32>, output_tokens: Option<i32>) -> Option<f64> {
        let price = models.iter().find_map(|m| self.lookup(m))?;
        let (input, output) = (f64::from(input_tokens?), f64::from(output_tokens?));
        Some((input * price.input_per_million + output * price.output_per_million) / 1_000_000.0)
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
    use super::*;

    #[test]
    fn a_company_list_takes_its_names_and_their_dated_versions_only() {
        let allowed = ["gpt-4o".to_owned()];
        assert!(listed(&allowed, "gpt-4o") && listed(&allowed, "gpt-4o-2024-08-06"));
        assert!(!listed(&allowed, "gpt-4o-mini") && !listed(&allowed, "gpt-4o-audio-preview"));
        assert!(!listed(&allowed, "gpt-4o-2024-08") && !listed(&allowed, "gpt-4"));
    }

    fn table() -> PriceTable {
        PriceTable {
            version: "t".into(),
            models: vec![
                ModelPrice { name: "gpt-4o".into(), input_per_million: 2.5, output_per_million: 10.0 },
                ModelPrice { name: "gpt-4o-mini".into(), input_per_million: 0.15, output_per_million: 0.6 },
            ],
        }
    }

    #[test]
    fn dated_model_names_use_the_longest_prefix() {
        let t = table();
        assert_eq!(t.lookup("gpt-4o-mini-2024-07-18").map(|m| m.name.as_str()), Some("gpt-4o-mini"));
        assert_eq!(t.lookup("gpt-4o-2024-08-06").map(|m| m.name.as_str()), Some("gpt-4o"));
        assert!(t.lookup("claude").is_none());
    }

    #[test]
    fn cost_needs_price_and_tokens() {
        let t = table();
        let c = t.cost(&["gpt-4o-mini"], Some(1_000_000), Some(1_000_000));
        assert!(c.is_some_and(|c| (c - 0.75).abs() < 1e-12));
        assert_eq!(t.cost(&["gpt-4o-mini"], None, Some(3)), None);
        assert_eq!(t.cost(&["unknown"], Some(1), Some(1)), None);
        // Falls through to the second name (the upstream's reported model).
        assert!(t.cost(&["alias", "gpt-4o"], Some(1), Some(0)).is_some());
    }
}
