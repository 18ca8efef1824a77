//! The simulator's own binary over TLS: https webhooks and wss streams through the TLS front (real
//! nginx, replicas and Redis) trusting the test's CA given with --ca-file, refused without it.

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::*;
use testkit::nginx::{NginxProcess, TlsFiles};
use testkit::tls::TestCa;
use testkit::twilio_api::sim_binary;
use testkit::{RedisServer, ReplicaProcess};

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
