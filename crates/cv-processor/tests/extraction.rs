//! Extraction through the real sandbox (this crate's binary as the child): real CVs
#![allow(clippy::unwrap_used)]
//! made by real tools come out as the right text in reading order, and every hostile
//! file ends with its reason while the next file is read as usual.

mod common;

use std::io::Write;
use std::time::Duration;

use cv_processor::extract::{Format, Limits, Outcome};
use cv_processor::handler::structure_text;
use cv_processor::sandbox::{self, SandboxConfig};

use crate::common::{fixture, hostile};

fn config() -> SandboxConfig {
    SandboxConfig {
        program: Some(env!("CARGO_BIN_EXE_cv-processor").into()),
        memory: 1 << 30,
        cpu: Duration::from_secs(20),
        wall: Duration::from_secs(30),
        limits: Limits::default(),
    }
}

async fn text_of(bytes: Vec<u8>) -> (Format, String, usize) {
    match sandbox::extract(&config(), bytes).await {
        Ok(Outcome::Extracted(e)) => (e.format, e.text, e.pages),
        other => panic!("not extracted: {other:?}"),
    }
}

async fn failure_of(bytes: Vec<u8>) -> String {
    match sandbox::extract(&config(), bytes).await {
        Ok(Outcome::Failed(reason)) => reason,
        other => panic!("not failed: {other:?}"),
    }
}

/// Asserts the lines appear in this order (each a line of its own or inside one).
fn assert_in_order(text: &str, expected: &[&str]) {
    let mut from = 0;
    for line in expected {
        match text[from..].find(line) {
            Some(at) => from += at + line.len(),
            None => panic!("{line:?} missing or out of order in:\n{text}"),
        }
    }
}

const READING_ORDER: &[&str] = &[
    "Summary",
    "Backend engineer with nine years of experience",
    "Experience",
    "Staff Engineer, Ledgerline | 2021 - Present",
    "Led the move of the settlement service to Rust",
    "Senior Software Engineer, Brightpay | 2017 - 2021",
    "Software Engineer, Northwind Analytics | 2015 - 2017",
];

#[tokio::test]
async fn real_pdf_and_docx_cvs_come_out_in_reading_order() {
    for (file, format) in [
        ("one_column.pdf", Format::Pdf),
        ("two_column.pdf", Format::Pdf),
        ("one_column.docx", Format::Docx),
        ("two_column.docx", Format::Docx),
    ] {
        let (got, text, pages) = text_of(fixture(file)).await;
        assert_eq!((got, pages), (format, 1), "{file}");
        assert!(text.starts_with("Priya Raman\n"), "{file}: {text}");
        assert_in_order(&text, READING_ORDER);
        assert!(text.contains("Rust, Go, Python, SQL"), "{file}: {text}");

        let s = structure_text(&text, 40);
        assert_eq!(s.facts.name.as_deref(), Some("Priya Raman"), "{file}");
        assert_eq!(s.facts.emails, vec!["priya.raman@example.com"], "{file}");
        assert_eq!(s.facts.phones, vec!["+44 20 7946 0321"], "{file}");
        let titles: Vec<&str> = s.facts.roles.iter().map(|r| r.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Staff Engineer, Ledgerline",
                "Senior Software Engineer, Brightpay",
                "Software Engineer, Northwind Analytics"
            ],
            "{file}"
        );
        // Every skill the CV lists that is in the vocabulary.
        for skill in [
            "Rust",
            "Go",
            "Python",
            "SQL",
            "PostgreSQL",
            "Kafka",
            "Redis",
            "Kubernetes",
            "Terraform",
            "AWS",
            "Airflow",
            "Docker",
            "CI/CD",
            "ETL",
        ] {
            assert!(s.facts.skills.iter().any(|k| k == skill), "{file}: {skill} not in {:?}", s.facts.skills);
        }
        assert!(!s.masked_text.contains("Priya") && !s.masked_text.contains("7946"), "{file}");
    }
    // The two-column PDF: the narrow left column (skills, education) comes out whole,
    // before the right one, never interleaved line by line.
    let (_, text, _) = text_of(fixture("two_column.pdf")).await;
    assert_in_order(
        &text,
        &["Skills", "Kubernetes, Terraform, AWS", "Education", "University of Edinburgh", "Summary"],
    );
}

#[tokio::test]
async fn hostile_files_each_fail_with_their_reason_and_the_next_file_is_read() {
    let good = fixture("one_column.pdf");
    for (what, _, bytes, expected) in hostile::files() {
        let reason = failure_of(bytes).await;
        eprintln!("{what}: {reason}");
        assert!(expected.iter().any(|e| reason.contains(e)), "{what}: {reason:?}");
        // The service goes on: the next file is read as usual.
        let (format, text, _) = text_of(good.clone()).await;
        assert_eq!(format, Format::Pdf, "after {what}");
        assert!(text.contains("Staff Engineer, Ledgerline"), "after {what}");
    }
}

#[tokio::test]
async fn a_reader_that_runs_too_long_is_killed_at_the_wall_clock_limit() {
    // A reader that hangs (whatever the file): the deadline, not the file, ends it.
    use std::os::unix::fs::PermissionsExt;
    let dir = test_support::TempDir::new("hanging-reader").unwrap();
    let program = dir.path.join("hanging-reader");
    std::fs::write(&program, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = config();
    config.program = Some(program);
    config.wall = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let outcome = sandbox::extract(&config, fixture("one_column.pdf")).await.unwrap();
    assert!(matches!(&outcome, Outcome::Failed(r) if r.contains("took longer than")), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_reader_that_runs_out_of_memory_dies_alone_and_the_file_fails_with_a_reason() {
    // Our own bomb checks switched off: the reader itself meets the memory limit.
    let mut config = config();
    config.memory = 256 << 20;
    config.limits.max_expanded_bytes = u64::MAX / 2;
    config.limits.max_total_expanded_bytes = u64::MAX / 2;
    config.limits.max_ratio = u64::MAX;
    let bomb = hostile::pdf_with_stream(&hostile::deflate(|e| {
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..1024 {
            e.write_all(&zeros).unwrap();
        }
    }));
    let outcome = sandbox::extract(&config, bomb).await.unwrap();
    eprintln!("{outcome:?}");
    assert!(
        matches!(&outcome, Outcome::Failed(r) if r.contains("more memory") || r.contains("crashed")),
        "{outcome:?}"
    );
    let (_, text, _) = text_of(fixture("one_column.pdf")).await;
    assert!(text.contains("Priya Raman"));
}
