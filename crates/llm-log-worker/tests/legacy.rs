//! `llm-log-worker move-legacy`, run as an operator would: old-layout rows in a main
//! database moved into `llm_logs`, the move killed twice midway and resumed, run again,
//! reconciled, and the moved rows deleted from the main database.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common_models::db::Database;
use test_support::TestDb;

/// Old rows in the test: 250,000 (`LEGACY_MOVE_ROWS=1000000` for the full million; the
/// benchmark moves a million too).
fn rows() -> i64 {
    std::env::var("LEGACY_MOVE_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(250_000)
}

fn worker(analytics: &TestDb) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llm-log-worker"));
    cmd.env_clear().env("DATABASE_URL", &analytics.url).env("LOG_FORMAT", "text");
    cmd
}

fn run(cmd: &mut Command) -> anyhow::Result<(Output, String)> {
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok((out, stdout))
}

async fn number(db: &TestDb, sql: &str) -> anyhow::Result<i64> {
    test_support::query_count(&db.url, sql).await
}

/// Calls moved so far, as the progress table says (0 before the first batch).
async fn moved(analytics: &TestDb) -> i64 {
    number(analytics, "SELECT coalesce(max(moved), 0) AS n FROM legacy_move_progress").await.unwrap_or(0)
}

/// Starts a move and SIGKILLs it once `at_least` calls are moved.
async fn move_and_kill(analytics: &TestDb, main: &TestDb, at_least: i64) -> anyhow::Result<()> {
    let mut child = worker(analytics)
        .args(["move-legacy", "--from-database", &main.url, "--batch", "2000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while moved(analytics).await < at_least {
        if child.try_wait()?.is_some() {
            let out = child.wait_with_output()?;
            anyhow::bail!("the move ended before it was killed: {}", String::from_utf8_lossy(&out.stderr));
        }
        anyhow::ensure!(Instant::now() < deadline, "the move did not get to {at_least} rows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_rows_move_once_through_two_kills_reconcile_and_leave_the_main_database() -> anyhow::Result<()> {
    let n = rows();
    let main = TestDb::empty("legacy_main").await?;
    let analytics = TestDb::migrated(Database::Analytics).await?;
    let (out, said) = run(worker(&analytics).args([
        "legacy-fixture",
        "--database",
        &main.url,
        "--rows",
        &n.to_string(),
        "--days",
        "45",
    ]))?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains(&format!("{n} old LLM rows written")), "{said}");
    let api_rows = number(&main, "SELECT count(*) AS n FROM system_logs WHERE component <> 'llm'").await?;
    assert!(api_rows > 0);

    // Killed at a third and at two thirds, each time resumed from where it stood.
    move_and_kill(&analytics, &main, n / 3).await?;
    let after_first = moved(&analytics).await;
    move_and_kill(&analytics, &main, 2 * n / 3).await?;
    assert!(moved(&analytics).await > after_first);
    let (out, said) = run(worker(&analytics).args(["move-legacy", "--from-database", &main.url]))?;
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("moving legacy LLM rows: "), "no progress shown");
    assert!(said.contains(&format!("{n} moved in all")), "{said}");
    assert!(said.contains("reconciliation: equal on all"), "{said}");

    // Every old row once: no duplicates, no gaps; the rollups hold each call once.
    assert_eq!(number(&analytics, "SELECT count(*) AS n FROM llm_logs").await?, n);
    assert_eq!(number(&analytics, "SELECT count(DISTINCT event_id) AS n FROM llm_logs").await?, n);
    assert_eq!(
        number(&analytics, "SELECT count(DISTINCT (metadata->>'legacy_system_log_id')) AS n FROM llm_logs").await?,
        n
    );
    assert_eq!(number(&analytics, "SELECT coalesce(sum(calls), 0)::int8 AS n FROM llm_usage_hourly").await?, n);
    // Columns mapped, the rest kept in metadata; costless tokens unpriced, never $0.
    let mismatched = number(
        &main,
        "SELECT count(*) AS n FROM system_logs WHERE component = 'llm' AND model = 'local-model' \
           AND tokens_input IS NOT NULL AND cost_usd IS NOT NULL",
    )
    .await?;
    assert_eq!(mismatched, 0);
    assert!(
        number(&analytics, "SELECT count(*) AS n FROM llm_logs WHERE model = 'local-model' AND cost_usd IS NULL")
            .await?
            > 0
    );
    assert_eq!(
        number(&analytics, "SELECT count(*) AS n FROM llm_logs WHERE model = 'local-model' AND cost_usd = 0").await?,
        0
    );
    assert!(
        number(
            &analytics,
            "SELECT count(*) AS n FROM llm_logs WHERE metadata ? 'prompt_version' AND metadata ? 'legacy_level'"
        )
        .await?
            > 0
    );

    // Again: nothing moves, still equal.
    let (out, said) = run(worker(&analytics).args(["move-legacy", "--from-database", &main.url]))?;
    assert!(out.status.success(), "{said}");
    assert!(said.contains("0 calls inserted by this run"), "{said}");
    assert!(said.contains("reconciliation: equal"), "{said}");
    assert_eq!(number(&analytics, "SELECT count(*) AS n FROM llm_logs").await?, n);

    // A run killed between its last commits and their progress records: the rows of
    // its last 5,000 old ids are stored, the progress says they are not. The next run
    // finds them stored, inserts nothing and counts them moved.
    let before_last = number(
        &main,
        &format!("SELECT id AS n FROM system_logs WHERE component = 'llm' ORDER BY id OFFSET {} LIMIT 1", n - 5001),
    )
    .await?;
    execute(&analytics, &format!("UPDATE legacy_move_progress SET last_id = {before_last}, moved = {}", n - 5000))
        .await?;
    let (out, said) = run(worker(&analytics).args(["move-legacy", "--from-database", &main.url]))?;
    assert!(out.status.success(), "{said}");
    assert!(said.contains("5000 old rows read, 0 calls inserted by this run"), "{said}");
    assert!(said.contains(&format!("{n} moved in all")), "{said}");

    // A moved row changed in the main database: the reconciliation names its day and fails.
    execute(&main, "UPDATE system_logs SET tokens_input = tokens_input + 1 WHERE id = (SELECT min(id) FROM system_logs WHERE component = 'llm' AND tokens_input IS NOT NULL)").await?;
    let (out, said) = run(worker(&analytics).args(["move-legacy", "--from-database", &main.url]))?;
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("reconciliation: 1 of "), "{said}");
    execute(&main, "UPDATE system_logs SET tokens_input = tokens_input - 1 WHERE id = (SELECT min(id) FROM system_logs WHERE component = 'llm' AND tokens_input IS NOT NULL)").await?;

    // Deleted from the main database afterwards; its API rows stay.
    let (out, said) = run(worker(&analytics).args(["move-legacy", "--from-database", &main.url, "--delete-moved"]))?;
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&format!("{n} moved rows deleted")), "{said}");
    assert_eq!(number(&main, "SELECT count(*) AS n FROM system_logs WHERE component = 'llm'").await?, 0);
    assert_eq!(number(&main, "SELECT count(*) AS n FROM system_logs").await?, api_rows);
    assert_eq!(number(&analytics, "SELECT count(*) AS n FROM llm_logs").await?, n);
    Ok(())
}

async fn execute(db: &TestDb, sql: &str) -> anyhow::Result<()> {
    use diesel_async::SimpleAsyncConnection;
    db.connect().await?.batch_execute(sql).await?;
    Ok(())
}
