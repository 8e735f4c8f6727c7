//! Configuration loading shared by every binary: embedded defaults → optional file
//! → environment. The seeds' variable names keep working: `REDIS_HOST`, `REDIS_PORT`,
//! `REDIS_DB`, `REDIS_PASSWORD` (or `REDIS_URL`), `DATABASE_URL`,
//! `ANALYTICS_DATABASE_URL` (alias `LOGS_DATABASE_URL`).
//!
//! Environment keys are matched case-insensitively against the settings' field names;
//! a nested field is reached with `__` (`PRICING__VERSION`).

use std::collections::HashMap;
use std::path::Path;

use config::{Config, ConfigError, Environment, File, FileFormat};
use serde::de::DeserializeOwned;

/// The process environment, with the seeds' aliases resolved.
pub fn process_env() -> HashMap<String, String> {
    resolve_aliases(std::env::vars().collect())
}

/// Resolves the documented aliases in an environment map:
/// - `LOGS_DATABASE_URL` stands for `ANALYTICS_DATABASE_URL` when that is unset;
/// - `REDIS_HOST`/`REDIS_PORT`/`REDIS_DB`/`REDIS_PASSWORD` build `REDIS_URL` when that is unset.
pub fn resolve_aliases(mut env: HashMap<String, String>) -> HashMap<String, String> {
    if !env.contains_key("ANALYTICS_DATABASE_URL")
        && let Some(url) = env.get("LOGS_DATABASE_URL").cloned()
    {
        env.insert("ANALYTICS_DATABASE_URL".into(), url);
    }
    let redis_parts = ["REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD"];
    if !env.contains_key("REDIS_URL") && redis_parts.iter().any(|k| env.contains_key(*k)) {
        let host = env.get("REDIS_HOST").map_or("127.0.0.1", String::as_str);
        let port = env.get("REDIS_PORT").map_or("6379", String::as_str);
        let db = env.get("REDIS_DB").map_or("0", String::as_str);
        let auth = match env.get("REDIS_PASSWORD").filter(|p| !p.is_empty()) {
            Some(password) => format!(":{}@", percent_encode(password)),
            None => String::new(),
        };
        env.insert("REDIS_URL".into(), format!("redis://{auth}{host}:{port}/{db}"));
    }
    env
}

/// Loads settings of type `T` from the embedded `defaults` (TOML), then `file` if
/// given, then `env`.
pub fn load<T: DeserializeOwned>(
    defaults: &str,
    file: Option<&Path>,
    env: HashMap<String, String>,
) -> Result<T, ConfigError> {
    let mut builder = Config::builder().add_source(File::from_str(defaults, FileFormat::Toml));
    if let Some(path) = file {
        builder = builder.add_source(File::from(path).required(true));
    }
    builder.add_source(Environment::default().separator("__").source(Some(env))).build()?.try_deserialize()
}

/// The analytics database URL: its own setting, or the main database's when empty
/// (the seeds' one-database setup).
pub fn analytics_url_or_main<'a>(analytics: &'a str, main: &'a str) -> &'a str {
    if analytics.trim().is_empty() { main } else { analytics }
}

/// Adds `application_name` and a connect timeout to a PostgreSQL URL unless it names them.
pub fn postgres_url_for(url: &str, application_name: &str) -> String {
    let mut url = url.to_owned();
    for (key, value) in [("application_name", application_name), ("connect_timeout", "5")] {
        if !url.contains(&format!("{key}=")) {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("{key}={value}"));
        }
    }
    url
}

/// Compares two secrets (admin keys) in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Hides the password of a URL for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme_end + 3], &userinfo[..colon], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used)]
    use super::*;
    use serde::Deserialize;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn seed_redis_variables_build_a_url() {
        let e = resolve_aliases(env(&[("REDIS_HOST", "cache"), ("REDIS_PASSWORD", "p@ss"), ("REDIS_DB", "2")]));
        assert_eq!(e["REDIS_URL"], "redis://:p%40ss@cache:6379/2");
        let e = resolve_aliases(env(&[("REDIS_URL", "redis://x"), ("REDIS_HOST", "y")]));
        assert_eq!(e["REDIS_URL"], "redis://x");
    }

    #[test]
    fn logs_database_url_is_an_alias() {
        let e = resolve_aliases(env(&[("LOGS_DATABASE_URL", "postgres://a/logs")]));
        assert_eq!(e["ANALYTICS_DATABASE_URL"], "postgres://a/logs");
        let e = resolve_aliases(env(&[("LOGS_DATABASE_URL", "x"), ("ANALYTICS_DATABASE_URL", "y")]));
        assert_eq!(e["ANALYTICS_DATABASE_URL"], "y");
    }

    #[derive(Deserialize)]
    struct Sample {
        port: u16,
        name: String,
        nested: Nested,
    }
    #[derive(Deserialize)]
    struct Nested {
        version: String,
    }

    #[test]
    fn environment_overrides_defaults() {
        let defaults = "port = 1\nname = \"a\"\n[nested]\nversion = \"v1\"\n";
        let s: Sample = load(defaults, None, env(&[("PORT", "8080"), ("NESTED__VERSION", "0123")])).unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.name, "a");
        assert_eq!(s.nested.version, "0123");
    }

    #[test]
    fn secrets_compare_by_value() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn urls_get_application_name_and_secrets_are_hidden() {
        assert_eq!(
            postgres_url_for("postgres://u@h/db", "gw"),
            "postgres://u@h/db?application_name=gw&connect_timeout=5"
        );
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
    }
}
