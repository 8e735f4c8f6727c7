//! The plain facts a recruiter filters on, where the CV states them: contacts,
//! links, skills (from a fixed vocabulary, so "Go" is only a skill where it is
//! written as one), and roles with their dates and years. Nothing is inferred: a fact
//! that is not written is absent, never guessed.

use std::sync::LazyLock;

use chrono::Datelike;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::structure::{Section, SectionKind};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// The candidate's name as written (display only; never embedded or scored).
    pub name: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub links: Vec<String>,
    pub skills: Vec<String>,
    pub roles: Vec<Role>,
    /// Years covered by the roles, overlaps counted once.
    pub total_years: Option<f64>,
    /// Sections found, in order.
    pub sections: Vec<SectionKind>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub title: String,
    pub start_year: i32,
    /// `None`: the role is current.
    pub end_year: Option<i32>,
    pub years: f64,
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}").unwrap_or_else(|_| unreachable!())
});
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:\+|\b)\d[\d ().\-/]{6,}\d\b").unwrap_or_else(|_| unreachable!()));
static LINK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:https?://[^\s<>()]+|(?:www\.)?(?:linkedin\.com|github\.com|gitlab\.com|bitbucket\.org)/[^\s<>()]+)",
    )
    .unwrap_or_else(|_| unreachable!())
});
/// "2019 - 2023", "Jan 2019 – Present", "03/2018 to 06/2021".
static DATE_RANGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+|(?:0?[1-9]|1[0-2])/)?((?:19|20)\d{2})\s*(?:-|–|—|to|until)\s*(?:(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+|(?:0?[1-9]|1[0-2])/)?((?:19|20)\d{2}|present|current|now|today|ongoing)",
    )
    .unwrap_or_else(|_| unreachable!())
});

/// Skills recognised, as displayed. Matching ignores case and needs a boundary on each
/// side that is not a letter or digit (so "Go" does not match "Google").
const SKILLS: &[&str] = &[
    // languages
    "Rust",
    "Go",
    "Golang",
    "Python",
    "Java",
    "Kotlin",
    "Scala",
    "C",
    "C++",
    "C#",
    "F#",
    "JavaScript",
    "TypeScript",
    "Ruby",
    "PHP",
    "Swift",
    "Objective-C",
    "R",
    "MATLAB",
    "Julia",
    "Haskell",
    "Elixir",
    "Erlang",
    "Clojure",
    "Perl",
    "Bash",
    "SQL",
    "Dart",
    "Lua",
    "Fortran",
    "COBOL",
    "Solidity",
    "VHDL",
    "Verilog",
    // web and mobile
    "React",
    "Angular",
    "Vue",
    "Svelte",
    "Next.js",
    "Node.js",
    "Express",
    "Django",
    "Flask",
    "FastAPI",
    "Spring",
    "Spring Boot",
    "Ruby on Rails",
    "Laravel",
    ".NET",
    "ASP.NET",
    "GraphQL",
    "REST",
    "gRPC",
    "HTML",
    "CSS",
    "Tailwind",
    "iOS",
    "Android",
    "Flutter",
    "React Native",
    "SwiftUI",
    "Jetpack Compose",
    // data and ML
    "PostgreSQL",
    "MySQL",
    "MariaDB",
    "SQLite",
    "Oracle",
    "SQL Server",
    "MongoDB",
    "Redis",
    "Cassandra",
    "Elasticsearch",
    "Kafka",
    "RabbitMQ",
    "Spark",
    "Hadoop",
    "Airflow",
    "dbt",
    "Snowflake",
    "BigQuery",
    "Redshift",
    "Pandas",
    "NumPy",
    "scikit-learn",
    "TensorFlow",
    "PyTorch",
    "Keras",
    "XGBoost",
    "Machine Learning",
    "Deep Learning",
    "NLP",
    "Computer Vision",
    "LLM",
    "Statistics",
    "Data Analysis",
    "Data Engineering",
    "Data Science",
    "Tableau",
    "Power BI",
    "Looker",
    "Excel",
    "ETL",
    "A/B Testing",
    // infrastructure
    "AWS",
    "Azure",
    "GCP",
    "Google Cloud",
    "Docker",
    "Kubernetes",
    "Terraform",
    "Ansible",
    "Helm",
    "Linux",
    "CI/CD",
    "Jenkins",
    "GitHub Actions",
    "GitLab CI",
    "Prometheus",
    "Grafana",
    "Nginx",
    "Microservices",
    "Distributed Systems",
    "DevOps",
    "SRE",
    "Networking",
    "Security",
    "Penetration Testing",
    "SIEM",
    "Git",
    // design, product, business
    "Figma",
    "Sketch",
    "Adobe Photoshop",
    "Illustrator",
    "InDesign",
    "UX Research",
    "UI Design",
    "Prototyping",
    "Product Management",
    "Project Management",
    "Agile",
    "Scrum",
    "Kanban",
    "Jira",
    "Roadmapping",
    "Stakeholder Management",
    "SEO",
    "SEM",
    "Google Analytics",
    "Content Marketing",
    "Social Media",
    "Copywriting",
    "Salesforce",
    "HubSpot",
    "CRM",
    "Negotiation",
    "Account Management",
    "Lead Generation",
    "B2B Sales",
    "Customer Success",
    "Recruiting",
    "Sourcing",
    "Onboarding",
    "Payroll",
    "Employee Relations",
    // finance, health, operations
    "Accounting",
    "Financial Modelling",
    "Financial Analysis",
    "Budgeting",
    "Forecasting",
    "IFRS",
    "GAAP",
    "Audit",
    "Tax",
    "SAP",
    "QuickBooks",
    "Risk Management",
    "Compliance",
    "Nursing",
    "Patient Care",
    "Phlebotomy",
    "EMR",
    "Clinical Research",
    "Pharmacology",
    "Logistics",
    "Supply Chain",
    "Procurement",
    "Inventory Management",
    "Lean",
    "Six Sigma",
    "AutoCAD",
    "SolidWorks",
    "CAD",
    "PLC",
    "Embedded Systems",
    "Teaching",
    "Curriculum Development",
    "Public Speaking",
    "Leadership",
    "Mentoring",
    "Team Leadership",
];

/// Everything the CV states, from its sections.
pub fn extract(sections: &[Section], full_text: &str) -> Facts {
    let mut facts = Facts { sections: sections.iter().map(|s| s.kind).collect(), ..Facts::default() };
    facts.name = name(sections);
    facts.emails = unique(EMAIL.find_iter(full_text).map(|m| m.as_str().trim_end_matches('.').to_owned()));
    facts.links = unique(LINK.find_iter(full_text).map(|m| m.as_str().trim_end_matches(['.', ',', ';']).to_owned()));
    facts.phones = phones(full_text);
    facts.skills = skills(full_text);
    facts.roles = roles(sections);
    facts.total_years = total_years(&facts.roles);
    facts
}

fn unique(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&item)) {
            out.push(item);
        }
    }
    out
}

/// Phone numbers: 9 to 15 digits, not a date range or a run of years.
pub fn phones(text: &str) -> Vec<String> {
    unique(PHONE.find_iter(text).map(|m| m.as_str().trim().to_owned()).filter(|p| {
        let digits = p.chars().filter(char::is_ascii_digit).count();
        (9..=15).contains(&digits) && !DATE_RANGE.is_match(p) && !looks_like_years(p)
    }))
}

fn looks_like_years(s: &str) -> bool {
    let groups: Vec<&str> = s.split(|c: char| !c.is_ascii_digit()).filter(|g| !g.is_empty()).collect();
    groups.len() >= 2 && groups.iter().all(|g| g.len() == 4 && (g.starts_with("19") || g.starts_with("20")))
}

/// The name: a "Name:" line, else the header's first line when it reads as a name
/// (2 to 4 capitalised words, no digits or @).
pub fn name(sections: &[Section]) -> Option<String> {
    let header = sections.iter().find(|s| s.kind == SectionKind::Header)?;
    for line in &header.lines {
        let lower = line.to_lowercase();
        if let Some(rest) = lower.strip_prefix("name:").or_else(|| lower.strip_prefix("full name:")) {
            let start = line.len() - rest.len();
            let value = line[start..].trim();
            if !value.is_empty() {
                return Some(value.to_owned());
            }
        }
    }
    let first = header.lines.iter().find(|l| !l.trim().is_empty())?.trim();
    let words: Vec<&str> = first.split_whitespace().collect();
    let reads_as_name = (2..=4).contains(&words.len())
        && words.iter().all(|w| {
            w.chars().next().is_some_and(char::is_uppercase)
                && w.chars().all(|c| c.is_alphabetic() || matches!(c, '-' | '\'' | '.'))
        });
    reads_as_name.then(|| first.to_owned())
}

fn skills(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut found = Vec::new();
    for skill in SKILLS {
        let needle = skill.to_lowercase();
        let bounded = lower.match_indices(&needle).any(|(i, _)| {
            let before = lower[..i].chars().next_back();
            let after = lower[i + needle.len()..].chars().next();
            let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric() && c != '+' && c != '#');
            // "C" only counts on its own ("C, C++", not "C-level" or "C." initials).
            let strict = needle.len() > 1 || after.is_none_or(|c| c == ',' || c == ' ' || c == '/' || c == '\n');
            boundary(before) && boundary(after) && strict
        });
        if bounded {
            found.push((*skill).to_owned());
        }
    }
    // "Golang" and "Go" are one skill.
    if found.iter().any(|s| s == "Golang") {
        found.retain(|s| s != "Golang");
        if !found.iter().any(|s| s == "Go") {
            found.push("Go".to_owned());
        }
    }
    found
}

/// Roles in the experience section: lines with a date range, titled by the line itself
/// (dates removed) or, when that is empty, the line before.
fn roles(sections: &[Section]) -> Vec<Role> {
    let this_year = chrono::Utc::now().year();
    let mut out = Vec::new();
    for section in sections.iter().filter(|s| s.kind == SectionKind::Experience) {
        let mut previous = "";
        for line in &section.lines {
            if let Some(caps) = DATE_RANGE.captures(line) {
                let start: i32 = caps[1].parse().unwrap_or(0);
                let end = caps[2].parse::<i32>().ok();
                let end_value = end.unwrap_or(this_year);
                if start > 0 && end_value >= start && end_value <= this_year + 1 {
                    let whole = caps.get(0).map_or(0..0, |m| m.range());
                    let mut title = format!("{} {}", &line[..whole.start], &line[whole.end..]);
                    title = title
                        .trim_matches(|c: char| {
                            c.is_whitespace() || matches!(c, '|' | ',' | '-' | '–' | '—' | '(' | ')' | ':')
                        })
                        .to_owned();
                    if title.is_empty() {
                        title = previous.trim().to_owned();
                    }
                    out.push(Role {
                        title,
                        start_year: start,
                        end_year: end,
                        years: f64::from(end_value - start).max(0.5),
                    });
                }
            }
            if !line.trim().is_empty() {
                previous = line;
            }
        }
    }
    out
}

/// Years covered by the roles, overlapping ones counted once.
fn total_years(roles: &[Role]) -> Option<f64> {
    if roles.is_empty() {
        return None;
    }
    let this_year = chrono::Utc::now().year();
    let mut spans: Vec<(i32, i32)> = roles.iter().map(|r| (r.start_year, r.end_year.unwrap_or(this_year))).collect();
    spans.sort_unstable();
    let mut total = 0;
    let mut current: Option<(i32, i32)> = None;
    for (start, end) in spans {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = current {
        total += e - s;
    }
    Some(f64::from(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structure::sections;

    const CV: &str = "Maria Garcia Lopez\nmaria.garcia@example.org | +34 612 345 678 | linkedin.com/in/mgl\n\
        Experience\nSenior Data Engineer, Acme | 2019 - Present\nBuilt Spark and Airflow pipelines on AWS.\n\
        Data Analyst\nJan 2015 – Dec 2019\nSQL, Tableau and Python reports.\nEducation\nMSc Statistics 2013 - 2014";

    #[test]
    fn contacts_skills_and_roles_are_found_where_written() {
        let facts = extract(&sections(CV), CV);
        assert_eq!(facts.name.as_deref(), Some("Maria Garcia Lopez"));
        assert_eq!(facts.emails, vec!["maria.garcia@example.org"]);
        assert_eq!(facts.phones, vec!["+34 612 345 678"]);
        assert_eq!(facts.links, vec!["linkedin.com/in/mgl"]);
        for skill in ["Spark", "Airflow", "AWS", "SQL", "Tableau", "Python", "Statistics"] {
            assert!(facts.skills.iter().any(|s| s == skill), "{skill} missing from {:?}", facts.skills);
        }
        assert!(!facts.skills.iter().any(|s| s == "Go" || s == "R" || s == "C"), "{:?}", facts.skills);
        assert_eq!(facts.roles.len(), 2, "{:?}", facts.roles);
        assert_eq!(facts.roles[0].title, "Senior Data Engineer, Acme");
        assert_eq!(facts.roles[0].end_year, None);
        assert_eq!(facts.roles[1].title, "Data Analyst");
        assert_eq!((facts.roles[1].start_year, facts.roles[1].end_year), (2015, Some(2019)));
        let this_year = chrono::Utc::now().year();
        assert_eq!(facts.total_years, Some(f64::from(this_year - 2015)));
        assert!(phones("2015 - 2019, 2020 - 2023").is_empty());
    }
}
