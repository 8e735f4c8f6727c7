//! CVs through the running services: upload → cv_jobs → cv-processor → the CV's row,
//! with hostile files among them, another company looking, and a processor killed
//! mid-job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{CvStack, fixture, ids};
use diesel_async::RunQueryDsl;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn an_upload_is_answered_at_once_processed_in_the_background_and_a_duplicate_costs_nothing() {
    let stack = CvStack::start(true).await.unwrap();
    let key = stack.company("Acme Recruiting").await.unwrap();

    let (status, body) = stack
        .upload(&key, &[("priya.pdf", fixture("one_column.pdf")), ("priya-2col.docx", fixture("two_column.docx"))])
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let uploaded = ids(&body);
    assert_eq!(uploaded.len(), 2);
    assert!(body["data"].as_array().unwrap().iter().all(|cv| cv["status"] == "queued" && cv["duplicate"] == false));

    for id in &uploaded {
        let cv = stack.wait_done(&key, *id).await.unwrap();
        assert_eq!(cv["status"], "processed", "{cv}");
        assert_eq!(cv["attempts"], 1);
        assert!(cv["chunk_count"].as_i64().unwrap() >= 3, "{cv}");
        assert!(cv["section_count"].as_i64().unwrap() >= 4, "{cv}");
        assert_eq!(cv["facts"]["name"], "Priya Raman");
        assert_eq!(cv["facts"]["roles"].as_array().unwrap().len(), 3, "{cv}");
        let summary = cv["summary"].as_str().unwrap();
        assert!(summary.starts_with("Staff Engineer, Ledgerline (2021–present)."), "{summary}");
        assert!(cv["processed_at"].is_string());
    }
    let (_, pdf) = stack.get(&key, &format!("/api/v1/cvs/{}", uploaded[0])).await.unwrap();
    assert_eq!(pdf["page_count"], 1);
    assert_eq!(pdf["content_type"], "application/pdf");
    assert_eq!(pdf["size_bytes"].as_u64().unwrap() as usize, fixture("one_column.pdf").len());

    // The same file again (under another name): recognised, not queued again.
    let (status, again) = stack.upload(&key, &[("copy of priya.pdf", fixture("one_column.pdf"))]).await.unwrap();
    assert_eq!(status, 202);
    assert_eq!(again["data"][0]["id"].as_i64(), Some(uploaded[0]));
    assert_eq!(again["data"][0]["duplicate"], true);
    assert_eq!(again["data"][0]["status"], "processed");
    assert_eq!(stack.redis.xlen(&stack.redis.key("cv_jobs")).await.unwrap(), 2, "a duplicate queued work");

    // The original file comes back as uploaded.
    let res = stack
        .http
        .get(format!("{}/api/v1/cvs/{}/file", stack.url, uploaded[0]))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/pdf");
    assert_eq!(res.bytes().await.unwrap().as_ref(), fixture("one_column.pdf").as_slice());

    // Pages: newest first, the cursor walks on, the last page says so.
    let (_, first) = stack.get(&key, "/api/v1/cvs?limit=1").await.unwrap();
    assert_eq!(ids(&first), vec![uploaded[1]]);
    assert!(first["data"][0].get("facts").is_none_or(|f| f.is_null()));
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = stack.get(&key, &format!("/api/v1/cvs?limit=1&cursor={cursor}")).await.unwrap();
    assert_eq!(ids(&second), vec![uploaded[0]]);
    assert!(second["next_cursor"].is_null());
    let (_, processed) = stack.get(&key, "/api/v1/cvs?status=processed").await.unwrap();
    assert_eq!(ids(&processed).len(), 2);

    // Delete: the row and the file are gone.
    let files_before = count_files(&stack.files.path);
    let (status, _) = stack.send(&key, Method::DELETE, &format!("/api/v1/cvs/{}", uploaded[0]), None).await.unwrap();
    assert_eq!(status, 204);
    assert_eq!(stack.get(&key, &format!("/api/v1/cvs/{}", uploaded[0])).await.unwrap().0, 404);
    assert_eq!(count_files(&stack.files.path), files_before - 1);
    let (status, _) = stack.send(&key, Method::DELETE, &format!("/api/v1/cvs/{}", uploaded[0]), None).await.unwrap();
    assert_eq!(status, 404);
    stack.stop().await.unwrap();
}

fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != ".staging")
        .map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 })
        .sum()
}

#[tokio::test]
async fn hostile_files_end_failed_with_their_reason_and_processing_goes_on() {
    let stack = CvStack::start(true).await.unwrap();
    let key = stack.company("Acme").await.unwrap();
    let hostile = common::hostile::files();
    let mut files: Vec<(&str, Vec<u8>)> = hostile.iter().map(|(_, name, bytes, _)| (*name, bytes.clone())).collect();
    files.push(("good.docx", fixture("one_column.docx")));
    let (status, body) = stack.upload(&key, &files).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let uploaded = ids(&body);
    for ((what, _, _, expected), id) in hostile.iter().zip(&uploaded) {
        let cv = stack.wait_done(&key, *id).await.unwrap();
        assert_eq!(cv["status"], "failed", "{what}: {cv}");
        let reason = cv["failure_reason"].as_str().unwrap();
        assert!(expected.iter().any(|e| reason.contains(e)), "{what}: {reason}");
    }
    let good = stack.wait_done(&key, *uploaded.last().unwrap()).await.unwrap();
    assert_eq!(good["status"], "processed", "{good}");

    let (_, failed) = stack.get(&key, "/api/v1/cvs?status=failed&limit=100").await.unwrap();
    assert_eq!(ids(&failed).len(), hostile.len());
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn another_company_gets_404_for_every_route_of_jobs_and_cvs() {
    let stack = CvStack::start(false).await.unwrap();
    let owner = stack.company("Owner").await.unwrap();
    let other = stack.company("Other").await.unwrap();
    let (status, job) = stack
        .send(&owner, Method::POST, "/api/v1/jobs", Some(json!({"title": "Rust engineer", "requirements": ["Rust"]})))
        .await
        .unwrap();
    assert_eq!(status, 201, "{job}");
    let job_id = job["id"].as_i64().unwrap();
    let (_, body) = stack.upload(&owner, &[("cv.pdf", fixture("one_column.pdf"))]).await.unwrap();
    let cv_id = ids(&body)[0];

    let routes = [
        (Method::GET, format!("/api/v1/jobs/{job_id}"), None),
        (Method::PATCH, format!("/api/v1/jobs/{job_id}"), Some(json!({"title": "mine now"}))),
        (Method::POST, format!("/api/v1/jobs/{job_id}/archive"), None),
        (Method::GET, format!("/api/v1/cvs/{cv_id}"), None),
        (Method::GET, format!("/api/v1/cvs/{cv_id}/file"), None),
        (Method::DELETE, format!("/api/v1/cvs/{cv_id}"), None),
    ];
    for (method, path, body) in routes {
        let (status, answer) = stack.send(&other, method.clone(), &path, body).await.unwrap();
        assert_eq!(status, 404, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["type"], "not_found_error");
    }
    for list in ["/api/v1/jobs", "/api/v1/cvs"] {
        let (status, page) = stack.get(&other, list).await.unwrap();
        assert_eq!((status, page["data"].as_array().unwrap().len()), (200, 0), "{list}");
    }
    // The same file uploaded by the other company is its own CV, not the owner's.
    let (_, theirs) = stack.upload(&other, &[("cv.pdf", fixture("one_column.pdf"))]).await.unwrap();
    assert_ne!(ids(&theirs)[0], cv_id);
    assert_eq!(theirs["data"][0]["duplicate"], false);
    // Nothing was changed by the other company's attempts.
    let (_, still) = stack.get(&owner, &format!("/api/v1/jobs/{job_id}")).await.unwrap();
    assert_eq!((still["title"].as_str(), still["status"].as_str()), (Some("Rust engineer"), Some("open")));
    assert_eq!(stack.get(&owner, &format!("/api/v1/cvs/{cv_id}")).await.unwrap().0, 200);
    stack.redis.leaves_work_behind();
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn jobs_are_created_read_updated_listed_and_archived_with_clear_errors() {
    let stack = CvStack::start(false).await.unwrap();
    let key = stack.company("Acme").await.unwrap();
    let post = |body| stack.send(&key, Method::POST, "/api/v1/jobs", Some(body));
    let (status, job) = post(json!({
        "title": "  Data engineer ", "description": "Pipelines.", "requirements": ["Spark", " Airflow "],
        "location": "Berlin"
    }))
    .await
    .unwrap();
    assert_eq!(status, 201, "{job}");
    assert_eq!((job["title"].as_str(), job["status"].as_str()), (Some("Data engineer"), Some("open")));
    assert_eq!(job["requirements"], json!(["Spark", "Airflow"]));
    let id = job["id"].as_i64().unwrap();

    for (body, param) in [
        (json!({"description": "no title"}), "title"),
        (json!({"title": ""}), "title"),
        (json!({"title": "x", "requirements": [""]}), "requirements[0]"),
        (json!({"title": "x", "status": "archived"}), "status"),
        (json!({"title": "x", "requirements": vec!["r"; 51]}), "requirements"),
    ] {
        let (status, err) = post(body.clone()).await.unwrap();
        assert_eq!(status, 400, "{body}: {err}");
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
    }
    let (status, err) = post(json!({"title": "x", "salary": 1})).await.unwrap();
    assert_eq!(status, 400);
    assert!(err["error"]["message"].as_str().unwrap().contains("salary"), "{err}");

    let (status, updated) = stack
        .send(&key, Method::PATCH, &format!("/api/v1/jobs/{id}"), Some(json!({"location": null, "status": "closed"})))
        .await
        .unwrap();
    assert_eq!(status, 200, "{updated}");
    assert!(updated["location"].is_null());
    assert_eq!((updated["status"].as_str(), updated["title"].as_str()), (Some("closed"), Some("Data engineer")));
    let (_, archived) = stack.send(&key, Method::POST, &format!("/api/v1/jobs/{id}/archive"), None).await.unwrap();
    assert_eq!(archived["status"], "archived");

    for i in 0..3 {
        post(json!({"title": format!("job {i}")})).await.unwrap();
    }
    let (_, page) = stack.get(&key, "/api/v1/jobs?limit=2").await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let (_, rest) = stack
        .get(&key, &format!("/api/v1/jobs?limit=2&cursor={}", page["next_cursor"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(rest["data"].as_array().unwrap().len(), 2);
    assert!(rest["next_cursor"].is_null());
    let (_, archived_only) = stack.get(&key, "/api/v1/jobs?status=archived").await.unwrap();
    assert_eq!(archived_only["data"].as_array().unwrap().len(), 1);
    assert_eq!(stack.get(&key, "/api/v1/jobs?limit=500").await.unwrap().1["error"]["param"], "limit");
    assert_eq!(stack.get(&key, "/api/v1/jobs/abc").await.unwrap().0, 404);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn uploads_over_the_limits_are_refused_whole_with_413_and_nothing_is_kept() {
    let stack = CvStack::start(false).await.unwrap();
    let key = stack.company("Acme").await.unwrap();
    // Refused part-way (the limit is 10 MiB a file) or before a byte of the body is read:
    // the sender, still sending, gets the answer, not a connection closed under it.
    let big = vec![b'a'; 12 << 20];
    let (status, err) = stack.upload(&key, &[("ok.txt", b"fine text".to_vec()), ("big.txt", big)]).await.unwrap();
    assert_eq!(status, 413, "{err}");
    assert_eq!(err["error"]["code"], "file_too_large");
    assert!(err["error"]["message"].as_str().unwrap().contains("big.txt"));
    let (status, err) = stack.upload("not-a-key", &[("cv.txt", vec![b'a'; 12 << 20])]).await.unwrap();
    assert_eq!(status, 401, "{err}");
    assert!(err["error"]["message"].is_string(), "{err}");
    let many: Vec<(&str, Vec<u8>)> = (0..51).map(|i| ("cv.txt", format!("cv {i}").into_bytes())).collect();
    let (status, err) = stack.upload(&key, &many).await.unwrap();
    assert_eq!((status, err["error"]["code"].as_str()), (413, Some("too_many_files")));
    let (status, err) = stack.upload(&key, &[]).await.unwrap();
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("file")), "{err}");
    let (_, page) = stack.get(&key, "/api/v1/cvs").await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 0);
    assert_eq!(count_files(&stack.files.path), 0);
    assert_eq!(std::fs::read_dir(stack.files.path.join(".staging")).unwrap().count(), 0, "staged files left");
    stack.stop().await.unwrap();
}

/// Round trips the main database has ended (committed or rolled back: each statement
/// outside a transaction, and each statement preparation); flushed by every backend
/// when it disconnects.
async fn transactions(db: &test_support::TestDb) -> i64 {
    test_support::query_count(
        &test_support::postgres_server_url(),
        &format!(
            "SELECT (xact_commit + xact_rollback)::bigint AS n FROM pg_stat_database WHERE datname = '{}'",
            db.name
        ),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn each_cv_costs_the_main_database_a_handful_of_statements() {
    const CVS: usize = 20;
    let mut stack = CvStack::start(false).await.unwrap();
    let key = stack.company("Acme").await.unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..CVS)
        .map(|i| {
            (
                format!("cv{i}.txt"),
                format!("Candidate {i}\nExperience\nEngineer at Firm {i}, 2015 - 2020\nSkills\nRust, SQL, Kafka")
                    .into_bytes(),
            )
        })
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let (status, _) = stack.upload(&key, &refs).await.unwrap();
    assert_eq!(status, 202);
    // Measure the processor alone: the gateway stops first (its connections closing
    // flush their statistics), then the processor runs, finishes every CV and stops.
    stack.stop_gateway().await.unwrap();
    let before = transactions(&stack.db).await;
    let url = stack.start_processor().await.unwrap();
    let client = reqwest::Client::new();
    test_support::wait_for(Duration::from_secs(60), "every CV processed", || async {
        let metrics = client.get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
        metrics
            .lines()
            .any(|l| l == format!("headhunter_cv_processor_cvs_total{{outcome=\"processed\"}} {CVS}"))
            .then_some(())
    })
    .await
    .unwrap();
    stack.stop_processor().await.unwrap();
    let spent = test_support::wait_for(Duration::from_secs(15), "statistics to settle", || async {
        let now = transactions(&stack.db).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        (transactions(&stack.db).await == now).then_some(now - before)
    })
    .await
    .unwrap();
    let per_cv = spent as f64 / CVS as f64;
    let updates = test_support::query_count(
        &stack.db.url,
        "SELECT n_tup_upd AS n FROM pg_stat_user_tables WHERE relname = 'cvs'",
    )
    .await
    .unwrap();
    eprintln!(
        "cv-processor on the main DB: {spent} round trips for {CVS} CVs ({per_cv:.2} per CV, statement \
         preparation and connection set-up included), {updates} row updates"
    );
    // Two statements a CV (the claim and the outcome), each a prepare and an execute,
    // plus each pooled connection's set-up.
    assert!(per_cv <= 5.0, "{per_cv} round trips per CV");
    assert_eq!(updates, 2 * CVS as i64, "row updates");
    let processed =
        test_support::query_count(&stack.db.url, "SELECT count(*) AS n FROM cvs WHERE status = 'processed'");
    assert_eq!(processed.await.unwrap(), CVS as i64);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn a_processor_killed_mid_job_is_replaced_and_the_cv_ends_processed_once() {
    let stack = CvStack::start(false).await.unwrap();
    let (company, key) =
        test_support::create_company(&stack.http, &stack.url, common::ADMIN_KEY, "Acme").await.unwrap();
    // Hold the processor's final write: its UPDATE to `processed` waits here while the
    // hold row exists, so the kill lands between the claim and the outcome.
    let mut conn = stack.db.connect().await.unwrap();
    for sql in [
        "CREATE TABLE hold (x int)",
        "INSERT INTO hold VALUES (1)",
        "CREATE FUNCTION wait_for_hold() RETURNS trigger AS $$ BEGIN \
           WHILE EXISTS (SELECT 1 FROM hold) LOOP PERFORM pg_sleep(0.05); END LOOP; RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER held BEFORE UPDATE ON cvs FOR EACH ROW WHEN (NEW.status = 'processed') EXECUTE FUNCTION wait_for_hold()",
    ] {
        diesel::sql_query(sql).execute(&mut conn).await.unwrap();
    }
    let (_, body) = stack.upload(&key, &[("cv.pdf", fixture("one_column.pdf"))]).await.unwrap();
    let id = ids(&body)[0];

    let env = common::processor_env(&stack);
    let program = std::path::Path::new(env!("CARGO_BIN_EXE_cv-processor"));
    let logs = test_support::TempDir::new("logs").unwrap();
    let first = test_support::ServiceProcess::start(program, &env, logs.path.join("first.log")).await.unwrap();
    let waiting = format!(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '{}' AND query LIKE 'UPDATE \"cvs\"%' \
         AND wait_event = 'PgSleep'",
        stack.db.name
    );
    test_support::wait_for(Duration::from_secs(30), "the processor's final write to be held", || async {
        (test_support::query_count(&stack.db.url, &waiting).await.ok()? > 0).then_some(())
    })
    .await
    .unwrap();
    first.kill().await.unwrap();
    // The killed process's statement dies with its connection, as after a real crash.
    diesel::sql_query(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE 'UPDATE \"cvs\"%'",
        stack.db.name
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let (_, cv) = stack.get(&key, &format!("/api/v1/cvs/{id}")).await.unwrap();
    assert_eq!(cv["status"], "processing", "{cv}");
    diesel::sql_query("DELETE FROM hold").execute(&mut conn).await.unwrap();

    let second = test_support::ServiceProcess::start(program, &env, logs.path.join("second.log")).await.unwrap();
    let cv = stack.wait_done(&key, id).await.unwrap();
    assert_eq!(cv["status"], "processed", "{cv}");
    assert_eq!(cv["attempts"], 2, "{cv}");
    assert_eq!(cv["facts"]["name"], "Priya Raman");
    let (url, prefix) = (stack.redis.url.clone(), stack.redis.prefix.clone());
    test_support::wait_for(Duration::from_secs(30), "the redone task to be acknowledged", || async {
        test_support::unsettled_entries(&url, &prefix).await.ok().filter(Vec::is_empty)
    })
    .await
    .unwrap();
    second.kill().await.unwrap();
    // Its chunks are stored once: the redo replaced the first run's vectors.
    let store = cv_processor::vectors::EdgeStore::open(&stack.vectors.path, 384).unwrap();
    use cv_processor::vectors::VectorStore;
    let stored = store.count(company, Some(id)).await.unwrap();
    assert_eq!(stored as i64, cv["chunk_count"].as_i64().unwrap());
    assert_eq!(store.count(company, None).await.unwrap(), stored);
    stack.stop().await.unwrap();
}

/// Server-sent events as they arrive: (id, data) of each `cv.status` event.
struct EventStream {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl EventStream {
    async fn open(http: &reqwest::Client, url: &str, key: &str, last_event_id: Option<&str>) -> Self {
        let mut req = http.get(format!("{url}/api/v1/cvs/events")).bearer_auth(key);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Self { body: Box::pin(res.bytes_stream()), buffer: String::new() }
    }

    /// The next event, or `None` if none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<(String, serde_json::Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| frame.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
                if let (Some(id), Some(data)) = (field("id: "), field("data: ")) {
                    return Some((id, serde_json::from_str(&data).unwrap()));
                }
            }
            let chunk =
                tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut self.body)).await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    }
}

#[tokio::test]
async fn a_watching_client_sees_its_upload_progress_through_another_replica_and_nothing_of_other_companies() {
    let stack = CvStack::start(true).await.unwrap();
    let watcher_key = stack.company("Acme").await.unwrap();
    let stranger_key = stack.company("Globex").await.unwrap();
    let settings = stack.gateway_settings().unwrap();
    let replica =
        test_support::Service::start("api-gateway-2", |l, rx| api_gateway::run(settings, l, rx)).await.unwrap();

    let mut events = EventStream::open(&stack.http, &replica.url, &watcher_key, None).await;
    let (_, theirs) = stack.upload(&stranger_key, &[("theirs.pdf", fixture("two_column.pdf"))]).await.unwrap();
    let (_, ours) = stack.upload(&watcher_key, &[("ours.pdf", fixture("one_column.pdf"))]).await.unwrap();
    let (our_id, their_id) = (ids(&ours)[0], ids(&theirs)[0]);

    let mut seen = Vec::new();
    while seen.last().map(|(_, s): &(String, String)| s.as_str()) != Some("processed") {
        let (id, event) = events.next(Duration::from_secs(60)).await.expect("the CV's events");
        assert_eq!(event["cv_id"].as_i64(), Some(our_id), "another CV's event: {event}");
        assert_eq!(event["file_name"], "ours.pdf");
        seen.push((id, event["status"].as_str().unwrap().to_owned()));
    }
    let statuses: Vec<&str> = seen.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(statuses, ["queued", "processing", "processed"]);
    // The other company's CV finished too, and none of its events came here.
    assert_eq!(stack.wait_done(&stranger_key, their_id).await.unwrap()["status"], "processed");
    assert!(events.next(Duration::from_millis(500)).await.is_none());

    // Reconnecting after the first event: what came after it is sent first.
    let mut resumed = EventStream::open(&stack.http, &stack.url, &watcher_key, Some(&seen[0].0)).await;
    for (id, status) in &seen[1..] {
        let (got_id, event) = resumed.next(Duration::from_secs(5)).await.expect("the missed events");
        assert_eq!((&got_id, event["status"].as_str().unwrap()), (id, status.as_str()));
    }
    let (status, err) = stack
        .http
        .get(format!("{}/api/v1/cvs/events", stack.url))
        .bearer_auth(&watcher_key)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 400);
    assert_eq!(err.json::<serde_json::Value>().await.unwrap()["error"]["param"], "Last-Event-ID");
    drop((events, resumed));
    replica.stop().await.unwrap();
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn a_cv_whose_processing_keeps_failing_is_failed_and_dead_lettered_with_its_reason() {
    let mut stack = CvStack::start(false).await.unwrap();
    stack.start_processor_with(|s| s.sandbox.program = Some("/nonexistent/headhunter-extractor".into())).await.unwrap();
    let key = stack.company("Acme").await.unwrap();
    let (_, body) = stack.upload(&key, &[("cv.pdf", fixture("one_column.pdf"))]).await.unwrap();
    let cv = stack.wait_done(&key, ids(&body)[0]).await.unwrap();
    assert_eq!(cv["status"], "failed", "{cv}");
    // The batch, then the entry alone up to 3 times: then it is a dead letter.
    assert_eq!(cv["attempts"], 4);
    let reason = cv["failure_reason"].as_str().unwrap();
    assert!(reason.contains("could not be processed after several attempts"), "{reason}");
    assert!(reason.contains("the extractor could not be run"), "{reason}");
    let dead = stack.redis.key("cv_jobs:dead");
    test_support::wait_for(Duration::from_secs(30), "the task's dead letter", || async {
        (stack.redis.xlen(&dead).await.ok()? == 1).then_some(())
    })
    .await
    .unwrap();
    let mut conn = stack.redis.connection().await.unwrap();
    let letters: redis::streams::StreamRangeReply = redis::AsyncCommands::xrange_all(&mut conn, &dead).await.unwrap();
    let detail: String = letters.ids[0].get("dead_detail").unwrap_or_default();
    assert!(detail.contains("extractor could not be run"), "{:?}", letters.ids[0].map);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn a_cv_whose_task_was_lost_is_queued_again_by_the_sweep_and_one_interrupted_too_often_fails() {
    let mut stack = CvStack::start(false).await.unwrap();
    let key = stack.company("Acme").await.unwrap();
    let cv =
        |name: &str| format!("{name}\nExperience\nBackend Engineer, Foo 2019 - Present\nSkills\nRust").into_bytes();
    let (status, body) =
        stack.upload(&key, &[("lost.txt", cv("Ada Lost")), ("stuck.txt", cv("Bo Stuck"))]).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let [lost, stuck] = ids(&body)[..] else { panic!("{body}") };
    // The queue Redis lost both tasks (a crash before its AOF caught up); one CV had been
    // claimed three times by runs that died.
    test_support::wait_for(Duration::from_secs(10), "both tasks on the stream", || async {
        (stack.redis.xlen(&stack.redis.key("cv_jobs")).await.ok()? == 2).then_some(())
    })
    .await
    .unwrap();
    let mut redis = stack.redis.connection().await.unwrap();
    let _: () = redis::cmd("DEL").arg(stack.redis.key("cv_jobs")).query_async(&mut redis).await.unwrap();
    let mut conn = stack.db.connect().await.unwrap();
    diesel::sql_query(format!(
        "UPDATE cvs SET updated_at = now() - interval '1 hour', \
         status = CASE WHEN id = {stuck} THEN 'processing' ELSE status END, \
         attempts = CASE WHEN id = {stuck} THEN 3 ELSE attempts END"
    ))
    .execute(&mut conn)
    .await
    .unwrap();

    stack
        .start_processor_with(|s| {
            s.sweep.interval = Duration::from_millis(200);
            s.sweep.stale_after = Duration::from_secs(60);
        })
        .await
        .unwrap();
    let done = stack.wait_done(&key, lost).await.unwrap();
    assert_eq!(done["status"], "processed", "{done}");
    let failed = stack.wait_done(&key, stuck).await.unwrap();
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["failure_reason"].as_str().unwrap().contains("interrupted too many times"), "{failed}");
    assert_eq!(stack.processor_metric("headhunter_cv_processor_requeued_total").await, 1.0);

    // Nothing is stale any more: later rounds queue nothing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(stack.processor_metric("headhunter_cv_processor_requeued_total").await, 1.0);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn a_task_for_a_cv_another_run_holds_waits_for_that_run_or_for_its_claim_to_lapse() {
    let mut stack = CvStack::start(false).await.unwrap();
    let key = stack.company("Acme").await.unwrap();
    let cv = |name: &str| format!("{name}\nExperience\nNurse, Ward 2018 - Present\nSkills\nTriage").into_bytes();
    let (_, body) = stack.upload(&key, &[("a.txt", cv("Ann Held")), ("b.txt", cv("Ben Held"))]).await.unwrap();
    let [finished, abandoned] = ids(&body)[..] else { panic!("{body}") };
    // Other runs claimed both a moment ago (duplicate tasks raced these).
    let mut conn = stack.db.connect().await.unwrap();
    diesel::sql_query("UPDATE cvs SET status = 'processing', attempts = 1, updated_at = now()")
        .execute(&mut conn)
        .await
        .unwrap();
    // Claims last half of reclaim_idle: 4 s.
    stack.start_processor_with(|s| s.consumer.reclaim_idle = Duration::from_secs(8)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in [finished, abandoned] {
        let (_, cv) = stack.get(&key, &format!("/api/v1/cvs/{id}")).await.unwrap();
        assert_eq!((cv["status"].as_str(), cv["attempts"].as_i64()), (Some("processing"), Some(1)), "ran twice: {cv}");
    }
    // One of those runs finishes its CV: the waiting task is acknowledged without a run.
    diesel::sql_query(format!("UPDATE cvs SET status = 'processed', processed_at = now() WHERE id = {finished}"))
        .execute(&mut conn)
        .await
        .unwrap();
    test_support::wait_for(Duration::from_secs(30), "the finished CV's task to be acknowledged", || async {
        (stack.processor_metric("headhunter_cv_processor_already_done_total").await == 1.0).then_some(())
    })
    .await
    .unwrap();
    let (_, cv) = stack.get(&key, &format!("/api/v1/cvs/{finished}")).await.unwrap();
    assert_eq!(cv["attempts"], 1, "{cv}");
    // The other run died: once its claim lapses, this one takes the CV over.
    let done = stack.wait_done(&key, abandoned).await.unwrap();
    assert_eq!((done["status"].as_str(), done["attempts"].as_i64()), (Some("processed"), Some(2)), "{done}");
    stack.stop().await.unwrap();
}
