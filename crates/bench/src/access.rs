//! What the access checks add to a request: the same authenticated request that ends
//! before any database work (`GET /api/v1/jobs/0`, 404 after the checks), at one fixed
//! rate, sent with (a) a company API key on a plan without limits (the key is resolved
//! from the gateway's memory: the baseline), (b) a session token (one Redis round trip,
//! `GETEX`), (c) a key on a plan with limits (the GCRA script in Redis). Rounds
//! alternate the three, figures are medians of the rounds; the differences are the
//! session check's and the rate limiter's added latency.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::gateway::{Load, Measurement, oha_load, print};
use crate::{Processes, clear_redis, create_database, drop_database, redis_url, wait_http};

const GATEWAY_PORT: u16 = 18380;
const ADMIN_KEY: &str = "bench-admin-key";

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub async fn run(rate: u32, seconds: u64, rounds: u32, bin_dir: &Path) -> anyhow::Result<()> {
    println!("== access checks: {rate} req/s for {seconds} s each, {rounds} rounds, oha with 16 connections ==");
    let (main_url, main_name) = create_database("access").await?;
    let prefix = format!("bench:{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let outcome = async {
        common_models::db::run_migrations(&main_url, common_models::db::Database::Main).await?;
        let base = format!("http://127.0.0.1:{GATEWAY_PORT}");
        let mut cmd = Command::new(bin_dir.join("api-gateway"));
        for (k, v) in [
            ("PORT", GATEWAY_PORT.to_string()),
            ("INTERNAL_PORT", "0".into()),
            ("DATABASE_URL", main_url.clone()),
            ("ANALYTICS_DATABASE_URL", main_url.clone()),
            ("REDIS_URL", redis_url()),
            ("REDIS_KEY_PREFIX", prefix.clone()),
            ("ADMIN_API_KEY", ADMIN_KEY.into()),
            ("PRODUCER__SPOOL__DIR", String::new()),
            ("CACHE_URL", String::new()),
            ("LOG_LEVEL", "warn".into()),
            ("BIND_HOST", "127.0.0.1".into()),
            ("LIMITS__DEFAULT_PLAN", "unlimited".into()),
        ] {
            cmd.env(k, v);
        }
        let processes = Processes(vec![cmd.stdout(Stdio::null()).spawn()?]);
        wait_http(&format!("{base}/healthz")).await?;
        let http = reqwest::Client::new();

        // A company on the unlimited plan with its owner signed in, and one on a plan
        // with limits far above this rate.
        let created: Value = http
            .post(format!("{base}/api/v1/admin/companies"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"name": "Bench Co", "owner_email": "owner@bench.example.com"}))
            .send()
            .await?
            .json()
            .await?;
        let key = created["api_key"]["key"].as_str().unwrap_or_default().to_owned();
        let token = created["owner_invitation"]["token"].as_str().unwrap_or_default();
        let accepted: Value = http
            .post(format!("{base}/api/v1/invitations/accept"))
            .json(&json!({"token": token, "password": "bench passphrase 1"}))
            .send()
            .await?
            .json()
            .await?;
        let session = accepted["token"].as_str().unwrap_or_default().to_owned();
        let limited: Value = http
            .post(format!("{base}/api/v1/admin/companies"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"name": "Limited Co"}))
            .send()
            .await?
            .json()
            .await?;
        let limited_key = limited["api_key"]["key"].as_str().unwrap_or_default().to_owned();
        let limited_id = limited["company"]["id"].as_i64().unwrap_or_default();
        let res = http
            .patch(format!("{base}/api/v1/admin/companies/{limited_id}"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"plan": "enterprise"}))
            .send()
            .await?;
        anyhow::ensure!(res.status() == 200, "setting the plan answered {}", res.status());
        anyhow::ensure!(!key.is_empty() && !session.is_empty() && !limited_key.is_empty(), "setting up failed");

        let url = format!("{base}/api/v1/jobs/0");
        let load = |credential: &str| Load {
            method: "GET",
            url: &url,
            headers: vec![format!("authorization: Bearer {credential}")],
            body: None,
            expect: 404,
            connections: 16,
        };
        let sides = [("key, no limits (baseline)", key.as_str()), ("session", session.as_str()), ("key, rate limited", limited_key.as_str())];
        for (_, credential) in &sides {
            oha_load(&load(credential), rate, 2)?;
        }
        let mut results: Vec<Vec<Measurement>> = vec![Vec::new(), Vec::new(), Vec::new()];
        for round in 0..rounds {
            println!("round {}", round + 1);
            for (i, (label, credential)) in sides.iter().enumerate() {
                let m = oha_load(&load(credential), rate, seconds)?;
                print(label, &m);
                anyhow::ensure!(m.success > 0.999, "{label}: only {:.2}% answered 404", m.success * 100.0);
                results[i].push(m);
            }
        }
        let p = |i: usize, f: fn(&Measurement) -> f64| median(results[i].iter().map(f).collect());
        let (base50, base99) = (p(0, |m| m.p50_ms), p(0, |m| m.p99_ms));
        println!();
        for (i, what) in [(1, "session check"), (2, "rate limiter ")] {
            println!(
                "access   {what} adds p50 {:+.3} ms, p99 {:+.3} ms (medians of {rounds}; target p99 ≤ 0.2 ms) at {rate} req/s",
                p(i, |m| m.p50_ms) - base50,
                p(i, |m| m.p99_ms) - base99
            );
        }
        drop(processes);
        anyhow::Ok(())
    }
    .await;
    clear_redis(&prefix).await?;
    drop_database(&main_name).await?;
    outcome
}
