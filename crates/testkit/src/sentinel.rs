//! Redis as Sentinel runs it: a primary, one replica (`REPLICAOF`; or several, each on a host of its
//! own) and three Sentinels (`redis-server --sentinel`, quorum 2) on loopback ports or on hosts, for
//! failover tests; every process is killed by PID.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Host;
use crate::{RedisServer, free_port};

/// How long the Sentinels take to agree the primary is down; short, so a test fails over in seconds.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);

/// A monitored primary with one replica, and three Sentinels watching them.
pub struct Sentinel {
    master_name: String,
    /// The data nodes, each on its own address; which one is primary changes on failover.
    nodes: Vec<(SocketAddr, RedisServer)>,
    sentinels: Vec<SentinelProcess>,
    _dir: tempfile::TempDir,
}

struct SentinelProcess {
    addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl Sentinel {
    /// Starts the primary, its replica (waits for the link), and three Sentinels (waits until
    /// each knows the replica and the two other Sentinels, so a failover can be voted at once).
    pub fn start(master_name: &str) -> io::Result<Self> {
        let primary = RedisServer::start_tcp()?;
        let replica = RedisServer::start_tcp()?;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push((
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port()?),
                None,
            ));
        }
        Self::launch(master_name, primary, vec![replica], sentinels)
    }

    /// As [`Self::start`], each process on a host of its own: the primary on `primary`, a replica
    /// on each of `replicas`, a Sentinel on each of `sentinels` (Redis' usual ports, 6379 and
    /// 26379), so a partition can put the primary, replicas and Sentinels on either side.
    pub fn start_on(
        master_name: &str,
        primary: &Host,
        replicas: &[&Host],
        sentinels: [&Host; 3],
    ) -> io::Result<Self> {
        let primary = RedisServer::start_on(primary)?;
        let replicas = replicas
            .iter()
            .map(|host| RedisServer::start_on(host))
            .collect::<io::Result<Vec<_>>>()?;
        let sentinels = sentinels
            .iter()
            .map(|host| (host.addr(26379), Some((*host).clone())))
            .collect();
        Self::launch(master_name, primary, replicas, sentinels)
    }

    fn launch(
        master_name: &str,
        primary: RedisServer,
        replicas: Vec<RedisServer>,
        sentinel_places: Vec<(SocketAddr, Option<Host>)>,
    ) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("prosaas-calls-sentinel-")
            .tempdir()?;
        let primary_addr = addr_of(&primary)?;
        let mut nodes = vec![(primary_addr, primary)];
        for replica in replicas {
            replica.cli(&[
                "REPLICAOF",
                &primary_addr.ip().to_string(),
                &primary_addr.port().to_string(),
            ])?;
            wait_until(Duration::from_secs(20), "the replica to sync", || {
                replica
                    .cli(&["INFO", "replication"])
                    .is_ok_and(|info| info.contains("master_link_status:up"))
            })?;
            nodes.push((addr_of(&replica)?, replica));
        }
        let replica_count = (nodes.len() - 1).to_string();
        let mut sentinels = Vec::new();
        for (i, (addr, host)) in sentinel_places.into_iter().enumerate() {
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            let log = dir.path().join(format!("sentinel-{i}.log"));
            // On a host, its peers and clients come from other hosts of the private network.
            let protected = if host.is_some() {
                "protected-mode no\n"
            } else {
                ""
            };
            // Sentinel rewrites its config file as it learns, so it must be its own writable file.
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind {ip}\n{protected}dir {dir}\nlogfile {log}\n\
                     sentinel monitor {master_name} {primary_ip} {primary_port} 2\n\
                     sentinel down-after-milliseconds {master_name} {down}\n\
                     sentinel failover-timeout {master_name} 5000\n\
                     sentinel parallel-syncs {master_name} 1\n",
                    port = addr.port(),
                    ip = addr.ip(),
                    dir = dir.path().display(),
                    log = log.display(),
                    primary_ip = primary_addr.ip(),
                    primary_port = primary_addr.port(),
                    down = DOWN_AFTER.as_millis(),
                ),
            )?;
            let mut command = match &host {
                Some(host) => host.command("redis-server"),
                None => Command::new("redis-server"),
            };
            let child = command
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
                addr,
                log,
                child: Some(child),
            });
        }
        let set = Self {
            master_name: master_name.to_owned(),
            nodes,
            sentinels,
            _dir: dir,
        };
        // Sentinels find each other through hello messages on the primary, every two seconds.
        wait_until(
            Duration::from_secs(30),
            "the Sentinels to know each other",
            || {
                set.sentinels.iter().all(|s| {
                    let fields = set.sentinel_master(s.addr);
                    fields.get("num-other-sentinels").map(String::as_str) == Some("2")
                        && fields.get("num-slaves") == Some(&replica_count)
                })
            },
        )
        .map_err(|e| io::Error::new(e.kind(), format!("{e}; logs: {}", set.logs())))?;
        Ok(set)
    }

    /// `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/<master>/0` (each Sentinel's
    /// address).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| s.addr.to_string()).collect();
        format!(
            "redis+sentinel://{}/{}/0",
            hosts.join(","),
            self.master_name
        )
    }

    /// The primary's port as a live Sentinel names it.
    pub fn primary_port(&self) -> Option<u16> {
        self.primary_addr().map(|addr| addr.port())
    }

    /// The primary's address as the first Sentinel that answers names it.
    pub fn primary_addr(&self) -> Option<SocketAddr> {
        self.sentinels
            .iter()
            .find_map(|s| self.primary_addr_by(s.addr))
    }

    /// The primary's address as the Sentinel at `sentinel` names it (each side of a partition
    /// may name its own).
    pub fn primary_addr_by(&self, sentinel: SocketAddr) -> Option<SocketAddr> {
        let out = sentinel_cli(
            sentinel,
            &["SENTINEL", "get-master-addr-by-name", &self.master_name],
        )
        .ok()?;
        let mut lines = out.lines();
        let ip: IpAddr = lines.next()?.trim().parse().ok()?;
        let port: u16 = lines.next()?.trim().parse().ok()?;
        Some(SocketAddr::new(ip, port))
    }

    /// The Sentinels' addresses.
    pub fn sentinel_addrs(&self) -> Vec<SocketAddr> {
        self.sentinels.iter().map(|s| s.addr).collect()
    }

    /// The data node on `port`, while it runs.
    pub fn node(&self, port: u16) -> Option<&RedisServer> {
        self.nodes
            .iter()
            .find(|(addr, server)| addr.port() == port && server.pid().is_some())
            .map(|(_, server)| server)
    }

    /// The data node at `addr`, while it runs.
    pub fn node_at(&self, addr: SocketAddr) -> Option<&RedisServer> {
        self.nodes
            .iter()
            .find(|(at, server)| *at == addr && server.pid().is_some())
            .map(|(_, server)| server)
    }

    /// Every data node that runs, primary or not.
    pub fn nodes(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes
            .iter()
            .filter(|(_, server)| server.pid().is_some())
            .map(|(_, server)| server)
    }

    /// `kill -9` of the node Sentinel names primary; returns its port.
    pub fn kill_primary(&mut self) -> io::Result<u16> {
        let addr = self
            .primary_addr()
            .ok_or_else(|| io::Error::other("no Sentinel names a primary"))?;
        let (_, server) = self
            .nodes
            .iter_mut()
            .find(|(at, _)| *at == addr)
            .ok_or_else(|| io::Error::other(format!("the primary {addr} is not ours")))?;
        server.stop();
        Ok(addr.port())
    }

    /// Waits until the Sentinels name a primary other than `old_port` and that node says it is
    /// the primary; returns its port.
    pub fn wait_failover(&self, old_port: u16, timeout: Duration) -> io::Result<u16> {
        let old = self
            .nodes
            .iter()
            .map(|(addr, _)| *addr)
            .find(|addr| addr.port() == old_port)
            .ok_or_else(|| io::Error::other(format!("no node on port {old_port}")))?;
        self.wait_failover_from(old, &self.sentinel_addrs(), timeout)
            .map(|addr| addr.port())
    }

    /// Waits until one of `asking` (Sentinels' addresses: those on the majority's side of a
    /// partition) names a primary other than `old` and that node says it is the primary;
    /// returns its address.
    pub fn wait_failover_from(
        &self,
        old: SocketAddr,
        asking: &[SocketAddr],
        timeout: Duration,
    ) -> io::Result<SocketAddr> {
        let mut found = None;
        wait_until(timeout, "Sentinel to promote the replica", || {
            found = asking
                .iter()
                .filter_map(|sentinel| self.primary_addr_by(*sentinel))
                .find(|addr| {
                    *addr != old
                        && self.node_at(*addr).is_some_and(|node| {
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
    fn sentinel_master(&self, addr: SocketAddr) -> std::collections::HashMap<String, String> {
        let out =
            sentinel_cli(addr, &["SENTINEL", "MASTER", &self.master_name]).unwrap_or_default();
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
                    s.addr,
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

fn sentinel_cli(addr: SocketAddr, args: &[&str]) -> io::Result<String> {
    let out = Command::new("redis-cli")
        .arg("-h")
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(args)
        .stderr(Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The TCP address of a server started with `start_tcp` or `start_on`.
fn addr_of(server: &RedisServer) -> io::Result<SocketAddr> {
    server
        .addr()
        .ok_or_else(|| io::Error::other(format!("not a TCP server: {}", server.url())))
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
