//! Redis as Sentinel runs it: a primary, one replica (`REPLICAOF`) and three Sentinels (`redis-server
//! --sentinel`, quorum 2) on loopback ports, for failover tests; every process is killed by PID.

use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{RedisServer, free_port};

/// How long the Sentinels take to agree the primary is down; short, so a test fails over in seconds.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);

/// A monitored primary with one replica, and three Sentinels watching them.
pub struct Sentinel {
    master_name: String,
    /// The data nodes, each on its own TCP port; which one is primary changes on failover.
    nodes: Vec<(u16, RedisServer)>,
    sentinels: Vec<SentinelProcess>,
    _dir: tempfile::TempDir,
}

struct SentinelProcess {
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Sentinel {
    /// Starts the primary, its replica (waits for the link), and three Sentinels (waits until
    /// each knows the replica and the two other Sentinels, so a failover can be voted at once).
    pub fn start(master_name: &str) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("prosaas-calls-sentinel-")
            .tempdir()?;
        let primary = RedisServer::start_tcp()?;
        let replica = RedisServer::start_tcp()?;
        let primary_port = port_of(&primary)?;
        let replica_port = port_of(&replica)?;
        replica.cli(&["REPLICAOF", "127.0.0.1", &primary_port.to_string()])?;
        wait_until(Duration::from_secs(20), "the replica to sync", || {
            replica
                .cli(&["INFO", "replication"])
                .is_ok_and(|info| info.contains("master_link_status:up"))
        })?;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port()?;
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            let log = dir.path().join(format!("sentinel-{i}.log"));
            // Sentinel rewrites its config file as it learns, so it must be its own writable file.
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\n\
                     sentinel monitor {master_name} 127.0.0.1 {primary_port} 2\n\
                     sentinel down-after-milliseconds {master_name} {down}\n\
                     sentinel failover-timeout {master_name} 5000\n\
                     sentinel parallel-syncs {master_name} 1\n",
                    dir = dir.path().display(),
                    log = log.display(),
                    down = DOWN_AFTER.as_millis(),
                ),
            )?;
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot start redis-server --sentinel (is it installed?): {e}"),
                    )
                })?;
            sentinels.push(SentinelProcess {
                port,
                log,
                child: Some(child),
            });
        }
        let set = Self {
            master_name: master_name.to_owned(),
            nodes: vec![(primary_port, primary), (replica_port, replica)],
            sentinels,
            _dir: dir,
        };
        // Sentinels find each other through hello messages on the primary, every two seconds.
        wait_until(
            Duration::from_secs(30),
            "the Sentinels to know each other",
            || {
                set.sentinels.iter().all(|s| {
                    let fields = set.sentinel_master(s.port);
                    fields.get("num-other-sentinels").map(String::as_str) == Some("2")
                        && fields.get("num-slaves").map(String::as_str) == Some("1")
                })
            },
        )
        .map_err(|e| io::Error::new(e.kind(), format!("{e}; logs: {}", set.logs())))?;
        Ok(set)
    }

    /// `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/<master>/0`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!(
            "redis+sentinel://{}/{}/0",
            hosts.join(","),
            self.master_name
        )
    }

    /// The primary's port as a live Sentinel names it.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let out = sentinel_cli(
                s.port,
                &["SENTINEL", "get-master-addr-by-name", &self.master_name],
            )
            .ok()?;
            out.lines().nth(1)?.trim().parse().ok()
        })
    }

    /// The data node on `port`, while it runs.
    pub fn node(&self, port: u16) -> Option<&RedisServer> {
        self.nodes
            .iter()
            .find(|(p, server)| *p == port && server.pid().is_some())
            .map(|(_, server)| server)
    }

    /// `kill -9` of the node Sentinel names primary; returns its port.
    pub fn kill_primary(&mut self) -> io::Result<u16> {
        let port = self
            .primary_port()
            .ok_or_else(|| io::Error::other("no Sentinel names a primary"))?;
        let (_, server) = self
            .nodes
            .iter_mut()
            .find(|(p, _)| *p == port)
            .ok_or_else(|| io::Error::other(format!("the primary {port} is not ours")))?;
        server.stop();
        Ok(port)
    }

    /// Waits until the Sentinels name a primary other than `old_port` and that node says it is
    /// the primary; returns its port.
    pub fn wait_failover(&self, old_port: u16, timeout: Duration) -> io::Result<u16> {
        let mut found = None;
        wait_until(timeout, "Sentinel to promote the replica", || {
            found = self.primary_port().filter(|port| {
                *port != old_port
                    && self.node(*port).is_some_and(|node| {
                        node.cli(&["ROLE"])
                            .is_ok_and(|role| role.starts_with("master"))
                    })
            });
            found.is_some()
        })
        .map_err(|e| io::Error::new(e.kind(), format!("{e}; logs: {}", self.logs())))?;
        found.ok_or_else(|| io::Error::other("unreachable: the wait saw a new primary"))
    }

    /// `SENTINEL MASTER <name>` as field → value.
    fn sentinel_master(&self, port: u16) -> std::collections::HashMap<String, String> {
        let out =
            sentinel_cli(port, &["SENTINEL", "MASTER", &self.master_name]).unwrap_or_default();
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .filter_map(|pair| match pair {
                [k, v] => Some(((*k).to_owned(), (*v).to_owned())),
                _ => None,
            })
            .collect()
    }

    /// Every Sentinel's log, for a failure message.
    pub fn logs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| {
                format!(
                    "--- sentinel {} ---\n{}",
                    s.port,
                    std::fs::read_to_string(&s.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        for sentinel in &mut self.sentinels {
            if let Some(mut child) = sentinel.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // The data nodes are RedisServers: each kills its own process when dropped.
    }
}

fn sentinel_cli(port: u16, args: &[&str]) -> io::Result<String> {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stderr(Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The TCP port of a server started with `start_tcp` (`redis://127.0.0.1:PORT/0`).
fn port_of(server: &RedisServer) -> io::Result<u16> {
    let url = server.url();
    url.strip_prefix("redis://127.0.0.1:")
        .and_then(|rest| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not a TCP server: {url}")))
}

fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("timed out after {timeout:?} waiting for {what}"),
    ))
}
