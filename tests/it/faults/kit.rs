//! The test kit's hosts and faults do what they say: a partition cuts both ways and heals, a
//! one-way drop cuts one direction only, a stall freezes the connections open at that moment while
//! new ones connect, and dropping the network leaves nothing behind.

use std::time::{Duration, Instant};

use testkit::RedisServer;
use testkit::netns::Host;

use super::network;

/// `redis-cli PING` from `from` to `to`'s Redis, bounded at one second.
fn reaches(from: &Host, to: &Host) -> bool {
    from.command("timeout")
        .args(["1", "redis-cli", "-h", &to.ip.to_string(), "PING"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "PONG")
}

/// UDP datagrams `host` received for a port nobody listens on (`Udp: ... NoPorts` of its
/// `/proc/net/snmp`): a packet that arrived, whatever became of the answer.
fn udp_no_ports(host: &Host) -> u64 {
    let out = host
        .command("cat")
        .arg("/proc/net/snmp")
        .output()
        .expect("cat");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "NoPorts")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// Sends one UDP datagram from `from` to `to`, port 9 (nobody listens).
fn udp_send(from: &Host, to: &Host) {
    let script = format!("echo probe > /dev/udp/{}/9", to.ip);
    let _ = from.command("bash").args(["-c", &script]).status();
}

/// Whether one datagram from `from` arrives at `to`.
fn datagram_arrives(from: &Host, to: &Host) -> bool {
    let before = udp_no_ports(to);
    udp_send(from, to);
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        if udp_no_ports(to) > before {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The replication lag (seconds since the replica's last acknowledgement) `primary` reports.
fn replica_lag(primary: &RedisServer) -> Option<u64> {
    let info = primary.cli(&["INFO", "replication"]).ok()?;
    let line = info.lines().find(|l| l.starts_with("slave0:"))?;
    line.split(',')
        .find_map(|field| field.strip_prefix("lag="))
        .and_then(|lag| lag.trim().parse().ok())
}

#[test]
fn partitions_one_way_drops_and_stalls_cut_what_they_say_and_heal() {
    let Some(net) = network("partitions_one_way_drops_and_stalls_cut_what_they_say_and_heal")
    else {
        return;
    };
    let hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .map(|name| net.host(name).expect("host"))
        .collect();
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    let servers: Vec<RedisServer> = hosts
        .iter()
        .map(|host| RedisServer::start_on(host).expect("redis on its host"))
        .collect();
    assert!(reaches(a, b) && reaches(b, a) && reaches(a, c));
    // The test process (the network's `.1`) reaches every host.
    assert_eq!(servers[1].cli(&["PING"]).unwrap(), "PONG");

    net.partition(a, b).unwrap();
    assert!(
        !reaches(a, b) && !reaches(b, a),
        "a partition cuts both ways"
    );
    assert!(reaches(a, c) && reaches(c, b), "and nothing else");
    net.heal().unwrap();
    assert!(reaches(a, b) && reaches(b, a), "healed");

    net.drop_one_way(a, b).unwrap();
    assert!(!datagram_arrives(a, b), "a's packets to b vanish");
    assert!(datagram_arrives(b, a), "b's packets to a arrive");
    net.heal().unwrap();
    assert!(datagram_arrives(a, b), "healed");

    // b replicates a: one long-lived connection between them.
    servers[1]
        .cli(&["REPLICAOF", &a.ip.to_string(), "6379"])
        .unwrap();
    let synced = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        replica_lag(&servers[0]).is_some_and(|lag| lag <= 1)
    });
    assert!(synced, "b never replicated a");
    let stalled = net.stall(b, a).unwrap();
    assert!(stalled >= 1, "the replication link is open between them");
    // The open link freezes (the replica's acknowledgements stop), and nothing resets it...
    let frozen = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        replica_lag(&servers[0]).is_some_and(|lag| lag >= 2)
    });
    assert!(frozen, "the stalled link kept acknowledging");
    // ...while a new connection between the same hosts works.
    assert!(reaches(b, a), "a new connection is not stalled");
    net.heal().unwrap();
    let resumed = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        replica_lag(&servers[0]).is_some_and(|lag| lag <= 1)
    });
    assert!(resumed, "the link resumed after healing");

    // Dropped, the network leaves no namespace behind.
    let namespace = a.namespace().to_owned();
    drop(servers);
    drop(net);
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&namespace),
        "{namespace} left behind"
    );
}
