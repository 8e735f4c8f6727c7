//! The OpenAPI document describes the API the gateway serves: every public route the
//! code configures is in it with its method (a route added without an annotation fails
//! here), nothing of the internal listener is, every documented operation reaches a
//! handler, and the docs page loads the document.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use serde_json::Value;

/// Routes of the internal listener, which the public document leaves out.
fn internal(path: &str) -> bool {
    path == "/metrics" || path == "/api/v1/admin" || path.starts_with("/api/v1/admin/")
}

/// Every `.route("<path>", web::<method>()…)` in `source`, as (method, path).
fn routes_in(source: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find(".route(\"") {
        rest = &rest[start + ".route(\"".len()..];
        let Some(end) = rest.find('"') else { break };
        let path = rest[..end].to_owned();
        let after = &rest[end..];
        let method = after
            .find("web::")
            .map(|i| &after[i + "web::".len()..])
            .and_then(|m| m.find('(').map(|j| m[..j].to_owned()))
            .unwrap_or_default();
        found.push((method, path));
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The public routes as the code configures them: the gateway's sources and the
/// probes it mounts from service-kit.
fn configured_routes() -> anyhow::Result<BTreeSet<(String, String)>> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&crate_dir.join("src"), &mut files)?;
    files.push(crate_dir.join("../service-kit/src/probes.rs"));
    let mut routes = BTreeSet::new();
    for file in files {
        routes.extend(routes_in(&std::fs::read_to_string(&file)?).into_iter().filter(|(_, p)| !internal(p)));
    }
    Ok(routes)
}

fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.insert((method.to_owned(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn the_route_scan_reads_method_and_path() {
    let source = r#"cfg.route("/api/v1/jobs", web::post().to(create))
        .route("/api/v1/jobs/{id}",
            web::patch().to(update));"#;
    assert_eq!(
        routes_in(source),
        [("post".to_owned(), "/api/v1/jobs".to_owned()), ("patch".to_owned(), "/api/v1/jobs/{id}".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_covers_every_public_route_and_nothing_internal() -> anyhow::Result<()> {
    let stack = Stack::start(Options { with_worker: false, ..Options::default() }).await?;
    let res = stack.http.get(format!("{}/api/v1/openapi.json", stack.url)).send().await?;
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await?;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "OpenAPI version {version}");

    let configured = configured_routes()?;
    assert!(configured.len() > 40, "the route scan found only {configured:?}");
    let documented = documented_routes(&doc);
    let missing: Vec<_> = configured.difference(&documented).collect();
    assert!(missing.is_empty(), "routes without an OpenAPI entry: {missing:?}");
    let extra: Vec<_> = documented.difference(&configured).collect();
    assert!(extra.is_empty(), "documented routes the code does not configure: {extra:?}");
    assert!(documented.iter().all(|(_, path)| !internal(path)));
    let ids: Vec<&str> =
        documented.iter().filter_map(|(method, path)| doc["paths"][path][method]["operationId"].as_str()).collect();
    assert_eq!(ids.len(), documented.len(), "every operation has an id");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "operation ids repeat: {ids:?}");

    // Every documented operation reaches a handler: none gets the "no route" answer.
    for (method, path) in &documented {
        let url = format!("{}{}", stack.url, path.replace("{id}", "1"));
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
        let res = stack.http.request(method.clone(), &url).send().await?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert!(body["error"]["param"] != "path", "{method} {path}: {status} {body}");
    }

    // Credentials, the error body and the shared answers are described.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["session_cookie"]["name"], "hh_session");
    let jobs = &doc["paths"]["/api/v1/jobs"]["get"];
    assert!(jobs["security"].as_array().is_some_and(|s| !s.is_empty()));
    assert_eq!(jobs["responses"]["429"]["$ref"], "#/components/responses/TooManyRequests");
    let login = &doc["paths"]["/api/v1/auth/login"]["post"];
    assert!(login.get("security").is_none(), "signing in takes no credentials");
    let limit = jobs["parameters"].as_array().into_iter().flatten().find(|p| p["name"] == "limit");
    assert_eq!(limit.map(|p| p["schema"]["maximum"].clone()), Some(Value::from(100)));
    let error = stack.http.get(format!("{}/api/v1/jobs", stack.url)).send().await?.json::<Value>().await?;
    let described = &doc["components"]["schemas"]["ErrorDetail"]["properties"];
    for field in error["error"].as_object().into_iter().flatten().map(|(k, _)| k) {
        assert!(described.get(field).is_some(), "error field {field} is not in ErrorDetail");
    }
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_loads_the_document() -> anyhow::Result<()> {
    let stack = Stack::start(Options { with_worker: false, ..Options::default() }).await?;
    let res = stack.http.get(format!("{}/api/v1/docs", stack.url)).send().await?;
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str()?.to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = res.text().await?;
    assert!(page.contains("fetch(\"/api/v1/openapi.json\")"));
    assert!(!page.contains("http://") && !page.contains("https://"), "the page loads nothing from elsewhere");
    stack.stop().await
}
