//! What `deploy/` declares, read from the rendered manifests, for the tests that hold
//! it against the binaries: the overlays are rendered with `kubectl kustomize` (the
//! one `make deploy-check` installs into `.cache/deploy-tools`, or one on the PATH).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The kubectl to render with.
pub fn kubectl() -> anyhow::Result<PathBuf> {
    let cached = repo_root().join(".cache/deploy-tools/bin/kubectl");
    if cached.is_file() {
        return Ok(cached);
    }
    let on_path = Command::new("kubectl").args(["version", "--client"]).output();
    match on_path {
        Ok(out) if out.status.success() => Ok(PathBuf::from("kubectl")),
        _ => bail!("no kubectl: `make deploy-check` installs one into .cache/deploy-tools"),
    }
}

/// Every object of `deploy/overlays/<overlay>`, as JSON.
pub fn render(overlay: &str) -> anyhow::Result<Vec<Value>> {
    let dir = repo_root().join("deploy/overlays").join(overlay);
    let out = Command::new(kubectl()?).arg("kustomize").arg(&dir).output().context("running kubectl kustomize")?;
    if !out.status.success() {
        bail!("kubectl kustomize {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The objects of `kind`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter().filter(move |d| d["kind"] == kind)
}

pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// Where a declared environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Value(String),
    Secret { name: String, key: String },
    ConfigMap { name: String, key: String },
    Field(String),
}

/// A container of a Deployment or Job running one of our images.
#[derive(Debug, Clone)]
pub struct Container {
    /// `Deployment/api-gateway`, `Job/headhunter-migrate`.
    pub owner: String,
    pub name: String,
    pub image: String,
    /// The binary the image runs (its name without registry, tag or digest).
    pub binary: String,
    pub args: Vec<String>,
    /// In declaration order: `envFrom` ConfigMaps first (as Kubernetes applies them),
    /// then `env`, which wins.
    pub env: Vec<(String, Source)>,
    /// Port name → number.
    pub ports: Vec<(String, u16)>,
    /// (kind, path, port number) of each HTTP probe.
    pub probes: Vec<(String, String, u16)>,
    pub mounts: Vec<String>,
}

/// Our binaries, which the images are named after.
pub const BINARIES: [&str; 4] = ["api-gateway", "cache-service", "llm-log-worker", "cv-processor"];

/// The image's binary: the last path segment, without tag or digest.
pub fn binary_of(image: &str) -> &str {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split(['@', ':']).next().unwrap_or(last)
}

/// Every container (and init container) of the Deployments and Jobs that runs one of
/// our images, with its env resolved against the rendered ConfigMaps.
pub fn containers(docs: &[Value]) -> anyhow::Result<Vec<Container>> {
    let config_maps: Vec<&Value> = of_kind(docs, "ConfigMap").collect();
    let mut found = Vec::new();
    for owner in docs.iter().filter(|d| d["kind"] == "Deployment" || d["kind"] == "Job") {
        let pod = &owner["spec"]["template"]["spec"];
        let all = pod["initContainers"].as_array().into_iter().chain(pod["containers"].as_array()).flatten();
        for c in all {
            let image = c["image"].as_str().unwrap_or_default().to_owned();
            let binary = binary_of(&image).to_owned();
            if !BINARIES.contains(&binary.as_str()) {
                continue;
            }
            let mut env = Vec::new();
            for from in c["envFrom"].as_array().into_iter().flatten() {
                if let Some(cm) = from["configMapRef"]["name"].as_str() {
                    let map = config_maps
                        .iter()
                        .find(|m| name(m) == cm)
                        .with_context(|| format!("{}: no ConfigMap {cm}", name(owner)))?;
                    for key in map["data"].as_object().into_iter().flatten().map(|(k, _)| k) {
                        env.push((key.clone(), Source::ConfigMap { name: cm.to_owned(), key: key.clone() }));
                    }
                }
                if from.get("secretRef").is_some() {
                    bail!("{}: a whole Secret as env (envFrom secretRef): name each variable instead", name(owner));
                }
            }
            for e in c["env"].as_array().into_iter().flatten() {
                let var = e["name"].as_str().unwrap_or_default().to_owned();
                let source = if let Some(v) = e.get("value") {
                    Source::Value(v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                } else if let Some(r) = e["valueFrom"].get("secretKeyRef") {
                    Source::Secret { name: str_of(&r["name"]), key: str_of(&r["key"]) }
                } else if let Some(r) = e["valueFrom"].get("configMapKeyRef") {
                    Source::ConfigMap { name: str_of(&r["name"]), key: str_of(&r["key"]) }
                } else if let Some(r) = e["valueFrom"].get("fieldRef") {
                    Source::Field(str_of(&r["fieldPath"]))
                } else {
                    bail!("{}: env {var} has no value", name(owner));
                };
                env.retain(|(n, _)| *n != var);
                env.push((var, source));
            }
            let ports: Vec<(String, u16)> = c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| (str_of(&p["name"]), u16::try_from(p["containerPort"].as_u64().unwrap_or(0)).unwrap_or(0)))
                .collect();
            let mut probes = Vec::new();
            for kind in ["readinessProbe", "livenessProbe", "startupProbe"] {
                let get = &c[kind]["httpGet"];
                if get.is_null() {
                    continue;
                }
                let port = match &get["port"] {
                    Value::Number(n) => u16::try_from(n.as_u64().unwrap_or(0)).unwrap_or(0),
                    Value::String(named) => {
                        ports.iter().find(|(n, _)| n == named).map(|(_, p)| *p).with_context(|| {
                            format!("{}: {kind} names a port {named} it does not declare", name(owner))
                        })?
                    }
                    _ => 0,
                };
                probes.push((kind.to_owned(), str_of(&get["path"]), port));
            }
            found.push(Container {
                owner: format!("{}/{}", str_of(&owner["kind"]), name(owner)),
                name: str_of(&c["name"]),
                image,
                binary,
                args: c["args"].as_array().into_iter().flatten().map(str_of).collect(),
                env,
                ports,
                probes,
                mounts: c["volumeMounts"].as_array().into_iter().flatten().map(|m| str_of(&m["mountPath"])).collect(),
            });
        }
    }
    Ok(found)
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// `Service name → (service port → container port number)`, resolving named target
/// ports against the Deployment the Service selects.
pub fn service_ports(docs: &[Value]) -> Vec<(String, u16, u16)> {
    let mut out = Vec::new();
    for svc in of_kind(docs, "Service") {
        let selector = &svc["spec"]["selector"];
        let pods: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
            .filter(|d| {
                let labels = &d["spec"]["template"]["metadata"]["labels"];
                selector.as_object().is_some_and(|s| s.iter().all(|(k, v)| &labels[k] == v))
            })
            .collect();
        for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
            let port = u16::try_from(p["port"].as_u64().unwrap_or(0)).unwrap_or(0);
            let target = match &p["targetPort"] {
                Value::Number(n) => u16::try_from(n.as_u64().unwrap_or(0)).unwrap_or(0),
                Value::String(named) => pods
                    .iter()
                    .flat_map(|d| d["spec"]["template"]["spec"]["containers"].as_array().into_iter().flatten())
                    .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                    .find(|cp| cp["name"] == named.as_str())
                    .and_then(|cp| cp["containerPort"].as_u64())
                    .and_then(|n| u16::try_from(n).ok())
                    .unwrap_or(0),
                _ => port,
            };
            out.push((name(svc).to_owned(), port, target));
        }
    }
    out
}
