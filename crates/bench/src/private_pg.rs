//! A PostgreSQL server of the benchmark's own (initdb into a scratch directory, pinned to
//! given CPUs), for measurements where the analytics database must not share a server with
//! the main database: in production they are separate servers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivatePostgres {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

/// The newest PostgreSQL server binaries under `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// The command, run as `postgres` when we are root (the server refuses to run as root),
/// under `taskset -c cpus` when given.
fn command(program: &Path, cpus: Option<&str>) -> Command {
    if !as_root() {
        return crate::pinned(program, cpus);
    }
    let mut cmd = crate::pinned("runuser", cpus);
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

impl PrivatePostgres {
    /// Creates and starts a server on `port`; `None` (with the reason printed) where this
    /// machine cannot (no server binaries, no `postgres` user to run it as).
    pub fn start(port: u16, cpus: Option<&str>) -> Option<Self> {
        let Some(bin) = bin_dir() else {
            println!("(no PostgreSQL server binaries under /usr/lib/postgresql: one server for both databases)");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("hh-bench-pg-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
        let owned = std::fs::create_dir_all(&dir).is_ok()
            && (!as_root()
                || Command::new("chown").arg("postgres:postgres").arg(&dir).status().is_ok_and(|s| s.success()));
        let data = dir.join("data");
        let initdb = owned
            && command(&bin.join("initdb"), None)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"])
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !initdb {
            println!("(initdb failed in {}: one server for both databases)", dir.display());
            std::fs::remove_dir_all(&dir).ok();
            return None;
        }
        let child = command(&bin.join("postgres"), cpus)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Self { child, dir, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                println!("(the private PostgreSQL server did not come up: one server for both databases)");
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Accepting connections is not yet accepting queries (recovery at start).
        std::thread::sleep(Duration::from_millis(500));
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown (clients are disconnected, not waited for).
        // It goes to the server itself, whose pid is the first line of postmaster.pid: the
        // child we hold is taskset/runuser.
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).unwrap_or_default();
        if let Some(pid) = pid.lines().next().filter(|p| !p.is_empty()) {
            drop(Command::new("kill").args(["-INT", pid]).status());
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if self.child.try_wait().is_ok_and(|s| s.is_some()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(self.child.kill());
        drop(self.child.wait());
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
