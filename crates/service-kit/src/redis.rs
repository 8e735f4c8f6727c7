//! Redis endpoints and connection pools.
//!
//! A service's Redis URL names either one server (`redis://…`, `rediss://…`,
//! `redis+unix://…`) or a primary that Redis Sentinel watches:
//!
//! ```text
//! redis+sentinel://[[user]:password@]host:port[,host:port…]/<primary name>[/<db>][?sentinel_password=…]
//! ```
//!
//! The credentials before `@` are the Redis servers' own (primary and replicas);
//! `sentinel_password` is the Sentinels' `requirepass`, when they have one. With a
//! Sentinel URL every new connection goes to the server the Sentinels name as primary
//! now (and is checked to be one), pooled connections are checked to still talk to a
//! primary each time they are handed out, and holders of long-lived connections re-open
//! them when [`Endpoint::moved_since`] says the primary moved: after a failover a
//! service follows the new primary by itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use anyhow::{Context, bail};
use deadpool::managed;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisError};

/// How often an [`Endpoint`] on Sentinel asks who the primary is, once a holder of a
/// long-lived connection follows it ([`Endpoint::moved_since`]).
const SENTINEL_POLL: Duration = Duration::from_secs(1);

/// Where a service's Redis is (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct Endpoint(Arc<Inner>);

struct Inner {
    kind: Kind,
    /// The primary's address as last seen, and how often it has changed.
    primary: Mutex<Option<String>>,
    epoch: AtomicU64,
    watching: AtomicBool,
}

enum Kind {
    Direct(redis::Client),
    Sentinel { client: tokio::sync::Mutex<SentinelClient>, name: String },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0.kind {
            Kind::Direct(client) => write!(f, "Redis at {}", client.get_connection_info().addr()),
            Kind::Sentinel { name, .. } => write!(f, "Redis primary {name:?} through Sentinel"),
        }
    }
}

impl Endpoint {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let kind = match url.strip_prefix("redis+sentinel://") {
            Some(rest) => sentinel(rest)?,
            None => Kind::Direct(redis::Client::open(url)?),
        };
        Ok(Self(Arc::new(Inner {
            kind,
            primary: Mutex::new(None),
            epoch: AtomicU64::new(0),
            watching: AtomicBool::new(false),
        })))
    }

    pub fn is_sentinel(&self) -> bool {
        matches!(self.0.kind, Kind::Sentinel { .. })
    }

    /// A client for the primary: the one server, or the server the Sentinels name as
    /// primary now (checked with `ROLE`; an error after 2 s without answers).
    pub async fn primary(&self) -> redis::RedisResult<redis::Client> {
        match &self.0.kind {
            Kind::Direct(client) => Ok(client.clone()),
            Kind::Sentinel { client, .. } => {
                let ask = async { client.lock().await.async_get_client().await };
                let primary = tokio::time::timeout(SENTINEL_POLL * 2, ask).await.map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer from the Sentinels or the primary")
                })??;
                self.0.saw(primary.get_connection_info().addr().to_string());
                Ok(primary)
            }
        }
    }

    /// Moves on each time the primary changes (always 0 for one server). The first call
    /// starts asking the Sentinels every second.
    fn epoch(&self) -> u64 {
        // Read first: this runs per command on hot paths, and a swap would write a
        // cache line every thread shares.
        if self.is_sentinel()
            && !self.0.watching.load(Ordering::Relaxed)
            && !self.0.watching.swap(true, Ordering::SeqCst)
        {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(watch(Arc::downgrade(&self.0)));
                }
                Err(_) => self.0.watching.store(false, Ordering::SeqCst),
            }
        }
        self.0.epoch.load(Ordering::SeqCst)
    }

    /// Whether the primary moved since `seen` was last brought up to date here (by a
    /// holder of long-lived connections, which then re-opens them); brings it up to date.
    pub fn moved_since(&self, seen: &AtomicU64) -> bool {
        let now = self.epoch();
        seen.load(Ordering::SeqCst) != now && seen.swap(now, Ordering::SeqCst) != now
    }
}

impl Inner {
    fn saw(&self, addr: String) {
        let Ok(mut primary) = self.primary.lock() else { return };
        if primary.as_ref().is_some_and(|known| *known != addr) {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(primary = %addr, was = ?*primary, "Redis primary changed");
        }
        *primary = Some(addr);
    }
}

/// Asks a Sentinel for the primary's address every [`SENTINEL_POLL`] while the endpoint
/// lives, over one connection to that Sentinel (another one after an error): no
/// connection to the primary per look.
async fn watch(inner: Weak<Inner>) {
    let mut sentinel: Option<MultiplexedConnection> = None;
    loop {
        tokio::time::sleep(SENTINEL_POLL).await;
        let Some(inner) = inner.upgrade() else { return };
        let Kind::Sentinel { client, name } = &inner.kind else { return };
        // A Sentinel that stops answering (a partition) must not hold the watch.
        let patience = SENTINEL_POLL * 2;
        if sentinel.is_none() {
            let open = async {
                let found = client.lock().await.async_get_sentinel_client().await?;
                found.get_multiplexed_async_connection().await
            };
            sentinel = match tokio::time::timeout(patience, open).await {
                Ok(Ok(conn)) => Some(conn),
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "no Sentinel answers");
                    None
                }
                Err(_) => None,
            };
        }
        let Some(conn) = sentinel.as_mut() else { continue };
        let mut ask = redis::cmd("SENTINEL");
        ask.arg("GET-MASTER-ADDR-BY-NAME").arg(name);
        match tokio::time::timeout(patience, ask.query_async(conn)).await {
            Ok(Ok(Some::<(String, u16)>((host, port)))) => inner.saw(format!("{host}:{port}")),
            Ok(Ok(None)) => tracing::debug!(primary = %name, "the Sentinel knows no such primary"),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "asking the Sentinel failed");
                sentinel = None;
            }
            Err(_) => sentinel = None,
        }
    }
}

/// `[[user]:password@]host:port[,host:port…]/<name>[/<db>][?sentinel_password=…]`.
fn sentinel(rest: &str) -> anyhow::Result<Kind> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').context("a Sentinel URL needs the primary's name: …/<name>")?;
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts),
        None => (None, authority),
    };
    let sentinels = hosts
        .split(',')
        .map(|host| {
            let (host, port) = host.rsplit_once(':').unwrap_or((host, "26379"));
            let port: u16 = port.parse().with_context(|| format!("Sentinel port {port:?} is not a number"))?;
            if host.is_empty() {
                bail!("a Sentinel address has no host");
            }
            Ok(ConnectionAddr::Tcp(host.trim_matches(['[', ']']).to_owned(), port))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    let name = parts.next().context("a Sentinel URL needs the primary's name: …/<name>")?.to_owned();
    let db: i64 = match parts.next() {
        Some(db) => db.parse().with_context(|| format!("database {db:?} is not a number"))?,
        None => 0,
    };
    let mut builder =
        SentinelClientBuilder::new(sentinels, name.clone(), SentinelServerType::Master)?.set_client_to_redis_db(db);
    if let Some(credentials) = credentials {
        let (user, password) = credentials.split_once(':').unwrap_or(("", credentials));
        if !user.is_empty() {
            builder = builder.set_client_to_redis_username(decode(user)?);
        }
        if !password.is_empty() {
            builder = builder.set_client_to_redis_password(decode(password)?);
        }
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sentinel_password", password)) => {
                builder = builder.set_client_to_sentinel_password(decode(password)?);
            }
            _ => bail!("unknown Sentinel URL parameter {pair:?} (known: sentinel_password)"),
        }
    }
    Ok(Kind::Sentinel { client: tokio::sync::Mutex::new(builder.build()?), name })
}

/// Percent-decodes a URL part.
fn decode(part: &str) -> anyhow::Result<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part.get(i + 1..i + 3).context("a % in the URL is not followed by two hex digits")?;
            out.push(u8::from_str_radix(hex, 16).context("a % in the URL is not followed by two hex digits")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the URL's credentials are not UTF-8")
}

/// How a pool's connections treat slow replies.
#[derive(Debug, Clone, Copy)]
pub enum ReplyTimeout {
    /// Fail a command whose reply takes longer than this.
    After(Duration),
    /// Wait as long as the command needs: for `XREADGROUP … BLOCK`, whose reply
    /// comes only when entries arrive or the block time ends.
    Never,
}

/// Opens connections to the primary the Sentinels name, and checks a pooled one with
/// `ROLE` before handing it out, so a connection to a demoted primary is dropped rather
/// than written to. (deadpool-redis's own Sentinel manager opens connections without
/// the reply timeouts set here, which `XREADGROUP … BLOCK` depends on, and only pings.)
pub struct SentinelManager {
    endpoint: Endpoint,
    config: AsyncConnectionConfig,
}

impl managed::Manager for SentinelManager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        self.endpoint.primary().await?.get_multiplexed_async_connection_with_config(&self.config).await
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        _: &managed::Metrics,
    ) -> managed::RecycleResult<RedisError> {
        let (role,): (Vec<redis::Value>,) = redis::pipe().cmd("UNWATCH").ignore().cmd("ROLE").query_async(conn).await?;
        match role_name(&role) {
            Some("master") => Ok(()),
            other => Err(managed::RecycleError::message(format!("the server is a {} now", other.unwrap_or("?")))),
        }
    }
}

/// The value of `name` in an `INFO` reply (its `name:value` lines), trimmed.
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

/// The first element of a `ROLE` reply: `master`, `slave` or `sentinel`.
pub fn role_name(role: &[redis::Value]) -> Option<&str> {
    match role.first()? {
        redis::Value::BulkString(name) => std::str::from_utf8(name).ok(),
        redis::Value::SimpleString(name) => Some(name),
        _ => None,
    }
}

pub type PoolError = managed::PoolError<RedisError>;

/// A pool of multiplexed connections to an [`Endpoint`]'s primary: deadpool-redis's
/// for one server, [`SentinelManager`]'s behind Sentinel.
#[derive(Clone)]
pub struct Pool {
    inner: Pools,
}

#[derive(Clone)]
enum Pools {
    Direct(deadpool_redis::Pool),
    Sentinel(managed::Pool<SentinelManager>),
}

impl Pool {
    pub async fn get(&self) -> Result<Connection, PoolError> {
        Ok(match &self.inner {
            Pools::Direct(pool) => Connection::Direct(pool.get().await?),
            Pools::Sentinel(pool) => Connection::Sentinel(pool.get().await?),
        })
    }

    pub fn status(&self) -> managed::Status {
        match &self.inner {
            Pools::Direct(pool) => pool.status(),
            Pools::Sentinel(pool) => pool.status(),
        }
    }
}

/// A connection out of a [`Pool`]; back to the pool when dropped.
pub enum Connection {
    Direct(deadpool_redis::Connection),
    Sentinel(managed::Object<SentinelManager>),
}

impl std::ops::Deref for Connection {
    type Target = MultiplexedConnection;

    fn deref(&self) -> &MultiplexedConnection {
        match self {
            Self::Direct(conn) => conn,
            Self::Sentinel(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut MultiplexedConnection {
        match self {
            Self::Direct(conn) => conn,
            Self::Sentinel(conn) => conn,
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Direct(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Direct(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Direct(conn) => conn.get_db(),
            Self::Sentinel(conn) => conn.get_db(),
        }
    }
}

/// Builds a pool of multiplexed connections to the primary `url` names.
pub fn build_pool(url: &str, max_size: usize, reply_timeout: ReplyTimeout) -> anyhow::Result<Pool> {
    let endpoint = Endpoint::parse(url)?;
    let response_timeout = match reply_timeout {
        ReplyTimeout::After(d) => Some(d),
        ReplyTimeout::Never => None,
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(response_timeout);
    let timeouts = managed::Timeouts {
        wait: Some(Duration::from_secs(2)),
        create: Some(Duration::from_secs(3)),
        recycle: Some(Duration::from_secs(2)),
    };
    let inner = match &endpoint.0.kind {
        Kind::Direct(client) => {
            let manager = deadpool_redis::Manager::new_with_config(client.get_connection_info().clone(), config)?;
            Pools::Direct(
                deadpool_redis::Pool::builder(manager)
                    .max_size(max_size)
                    .runtime(deadpool_redis::Runtime::Tokio1)
                    .timeouts(timeouts)
                    .build()?,
            )
        }
        Kind::Sentinel { .. } => Pools::Sentinel(
            managed::Pool::builder(SentinelManager { endpoint, config })
                .max_size(max_size)
                .runtime(deadpool::Runtime::Tokio1)
                .timeouts(timeouts)
                .build()?,
        ),
    };
    Ok(Pool { inner })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_their_sentinels_primary_and_database() -> anyhow::Result<()> {
        let endpoint = Endpoint::parse("redis+sentinel://:s%40cret@10.0.0.1:26379,sentinel-b,[::1]:5000/queue/2")?;
        assert!(endpoint.is_sentinel());
        assert_eq!(format!("{endpoint:?}"), "Redis primary \"queue\" through Sentinel");
        assert!(!Endpoint::parse("redis://127.0.0.1:6379/0")?.is_sentinel());
        Ok(())
    }

    /// Sentinels that accept connections and never answer (a partition) cost a lookup
    /// two seconds, not forever.
    #[tokio::test]
    async fn a_silent_sentinel_fails_the_lookup_in_bounded_time() -> anyhow::Result<()> {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = silent.local_addr()?.port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                open.push(socket);
            }
        });
        let endpoint = Endpoint::parse(&format!("redis+sentinel://127.0.0.1:{port}/queue"))?;
        let started = std::time::Instant::now();
        assert!(endpoint.primary().await.is_err());
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        held.abort();
        Ok(())
    }

    #[test]
    fn bad_sentinel_urls_say_what_is_wrong() -> anyhow::Result<()> {
        let error = |url: &str| Endpoint::parse(url).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(error("redis+sentinel://host:26379").contains("primary's name"), "{}", error("redis+sentinel://h"));
        assert!(error("redis+sentinel://host:port/queue").contains("port \"port\""));
        assert!(error("redis+sentinel://host/queue/x").contains("database \"x\""));
        assert!(error("redis+sentinel://host/queue?tls=1").contains("unknown Sentinel URL parameter"));
        assert_eq!(decode("a%2Fb")?, "a/b");
        Ok(())
    }
}
