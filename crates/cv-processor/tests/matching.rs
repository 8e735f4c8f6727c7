//! Matching through the running services, on real embeddings (all-MiniLM-L6-v2) and
//! the embedded vector engine: quality on a labelled set, names that do not move a
//! score, the embedding cache, and companies that never see each other's CVs.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{CvStack, ids};
use reqwest::Method;
use serde_json::{Value, json};

fn matching_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/matching")
}

fn labelled_cvs() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(matching_dir().join("cvs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

fn labelled_jobs() -> Vec<Value> {
    serde_json::from_slice(&std::fs::read(matching_dir().join("jobs.json")).unwrap()).unwrap()
}

fn relevance() -> HashMap<String, HashMap<String, u32>> {
    serde_json::from_slice(&std::fs::read(matching_dir().join("relevance.json")).unwrap()).unwrap()
}

/// Uploads the files in one request and waits until every CV is processed; returns
/// file name → CV id.
async fn upload_all(stack: &CvStack, key: &str, files: &[(String, Vec<u8>)]) -> HashMap<String, i64> {
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let (status, body) = stack.upload(key, &refs).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let mut out = HashMap::new();
    for ((name, _), id) in files.iter().zip(ids(&body)) {
        let cv = stack.wait_done(key, id).await.unwrap();
        assert_eq!(cv["status"], "processed", "{name}: {cv}");
        out.insert(name.clone(), id);
    }
    out
}

async fn create_job(stack: &CvStack, key: &str, job: &Value) -> i64 {
    let body = json!({"title": job["title"], "description": job["description"], "requirements": job["requirements"]});
    let (status, created) = stack.send(key, Method::POST, "/api/v1/jobs", Some(body)).await.unwrap();
    assert_eq!(status, 201, "{created}");
    created["id"].as_i64().unwrap()
}

async fn ranking(stack: &CvStack, key: &str, job: i64, mode: &str, limit: usize) -> Vec<Value> {
    let (status, body) =
        stack.get(key, &format!("/api/v1/jobs/{job}/matches?limit={limit}&mode={mode}")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

fn ndcg_at(k: usize, ranked: &[u32], all: &[u32]) -> f64 {
    let dcg = |grades: &[u32]| -> f64 {
        grades.iter().take(k).enumerate().map(|(i, g)| (2f64.powi(*g as i32) - 1.0) / ((i + 2) as f64).log2()).sum()
    };
    let mut ideal = all.to_vec();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    dcg(ranked) / dcg(&ideal)
}

#[tokio::test]
async fn on_the_labelled_set_true_candidates_rank_first_and_the_hybrid_is_reported_beside_dense_and_bm25() {
    let stack = CvStack::start(true).await.unwrap();
    let key = stack.company("Acme").await.unwrap();
    let uploaded = upload_all(&stack, &key, &labelled_cvs()).await;
    let names: HashMap<i64, String> = uploaded.iter().map(|(n, id)| (*id, n.clone())).collect();
    let grades = relevance();
    let jobs = labelled_jobs();
    let mut job_ids = Vec::new();
    for job in &jobs {
        job_ids.push((job["key"].as_str().unwrap().to_owned(), create_job(&stack, &key, job).await));
    }

    let mut report = String::from("\nmode       nDCG@10  recall@10 (relevant: grade >= 2)\n");
    let mut hybrid_ndcg = 0.0;
    for mode in ["dense", "keywords", "hybrid"] {
        let (mut ndcg_sum, mut recall_sum) = (0.0, 0.0);
        for (job_key, job_id) in &job_ids {
            let graded = &grades[job_key];
            let ranked: Vec<String> = ranking(&stack, &key, *job_id, mode, 100)
                .await
                .iter()
                .map(|m| names[&m["cv_id"].as_i64().unwrap()].clone())
                .collect();
            let ranked_grades: Vec<u32> = ranked.iter().map(|n| graded[n]).collect();
            let all: Vec<u32> = graded.values().copied().collect();
            let ndcg = ndcg_at(10, &ranked_grades, &all);
            let relevant: Vec<&String> = graded.iter().filter(|(_, g)| **g >= 2).map(|(n, _)| n).collect();
            let found = relevant.iter().filter(|n| ranked.iter().take(10).any(|r| r == **n)).count();
            let recall = found as f64 / relevant.len() as f64;
            ndcg_sum += ndcg;
            recall_sum += recall;
            report.push_str(&format!("  {mode:<9}{job_key:<30} {ndcg:.3}  {recall:.3}\n"));
            if mode == "hybrid" {
                // Every strong candidate ranks above every unrelated CV.
                let last_strong = ranked.iter().rposition(|n| graded[n] == 3).unwrap();
                let first_unrelated = ranked.iter().position(|n| graded[n] == 0).unwrap_or(ranked.len());
                assert!(
                    last_strong < first_unrelated,
                    "{job_key}: a grade-3 CV at {last_strong} below an unrelated one at {first_unrelated}: {ranked:?}"
                );
            }
        }
        let n = job_ids.len() as f64;
        report.push_str(&format!(
            "{mode:<10} {:.3}    {:.3}   (mean of {} jobs)\n",
            ndcg_sum / n,
            recall_sum / n,
            job_ids.len()
        ));
        if mode == "hybrid" {
            hybrid_ndcg = ndcg_sum / n;
        }
    }
    eprintln!("{report}");
    assert!(hybrid_ndcg >= 0.8, "hybrid nDCG@10 {hybrid_ndcg:.3}");

    // Evidence: each requirement of the top CV says whether it is met, and by what.
    let top = &ranking(&stack, &key, job_ids[0].1, "hybrid", 1).await[0];
    assert_eq!(top["requirements_total"], 6);
    let requirements = top["requirements"].as_array().unwrap();
    assert_eq!(requirements.len(), 6);
    assert!(top["requirements_met"].as_u64().unwrap() >= 3, "{top}");
    for r in requirements.iter().filter(|r| r["met"] == true) {
        assert!(r["evidence"]["text"].as_str().is_some_and(|t| !t.is_empty()), "{r}");
        assert!(r["similarity"].as_f64().unwrap() >= 0.5 || r["keywords_found"] == true, "{r}");
    }
    assert!(top["cv"]["summary"].is_string());
    stack.stop().await.unwrap();
}

fn renamed(cv: &str, name: &str) -> Vec<u8> {
    let email = format!("{}@example.com", name.to_lowercase().replace(' ', "."));
    let mut lines: Vec<String> = cv.lines().map(str::to_owned).collect();
    lines[0] = name.to_owned();
    lines[1] = lines[1].replacen(lines[1].split(" | ").next().unwrap(), &email, 1);
    lines.join("\n").into_bytes()
}

#[tokio::test]
async fn the_same_cv_under_three_names_scores_the_same_and_costs_the_model_once() {
    let stack = CvStack::start(true).await.unwrap();
    let key = stack.company("Acme").await.unwrap();
    let base =
        String::from_utf8(std::fs::read(matching_dir().join("cvs/01_backend_rust_senior.txt")).unwrap()).unwrap();
    // Some other CVs, so ranks mean something.
    let others: Vec<(String, Vec<u8>)> =
        labelled_cvs().into_iter().filter(|(n, _)| !n.starts_with("01_")).take(12).collect();
    upload_all(&stack, &key, &others).await;

    let computed = "headhunter_cv_processor_embeddings_total{source=\"computed\"}";
    let hits = "headhunter_cv_processor_embeddings_total{source=\"cache_hit\"}";
    let first = upload_all(&stack, &key, &[("emily.txt".to_owned(), renamed(&base, "Emily Walsh"))]).await;
    let computed_once = stack.processor_metric(computed).await;
    let hits_before = stack.processor_metric(hits).await;
    let (_, cv) = stack.get(&key, &format!("/api/v1/cvs/{}", first["emily.txt"])).await.unwrap();
    let chunks = cv["chunk_count"].as_f64().unwrap();
    let more = upload_all(
        &stack,
        &key,
        &[
            ("lakisha.txt".to_owned(), renamed(&base, "Lakisha Washington")),
            ("nguyen.txt".to_owned(), renamed(&base, "Nguyen Thi Minh Anh")),
        ],
    )
    .await;
    assert_eq!(stack.processor_metric(computed).await, computed_once, "the renamed copies ran the model");
    assert_eq!(stack.processor_metric(hits).await - hits_before, 2.0 * chunks);

    let variants = [first["emily.txt"], more["lakisha.txt"], more["nguyen.txt"]];
    for job in labelled_jobs() {
        let job_id = create_job(&stack, &key, &job).await;
        for mode in ["hybrid", "dense", "keywords"] {
            let ranked = ranking(&stack, &key, job_id, mode, 100).await;
            let scores: Vec<f64> = variants
                .iter()
                .map(|id| ranked.iter().find(|m| m["cv_id"] == *id).map_or(0.0, |m| m["score"].as_f64().unwrap()))
                .collect();
            assert!(scores.iter().all(|s| *s == scores[0]), "{} {mode}: {scores:?}", job["key"]);
        }
    }
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn a_cv_uploaded_again_or_by_another_company_costs_no_model_calls() {
    let stack = CvStack::start(true).await.unwrap();
    let key = stack.company("Acme").await.unwrap();
    let other = stack.company("Globex").await.unwrap();
    let cv = labelled_cvs().into_iter().find(|(n, _)| n.starts_with("20_")).unwrap();
    let first = upload_all(&stack, &key, std::slice::from_ref(&cv)).await;
    let computed = "headhunter_cv_processor_embeddings_total{source=\"computed\"}";
    let before = stack.processor_metric(computed).await;
    assert!(before > 0.0);

    // Deleted and uploaded again: a new CV, processed again, from the cache.
    let (status, _) = stack.send(&key, Method::DELETE, &format!("/api/v1/cvs/{}", first[&cv.0]), None).await.unwrap();
    assert_eq!(status, 204);
    let again = upload_all(&stack, &key, std::slice::from_ref(&cv)).await;
    assert_ne!(again[&cv.0], first[&cv.0]);
    upload_all(&stack, &other, std::slice::from_ref(&cv)).await;
    assert_eq!(stack.processor_metric(computed).await, before, "a known text ran the model again");
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn matches_stay_inside_the_company_and_follow_changes_to_the_job() {
    let stack = CvStack::start(true).await.unwrap();
    let acme = stack.company("Acme").await.unwrap();
    let globex = stack.company("Globex").await.unwrap();
    let all = labelled_cvs();
    let nurses: Vec<_> = all.iter().filter(|(n, _)| n.contains("nurs")).cloned().collect();
    let engineers: Vec<_> = all.iter().filter(|(n, _)| n.contains("backend")).cloned().collect();
    let acme_cvs = upload_all(&stack, &acme, &engineers).await;
    let globex_cvs = upload_all(&stack, &globex, &nurses).await;
    let jobs = labelled_jobs();
    let acme_job = create_job(&stack, &acme, &jobs[0]).await;
    let globex_job = create_job(&stack, &globex, &jobs[2]).await;

    // Globex's nurse job only ever sees Globex's CVs, and the other way round.
    let theirs: Vec<i64> = globex_cvs.values().copied().collect();
    for m in ranking(&stack, &globex, globex_job, "hybrid", 100).await {
        assert!(theirs.contains(&m["cv_id"].as_i64().unwrap()), "{m}");
    }
    let ours: Vec<i64> = acme_cvs.values().copied().collect();
    for m in ranking(&stack, &acme, acme_job, "hybrid", 100).await {
        assert!(ours.contains(&m["cv_id"].as_i64().unwrap()), "{m}");
    }
    // The other company's job, CV and their matches: 404.
    let any_acme_cv = ours[0];
    for path in [format!("/api/v1/jobs/{acme_job}/matches"), format!("/api/v1/cvs/{any_acme_cv}/matches")] {
        let (status, body) = stack.get(&globex, &path).await.unwrap();
        assert_eq!(status, 404, "{path}: {body}");
    }

    // A CV's best open jobs; cached, then recomputed once the job changes.
    let second_job = create_job(&stack, &acme, &jobs[3]).await;
    let (status, first) = stack.get(&acme, &format!("/api/v1/cvs/{any_acme_cv}/matches")).await.unwrap();
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["data"][0]["job_id"].as_i64(), Some(acme_job), "{first}");
    let gateway_metric = |text: &str, result: &str| -> f64 {
        let line = format!("headhunter_gateway_match_cache_total{{result=\"{result}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&line)?.parse().ok()).unwrap_or(0.0)
    };
    let metrics = stack.http.get(format!("{}/metrics", stack.url)).send().await.unwrap().text().await.unwrap();
    let (hits, misses) = (gateway_metric(&metrics, "hit"), gateway_metric(&metrics, "miss"));
    let (_, again) = stack.get(&acme, &format!("/api/v1/cvs/{any_acme_cv}/matches")).await.unwrap();
    assert_eq!(again["data"], first["data"]);
    let metrics = stack.http.get(format!("{}/metrics", stack.url)).send().await.unwrap().text().await.unwrap();
    assert_eq!(gateway_metric(&metrics, "hit") - hits, 2.0, "both jobs from the cache");
    assert_eq!(gateway_metric(&metrics, "miss"), misses);
    // The job changes: its cached result is not used any more.
    let body = json!({"requirements": ["Registered nurse with ICU experience"]});
    let (status, _) = stack.send(&acme, Method::PATCH, &format!("/api/v1/jobs/{acme_job}"), Some(body)).await.unwrap();
    assert_eq!(status, 200);
    let (_, changed) = stack.get(&acme, &format!("/api/v1/cvs/{any_acme_cv}/matches")).await.unwrap();
    let metrics = stack.http.get(format!("{}/metrics", stack.url)).send().await.unwrap().text().await.unwrap();
    assert_eq!(gateway_metric(&metrics, "miss") - misses, 1.0, "the changed job was asked again");
    let reqs =
        changed["data"].as_array().unwrap().iter().find(|m| m["job_id"] == acme_job).map(|m| m["requirements"].clone());
    if let Some(reqs) = reqs {
        assert_eq!(reqs[0]["requirement"], "Registered nurse with ICU experience");
    }
    let (status, err) = stack.get(&acme, &format!("/api/v1/jobs/{acme_job}/matches?limit=0")).await.unwrap();
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("limit")));
    let (status, err) = stack.get(&acme, &format!("/api/v1/jobs/{acme_job}/matches?mode=magic")).await.unwrap();
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("mode")));
    let _ = second_job;

    // Both services logged their side of the match to system_logs, naming the company.
    let logged = test_support::wait_for(Duration::from_secs(10), "the match requests in system_logs", || async {
        let entries = stack.redis.stream_payloads(&stack.redis.key("system_logs")).await.ok()?;
        let of = |component: &str, path: &str| {
            entries
                .iter()
                .find(|e| e["component"] == component && e["request_path"].as_str().is_some_and(|p| p.ends_with(path)))
                .cloned()
        };
        Some((of("api-gateway", "/matches")?, of("cv-processor", "/internal/v1/match")?))
    })
    .await
    .unwrap();
    let (gateway, processor) = logged;
    assert_eq!((gateway["status_code"].as_i64(), processor["status_code"].as_i64()), (Some(200), Some(200)));
    assert!(gateway["company_id"].is_i64(), "{gateway}");
    assert_eq!(processor["company_id"], gateway["company_id"], "{processor}");
    assert_eq!(processor["level"], "info");
    tokio::time::sleep(Duration::from_millis(10)).await;
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn an_openai_compatible_embeddings_api_can_stand_in_for_the_local_model() {
    let sim = llm_simulator::Simulator::start(test_support::local_listener().unwrap(), Default::default()).unwrap();
    let mut stack = CvStack::start(false).await.unwrap();
    let base = sim.base_url();
    stack
        .start_processor_with(|s| {
            s.embedding.backend = "openai".to_owned();
            s.embedding.api_base_url = base;
            s.embedding.api_model = "simulated-embedding".to_owned();
        })
        .await
        .unwrap();
    stack.stop_gateway().await.unwrap();
    stack.start_gateway().await.unwrap();
    let key = stack.company("Acme").await.unwrap();
    let before = sim.requests();
    let cvs: Vec<_> = labelled_cvs().into_iter().filter(|(n, _)| n.contains("nurs") || n.contains("backend")).collect();
    let uploaded = upload_all(&stack, &key, &cvs).await;
    assert!(sim.requests() > before, "the API was not asked");
    let job = create_job(&stack, &key, &labelled_jobs()[2]).await;
    let ranked = ranking(&stack, &key, job, "hybrid", 3).await;
    assert_eq!(ranked.len(), 3);
    let nurses: Vec<i64> = uploaded.iter().filter(|(n, _)| n.contains("nurs")).map(|(_, id)| *id).collect();
    assert!(nurses.contains(&ranked[0]["cv_id"].as_i64().unwrap()), "{ranked:?}");
    stack.stop().await.unwrap();
    sim.stop().await;
}
