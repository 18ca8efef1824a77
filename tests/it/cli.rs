//! The operator's command line (docs/reference.md#command-line) as an operator runs it: the built
//! binary against a real Redis with live calls, both the tables and `--json`, and a clear exit 1
//! when Redis fails.

use crate::helpers::*;
use serde_json::Value;
use testkit::{RedisServer, ReplicaProcess};

fn run(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(binary())
        .args(args)
        .env("REDIS_URL", url)
        // The command line reads the cluster's settings from the heartbeats, never its own
        // environment: one set here must change nothing.
        .env("DEFAULT_TENANT_LIMIT", "999")
        .env("TENANT_KEY", "to")
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn tenant_webhook(replica: &ReplicaProcess, n: usize, tenant: &str) -> u16 {
    post_form(
        &replica.url("/twilio/voice"),
        &[("CallSid", sid(n).as_str()), ("AccountSid", tenant)],
        None,
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_calls_and_tenants_show_a_live_cluster() {
    let redis = RedisServer::start().unwrap();
    let env = [
        ("REDIS_URL", redis.url()),
        ("MAX_CONCURRENT_CALLS", "20".to_string()),
        ("TENANT_KEY", "account_sid".to_string()),
        ("DEFAULT_TENANT_LIMIT", "3".to_string()),
        ("RESERVATION_SECS", "600".to_string()),
        ("RENEW_INTERVAL_SECS", "1".to_string()),
    ];
    let a = ReplicaProcess::spawn(binary(), "cli-a", &env).unwrap();
    let _b = ReplicaProcess::spawn(binary(), "cli-b", &env).unwrap();
    let url = redis.url();
    assert_eq!(run(&url, &["tenants", "set", "ACacme", "2"]).0, 0);
    assert_eq!(tenant_webhook(&a, 1, "ACacme").await, 200);
    assert_eq!(tenant_webhook(&a, 2, "ACacme").await, 200);
    assert_eq!(tenant_webhook(&a, 3, "ACacme").await, 503);
    assert_eq!(tenant_webhook(&a, 4, "ACglobex").await, 200);
    // ACinitech has no cap of its own: DEFAULT_TENANT_LIMIT=3 on the replicas holds it.
    for n in 5..8 {
        assert_eq!(tenant_webhook(&a, n, "ACinitech").await, 200);
    }
    assert_eq!(tenant_webhook(&a, 8, "ACinitech").await, 503);
    // Both heartbeats are written within a tick.
    let beats = eventually(std::time::Duration::from_secs(10), || async {
        let (_, out, _) = run(&url, &["status", "--json"]);
        let status: Value = serde_json::from_str(&out).ok()?;
        (status["replicas"].as_array()?.len() == 2).then_some(status)
    })
    .await
    .expect("two heartbeats");
    assert_eq!(beats["max_concurrent_calls"], 20);
    assert_eq!(
        beats["tenant_settings"],
        serde_json::json!({"tenant_key": "account_sid", "default_tenant_limit": 3})
    );
    assert_eq!(beats["replicas_differing"], serde_json::json!([]));
    assert_eq!(beats["calls_active"], 6);
    assert_eq!(beats["calls_rejected_tenant_limit"], 2);
    assert_eq!(
        beats["tenants"]["ACacme"],
        serde_json::json!({"active": 2, "limit": 2, "limit_from": "own"})
    );
    assert_eq!(
        beats["tenants"]["ACinitech"],
        serde_json::json!({"active": 3, "limit": 3, "limit_from": "default"})
    );
    assert_eq!(beats["replicas"][0]["id"], "cli-a");
    assert_eq!(beats["replicas"][0]["stale"], false);
    assert_eq!(beats["replicas"][0]["tenant_key"], "account_sid");

    let (code, table, _) = run(&url, &["status"]);
    assert_eq!(code, 0);
    assert!(table.contains("Live calls 6 of 20"), "{table}");
    assert!(
        table.contains("Tenants: TENANT_KEY=account_sid, DEFAULT_TENANT_LIMIT=3"),
        "{table}"
    );
    assert!(
        table.contains("cli-a") && table.contains("cli-b") && table.contains("account_sid, 3"),
        "{table}"
    );
    // A tenant at the default cap is as much at its cap as one at its own.
    let at_cap = |name: &str| {
        table
            .lines()
            .any(|line| line.contains(name) && line.contains("AT CAP"))
    };
    assert!(at_cap("ACacme") && at_cap("ACinitech"), "{table}");
    assert!(table.contains("3 (default)"), "{table}");
    assert!(
        !table.contains("ACglobex"),
        "only tenants near their caps: {table}"
    );

    let (code, out, _) = run(&url, &["calls", "--json"]);
    assert_eq!(code, 0);
    let calls: Value = serde_json::from_str(&out).unwrap();
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 6);
    assert!(
        calls
            .iter()
            .all(|c| c["status"] == "reserved" && c["replica"] == "cli-a")
    );
    let (_, table, _) = run(&url, &["calls"]);
    assert!(
        table.contains(&sid(4)) && table.contains("ACglobex"),
        "{table}"
    );
    assert!(table.contains("6 live calls"), "{table}");

    let (_, out, _) = run(&url, &["tenants", "list", "--json"]);
    let tenants: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        tenants["ACglobex"],
        serde_json::json!({"active": 1, "limit": 3, "limit_from": "default"})
    );
    let (_, table, _) = run(&url, &["tenants", "list"]);
    assert!(
        table
            .lines()
            .any(|line| line.contains("ACinitech") && line.contains("3 (default)")),
        "{table}"
    );
    assert_eq!(run(&url, &["tenants", "unset", "ACacme"]).0, 0);
    let (_, table, _) = run(&url, &["tenants", "list"]);
    assert!(
        table
            .lines()
            .any(|line| line.contains("ACacme") && line.contains("(default)")),
        "ACacme falls back to the default: {table}"
    );

    // A webhook whose AccountSid no tenant can be named by (never Twilio's) has only the global
    // cap: the replicas apply the same rule as `tenants set`.
    assert_eq!(tenant_webhook(&a, 9, "AC{bad}").await, 200);
    let (_, out, _) = run(&url, &["tenants", "list", "--json"]);
    let tenants: Value = serde_json::from_str(&out).unwrap();
    assert!(tenants.get("AC{bad}").is_none(), "{tenants}");
    let (_, out, _) = run(&url, &["calls", "--json"]);
    assert!(
        out.contains(&sid(9)),
        "admitted under the global cap: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_nobody_uses_is_said_and_a_bad_name_is_refused() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    // No replica yet: the default cap and whether tenants are on are unknown, and said so.
    let (code, _, err) = run(&url, &["tenants", "set", "ACacme", "5"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("no live replica reports its TENANT_KEY (none is running)"),
        "{err}"
    );
    let (_, table, _) = run(&url, &["tenants", "list"]);
    assert!(table.contains("ACacme"), "{table}");
    let (_, table, _) = run(&url, &["status"]);
    assert!(table.contains("Tenants: settings unknown"), "{table}");

    // Replicas without TENANT_KEY: the cap is stored, and the operator is told it is unused.
    let env = [
        ("REDIS_URL", url.clone()),
        ("RENEW_INTERVAL_SECS", "1".to_string()),
    ];
    let _a = ReplicaProcess::spawn(binary(), "plain-a", &env).unwrap();
    eventually(std::time::Duration::from_secs(10), || async {
        let (_, out, _) = run(&url, &["status", "--json"]);
        let status: Value = serde_json::from_str(&out).ok()?;
        (status["replicas"].as_array()?.len() == 1).then_some(())
    })
    .await
    .expect("a heartbeat");
    let (code, out, err) = run(&url, &["tenants", "set", "ACacme", "5"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cap set to 5"), "{out}");
    assert!(
        err.contains("no live replica has TENANT_KEY set") && err.contains("unused"),
        "{err}"
    );
    let (_, table, _) = run(&url, &["status"]);
    assert!(table.contains("Tenants: off (TENANT_KEY=none)"), "{table}");

    // A name no replica would take as a tenant is refused before Redis is touched.
    // Longer than 64 bytes (docs/reference.md#tenants) too, and the error does not echo it whole.
    let long = format!("sip:{}@example.com", "x".repeat(200));
    for bad in ["bad tenant{x}", "AC{x}", " ACacme", "", &long] {
        let (code, _, err) = run(&url, &["tenants", "set", bad, "5"]);
        assert_eq!(code, 1, "{bad:?}: {err}");
        assert!(err.contains("is not a tenant name"), "{bad:?}: {err}");
        assert!(err.len() < 200, "{err}");
    }
    let stored = redis.cli(&["HKEYS", "calls:tenant_limits"]).unwrap();
    assert_eq!(stored.trim(), "ACacme", "only the valid name was stored");
}

#[test]
fn an_unreachable_or_refusing_redis_exits_1_without_the_password() {
    let port = testkit::free_port().unwrap();
    let (code, out, err) = run(&format!("redis://:hunter2@127.0.0.1:{port}/0"), &["status"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("prosaas-calls:") && err.contains(&port.to_string()),
        "{err}"
    );
    assert!(
        !err.contains("hunter2") && !out.contains("hunter2"),
        "{err}"
    );

    let redis = RedisServer::start_tcp_with_password("s3cret").unwrap();
    let wrong = redis.url().replace("s3cret", "wrong-pass");
    let (code, _, err) = run(&wrong, &["calls"]);
    assert_eq!(code, 1);
    assert!(
        !err.contains("wrong-pass") && !err.contains("s3cret"),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("auth") || err.contains("WRONGPASS"),
        "{err}"
    );

    let (code, _, err) = run("", &["tenants", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("REDIS_URL is not set"), "{err}");
}

#[test]
fn a_reader_that_goes_away_is_no_panic() {
    let redis = RedisServer::start().unwrap();
    for args in [
        ["status"].as_slice(),
        &["tenants", "list"],
        &["calls", "--json"],
    ] {
        let mut child = std::process::Command::new(binary())
            .args(args)
            .env("REDIS_URL", redis.url())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary runs");
        // `prosaas-calls … | head -0`: the reader closes before anything is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("it exits");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
    }
}
