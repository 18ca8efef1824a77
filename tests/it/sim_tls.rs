//! The simulator's own binary over TLS: https webhooks and wss streams through the TLS front (real
//! nginx, replicas and Redis) trusting the test's CA given with --ca-file, refused without it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::helpers::*;
use testkit::nginx::{NginxProcess, TlsFiles};
use testkit::tls::TestCa;
use testkit::{RedisServer, ReplicaProcess};

/// The `prosaas-calls-sim` binary of this build, beside the server's. Cargo hands a test only its
/// own package's binaries, so the simulator's is built here (a no-op when it is fresh), with the
/// profile and target directory of this test binary.
fn sim_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let server = Path::new(env!("CARGO_BIN_EXE_prosaas-calls"));
        let profile_dir = server.parent().expect("the binary's directory");
        let target_dir = profile_dir.parent().expect("the target directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build
            .args(["build", "--quiet", "-p", "prosaas-calls-sim"])
            .args(["--bin", "prosaas-calls-sim", "--profile", profile])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // What cargo set for running this test, not for a build: a build script that reads one
        // (ring's reads CARGO_MANIFEST_DIR) would see it change, and the next `cargo test` would
        // rebuild half the tree.
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            let set_for_the_test = name == "OUT_DIR"
                || [
                    "CARGO_MANIFEST_",
                    "CARGO_PKG_",
                    "CARGO_BIN_EXE_",
                    "CARGO_CRATE_",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .iter()
                .any(|prefix| name.starts_with(prefix));
            if set_for_the_test {
                build.env_remove(&key);
            }
        }
        let status = build
            .status()
            .expect("running cargo build for prosaas-calls-sim");
        assert!(status.success(), "cargo build of prosaas-calls-sim failed");
        profile_dir.join("prosaas-calls-sim")
    })
}

/// Runs the simulator with `args` (plus a short run's settings) and its JSON report on stdout.
async fn simulate(args: &[&str]) -> (Output, serde_json::Value) {
    let mut command = tokio::process::Command::new(sim_binary());
    command
        .args(args)
        .args(["--duration", "1", "--ramp", "0.2", "--drain", "2"])
        .args(["--progress", "0", "--json"])
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the simulator ran past 60 s")
        .expect("running prosaas-calls-sim");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_calls_through_the_tls_front() {
    let nginx_bin = nginx_binary();
    // Built before anything starts, so the build's time is not the processes' idle time.
    tokio::task::spawn_blocking(sim_binary).await.unwrap();

    let redis = Arc::new(RedisServer::start_tcp().expect("redis-server"));
    let env = [
        ("REDIS_URL", redis.url()),
        ("MAX_CONCURRENT_CALLS", "10".to_owned()),
        ("RENEW_INTERVAL_SECS", "1".to_owned()),
        ("CALL_LEASE_SECS", "3".to_owned()),
    ];
    let replicas: Vec<ReplicaProcess> = (1..=2)
        .map(|i| ReplicaProcess::spawn(binary(), &format!("sim-tls-{i}"), &env).expect("replica"))
        .collect();
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let ca = TestCa::new("sim-tls").unwrap();
    let cert = ca.server_cert("nginx").unwrap();
    let files = TlsFiles {
        certificate: cert.cert,
        key: cert.key,
    };
    let nginx = NginxProcess::start_tls(&nginx_bin, &ports, &files).expect("nginx with TLS");

    // A fresh Redis may hold admissions for a moment (reason `recovering`): one webhook on the
    // plain listener is retried until admitted and then released, so the runs start from zero.
    let first = sid(710_000);
    let admitted = eventually(Duration::from_secs(10), || async {
        let (status, _) = voice_at(&nginx.url("/twilio/voice"), &first).await;
        (status == 200).then_some(())
    })
    .await;
    assert!(admitted.is_some(), "no webhook admitted");
    assert_eq!(status_at(&nginx.url(""), &first, "completed").await, 204);

    let tls_port = nginx.tls_port.unwrap();
    let ca_file = ca.ca_file().to_str().unwrap();
    // Every call's webhook over https, its stream over wss (the TwiML names the TLS port), every
    // frame echoed; the certificate names 127.0.0.1 and localhost, each checked as such.
    for target in [
        format!("https://127.0.0.1:{tls_port}"),
        format!("https://localhost:{tls_port}"),
    ] {
        let (output, report) = simulate(&[
            "--target",
            &target,
            "--ca-file",
            ca_file,
            "--calls",
            "3",
            "--expect-echo",
        ])
        .await;
        assert!(
            output.status.success(),
            "{target}: {}\n{report:#}\n{}",
            String::from_utf8_lossy(&output.stderr),
            nginx.error_log()
        );
        assert_eq!(report["config"]["target"], target.as_str());
        assert_eq!(report["calls"]["completed"], 3, "{report:#}");
        assert_eq!(report["frames"]["sent"], 3 * 50, "{report:#}");
        assert_eq!(report["frames"]["lost"], 0, "{report:#}");
        assert_eq!(report["errors"], serde_json::json!({}), "{report:#}");
    }

    // Without the test CA the certificate is not trusted: every call fails with that error, named
    // in the report, and the run fails its gate.
    let target = format!("https://127.0.0.1:{tls_port}");
    let (output, report) = simulate(&["--target", &target, "--calls", "2"]).await;
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    assert_eq!(report["calls"]["failed"], 2, "{report:#}");
    assert_eq!(report["errors"]["tls_certificate"], 2, "{report:#}");
    let why = report["error_messages"]["tls_certificate"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("not trusted"), "{why}");
    assert!(why.contains("--ca-file"), "{why}");

    // Every call the simulator placed ended with its stream and gave its slot back.
    let redis = redis.clone();
    let active = tokio::task::spawn_blocking(move || redis.cli(&["GET", "calls:active_count"]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active, "0");
}
