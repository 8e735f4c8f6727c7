//! CV ↔ job matching with evidence.
//!
//! A job is matched through its requirements (its title and description when it has
//! none). For each requirement the company's chunks are searched twice: by meaning
//! (cosine similarity of the embeddings) and by words (BM25), `pool` chunks each. A CV
//! takes, per requirement and per search, the rank of its best chunk (equal scores,
//! equal ranks). The CV's score for the requirement, by mode:
//!
//! - `dense`: the best chunk's cosine similarity;
//! - `keywords`: the best chunk's BM25 score over the best BM25 score any CV reached
//!   for that requirement (0 to 1);
//! - `hybrid` (the default): reciprocal rank fusion of the two ranks,
//!   `1/(k + rank_dense) + 1/(k + rank_keywords)` over its largest value `2/(k + 1)`,
//!   so a CV first by both searches scores 1.
//!
//! A CV's score is the mean over the requirements (0 to 1), so every requirement weighs
//! the same. Its evidence lists every requirement: the CV's best chunk for it (text and
//! section), its similarity, and whether it is met: the similarity is at least
//! `met_similarity`, or one chunk of the CV contains every word of the requirement
//! (stopwords aside; `keywords_found`). A requirement with no chunk of the CV among
//! either search's `pool` results is unmet with no evidence. Scores are relative to the company's CVs
//! in hybrid mode (ranks), so they move when CVs are added or removed.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::embed::CachedEmbedder;
use crate::vectors::{Hit, Ranking, VectorStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Dense,
    Keywords,
    #[default]
    Hybrid,
}

/// How matching weighs things.
#[derive(Debug, Clone, Deserialize)]
pub struct MatchSettings {
    /// Chunks taken from each search per requirement.
    pub pool: usize,
    /// The RRF constant.
    pub rrf_k: f32,
    /// Similarity from which a requirement counts as met.
    pub met_similarity: f32,
}

/// A job as matching sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    pub id: i64,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub requirements: Vec<String>,
}

impl JobSpec {
    /// What is searched for: the requirements, else the title and description.
    pub fn queries(&self) -> Vec<String> {
        let requirements: Vec<String> =
            self.requirements.iter().map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()).collect();
        if !requirements.is_empty() {
            return requirements;
        }
        let description: String = self.description.chars().take(400).collect();
        vec![format!("{}. {}", self.title, description).trim().to_owned()]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub chunk: usize,
    pub section: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequirementMatch {
    pub requirement: String,
    pub met: bool,
    /// Cosine similarity of the requirement and the CV's closest chunk (0 when none).
    pub similarity: f32,
    /// A chunk of the CV contains every word of the requirement.
    pub keywords_found: bool,
    pub evidence: Option<Evidence>,
}

/// Words that carry no requirement of their own.
const STOPWORDS: &[&str] = &[
    "a",
    "an",
    "and",
    "or",
    "the",
    "of",
    "in",
    "on",
    "with",
    "for",
    "to",
    "at",
    "by",
    "from",
    "as",
    "is",
    "are",
    "be",
    "years",
    "year",
    "experience",
    "plus",
    "least",
    "strong",
    "good",
    "solid",
    "proven",
    "using",
    "use",
];

/// The words of a requirement a chunk must contain to meet it by keywords.
pub fn required_words(requirement: &str) -> Vec<String> {
    words(requirement)
        .into_iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()) && !w.starts_with(|c: char| c.is_ascii_digit()))
        .collect()
}

/// Lower-case words; `+`, `#` and inner `.` stay part of a word (C++, C#, Node.js).
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || matches!(c, '+' | '#' | '.')))
        .map(|w| w.trim_matches('.').to_owned())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Whether `text` contains every one of `required` as a word.
fn contains_all(text: &str, required: &[String]) -> bool {
    if required.is_empty() {
        return false;
    }
    let present = words(text);
    required.iter().all(|r| present.iter().any(|w| w == r))
}

/// One CV's match with one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvMatch {
    pub cv_id: i64,
    pub job_id: i64,
    pub score: f32,
    pub requirements_met: usize,
    pub requirements_total: usize,
    pub requirements: Vec<RequirementMatch>,
}

/// Best hit per CV, in the order of the hits, with competition ranks (ties share).
fn best_per_cv(hits: &[Hit]) -> HashMap<i64, (usize, Hit)> {
    let mut out: HashMap<i64, (usize, Hit)> = HashMap::new();
    let mut rank = 0;
    let mut previous: Option<f32> = None;
    let mut position = 0;
    for hit in hits {
        if out.contains_key(&hit.cv_id) {
            continue;
        }
        position += 1;
        if previous != Some(hit.score) {
            rank = position;
            previous = Some(hit.score);
        }
        out.insert(hit.cv_id, (rank, hit.clone()));
    }
    out
}

/// The company's CVs (or the one given) ranked for `job`, best first; CVs with no
/// chunk in any search are left out.
pub async fn rank(
    store: &dyn VectorStore,
    embedder: &CachedEmbedder,
    settings: &MatchSettings,
    company: i64,
    job: &JobSpec,
    mode: Mode,
) -> anyhow::Result<Vec<CvMatch>> {
    let queries = job.queries();
    let (vectors, _) = embedder.embed(&queries).await?;
    let mut per_cv: HashMap<i64, Vec<RequirementMatch>> = HashMap::new();
    let mut scores: HashMap<i64, f32> = HashMap::new();
    let total = queries.len();
    for (query, vector) in queries.iter().zip(&vectors) {
        let required = required_words(query);
        let dense = store.search(company, None, Ranking::Dense, query, vector, settings.pool).await?;
        let words = store.search(company, None, Ranking::Keywords, query, vector, settings.pool).await?;
        let dense_best = best_per_cv(&dense);
        let words_best = best_per_cv(&words);
        let top_words = words.first().map_or(0.0, |h| h.score);
        let mut cvs: Vec<i64> = dense_best.keys().chain(words_best.keys()).copied().collect();
        cvs.sort_unstable();
        cvs.dedup();
        for cv in cvs {
            let d = dense_best.get(&cv);
            let w = words_best.get(&cv);
            let part = match mode {
                Mode::Dense => d.map_or(0.0, |(_, h)| h.score.max(0.0)),
                Mode::Keywords => match w {
                    Some((_, h)) if top_words > 0.0 => h.score / top_words,
                    _ => 0.0,
                },
                Mode::Hybrid => {
                    let k = settings.rrf_k;
                    let rrf = |rank: Option<usize>| rank.map_or(0.0, |r| 1.0 / (k + r as f32));
                    (rrf(d.map(|(r, _)| *r)) + rrf(w.map(|(r, _)| *r))) / (2.0 / (k + 1.0))
                }
            };
            *scores.entry(cv).or_default() += part / total as f32;
            let similarity = d.map_or(0.0, |(_, h)| h.score);
            let by_meaning = similarity >= settings.met_similarity;
            // Every word of the requirement in one chunk: the closest by meaning, or the
            // words search's best.
            let by_words = [d, w].into_iter().flatten().find(|(_, h)| contains_all(&h.text, &required)).map(|(_, h)| h);
            let evidence_hit = if by_meaning { d.map(|(_, h)| h) } else { by_words.or(d.or(w).map(|(_, h)| h)) };
            per_cv.entry(cv).or_default().push(RequirementMatch {
                requirement: query.clone(),
                met: by_meaning || by_words.is_some(),
                similarity,
                keywords_found: by_words.is_some(),
                evidence: evidence_hit.map(|h| Evidence {
                    chunk: h.chunk,
                    section: h.section.clone(),
                    text: h.text.clone(),
                }),
            });
        }
    }
    let mut out: Vec<CvMatch> = per_cv
        .into_iter()
        .map(|(cv, mut requirements)| {
            // In the job's order; a requirement the CV had no chunk for is unmet.
            let mut ordered = Vec::with_capacity(total);
            for query in &queries {
                match requirements.iter().position(|r| &r.requirement == query) {
                    Some(i) => ordered.push(requirements.swap_remove(i)),
                    None => ordered.push(RequirementMatch {
                        requirement: query.clone(),
                        met: false,
                        similarity: 0.0,
                        keywords_found: false,
                        evidence: None,
                    }),
                }
            }
            CvMatch {
                cv_id: cv,
                job_id: job.id,
                score: scores.get(&cv).copied().unwrap_or(0.0),
                requirements_met: ordered.iter().filter(|r| r.met).count(),
                requirements_total: total,
                requirements: ordered,
            }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.cv_id.cmp(&b.cv_id)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(cv: i64, score: f32) -> Hit {
        Hit { cv_id: cv, chunk: 0, section: "experience".into(), text: String::new(), score }
    }

    #[test]
    fn ties_share_a_rank_and_only_a_cvs_best_chunk_counts() {
        let ranks = best_per_cv(&[hit(1, 0.9), hit(2, 0.9), hit(1, 0.8), hit(3, 0.7)]);
        assert_eq!(ranks[&1].0, 1);
        assert_eq!(ranks[&2].0, 1);
        assert_eq!(ranks[&3].0, 3);
        assert_eq!(ranks[&1].1.score, 0.9);
    }

    #[test]
    fn a_requirement_is_found_by_its_words_in_any_order() {
        let required = required_words("PostgreSQL and Kafka in production (5+ years)");
        assert_eq!(required, ["postgresql", "kafka", "production"]);
        assert!(contains_all("Ran Kafka, PostgreSQL in production.", &required));
        assert!(!contains_all("Ran Kafka in production.", &required));
        assert_eq!(required_words("C++ or C#, Node.js"), ["c++", "c#", "node.js"]);
        assert!(!contains_all("anything", &[]));
    }

    #[test]
    fn a_job_without_requirements_is_searched_by_its_title_and_description() {
        let job = JobSpec { id: 1, title: "Nurse".into(), description: "ICU".into(), requirements: vec![" ".into()] };
        assert_eq!(job.queries(), vec!["Nurse. ICU"]);
    }
}
