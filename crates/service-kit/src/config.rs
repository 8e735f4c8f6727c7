//! Configuration: embedded defaults → optional file → environment, and the sections every
//! service shares.
//!
//! Environment keys are matched case-insensitively against the settings' paths; a nested
//! key is reached with `__` (`SERVER__PORT`, `PRICING__VERSION`). The shared sections
//! also answer to the flat names people and the seeds use: `PORT`, `BIND_HOST`,
//! `WORKERS`, `REDIS_URL` (or `REDIS_HOST`, `REDIS_PORT`, `REDIS_DB`, `REDIS_PASSWORD`),
//! `REDIS_KEY_PREFIX`, `DATABASE_URL`, `DB_POOL_SIZE`, `ANALYTICS_DATABASE_URL` (or
//! `LOGS_DATABASE_URL`), `ANALYTICS_READ_DATABASE_URL`, `LOG_FORMAT`, `LOG_LEVEL`; cv-processor's vector store to
//! `QDRANT_URL` and `QDRANT_API_KEY`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use config::{Config, ConfigError, Environment, File, FileFormat};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// Flat environment names and the nested keys they stand for.
const FLAT_ALIASES: [(&str, &str); 13] = [
    ("PORT", "SERVER__PORT"),
    ("BIND_HOST", "SERVER__BIND_HOST"),
    ("WORKERS", "SERVER__WORKERS"),
    ("REDIS_URL", "REDIS__URL"),
    ("REDIS_KEY_PREFIX", "REDIS__KEY_PREFIX"),
    ("DATABASE_URL", "DATABASE__URL"),
    ("DB_POOL_SIZE", "DATABASE__POOL_SIZE"),
    ("ANALYTICS_DATABASE_URL", "ANALYTICS_DATABASE__URL"),
    // The gateway's analytics reads: a replica of the analytics database.
    ("ANALYTICS_READ_DATABASE_URL", "ANALYTICS_READ_DATABASE__URL"),
    ("LOG_FORMAT", "LOGGING__FORMAT"),
    ("LOG_LEVEL", "LOGGING__LEVEL"),
    // cv-processor's vector store: a Qdrant server instead of the embedded engine.
    ("QDRANT_URL", "VECTORS__URL"),
    ("QDRANT_API_KEY", "VECTORS__API_KEY"),
];

/// The seeds' Redis variables, which build `REDIS_URL` when it is unset.
const REDIS_PARTS: [&str; 4] = ["REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD"];

/// Stands for `ANALYTICS_DATABASE_URL` when that is unset.
const LOGS_DATABASE_URL: &str = "LOGS_DATABASE_URL";

/// The process environment, with the aliases resolved.
pub fn process_env() -> HashMap<String, String> {
    resolve_aliases(std::env::vars().collect())
}

/// Resolves the documented aliases in an environment map:
/// - `LOGS_DATABASE_URL` stands for `ANALYTICS_DATABASE_URL` when that is unset;
/// - `REDIS_HOST`/`REDIS_PORT`/`REDIS_DB`/`REDIS_PASSWORD` build `REDIS_URL` when that is unset;
/// - each flat name (`PORT`, `REDIS_URL`, …) sets its nested key unless that is set itself.
pub fn resolve_aliases(mut env: HashMap<String, String>) -> HashMap<String, String> {
    if !env.contains_key("ANALYTICS_DATABASE_URL")
        && let Some(url) = env.get(LOGS_DATABASE_URL).cloned()
    {
        env.insert("ANALYTICS_DATABASE_URL".into(), url);
    }
    if !env.contains_key("REDIS_URL") && REDIS_PARTS.iter().any(|k| env.contains_key(*k)) {
        let host = env.get("REDIS_HOST").map_or("127.0.0.1", String::as_str);
        let port = env.get("REDIS_PORT").map_or("6379", String::as_str);
        let db = env.get("REDIS_DB").map_or("0", String::as_str);
        let auth = match env.get("REDIS_PASSWORD").filter(|p| !p.is_empty()) {
            Some(password) => format!(":{}@", percent_encode(password)),
            None => String::new(),
        };
        env.insert("REDIS_URL".into(), format!("redis://{auth}{host}:{port}/{db}"));
    }
    for (flat, nested) in FLAT_ALIASES {
        if !env.contains_key(nested)
            && let Some(value) = env.get(flat).cloned()
        {
            env.insert(nested.to_owned(), value);
        }
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

/// Environment names every service reads besides its settings: the settings file, the
/// log filter and backtraces, and the host name (a consumer's default name).
const PROCESS_ENV: [&str; 4] = ["HEADHUNTER_CONFIG", "RUST_LOG", "RUST_BACKTRACE", "HOSTNAME"];

/// Names the container platform sets, never meant as settings: left out of
/// [`unknown_env`]'s verdict.
fn platform_name(name: &str) -> bool {
    ["PATH", "HOME", "TERM", "LANG", "TZ", "PWD", "SHLVL", "_"].contains(&name)
        || name.starts_with("LC_")
        || name.starts_with("KUBERNETES_")
        || name.starts_with("SSL_CERT_")
}

/// The environment names among `names` that no setting of a service answers to: not
/// a key of its `defaults` (by path, sections joined with `__`, any case), not a flat
/// alias, not one of `extra` (names the service reads itself). A misspelt or renamed
/// variable is silently ignored by the loader; this is how a deployment finds it.
pub fn unknown_env<'a>(
    defaults: &str,
    extra: &[&str],
    names: impl IntoIterator<Item = &'a str>,
) -> anyhow::Result<Vec<String>> {
    /// Every key path below `prefix` in `value`, upper case, sections joined by `__`.
    fn walk(prefix: Option<&str>, value: &config::Value, known: &mut std::collections::HashSet<String>) {
        if let config::ValueKind::Table(entries) = &value.kind {
            for (key, value) in entries {
                let key = key.to_uppercase();
                let path = prefix.map_or_else(|| key.clone(), |p| format!("{p}__{key}"));
                walk(Some(&path), value, known);
                known.insert(path);
            }
        }
    }
    let defaults = Config::builder().add_source(File::from_str(defaults, FileFormat::Toml)).build()?;
    let mut known = std::collections::HashSet::new();
    walk(None, &defaults.try_deserialize::<config::Value>()?, &mut known);
    let flat = FLAT_ALIASES.iter().map(|(flat, _)| flat);
    let own = REDIS_PARTS.iter().chain([&LOGS_DATABASE_URL]).chain(&PROCESS_ENV).chain(extra);
    known.extend(flat.chain(own).map(|n| (*n).to_owned()));
    let mut unknown: Vec<String> = names
        .into_iter()
        .filter(|name| !platform_name(name) && !known.contains(&name.to_uppercase()))
        .map(str::to_owned)
        .collect();
    unknown.sort();
    Ok(unknown)
}

/// The `check-env` subcommand: fails naming each variable of this process's
/// environment that no setting answers to (see [`unknown_env`]).
pub fn check_env(defaults: &str, extra: &[&str]) -> anyhow::Result<()> {
    let names: Vec<String> = std::env::vars().map(|(name, _)| name).collect();
    let unknown = unknown_env(defaults, extra, names.iter().map(String::as_str))?;
    anyhow::ensure!(
        unknown.is_empty(),
        "not settings of this service (misspelt, renamed, or meant for another): {}",
        unknown.join(", ")
    );
    println!("every variable of the environment is a setting of this service");
    Ok(())
}

/// Where a service listens for HTTP (its API, or only its probes and metrics).
#[derive(Debug, Clone, Deserialize)]
pub struct ServerSection {
    /// Address to bind (`BIND_HOST`).
    pub bind_host: String,
    /// TCP port (`PORT`).
    pub port: u16,
    /// HTTP worker threads (`WORKERS`); 0: one per core.
    pub workers: usize,
}

/// The queue Redis.
#[derive(Debug, Clone, Deserialize)]
pub struct RedisSection {
    /// `redis://[:password@]host:port/db` (`REDIS_URL`, or built from `REDIS_HOST`,
    /// `REDIS_PORT`, `REDIS_DB`, `REDIS_PASSWORD`).
    pub url: ConnectionUrl,
    /// Prefix of every key this service reads or writes (`REDIS_KEY_PREFIX`), so several
    /// deployments (or tests) can share one Redis.
    pub key_prefix: String,
}

/// A PostgreSQL database.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSection {
    /// `postgres://user[:password]@host:port/database` (`DATABASE_URL`). Empty where a
    /// service may fall back to another database.
    pub url: ConnectionUrl,
    /// Connections in this service's pool (`DB_POOL_SIZE`).
    pub pool_size: usize,
}

/// Structured logs.
#[derive(Debug, Clone, Deserialize)]
pub struct LoggingSection {
    /// `json` (one object a line, for collectors) or `text` (for people) (`LOG_FORMAT`).
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,llm_log_worker=debug` (`LOG_LEVEL`);
    /// `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// A connection URL that may carry a password: `Debug` and `Display` hide it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ConnectionUrl(String);

impl ConnectionUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// This URL, or `fallback` when this one is empty.
    pub fn or<'a>(&'a self, fallback: &'a ConnectionUrl) -> &'a ConnectionUrl {
        if self.is_empty() { fallback } else { self }
    }
}

impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl fmt::Display for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// A secret (an API key): `Debug` shows only whether it is set.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(<unset>)" } else { "Secret(***)" })
    }
}

/// Splits `12KiB` into 12 and `KiB`; `None` without a leading number.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

/// Reads a duration written with its unit: `250ms`, `5s`, `10m`, `2h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (n, unit) =
        number_and_unit(text).ok_or_else(|| format!("{text:?} is not a duration such as 250ms, 5s, 10m, 2h or 7d"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("{text:?} needs a unit: 250ms, 5s, 10m, 2h or 7d")),
        other => return Err(format!("unknown duration unit {other:?} in {text:?} (ms, s, m, h, d)")),
    };
    n.checked_mul(unit_ms).map(Duration::from_millis).ok_or_else(|| format!("{text:?} is too long"))
}

/// Reads a size in bytes: a plain number, or one with a unit (`512KiB`, `64MiB`, `1GiB`,
/// and the decimal `kB`, `MB`, `GB`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (n, unit) =
        number_and_unit(text).ok_or_else(|| format!("{text:?} is not a size such as 65536, 512KiB or 64MiB"))?;
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?} in {text:?} (B, KiB, MiB, GiB, kB, MB, GB)")),
    };
    n.checked_mul(multiplier).ok_or_else(|| format!("{text:?} is too large"))
}

/// `#[serde(deserialize_with = "service_kit::config::duration")]` for a [`Duration`]
/// written with its unit.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// `#[serde(deserialize_with = "service_kit::config::bytes")]` for a size in bytes,
/// as a number or with a unit, into any integer type it fits.
pub fn bytes<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    let n = match Size::deserialize(d)? {
        Size::Number(n) => n,
        Size::Text(text) => parse_bytes(&text).map_err(serde::de::Error::custom)?,
    };
    T::try_from(n).map_err(|_| serde::de::Error::custom(format!("{n} bytes is too large here")))
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

/// Hides the password of a URL for logs.
pub fn redact_url(url: &str) -> String {
    let url = redact_query(url, "sentinel_password=");
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme_end + 3], &userinfo[..colon], &url[at..]),
                None => url,
            }
        }
        _ => url,
    }
}

/// `url` with the value of the query parameter `name` (given with its `=`) as `***`.
fn redact_query(url: &str, name: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_owned() };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| if pair.starts_with(name) { format!("{name}***") } else { pair.to_owned() })
        .collect();
    format!("{base}?{}", query.join("&"))
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

    #[test]
    fn sentinel_urls_hide_both_passwords() {
        assert_eq!(
            redact_url("redis+sentinel://:pw@s1:26379,s2:26379/queue/0?sentinel_password=spw"),
            "redis+sentinel://:***@s1:26379,s2:26379/queue/0?sentinel_password=***"
        );
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn variables_no_setting_answers_to_are_named() {
        let defaults = "lock_timeout = \"5s\"\n[server]\nport = 1\n[consumer]\nbatch_size = 2\n";
        let names = [
            "PORT",
            "SERVER__PORT",
            "server__port",
            "LOCK_TIMEOUT",
            "CONSUMER__BATCH_SIZE",
            "CONSUMER_NAME",
            "L1_MAX_BYTES",
            "PATH",
            "KUBERNETES_SERVICE_HOST",
            "REDIS_URL",
            "OWN",
        ];
        assert_eq!(unknown_env(defaults, &["OWN"], names).unwrap(), ["CONSUMER_NAME", "L1_MAX_BYTES"]);
    }

    #[test]
    fn seed_redis_variables_build_a_url() {
        let e = resolve_aliases(env(&[("REDIS_HOST", "cache"), ("REDIS_PASSWORD", "p@ss"), ("REDIS_DB", "2")]));
        assert_eq!(e["REDIS_URL"], "redis://:p%40ss@cache:6379/2");
        assert_eq!(e["REDIS__URL"], "redis://:p%40ss@cache:6379/2");
        let e = resolve_aliases(env(&[("REDIS_URL", "redis://x"), ("REDIS_HOST", "y")]));
        assert_eq!(e["REDIS__URL"], "redis://x");
    }

    #[test]
    fn logs_database_url_is_an_alias() {
        let e = resolve_aliases(env(&[("LOGS_DATABASE_URL", "postgres://a/logs")]));
        assert_eq!(e["ANALYTICS_DATABASE__URL"], "postgres://a/logs");
        let e = resolve_aliases(env(&[("LOGS_DATABASE_URL", "x"), ("ANALYTICS_DATABASE_URL", "y")]));
        assert_eq!(e["ANALYTICS_DATABASE__URL"], "y");
    }

    #[derive(Debug, Deserialize)]
    struct Sample {
        server: ServerSection,
        logging: LoggingSection,
        name: String,
        #[serde(deserialize_with = "duration")]
        timeout: Duration,
        #[serde(deserialize_with = "bytes")]
        limit: u64,
        key: Secret,
        db: DatabaseSection,
    }

    const SAMPLE: &str = "name = \"a\"\ntimeout = \"250ms\"\nlimit = \"64MiB\"\nkey = \"\"\n\
        [server]\nbind_host = \"0.0.0.0\"\nport = 1\nworkers = 0\n\
        [logging]\nformat = \"json\"\nlevel = \"info\"\n\
        [db]\nurl = \"postgres://u:hunter2@h/db\"\npool_size = 4\n";

    #[test]
    fn flat_and_nested_names_override_defaults() {
        let s: Sample = load(
            SAMPLE,
            None,
            resolve_aliases(env(&[("PORT", "8080"), ("LOG_FORMAT", "text"), ("TIMEOUT", "2s"), ("KEY", "k")])),
        )
        .unwrap();
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.logging.format, LogFormat::Text);
        assert_eq!((s.name.as_str(), s.timeout, s.limit), ("a", Duration::from_secs(2), 64 << 20));
        let s: Sample = load(SAMPLE, None, env(&[("SERVER__PORT", "9"), ("LIMIT", "1000")])).unwrap();
        assert_eq!((s.server.port, s.limit), (9, 1000));
        assert!(s.key.is_empty());
        assert_eq!((s.db.url.expose(), s.db.pool_size), ("postgres://u:hunter2@h/db", 4));
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let s: Sample = load(SAMPLE, None, env(&[("KEY", "sk-very-secret")])).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("sk-very-secret") && !shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("Secret(***)") && shown.contains("postgres://u:***@h/db"), "{shown}");
    }

    #[test]
    fn durations_and_sizes_need_units_that_exist() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("250").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unknown duration unit"));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("12 furlongs").is_err());
        let bad: Result<Sample, _> = load(SAMPLE, None, env(&[("LOGGING__FORMAT", "yaml")]));
        assert!(bad.unwrap_err().to_string().contains("yaml"));
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
