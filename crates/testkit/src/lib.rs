//! Real processes for tests and benchmarks: `redis-server` on its own unix socket or port (started
//! on demand, restartable empty), replicas of the built binary, nginx, and the Twilio REST double;
//! each killed by PID.
//!
//! # Layout
//!
//! - [`RedisServer`]: a private Redis that keeps nothing on disk, or an append-only file where a
//!   test restarts it with its data. Redis is never mocked.
//! - [`ReplicaProcess`]: a replica as a real OS process, for crash, pause and drain tests.
//! - [`nginx`]: a real nginx rendered from the shipped template.
//! - [`prometheus`]: a real Prometheus scraping loopback targets.
//! - [`tls`]: a private CA made per test and a `redis-server` that speaks only TLS.
//! - [`sentinel`]: a primary, a replica and three Sentinels, for failover tests.
//! - [`twilio_api`]: the simulator's Twilio REST double, a process of its own, and the simulator
//!   binary built for the running test ([`twilio_api::sim_binary`]).
//! - [`netns`]: hosts on one machine (network namespaces on a private bridge) and the faults
//!   between them; Redis, replicas, nginx and Sentinel can run on such a host (`*_on`).

#![forbid(unsafe_code)]

pub mod netns;
pub mod nginx;
mod ports;
pub mod prometheus;
pub mod sentinel;
pub mod tls;
pub mod twilio_api;

pub use ports::{free_port, free_port_run};

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where a test server listens.
#[derive(Debug, Clone)]
enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// The loopback address `port`.
fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// A private `redis-server` that keeps nothing on disk (unless started with an append-only file).
/// Dropping it kills the process.
pub struct RedisServer {
    dir: tempfile::TempDir,
    endpoint: Endpoint,
    /// `requirepass`: clients must authenticate with it (in `url()` and `cli`).
    password: Option<String>,
    child: Option<Child>,
    /// Persists every write to an append-only file in `dir` (fsync always), so [`Self::stop`]
    /// followed by [`Self::start_again`] comes back with its data, as production Redis does.
    append_only: bool,
    /// The host it runs on; `None`: this machine's loopback.
    host: Option<netns::Host>,
}

impl RedisServer {
    /// Starts a server on a fresh unix socket (no TCP port at all).
    pub fn start() -> io::Result<Self> {
        let dir = new_dir()?;
        let endpoint = Endpoint::Unix(dir.path().join("redis.sock"));
        Self::launch(dir, endpoint)
    }

    /// Starts a server on a free loopback TCP port (for processes that want `redis://`).
    pub fn start_tcp() -> io::Result<Self> {
        let dir = new_dir()?;
        let endpoint = Endpoint::Tcp(loopback(free_port()?));
        Self::launch(dir, endpoint)
    }

    /// Starts a server on `host`, on Redis' usual port 6379 of the host's address (no password,
    /// protected mode off: only this test's hosts can reach it).
    pub fn start_on(host: &netns::Host) -> io::Result<Self> {
        let mut server = Self {
            dir: new_dir()?,
            endpoint: Endpoint::Tcp(host.addr(6379)),
            password: None,
            child: None,
            append_only: false,
            host: Some(host.clone()),
        };
        server.spawn()?;
        Ok(server)
    }

    /// Starts a server on a free loopback TCP port that requires `password` (`requirepass`);
    /// `url()` carries it, as `REDIS_URL` would. Use URL-safe characters.
    pub fn start_tcp_with_password(password: &str) -> io::Result<Self> {
        let dir = new_dir()?;
        let endpoint = Endpoint::Tcp(loopback(free_port()?));
        Self::launch_with(dir, endpoint, Some(password.to_owned()))
    }

    /// Starts a server on a fresh unix socket that keeps an append-only file (`appendfsync
    /// always`): killed and started again, it comes back with every write it acknowledged.
    pub fn start_append_only() -> io::Result<Self> {
        let dir = new_dir()?;
        let endpoint = Endpoint::Unix(dir.path().join("redis.sock"));
        let mut server = Self {
            dir,
            endpoint,
            password: None,
            child: None,
            append_only: true,
            host: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn launch(dir: tempfile::TempDir, endpoint: Endpoint) -> io::Result<Self> {
        Self::launch_with(dir, endpoint, None)
    }

    fn launch_with(
        dir: tempfile::TempDir,
        endpoint: Endpoint,
        password: Option<String>,
    ) -> io::Result<Self> {
        let mut server = Self {
            dir,
            endpoint,
            password,
            child: None,
            append_only: false,
            host: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `redis+unix:///…` or `redis://127.0.0.1:PORT/0` (`redis://:PASSWORD@…` with a password;
    /// the host's address for a server on a host).
    pub fn url(&self) -> String {
        let auth = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        match &self.endpoint {
            Endpoint::Unix(path) => format!("redis+unix://{}", path.display()),
            Endpoint::Tcp(addr) => format!("redis://{auth}{addr}/0"),
        }
    }

    /// The TCP address it listens on; `None` on a unix socket.
    pub fn addr(&self) -> Option<SocketAddr> {
        match &self.endpoint {
            Endpoint::Unix(_) => None,
            Endpoint::Tcp(addr) => Some(*addr),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (as a crash would) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Endpoint::Unix(path) = &self.endpoint {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Starts the server again on the same address, empty (its append-only file, if any, is
    /// deleted first).
    pub fn restart_empty(&mut self) -> io::Result<()> {
        self.stop();
        if self.append_only {
            let aof = self.dir.path().join("appendonlydir");
            if aof.exists() {
                std::fs::remove_dir_all(aof)?;
            }
        }
        self.spawn()
    }

    /// Starts a stopped server again on the same address: empty, or with its data when it keeps
    /// an append-only file.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn()
    }

    /// Runs `redis-cli` against this server and returns its trimmed output.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        let mut cmd = Command::new("redis-cli");
        match &self.endpoint {
            Endpoint::Unix(path) => cmd.arg("-s").arg(path),
            Endpoint::Tcp(addr) => cmd
                .arg("-h")
                .arg(addr.ip().to_string())
                .arg("-p")
                .arg(addr.port().to_string()),
        };
        if let Some(password) = &self.password {
            cmd.arg("--no-auth-warning").arg("-a").arg(password);
        }
        let out = cmd.args(args).stderr(Stdio::null()).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut cmd = match &self.host {
            Some(host) => host.command("redis-server"),
            None => Command::new("redis-server"),
        };
        cmd.arg("--save").arg("").arg("--appendonly");
        if self.append_only {
            cmd.arg("yes").arg("--appendfsync").arg("always");
        } else {
            cmd.arg("no");
        }
        cmd.arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .arg("--maxclients")
            .arg("10000");
        if let Some(password) = &self.password {
            cmd.arg("--requirepass").arg(password);
        }
        match &self.endpoint {
            Endpoint::Unix(path) => {
                cmd.arg("--port")
                    .arg("0")
                    .arg("--unixsocket")
                    .arg(path)
                    .arg("--unixsocketperm")
                    .arg("700");
            }
            Endpoint::Tcp(addr) => {
                cmd.arg("--port")
                    .arg(addr.port().to_string())
                    .arg("--bind")
                    .arg(addr.ip().to_string());
                if self.host.is_some() {
                    // Its clients come from other hosts; the network is private to the test.
                    cmd.arg("--protected-mode").arg("no");
                }
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start redis-server (is it installed?): {e}"),
                )
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "redis-server exited with {status}: {log}"
                )));
            }
            if self.cli(&["PING"]).is_ok_and(|out| out == "PONG") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "redis-server did not answer PING within 10 s",
        ))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `GET /healthz` on a loopback port answers 200 right now (blocking, bounded at 500 ms).
pub fn healthz_ok(port: u16) -> bool {
    healthz_ok_at(loopback(port))
}

/// Whether `GET /healthz` at `addr` answers 200 right now (blocking, bounded at 500 ms).
pub fn healthz_ok_at(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ =
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

/// Waits until `GET /healthz` at `addr` answers 200; fails at once if `child` exited, and after
/// `timeout`, either way with what `log` returns (the process's own account of why).
pub(crate) fn wait_healthz(
    child: &mut Option<Child>,
    addr: SocketAddr,
    timeout: Duration,
    what: &str,
    log: impl Fn() -> String,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(child) = child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            return Err(io::Error::other(format!(
                "{what} exited with {status}: {}",
                log()
            )));
        }
        if healthz_ok_at(addr) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} not healthy in time: {}", log()),
    ))
}

fn new_dir() -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("prosaas-calls-redis-")
        .tempdir()
}

/// A replica as a real OS process (the built binary), for crash, pause and drain tests.
/// Dropping it kills the process by PID.
pub struct ReplicaProcess {
    child: Option<Child>,
    /// Where it listens: loopback, or its host's address.
    pub ip: IpAddr,
    pub port: u16,
    pub id: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ReplicaProcess {
    /// Starts `binary` on a free loopback port with `env` on top of the process's environment
    /// and waits until `/healthz` answers.
    pub fn spawn(binary: &Path, id: &str, env: &[(&str, String)]) -> io::Result<Self> {
        Self::launch(Command::new(binary), loopback(free_port()?), id, env)
    }

    /// Starts `binary` on loopback port `port` (chosen beforehand, e.g. with [`free_port`], where
    /// another process must know the address first).
    pub fn spawn_at(
        binary: &Path,
        port: u16,
        id: &str,
        env: &[(&str, String)],
    ) -> io::Result<Self> {
        Self::launch(Command::new(binary), loopback(port), id, env)
    }

    /// Starts `binary` on `host`, listening on the host's address, port 8080 (as in production),
    /// and waits until `/healthz` answers there.
    pub fn spawn_on(
        host: &netns::Host,
        binary: &Path,
        id: &str,
        env: &[(&str, String)],
    ) -> io::Result<Self> {
        Self::launch(host.command(binary), host.addr(8080), id, env)
    }

    fn launch(
        mut cmd: Command,
        listen: SocketAddr,
        id: &str,
        env: &[(&str, String)],
    ) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("prosaas-calls-replica-")
            .tempdir()?;
        let log = dir.path().join("replica.log");
        cmd.env("LISTEN_ADDR", listen.to_string())
            .env("REPLICA_ID", id)
            .env("RUST_LOG", "info")
            .env_remove("REDIS_URL")
            .env_remove("TWILIO_AUTH_TOKEN")
            .env_remove("PUBLIC_URL");
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::null())
            .spawn()?;
        let mut replica = Self {
            child: Some(child),
            ip: listen.ip(),
            port: listen.port(),
            id: id.to_owned(),
            log,
            _dir: dir,
        };
        replica.wait_healthy(Duration::from_secs(10))?;
        Ok(replica)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends a signal by name (`KILL`, `TERM`, `STOP`, `CONT`) to this process only.
    pub fn signal(&self, name: &str) -> io::Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill -{name} {pid} failed")))
        }
    }

    /// `kill -9`, as a crash would, and reaps the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit on its own and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> io::Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Ok(status.code());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "replica still running",
        ))
    }

    /// What the replica logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_healthy(&mut self, timeout: Duration) -> io::Result<()> {
        let log = self.log.clone();
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        let addr = self.addr();
        wait_healthz(&mut self.child, addr, timeout, "replica", read_log)
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        // A stopped process cannot die of SIGKILL until continued; continue it first.
        let _ = self.signal("CONT");
        self.kill9();
    }
}
