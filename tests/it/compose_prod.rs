//! The production compose merge (docker-compose.yml + docker-compose.prod.yml), rendered by
//! `docker-compose config` (no engine needed): it refuses to render without Twilio's signature
//! settings and Redis's password, and its Redis runs with that password.

use std::path::Path;
use std::process::{Command, Output};

use serde_norway::Value;

/// What production requires, each with a value that renders.
const REQUIRED: [(&str, &str); 4] = [
    ("TWILIO_AUTH_TOKEN", "test-auth-token"),
    ("PUBLIC_URL", "https://calls.example.com"),
    ("REDIS_PASSWORD", "test-redis-password"),
    ("REDIS_URL", "redis://:test-redis-password@redis:6379/0"),
];

/// `docker-compose … config` of the production merge with `env` only (an empty `.env`, so a
/// developer's own stays out), as CI runs it.
fn render(env: &[(&str, &str)]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let empty = tempfile::tempdir().unwrap();
    let env_file = empty.path().join(".env");
    std::fs::write(&env_file, "").unwrap();
    let mut command = Command::new("docker-compose");
    command
        .current_dir(root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["-f", "docker-compose.yml", "-f", "docker-compose.prod.yml"])
        .arg("--project-directory")
        .arg(root)
        .arg("--env-file")
        .arg(&env_file)
        .args(["--profile", "monitoring", "config"]);
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .output()
        .expect("docker-compose (v1) is installed: apt-get install docker-compose")
}

#[test]
fn production_refuses_to_render_without_each_required_variable_naming_it() {
    let none = render(&[]);
    assert!(!none.status.success(), "rendered with nothing set");
    for (missing, _) in REQUIRED {
        let others: Vec<(&str, &str)> = REQUIRED
            .into_iter()
            .filter(|(name, _)| *name != missing)
            .collect();
        let out = render(&others);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "rendered without {missing}");
        assert!(
            stderr.contains(&format!("{missing} is required in production")),
            "{missing}: {stderr}"
        );
        // Empty counts as missing (`${VAR:?…}`): `TWILIO_AUTH_TOKEN=` in .env turns nothing off.
        let mut emptied = others.clone();
        emptied.push((missing, ""));
        assert!(
            !render(&emptied).status.success(),
            "rendered with {missing}="
        );
    }
}

#[test]
fn production_renders_with_them_signatures_on_and_a_redis_password() {
    let out = render(&REQUIRED);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let config: Value = serde_norway::from_slice(&out.stdout).unwrap();
    let services = &config["services"];

    let calls = &services["prosaas-calls"]["environment"];
    for (name, value) in REQUIRED {
        if name != "REDIS_PASSWORD" {
            assert_eq!(calls[name].as_str(), Some(value), "{name}");
        }
    }

    let redis = &services["redis"];
    let command: Vec<&str> = redis["command"]
        .as_sequence()
        .expect("redis's command as a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let requirepass = command
        .iter()
        .position(|arg| *arg == "--requirepass")
        .unwrap_or_else(|| panic!("no --requirepass in {command:?}"));
    assert_eq!(command.get(requirepass + 1), Some(&"test-redis-password"));
    // The health check's redis-cli authenticates with the same password.
    assert_eq!(
        redis["environment"]["REDISCLI_AUTH"].as_str(),
        Some("test-redis-password")
    );
    let check: Vec<&str> = redis["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(check.contains(&"redis-cli"), "{check:?}");
}
