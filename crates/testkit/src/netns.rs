//! Hosts on one machine: each a network namespace with its own address on a private bridge, and the
//! faults between hosts (partition, one-way drop, stalled connections) as nft drop rules.
//!
//! A [`Network`] is a Linux bridge in the root namespace, `10.213.N.0/24`, with the test process on
//! `10.213.N.1` (it plays Twilio and the operator, and is never cut off). Each [`Host`] is a
//! namespace on the bridge (a veth pair), `10.213.N.2` and up, where a replica, Redis, a Sentinel,
//! nginx or an agent runs ([`Host::command`]) on its own address and its usual port. A fault is
//! a drop rule in the namespaces it separates: packets vanish without a reset or an ICMP error, as
//! on a real partition, so open sockets stay open and only timeouts notice.
//!
//! Everything is removed when the `Network` is dropped (a failed or panicking test included):
//! leftover processes in its namespaces (killed by PID), the rules, links, namespaces and the
//! bridge. Names carry the bridge's number, claimed atomically from the kernel (`ip link add`
//! fails on a name in use), so parallel tests and other processes never collide; a network whose
//! owner died without cleaning up (SIGKILL) is swept by the next `Network::new`.
//!
//! Needs root and `ip`/`nft` (iproute2, nftables): [`check`] says what is missing.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Every network is `10.213.N.0/24`; N is the bridge's number.
const SUBNET_PREFIX: [u8; 2] = [10, 213];
/// Bridges are `pcnXX` (XX: N in hex): short, as interface names are at most 15 bytes.
const BRIDGE_PREFIX: &str = "pcn";
/// The bridge's alias names its owner, so a later run can sweep what a killed one left.
const ALIAS_PREFIX: &str = "prosaas-calls-testkit pid=";
/// Numbers tried for a bridge (1..=250): one per concurrent network on this machine.
const NETWORKS: u32 = 250;
/// Hosts per network (`.2` to `.254`).
const MAX_HOSTS: u8 = 252;

/// Networks made by this process so far, to spread their numbers.
static MADE: AtomicU32 = AtomicU32::new(0);

/// Whether this machine can make hosts: root, `ip netns` and `nft`. `Err` says what is missing.
pub fn check() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Err(format!(
            "network namespaces need root (effective uid {euid})"
        ));
    }
    for (tool, arg, package) in [
        ("ip", "-V", "iproute2"),
        ("nft", "--version", "nftables"),
        ("ss", "-V", "iproute2"),
    ] {
        let found = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!("`{tool}` not found (apt-get install {package})"));
        }
    }
    Ok(())
}

/// A private bridge with the test process on `.1` and hosts on `.2` and up. Dropping it removes
/// every host, rule and link it made.
pub struct Network {
    inner: Arc<Inner>,
}

struct Inner {
    number: u8,
    bridge: String,
    hosts: Mutex<Vec<HostRecord>>,
}

#[derive(Clone)]
struct HostRecord {
    ns: String,
    veth: String,
}

/// One host: a network namespace with its own address on the network. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    pub name: String,
    pub ip: Ipv4Addr,
    ns: String,
}

impl Network {
    /// Claims a free bridge number and brings the bridge up with the test process's address.
    pub fn new() -> io::Result<Self> {
        sweep_abandoned();
        let pid = std::process::id();
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        let first = (pid.wrapping_mul(31).wrapping_add(made.wrapping_mul(7))) % NETWORKS;
        for offset in 0..NETWORKS {
            let number = u8::try_from((first + offset) % NETWORKS + 1).unwrap_or(1);
            let bridge = format!("{BRIDGE_PREFIX}{number:02x}");
            let subnet = format!("{}.{}.{number}.0/24", SUBNET_PREFIX[0], SUBNET_PREFIX[1]);
            // A subnet some other interface already routes is not ours to shadow.
            if !run("ip", &["-4", "route", "show", &subnet])?
                .stdout
                .is_empty()
            {
                continue;
            }
            // Bridged packets skip the root namespace's iptables (br_netfilter): a host firewall
            // with a DROP forward policy must not cut the hosts off from each other.
            let claimed = Command::new("ip")
                .args([
                    "link",
                    "add",
                    &bridge,
                    "type",
                    "bridge",
                    "nf_call_iptables",
                    "0",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()?;
            if !claimed.status.success() {
                let why = String::from_utf8_lossy(&claimed.stderr);
                if why.contains("File exists") {
                    continue;
                }
                return Err(io::Error::other(format!(
                    "ip link add {bridge} type bridge: {}",
                    why.trim()
                )));
            }
            let network = Self {
                inner: Arc::new(Inner {
                    number,
                    bridge: bridge.clone(),
                    hosts: Mutex::new(Vec::new()),
                }),
            };
            let root = network.address(1);
            must(
                "ip",
                &[
                    "link",
                    "set",
                    "dev",
                    &bridge,
                    "alias",
                    &format!("{ALIAS_PREFIX}{pid}"),
                ],
            )?;
            must(
                "ip",
                &["addr", "add", &format!("{root}/24"), "dev", &bridge],
            )?;
            must("ip", &["link", "set", "dev", &bridge, "up"])?;
            return Ok(network);
        }
        Err(io::Error::other(
            "no free 10.213.N.0/24 network: 250 are in use on this machine",
        ))
    }

    /// The test process's own address on this network: what the hosts see Twilio and the operator as.
    pub fn root_ip(&self) -> Ipv4Addr {
        self.address(1)
    }

    fn address(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET_PREFIX[0], SUBNET_PREFIX[1], self.inner.number, last)
    }

    /// A new host named `name` (lowercase letters, digits, `-`; unique in this network): its
    /// namespace, its link to the bridge and its address, loopback up, the fault rules empty.
    pub fn host(&self, name: &str) -> io::Result<Host> {
        if name.is_empty()
            || name.len() > 40
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(io::Error::other(format!("bad host name {name:?}")));
        }
        let bridge = &self.inner.bridge;
        let ns = format!("{bridge}-{name}");
        let (ip, veth) = {
            let hosts = lock(&self.inner.hosts);
            if hosts.iter().any(|h| h.ns == ns) {
                return Err(io::Error::other(format!("host {name} exists already")));
            }
            let n = u8::try_from(hosts.len()).unwrap_or(u8::MAX);
            if n >= MAX_HOSTS {
                return Err(io::Error::other("too many hosts on one network"));
            }
            (self.address(n + 2), format!("{bridge}-{}", n + 2))
        };
        // Recorded before it exists, so a failure half-way is still cleaned up by drop.
        lock(&self.inner.hosts).push(HostRecord {
            ns: ns.clone(),
            veth: veth.clone(),
        });
        must("ip", &["netns", "add", &ns])?;
        must(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        must("ip", &["link", "set", "dev", &veth, "master", bridge, "up"])?;
        must(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        )?;
        must("ip", &["-n", &ns, "link", "set", "dev", "eth0", "up"])?;
        must("ip", &["-n", &ns, "link", "set", "dev", "lo", "up"])?;
        nft(
            &ns,
            "table inet faults {\n\
               chain input { type filter hook input priority 0; policy accept; }\n\
               chain output { type filter hook output priority 0; policy accept; }\n\
             }\n",
        )?;
        Ok(Host {
            name: name.to_owned(),
            ip,
            ns,
        })
    }

    /// Every packet between `a` and `b` is dropped, both ways, silently: open connections stall
    /// (only timeouts notice) and new ones time out. Until [`Self::heal`].
    pub fn partition(&self, a: &Host, b: &Host) -> io::Result<()> {
        self.partition_groups(&[a], &[b])
    }

    /// Every host of `side_a` is cut off from every host of `side_b`, as [`Self::partition`].
    pub fn partition_groups(&self, side_a: &[&Host], side_b: &[&Host]) -> io::Result<()> {
        for a in side_a {
            for b in side_b {
                nft(&a.ns, &drop_rules(b.ip))?;
                nft(&b.ns, &drop_rules(a.ip))?;
            }
        }
        Ok(())
    }

    /// Packets from `from` to `to` are dropped; the other way they pass. TCP needs both ways, so no
    /// connection between them opens; one already open keeps delivering `to`'s bytes to `from`
    /// while `from`'s (data and acknowledgements alike) vanish.
    pub fn drop_one_way(&self, from: &Host, to: &Host) -> io::Result<()> {
        nft(
            &from.ns,
            &format!("add rule inet faults output ip daddr {} drop\n", to.ip),
        )
    }

    /// The TCP connections open between `a` and `b` at this moment stall (their packets dropped
    /// both ways, no reset), while new connections between them work: a middlebox that lost its
    /// flows, or a path that died under a long-lived socket. Returns how many connections stalled.
    pub fn stall(&self, a: &Host, b: &Host) -> io::Result<usize> {
        let out = a.run("ss", &["-tnH", "state", "established"])?;
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut rules = String::new();
        let mut stalled = 0;
        for line in listing.lines() {
            // Recv-Q Send-Q Local:Port Peer:Port (the state column is left out with `state`).
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(peer)) = (fields.get(2), fields.get(3)) else {
                continue;
            };
            let (Ok(local), Ok(peer)) = (local.parse::<SocketAddr>(), peer.parse::<SocketAddr>())
            else {
                continue;
            };
            if peer.ip() != IpAddr::V4(b.ip) {
                continue;
            }
            rules.push_str(&format!(
                "add rule inet faults input ip saddr {} tcp sport {} tcp dport {} drop\n\
                 add rule inet faults output ip daddr {} tcp sport {} tcp dport {} drop\n",
                b.ip,
                peer.port(),
                local.port(),
                b.ip,
                local.port(),
                peer.port()
            ));
            stalled += 1;
        }
        if stalled > 0 {
            nft(&a.ns, &rules)?;
        }
        Ok(stalled)
    }

    /// Removes every fault: all drop rules in every host. Stalled connections resume (TCP
    /// retransmits), partitioned hosts reach each other again.
    pub fn heal(&self) -> io::Result<()> {
        let hosts = lock(&self.inner.hosts).clone();
        for host in hosts {
            nft(
                &host.ns,
                "flush chain inet faults input\nflush chain inet faults output\n",
            )?;
        }
        Ok(())
    }
}

/// The drop rules (input and output) for all traffic with `peer`.
fn drop_rules(peer: Ipv4Addr) -> String {
    format!(
        "add rule inet faults input ip saddr {peer} drop\n\
         add rule inet faults output ip daddr {peer} drop\n"
    )
}

impl Drop for Network {
    fn drop(&mut self) {
        let hosts = std::mem::take(&mut *lock(&self.inner.hosts));
        for host in &hosts {
            remove_host(&host.ns, &host.veth);
        }
        let _ = quiet("ip", &["link", "del", &self.inner.bridge]);
    }
}

/// Kills what still runs in `ns` (processes this test started there), then removes its link, the
/// namespace and its `/etc/netns` files.
fn remove_host(ns: &str, veth: &str) {
    if let Ok(out) = quiet("ip", &["netns", "pids", ns]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = quiet("kill", &["-9", pid]);
        }
    }
    let _ = quiet("ip", &["link", "del", veth]);
    let _ = quiet("ip", &["netns", "del", ns]);
    let _ = std::fs::remove_dir_all(etc_netns(ns));
}

/// Removes the networks of processes that died without removing them (killed with SIGKILL, a
/// test binary stopped by a timeout): their bridge's alias names a PID that no longer runs.
fn sweep_abandoned() {
    let Ok(out) = quiet("ip", &["-o", "link", "show", "type", "bridge"]) else {
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let namespaces = quiet("ip", &["netns", "list"])
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    let links = quiet("ip", &["-o", "link", "show"])
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    for line in listing.lines() {
        // "7: pcn1a: <BROADCAST,...> ... \    alias prosaas-calls-testkit pid=123"
        let Some(bridge) = line.split(": ").nth(1).map(|n| n.trim().to_owned()) else {
            continue;
        };
        if !bridge.starts_with(BRIDGE_PREFIX) {
            continue;
        }
        let Some(pid) = line
            .split(ALIAS_PREFIX)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let prefix = format!("{bridge}-");
        for ns in namespaces.lines() {
            let ns = ns.split_whitespace().next().unwrap_or_default();
            if ns.starts_with(&prefix) {
                remove_host(ns, "");
            }
        }
        for link in links.lines() {
            let name = link.split(": ").nth(1).unwrap_or_default();
            let name = name.split('@').next().unwrap_or_default();
            if name.starts_with(&prefix) {
                let _ = quiet("ip", &["link", "del", name]);
            }
        }
        let _ = quiet("ip", &["link", "del", &bridge]);
    }
}

impl Host {
    /// `program` run inside this host's namespace (`ip netns exec`, which execs it: the child's
    /// PID is the program's own). It sees only this host's interfaces, and `/etc/hosts` as
    /// [`Self::map_names`] wrote it.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// Sets a network sysctl (`net.ipv4.tcp_retries2`) inside this host only (`net.*` keys are
    /// per namespace), as a container's `sysctls` would: written to `/proc/sys` from inside.
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        if !key.starts_with("net.")
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        {
            return Err(io::Error::other(format!("not a network sysctl: {key}")));
        }
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit() || b == b' ') {
            return Err(io::Error::other(format!("{key}: not a number: {value:?}")));
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run("sh", &["-c", &format!("echo {value} > {path}")])
            .map(drop)
    }

    /// `ip:port` on this host.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), port)
    }

    /// The namespace's name (`pcnXX-<host>`), for `ip netns exec` by hand while debugging.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// What the programs started on this host from now on (and the ones running, at their next
    /// lookup) resolve `name` to: `/etc/hosts` inside the host, rewritten in place so a running
    /// process sees the change, as a DNS name that moves to another address.
    pub fn map_names(&self, names: &[(&str, Ipv4Addr)]) -> io::Result<()> {
        let dir = etc_netns(&self.ns);
        std::fs::create_dir_all(&dir)?;
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for (name, ip) in names {
            hosts.push_str(&format!("{ip} {name}\n"));
        }
        // `ip netns exec` bind-mounts this file over /etc/hosts: writing the same inode (never a
        // rename) is what a process already running sees.
        std::fs::write(dir.join("hosts"), hosts)
    }

    fn run(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(io::Error::other(format!(
                "{program} {} in {}: {}",
                args.join(" "),
                self.ns,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

fn etc_netns(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

/// Loads `rules` (an nft script) in `ns`, atomically.
fn nft(ns: &str, rules: &str) -> io::Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft in {ns}: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn run(program: &str, args: &[&str]) -> io::Result<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
}

/// Runs a command that must succeed; its error names it and what it said.
fn must(program: &str, args: &[&str]) -> io::Result<()> {
    let out = run(program, args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn quiet(program: &str, args: &[&str]) -> io::Result<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
