//! Sections and chunks. A CV is split at headings it recognises ("Experience",
//! "Work history", "Education", "Skills", …: a short line that is one of the known
//! names, with or without a colon); text before the first heading is the header (name
//! and contacts). Chunks follow sections and never cross one: paragraphs and lines are
//! packed up to `max_words` words, a longer line is cut at sentence ends, then words.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionKind {
    Header,
    Summary,
    Experience,
    Education,
    Skills,
    Projects,
    Certifications,
    Languages,
    Publications,
    Interests,
    Other,
}

impl SectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Summary => "summary",
            Self::Experience => "experience",
            Self::Education => "education",
            Self::Skills => "skills",
            Self::Projects => "projects",
            Self::Certifications => "certifications",
            Self::Languages => "languages",
            Self::Publications => "publications",
            Self::Interests => "interests",
            Self::Other => "other",
        }
    }
}

/// Heading names, lower case, without punctuation.
const HEADINGS: &[(&str, SectionKind)] = &[
    ("summary", SectionKind::Summary),
    ("professional summary", SectionKind::Summary),
    ("profile", SectionKind::Summary),
    ("professional profile", SectionKind::Summary),
    ("about me", SectionKind::Summary),
    ("about", SectionKind::Summary),
    ("objective", SectionKind::Summary),
    ("career objective", SectionKind::Summary),
    ("experience", SectionKind::Experience),
    ("work experience", SectionKind::Experience),
    ("professional experience", SectionKind::Experience),
    ("relevant experience", SectionKind::Experience),
    ("employment", SectionKind::Experience),
    ("employment history", SectionKind::Experience),
    ("work history", SectionKind::Experience),
    ("career history", SectionKind::Experience),
    ("career", SectionKind::Experience),
    ("education", SectionKind::Education),
    ("education and training", SectionKind::Education),
    ("academic background", SectionKind::Education),
    ("qualifications", SectionKind::Education),
    ("skills", SectionKind::Skills),
    ("technical skills", SectionKind::Skills),
    ("key skills", SectionKind::Skills),
    ("core skills", SectionKind::Skills),
    ("core competencies", SectionKind::Skills),
    ("competencies", SectionKind::Skills),
    ("skills and tools", SectionKind::Skills),
    ("tools", SectionKind::Skills),
    ("technologies", SectionKind::Skills),
    ("projects", SectionKind::Projects),
    ("selected projects", SectionKind::Projects),
    ("personal projects", SectionKind::Projects),
    ("certifications", SectionKind::Certifications),
    ("certificates", SectionKind::Certifications),
    ("licenses and certifications", SectionKind::Certifications),
    ("languages", SectionKind::Languages),
    ("publications", SectionKind::Publications),
    ("interests", SectionKind::Interests),
    ("hobbies", SectionKind::Interests),
    ("hobbies and interests", SectionKind::Interests),
    ("volunteering", SectionKind::Other),
    ("awards", SectionKind::Other),
    ("references", SectionKind::Other),
    ("contact", SectionKind::Header),
    ("contact details", SectionKind::Header),
    ("personal details", SectionKind::Header),
];

/// The section a line opens, if it is a heading.
pub fn heading_kind(line: &str) -> Option<SectionKind> {
    let trimmed = line.trim().trim_end_matches(':').trim();
    if trimmed.is_empty() || trimmed.split_whitespace().count() > 5 {
        return None;
    }
    let key: String = trimmed
        .to_lowercase()
        .replace('&', " and ")
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    HEADINGS.iter().find(|(name, _)| *name == key).map(|(_, kind)| *kind)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub kind: SectionKind,
    /// The heading as written (empty for the header).
    pub heading: String,
    /// The section's lines, heading excluded.
    pub lines: Vec<String>,
}

/// Splits normalised text into sections, in order.
pub fn sections(text: &str) -> Vec<Section> {
    let mut out = vec![Section { kind: SectionKind::Header, heading: String::new(), lines: Vec::new() }];
    for line in text.lines() {
        match heading_kind(line) {
            Some(kind) => out.push(Section { kind, heading: line.trim().to_owned(), lines: Vec::new() }),
            None => {
                if let Some(section) = out.last_mut() {
                    section.lines.push(line.to_owned());
                }
            }
        }
    }
    out.retain(|s| s.lines.iter().any(|l| !l.trim().is_empty()));
    out
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// Position in the CV, from 0.
    pub index: usize,
    pub section: SectionKind,
    pub text: String,
}

/// Chunks of at most `max_words` words that follow the sections.
pub fn chunks(sections: &[Section], max_words: usize) -> Vec<Chunk> {
    let max_words = max_words.max(8);
    let mut out = Vec::new();
    for section in sections {
        let mut current: Vec<&str> = Vec::new();
        let flush = |current: &mut Vec<&str>, out: &mut Vec<Chunk>| {
            if !current.is_empty() {
                let text = current.join(" ");
                out.push(Chunk { index: out.len(), section: section.kind, text });
                current.clear();
            }
        };
        for line in &section.lines {
            if line.trim().is_empty() {
                // A paragraph ends: start a new chunk if this one is half full.
                if current.len() * 2 >= max_words {
                    flush(&mut current, &mut out);
                }
                continue;
            }
            for piece in pieces(line, max_words) {
                let words: Vec<&str> = piece.split_whitespace().collect();
                if current.len() + words.len() > max_words {
                    flush(&mut current, &mut out);
                }
                current.extend(words);
            }
        }
        flush(&mut current, &mut out);
    }
    out
}

/// A line cut into pieces of at most `max_words` words, at sentence ends first.
fn pieces(line: &str, max_words: usize) -> Vec<&str> {
    if line.split_whitespace().count() <= max_words {
        return vec![line];
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut words = 0;
    let mut last_sentence_end = None;
    let bytes = line.as_bytes();
    for (i, c) in line.char_indices() {
        if c == ' ' && i > 0 && bytes[i - 1] != b' ' {
            words += 1;
            if matches!(bytes[i - 1], b'.' | b';' | b'!' | b'?') {
                last_sentence_end = Some(i);
            }
            if words >= max_words {
                let cut = last_sentence_end.filter(|e| *e > start).unwrap_or(i);
                out.push(line[start..cut].trim());
                start = cut;
                words = line[start..i].split_whitespace().count();
                last_sentence_end = None;
            }
        }
    }
    if start < line.len() {
        out.push(line[start..].trim());
    }
    out.retain(|p| !p.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_open_sections_and_chunks_stay_inside_them() {
        let text = "Jane Doe\njane@example.com\nPROFESSIONAL EXPERIENCE\nSenior Engineer, Acme 2019 - 2023\nBuilt things.\n\nEducation:\nBSc Computer Science, 2014\nSkills & Tools\nRust, Go";
        let s = sections(text);
        let kinds: Vec<_> = s.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            vec![SectionKind::Header, SectionKind::Experience, SectionKind::Education, SectionKind::Skills]
        );
        let c = chunks(&s, 40);
        assert_eq!(c.len(), 4);
        assert_eq!(c[1].text, "Senior Engineer, Acme 2019 - 2023 Built things.");
        assert!(c.iter().enumerate().all(|(i, c)| c.index == i));
        assert_eq!(heading_kind("Experience with Rust and many other things"), None);
    }

    #[test]
    fn long_lines_are_cut_at_sentence_ends() {
        let line = format!("{} end. {}", "word ".repeat(10).trim(), "more ".repeat(10).trim());
        let c = chunks(&[Section { kind: SectionKind::Summary, heading: String::new(), lines: vec![line] }], 12);
        assert!(c.len() >= 2);
        assert!(c[0].text.ends_with("end."), "{:?}", c[0].text);
        assert!(c.iter().all(|c| c.text.split_whitespace().count() <= 12));
    }
}
