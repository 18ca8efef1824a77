//! `scripts/cluster` as an operator runs it: a two-replica loopback cluster with the TLS front, its
//! `status` when healthy and when a replica is gone (documented exit codes), then `down`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use testkit::free_port;

use crate::helpers::nginx_binary;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster");

/// `status` exit codes, as scripts/cluster documents them.
const HEALTHY: i32 = 0;
const DEGRADED: i32 = 3;
const NOT_RUNNING: i32 = 4;

/// A cluster in its own state directory and ports; dropping it runs `down` (which signals only
/// the PIDs the script recorded), so a failing test leaves no process behind.
struct Cluster {
    state: tempfile::TempDir,
    base: u16,
    nginx: PathBuf,
}

impl Cluster {
    fn run(&self, args: &[&str]) -> Output {
        self.run_with_base(args, Some(&self.base.to_string()))
    }

    /// As [`Cluster::run`], with `CLUSTER_BASE_PORT` set to `base`, or unset.
    fn run_with_base(&self, args: &[&str], base: Option<&str>) -> Output {
        let mut command = Command::new("bash");
        match base {
            Some(base) => command.env("CLUSTER_BASE_PORT", base),
            None => command.env_remove("CLUSTER_BASE_PORT"),
        };
        let out = command
            .arg(SCRIPT)
            .args(args)
            .env("CLUSTER_STATE_DIR", self.state.path())
            .env("CLUSTER_BINARY", env!("CARGO_BIN_EXE_prosaas-calls"))
            .env("NGINX", &self.nginx)
            // Fast ticks keep a fresh Redis's admission hold-off short; short drains keep `down` quick.
            .env("RENEW_INTERVAL_SECS", "1")
            .env("CALL_LEASE_SECS", "3")
            .env("DRAIN_TIMEOUT_SECS", "5")
            .env_remove("REDIS_URL")
            .env_remove("TWILIO_AUTH_TOKEN")
            .env_remove("PUBLIC_URL")
            .env_remove("CLUSTER_TLS_CERT")
            .env_remove("CLUSTER_TLS_KEY")
            .output()
            .expect("run scripts/cluster");
        eprintln!(
            "$ scripts/cluster {} -> {:?}\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The PID the script recorded for `name` ("name pid exe" lines).
    fn pid_of(&self, name: &str) -> u32 {
        let pids = std::fs::read_to_string(self.state.path().join("pids")).expect("pids file");
        pids.lines()
            .find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(name)).then(|| words.next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("{name} not in the pids file:\n{pids}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

/// A base port whose 13 ports the script uses (BASE..BASE+12) were all free a moment ago.
fn free_base() -> u16 {
    for _ in 0..50 {
        let base = free_port().unwrap();
        if base > 65_000 {
            continue;
        }
        if (0..=12).all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok())
        {
            return base;
        }
    }
    panic!("no run of 13 free loopback ports found");
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The status line of one part (`NAME PID STATE DETAIL`).
fn line_of<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no status line for {name}:\n{status}"))
}

fn process_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}/exe")).exists()
        || std::fs::read_link(format!("/proc/{pid}/exe")).is_err()
}

#[test]
fn status_reports_a_replica_down() {
    let nginx = nginx_binary();
    let began = std::time::Instant::now();
    let cluster = Cluster {
        state: tempfile::Builder::new()
            .prefix("prosaas-calls-cluster-")
            .tempdir()
            .unwrap(),
        base: free_base(),
        nginx,
    };

    let up = cluster.run(&["up", "2", "--tls"]);
    assert!(up.status.success(), "up failed");
    let tls_url = format!("https://127.0.0.1:{}", cluster.base + 2);
    assert!(text(&up).contains(&tls_url), "up did not print {tls_url}");
    assert!(cluster.state.path().join("tls/ca.pem").is_file());

    let healthy = cluster.run(&["status"]);
    assert_eq!(healthy.status.code(), Some(HEALTHY));
    let report = text(&healthy);
    assert!(report.contains("cluster: healthy"), "{report}");
    for name in ["redis", "calls-1", "calls-2", "nginx"] {
        let line = line_of(&report, name);
        assert!(line.contains(" running "), "{line}");
    }
    assert!(line_of(&report, "calls-2").contains("/readyz: 200"));
    // The TLS listener is checked with the cluster's CA, verification on.
    assert!(line_of(&report, "nginx").contains("TLS"));
    // The state directory remembers its ports: CLUSTER_STATE_DIR alone finds this cluster, and a
    // CLUSTER_BASE_PORT that disagrees is refused rather than probing some other cluster.
    let remembered = cluster.run_with_base(&["status"], None);
    assert_eq!(remembered.status.code(), Some(HEALTHY));
    assert!(
        text(&remembered).contains(&format!("public URL: http://127.0.0.1:{}", cluster.base)),
        "{}",
        text(&remembered)
    );
    let other = (cluster.base - 100).to_string();
    let mismatch = cluster.run_with_base(&["status"], Some(&other));
    assert_eq!(mismatch.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&mismatch.stderr)
            .contains(&format!("was started on {}", cluster.base)),
        "{mismatch:?}"
    );

    // kill -9 one replica, by the PID the script recorded.
    let victim = cluster.pid_of("calls-2");
    let killed = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !process_gone(victim) {
        assert!(
            std::time::Instant::now() < deadline,
            "calls-2 ({victim}) still there"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let degraded = cluster.run(&["status"]);
    assert_eq!(degraded.status.code(), Some(DEGRADED));
    let report = text(&degraded);
    let down = line_of(&report, "calls-2");
    assert!(down.contains("gone!"), "{down}");
    assert!(down.contains("/readyz: no answer"), "{down}");
    for name in ["redis", "calls-1", "nginx"] {
        let line = line_of(&report, name);
        assert!(line.contains(" running "), "{line}");
    }
    assert!(report.contains("cluster: degraded"), "{report}");

    let down = cluster.run(&["down"]);
    assert!(down.status.success());
    assert_eq!(cluster.run(&["status"]).status.code(), Some(NOT_RUNNING));
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "took {:?}",
        began.elapsed()
    );
}
