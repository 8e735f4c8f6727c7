//! The overlays hold what the binaries read and serve. Each overlay is rendered; every
//! container running one of our images is asked (`check-env`) whether each variable
//! its manifest declares is one of its settings; then each overlay's Job and services
//! are started here with exactly the env, args and ports their manifests declare, and
//! every declared probe is asked on its declared port. Only the values
//! change: Secrets' values are this test's (its own databases, a Redis of its own,
//! made-up keys), a Service's address (`http://cache-service:8081`) is the local port
//! behind it, a mounted path is a temporary folder, the model baked into the image is
//! the one `make models` fetched. A renamed variable fails `check-env`; a wrong port or
//! probe path fails the probes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use deploy_check::{Container, Source, containers, name, of_kind, render, repo_root, service_ports};
use serde_json::Value;
use task_queue::Message;
use test_support::{RedisServer, TempDir, TestDb};

/// Where the binaries are: beside this test's own directory (`target/<profile>/deps`).
fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(Path::parent).ok_or_else(|| anyhow::anyhow!("no target directory"))?;
    Ok(dir.to_path_buf())
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    anyhow::ensure!(path.is_file(), "{} is not built (cargo build --bins)", path.display());
    Ok(path)
}

/// Where the image puts the embedding model, from the Dockerfile's `COPY --from=model`.
fn image_model_dir() -> anyhow::Result<String> {
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/Dockerfile"))?;
    dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("COPY --from=model /models "))
        .map(|d| d.trim().to_owned())
        .ok_or_else(|| anyhow::anyhow!("the Dockerfile copies no model"))
}

/// The local stand-ins for what the cluster would provide.
struct Local {
    main: TestDb,
    analytics: TestDb,
    redis: RedisServer,
    dirs: TempDir,
    services: Vec<(String, u16, u16)>,
    model_dir: String,
}

impl Local {
    async fn start(docs: &[Value]) -> anyhow::Result<Self> {
        Ok(Self {
            main: TestDb::empty("deploy_main").await?,
            analytics: TestDb::empty("deploy_analytics").await?,
            redis: RedisServer::start(&[]).await?,
            dirs: TempDir::new("deploy")?,
            services: service_ports(docs),
            model_dir: image_model_dir()?,
        })
    }

    /// A Secret key's local value; `None` where nothing local can stand in.
    fn secret(&self, key: &str) -> Option<String> {
        Some(match key {
            "DATABASE_URL" => self.main.url.clone(),
            "ANALYTICS_DATABASE_URL" | "ANALYTICS_READ_DATABASE_URL" => self.analytics.url.clone(),
            "REDIS_URL" | "CACHE_REDIS_URL" => self.redis.url(),
            "QDRANT_URL" => return None,
            _ => format!("deploy-test-{}-0123456789abcdef0123456789abcdef", key.to_lowercase()),
        })
    }

    /// A declared value as it reads here: Services' addresses become their local
    /// ports, mounted paths temporary folders, the image's model the fetched one.
    fn localize(&self, value: &str, mounts: &[String]) -> String {
        for (service, port, target) in &self.services {
            let cluster = format!("http://{service}:{port}");
            if let Some(rest) = value.strip_prefix(&cluster) {
                return format!("http://127.0.0.1:{target}{rest}");
            }
        }
        for mount in mounts {
            if let Some(rest) = value.strip_prefix(mount.as_str()) {
                return format!("{}{rest}", self.mount_dir(mount).display());
            }
        }
        if let Some(rest) = value.strip_prefix(self.model_dir.as_str()) {
            return format!("{}{rest}", repo_root().join(".models").display());
        }
        value.to_owned()
    }

    /// One folder per mount path, so containers mounting the same volume share it.
    fn mount_dir(&self, mount: &str) -> PathBuf {
        let dir = self.dirs.path.join(mount.trim_start_matches('/').replace('/', "_"));
        drop(std::fs::create_dir_all(&dir));
        dir
    }

    /// The container's environment, and the Secret keys nothing local stands in for
    /// (given a placeholder that reaches nothing).
    fn env(&self, c: &Container, docs: &[Value]) -> (Vec<(String, String)>, Vec<String>) {
        let mut env = Vec::new();
        let mut missing = Vec::new();
        for (var, source) in &c.env {
            let value = match source {
                Source::Value(v) => self.localize(v, &c.mounts),
                Source::Secret { key, .. } => self.secret(key).unwrap_or_else(|| {
                    missing.push(key.clone());
                    "http://127.0.0.1:9/nothing-stands-in-here".to_owned()
                }),
                Source::ConfigMap { name: map, key } => {
                    let declared = of_kind(docs, "ConfigMap")
                        .find(|m| name(m) == map)
                        .and_then(|m| m["data"][key].as_str())
                        .unwrap_or_default()
                        .to_owned();
                    self.localize(&declared, &c.mounts)
                }
                Source::Field(path) => format!("deploy-test-{}", path.replace('.', "-")),
            };
            env.push((var.clone(), value));
        }
        (env, missing)
    }

    /// The container's environment, when every Secret key has a local stand-in.
    fn full_env(&self, c: &Container, docs: &[Value]) -> anyhow::Result<Vec<(String, String)>> {
        let (env, missing) = self.env(c, docs);
        anyhow::ensure!(missing.is_empty(), "{}: nothing here stands in for {missing:?}", c.owner);
        Ok(env)
    }
}

/// `check-env` of `c`'s binary with exactly its declared variables.
async fn check_env(c: &Container, env: &[(String, String)]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(binary(&c.binary)?)
        .arg("check-env")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "{} ({}): {}", c.owner, c.name, String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// Every declared variable of every container of `overlay` is a setting of its binary.
async fn declared_env_is_read(overlay: &str) -> anyhow::Result<()> {
    let docs = render(overlay)?;
    let local = Local::start(&docs).await?;
    let found = containers(&docs)?;
    let binaries: BTreeSet<&str> = found.iter().map(|c| c.binary.as_str()).collect();
    assert_eq!(binaries.len(), deploy_check::BINARIES.len(), "{overlay}: images {binaries:?}");
    for c in &found {
        // check-env connects to nothing: a placeholder for a Secret nothing stands in for.
        let (env, _) = local.env(c, &docs);
        check_env(c, &env).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_declared_variable_is_a_setting_of_its_service_in_each_overlay() -> anyhow::Result<()> {
    declared_env_is_read("dev").await?;
    declared_env_is_read("prod").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_env_names_a_renamed_variable() -> anyhow::Result<()> {
    let docs = render("dev")?;
    let local = Local::start(&docs).await?;
    let all = containers(&docs)?;
    let worker = all
        .iter()
        .find(|c| c.binary == "llm-log-worker" && c.args == ["serve"])
        .ok_or_else(|| anyhow::anyhow!("no worker in the dev overlay"))?;
    let mut env = local.full_env(worker, &docs)?;
    env.push(("CONSUMER_NAME".into(), "w-1".into()));
    let Err(err) = check_env(worker, &env).await else { anyhow::bail!("check-env took CONSUMER_NAME for a setting") };
    assert!(err.to_string().contains("CONSUMER_NAME"), "{err}");
    Ok(())
}

/// Runs `overlay`'s Job, then its services, each with exactly its declared env, args
/// and ports, and asks every declared probe and port; returns the containers not
/// started because a Secret they read has no local stand-in. The overlay's own
/// Secrets (where it makes them) must hold every key its containers read.
async fn runs_as_declared(overlay: &str) -> anyhow::Result<Vec<String>> {
    let docs = render(overlay)?;
    let local = Local::start(&docs).await?;
    let found = containers(&docs)?;

    let secrets: BTreeMap<&str, &Value> = of_kind(&docs, "Secret").map(|s| (name(s), s)).collect();
    for c in found.iter().filter(|_| !secrets.is_empty()) {
        for (var, source) in &c.env {
            if let Source::Secret { name: secret, key } = source {
                let data = secrets.get(secret.as_str()).map(|s| (&s["data"], &s["stringData"]));
                assert!(
                    data.is_some_and(|(d, sd)| d.get(key).is_some() || sd.get(key).is_some()),
                    "{} reads {var} from Secret {secret} key {key}, which the {overlay} overlay does not make",
                    c.owner
                );
            }
        }
    }

    // The Job first (it makes the databases ready), as the rollout does.
    for c in found.iter().filter(|c| c.owner.starts_with("Job/")) {
        let env = local.full_env(c, &docs)?;
        let out = tokio::process::Command::new(binary(&c.binary)?)
            .args(&c.args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .await?;
        assert!(out.status.success(), "{} ({}): {}", c.owner, c.name, String::from_utf8_lossy(&out.stderr));
    }

    // The services, in the order they depend on each other.
    let order = ["cache-service", "llm-log-worker", "cv-processor", "api-gateway"];
    let mut services: Vec<&Container> = found.iter().filter(|c| c.owner.starts_with("Deployment/")).collect();
    services.sort_by_key(|c| order.iter().position(|b| *b == c.binary));
    let mut running = Vec::new();
    let mut started = BTreeSet::new();
    let mut skipped = Vec::new();
    let client = reqwest::Client::new();
    for c in services {
        let (_, missing) = local.env(c, &docs);
        if !missing.is_empty() {
            skipped.push(c.owner.clone());
            continue;
        }
        started.insert(c.owner.clone());
        for (port_name, port) in &c.ports {
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok(),
                "{} declares port {port_name} = {port}, which something here already holds",
                c.owner
            );
        }
        let env = local.full_env(c, &docs)?;
        let log = local.dirs.path.join(format!("{}.log", c.binary));
        let child = tokio::process::Command::new(binary(&c.binary)?)
            .args(&c.args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        running.push(child);
        assert!(!c.probes.is_empty(), "{} declares no probes", c.owner);
        for (kind, path, port) in &c.probes {
            let url = format!("http://127.0.0.1:{port}{path}");
            let what = format!("{} {kind} {url}", c.owner);
            let answered = test_support::wait_for(Duration::from_secs(60), &what, || async {
                client.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
            })
            .await;
            if let Err(err) = answered {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = said.lines().rev().take(5).collect();
                anyhow::bail!("{err}; its last log lines: {tail:?}");
            }
        }
    }
    // Every declared port answers HTTP (the gateway's internal one has no probe).
    for c in found.iter().filter(|c| started.contains(&c.owner)) {
        for (port_name, port) in &c.ports {
            let answer = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await;
            assert!(answer.is_ok(), "{}: nothing answers on port {port_name} ({port})", c.owner);
        }
    }
    // Every port the ServiceMonitor scrapes (Services labelled headhunter.io/metrics)
    // serves the service's Prometheus text.
    let scraped: Vec<&Value> =
        of_kind(&docs, "Service").filter(|s| s["metadata"]["labels"]["headhunter.io/metrics"] == "true").collect();
    assert_eq!(scraped.len(), deploy_check::BINARIES.len(), "a scraped Service per service");
    let running_app = |svc: &Value| {
        let app = &svc["spec"]["selector"]["app.kubernetes.io/name"];
        started.iter().any(|owner| owner.strip_prefix("Deployment/") == app.as_str())
    };
    for svc in scraped.into_iter().filter(|s| running_app(s)) {
        for (service, _, target) in local.services.iter().filter(|(n, _, _)| n == name(svc)) {
            let body = client.get(format!("http://127.0.0.1:{target}/metrics")).send().await?.text().await?;
            assert!(body.contains("# TYPE headhunter_"), "Service {service}: port {target} serves no metrics");
        }
    }
    for mut child in running {
        drop(child.kill().await);
        drop(child.wait().await);
    }
    Ok(skipped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_overlay_runs_here_as_declared_and_answers_its_probes() -> anyhow::Result<()> {
    // One after the other: both declare the same ports.
    assert_eq!(runs_as_declared("dev").await?, Vec::<String>::new());
    // prod's cv-processor keeps its vectors in a Qdrant server (QDRANT_URL), which
    // nothing here stands in for; its variables are checked by check-env above, its
    // ports and probes are the base's, which the dev overlay ran.
    assert_eq!(runs_as_declared("prod").await?, ["Deployment/cv-processor"]);
    Ok(())
}

#[test]
fn the_scalers_watch_the_streams_and_groups_their_targets_consume() -> anyhow::Result<()> {
    let docs = render("prod")?;
    let found = containers(&docs)?;
    let consumed: BTreeMap<&str, (Vec<&str>, &str)> = BTreeMap::from([
        ("llm-log-worker", (common_models::events::LogEvent::streams(), common_models::queue::LOG_WORKER_GROUP)),
        ("cv-processor", (common_models::cv::CvJob::streams(), common_models::cv::CV_PROCESSOR_GROUP)),
    ]);
    let scaled: Vec<&Value> = of_kind(&docs, "ScaledObject").collect();
    assert_eq!(scaled.len(), consumed.len(), "a ScaledObject per queue consumer");
    for so in scaled {
        let target = so["spec"]["scaleTargetRef"]["name"].as_str().unwrap_or_default();
        let binary = found
            .iter()
            .find(|c| c.owner == format!("Deployment/{target}"))
            .map(|c| c.binary.as_str())
            .unwrap_or_default();
        let (streams, group) = consumed.get(binary).unwrap_or_else(|| panic!("{target} consumes no stream"));
        let mut watched = Vec::new();
        for t in so["spec"]["triggers"].as_array().into_iter().flatten() {
            // The prod queue Redis is behind Sentinel: KEDA must find it there too.
            assert_eq!(t["type"], "redis-sentinel-streams", "{target}");
            assert_eq!(t["metadata"]["sentinelMaster"], "headhunter-queue", "{target}");
            assert_eq!(t["metadata"]["consumerGroup"].as_str(), Some(*group), "{target}");
            watched.push(t["metadata"]["stream"].as_str().unwrap_or_default());
        }
        watched.sort_unstable();
        let mut expected = streams.clone();
        expected.sort_unstable();
        assert_eq!(watched, expected, "{target} consumes {expected:?}");
    }
    Ok(())
}

#[test]
fn each_secret_holds_only_what_its_service_reads_and_is_documented() -> anyhow::Result<()> {
    let runbook = std::fs::read_to_string(repo_root().join("deploy/README.md"))?;
    for overlay in ["dev", "prod"] {
        let docs = render(overlay)?;
        let found = containers(&docs)?;
        let mut read: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for c in &found {
            for (_, source) in &c.env {
                if let Source::Secret { name: secret, key } = source {
                    read.entry(secret.clone()).or_default().insert(key.clone());
                    // A service reads only its own Secret (the migration Job reads the
                    // Secrets of the services whose databases it migrates).
                    if c.owner.starts_with("Deployment/") {
                        assert_eq!(secret, &c.binary, "{overlay}: {} reads {key} from Secret {secret}", c.owner);
                    }
                }
            }
        }
        for secret in of_kind(&docs, "Secret") {
            let Some(keys) = read.get(name(secret)) else { continue };
            let held: BTreeSet<String> =
                secret["data"].as_object().into_iter().flatten().map(|(k, _)| k.clone()).collect();
            assert_eq!(&held, keys, "{overlay}: Secret {} holds {held:?}, its service reads {keys:?}", name(secret));
        }
        if overlay == "prod" {
            for (secret, keys) in &read {
                let block = runbook
                    .split("kubectl -n headhunter create secret generic ")
                    .find(|b| b.starts_with(&format!("{secret} ")))
                    .unwrap_or_else(|| panic!("deploy/README.md shows no `create secret generic {secret}`"));
                let block = block.split("\n\n").next().unwrap_or_default();
                for key in keys {
                    assert!(
                        block.contains(&format!("--from-literal={key}=")),
                        "deploy/README.md: {secret} lacks {key}"
                    );
                }
            }
        }
    }
    Ok(())
}
