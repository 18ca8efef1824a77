//! The configuration's rules, one test each: defaults, every variable's good and bad values,
//! every error named at once, and secrets that never print.

use super::*;

fn parse(raw: RawConfig) -> Result<(Config, Vec<String>), ConfigErrors> {
    Config::from_raw(&raw)
}

fn with(f: impl FnOnce(&mut RawConfig)) -> RawConfig {
    let mut raw = RawConfig::default();
    f(&mut raw);
    raw
}

/// The variables a bad config names, in order.
fn named(raw: RawConfig) -> Vec<&'static str> {
    parse(raw).expect_err("a bad config").vars()
}

fn pem(dir: &tempfile::TempDir, name: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(
        &path,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn defaults_follow_the_spec() {
    let (c, warnings) = parse(RawConfig::default()).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(c.max_concurrent_calls, 50);
    assert_eq!(c.redis, None);
    assert_eq!(c.listen_addr, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.public_url, None);
    assert_eq!(c.twilio_auth_token, None);
    assert_eq!(c.reject.mode, RejectMode::ServiceUnavailable);
    assert_eq!(c.reject.message, DEFAULT_REJECT_MESSAGE);
    assert_eq!(c.reject.retry_after_secs, 30);
    assert_eq!(c.call_state_ttl, Duration::from_secs(3600));
    assert_eq!(c.call_lock_ttl, Duration::from_secs(60));
    assert_eq!(c.call_lease, Duration::from_secs(30));
    assert_eq!(c.renew_interval, Duration::from_secs(10));
    assert_eq!(c.reservation, Duration::from_secs(30));
    assert_eq!(c.drain_timeout, Duration::from_secs(600));
    assert_eq!(c.media.kind(), MediaHandlerKind::Echo);
    assert_eq!(c.media.bridge(), None);
    assert_eq!(c.resume_limit, 2);
    assert_eq!(c.tenant_key, TenantKey::None);
    assert_eq!(c.default_tenant_limit, None);
    assert!(!c.tenant_metrics);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.store_op_timeout, Duration::from_secs(2));
    assert!(c.replica_id.ends_with(&format!("-{}", std::process::id())));
}

#[test]
fn max_concurrent_calls_falls_back_to_50_with_a_warning() {
    for bad in ["0", "-3", "abc", "1.5", "99999999999999999999"] {
        let (c, warnings) = parse(with(|r| r.max_concurrent_calls = Some(bad.into()))).unwrap();
        assert_eq!(c.max_concurrent_calls, 50, "{bad}");
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains(bad),
            "warning names the value: {}",
            warnings[0]
        );
    }
    let (c, warnings) = parse(with(|r| r.max_concurrent_calls = Some("7".into()))).unwrap();
    assert_eq!((c.max_concurrent_calls, warnings.len()), (7, 0));
}

#[test]
fn empty_values_count_as_unset() {
    let (c, warnings) = parse(with(|r| {
        r.redis_url = Some(String::new());
        r.port = Some(" ".into());
        r.redis_tls_ca_file = Some(String::new());
        r.bridge_headers = Some(" ".into());
        r.default_tenant_limit = Some(String::new());
    }))
    .unwrap();
    assert_eq!(c.redis, None);
    assert_eq!(c.listen_addr.port(), 8080);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn listen_addr_overrides_port() {
    let (c, _) = parse(with(|r| {
        r.port = Some("9000".into());
        r.listen_addr = Some("127.0.0.1:7000".into());
    }))
    .unwrap();
    assert_eq!(c.listen_addr, "127.0.0.1:7000".parse().unwrap());
    let (c, _) = parse(with(|r| r.port = Some("9000".into()))).unwrap();
    assert_eq!(c.listen_addr, "0.0.0.0:9000".parse().unwrap());
}

#[test]
fn redis_urls_of_every_documented_scheme_are_accepted() {
    for (url, shown) in [
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        (
            "rediss://user:pw@redis.example.com:6380/0",
            "rediss://redis.example.com:6380/0",
        ),
        (
            "redis+unix:///run/redis.sock",
            "redis+unix:///run/redis.sock?db=0",
        ),
        (
            "unix:///run/redis.sock",
            "redis+unix:///run/redis.sock?db=0",
        ),
        (
            "redis+sentinel://:pw@s1:26379,s2:26380/mymaster/1",
            "redis+sentinel://s1:26379,s2:26380/mymaster/1",
        ),
        (
            "rediss+sentinel://s1/mymaster",
            "rediss+sentinel://s1:26379/mymaster/0",
        ),
    ] {
        let (c, _) = parse(with(|r| r.redis_url = Some(url.into()))).unwrap();
        let redis = c.redis.expect("redis");
        assert!(!format!("{redis:?}").contains("pw"), "{redis:?}");
        assert_eq!(redis.target.to_string(), shown);
        assert_eq!(redis.tls, RedisTls::default());
    }
}

#[test]
fn a_bad_redis_url_is_named_without_its_password() {
    for url in [
        "http://:hunter2@x",
        "redis://:hunter2@host:notaport/0",
        "redis://user:hunter2@host/db",
        "redis+sentinel://:hunter2@s1,s2",
        "redis+sentinel://:hunter2@s1:0/m",
    ] {
        let err = parse(with(|r| r.redis_url = Some(url.into()))).unwrap_err();
        assert_eq!(err.vars(), ["REDIS_URL"], "{url}");
        let shown = err.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***@"), "{shown}");
    }
}

#[test]
fn redis_tls_files_go_with_a_tls_url() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (pem(&dir, "ca.pem"), pem(&dir, "c.pem"), pem(&dir, "k.pem"));
    let (c, _) = parse(with(|r| {
        r.redis_url = Some("rediss://:pw@redis:6380/0".into());
        r.redis_tls_ca_file = Some(ca.clone());
        r.redis_tls_cert_file = Some(cert.clone());
        r.redis_tls_key_file = Some(key.clone());
    }))
    .unwrap();
    let tls = c.redis.unwrap().tls;
    assert_eq!(tls.ca_file.unwrap().to_str(), Some(ca.as_str()));
    let client = tls.client_cert.unwrap();
    assert_eq!(client.cert_file.to_str(), Some(cert.as_str()));
    assert_eq!(client.key_file.to_str(), Some(key.as_str()));

    let (c, _) = parse(with(|r| {
        r.redis_url = Some("rediss+sentinel://s1/m".into());
        r.redis_tls_ca_file = Some(ca.clone());
    }))
    .unwrap();
    assert!(c.redis.unwrap().tls.client_cert.is_none());

    let tls_url = |r: &mut RawConfig| r.redis_url = Some("rediss://redis:6380".into());
    let missing = dir.path().join("missing.pem").to_str().unwrap().to_owned();
    assert_eq!(
        named(with(|r| {
            tls_url(r);
            r.redis_tls_ca_file = Some(missing.clone());
        })),
        ["REDIS_TLS_CA_FILE"]
    );
    assert_eq!(
        named(with(|r| {
            tls_url(r);
            r.redis_tls_cert_file = Some(cert.clone());
        })),
        ["REDIS_TLS_KEY_FILE"]
    );
    assert_eq!(
        named(with(|r| {
            tls_url(r);
            r.redis_tls_key_file = Some(key.clone());
        })),
        ["REDIS_TLS_CERT_FILE"]
    );
    // A forgotten `s` would connect in clear: refused.
    assert_eq!(
        named(with(|r| {
            r.redis_url = Some("redis://redis:6379".into());
            r.redis_tls_ca_file = Some(ca.clone());
        })),
        ["REDIS_TLS_CA_FILE"]
    );
    assert_eq!(
        named(with(|r| {
            r.redis_tls_cert_file = Some(cert.clone());
            r.redis_tls_key_file = Some(key.clone());
        })),
        ["REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE"]
    );
}

#[test]
fn auth_token_requires_public_url() {
    let err = parse(with(|r| r.twilio_auth_token = Some("secret".into()))).unwrap_err();
    assert_eq!(err.vars(), ["PUBLIC_URL"]);
    let (c, _) = parse(with(|r| {
        r.twilio_auth_token = Some("secret".into());
        r.public_url = Some("https://calls.example.com/".into());
    }))
    .unwrap();
    assert_eq!(c.public_url.as_deref(), Some("https://calls.example.com"));
    assert_eq!(c.twilio_auth_token.unwrap().expose(), "secret");
    // A bad PUBLIC_URL is one error, not two.
    let err = parse(with(|r| {
        r.twilio_auth_token = Some("secret".into());
        r.public_url = Some("ftp://x".into());
    }))
    .unwrap_err();
    assert_eq!(err.vars(), ["PUBLIC_URL"]);
}

#[test]
fn renew_interval_defaults_to_a_third_of_the_lease() {
    let (c, _) = parse(with(|r| r.call_lease_secs = Some("3".into()))).unwrap();
    assert_eq!(c.renew_interval, Duration::from_secs(1));
    assert_eq!(c.recovery_holdoff(), Duration::from_secs(2));
}

#[test]
fn reject_modes() {
    for (raw, mode) in [
        ("503", RejectMode::ServiceUnavailable),
        ("twiml", RejectMode::Twiml),
        ("busy", RejectMode::Busy),
    ] {
        let (c, _) = parse(with(|r| r.reject_mode = Some(raw.into()))).unwrap();
        assert_eq!(c.reject.mode, mode);
        assert_eq!(mode.as_str(), raw);
    }
}

#[test]
fn bridge_parses_with_its_url_headers_and_timeout() {
    let (c, warnings) = parse(with(|r| {
        r.media_handler = Some("bridge".into());
        r.bridge_url = Some("wss://agent.example.com/{tenant}?call={call_sid}".into());
        r.bridge_headers = Some(r#"{"Authorization":"Bearer s3cret"}"#.into());
        r.bridge_connect_timeout_secs = Some("2.5".into());
    }))
    .unwrap();
    assert!(warnings.is_empty());
    assert_eq!(c.media.kind(), MediaHandlerKind::Bridge);
    let bridge = c.media.bridge().cloned().expect("bridge");
    assert_eq!(
        bridge.url.template(),
        "wss://agent.example.com/{tenant}?call={call_sid}"
    );
    assert_eq!(bridge.headers.len(), 1);
    assert_eq!(bridge.headers[0].0.as_str(), "authorization");
    assert_eq!(bridge.headers[0].1.expose(), "Bearer s3cret");
    assert_eq!(bridge.connect_timeout, Duration::from_millis(2500));

    let (c, _) = parse(with(|r| {
        r.media_handler = Some("bridge".into());
        r.bridge_url = Some("ws://127.0.0.1:9000".into());
    }))
    .unwrap();
    let bridge = c.media.bridge().cloned().unwrap();
    assert!(bridge.headers.is_empty());
    assert_eq!(bridge.connect_timeout, Duration::from_secs(5));
}

#[test]
fn max_connections_is_a_positive_integer() {
    assert_eq!(parse(RawConfig::default()).unwrap().0.max_connections, 4096);
    let (c, _) = parse(with(|r| r.max_connections = Some("8".into()))).unwrap();
    assert_eq!(c.max_connections, 8);
    for bad in ["0", "-1", "many", "1.5"] {
        assert_eq!(
            named(with(|r| r.max_connections = Some(bad.into()))),
            ["MAX_CONNECTIONS"],
            "{bad}"
        );
    }
}

#[test]
fn bridge_headers_over_plain_ws_to_another_host_warn() {
    let warnings = |url: &str, headers: Option<&str>| {
        parse(with(|r| {
            r.media_handler = Some("bridge".into());
            r.bridge_url = Some(url.into());
            r.bridge_headers = headers.map(Into::into);
        }))
        .unwrap()
        .1
    };
    let token = Some(r#"{"Authorization":"Bearer s3cret"}"#);
    let warned = warnings("ws://agent.internal:9000/media", token);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("BRIDGE_HEADERS") && warned[0].contains("ws://"));
    assert!(!warned[0].contains("s3cret"));
    for (url, headers) in [
        ("wss://agent.example.com/media", token),
        ("ws://agent.internal:9000/media", None),
        ("ws://127.0.0.1:9000/media", token),
        ("ws://localhost:9000/media", token),
        ("ws://[::1]:9000/media", token),
    ] {
        assert!(warnings(url, headers).is_empty(), "{url}");
    }
}

#[test]
fn a_placeholder_in_the_bridge_urls_host_stops_start_up_naming_it() {
    for (url, placeholder) in [
        ("wss://{tenant}.agents.example.com/media", "{tenant}"),
        ("ws://agent:{to}/media", "{to}"),
        ("ws://{from}@agent/media", "{from}"),
        ("wss://agent{call_sid}?x=1", "{call_sid}"),
    ] {
        let err = parse(with(|r| {
            r.media_handler = Some("bridge".into());
            r.bridge_url = Some(url.into());
        }))
        .unwrap_err();
        assert_eq!(err.vars(), ["BRIDGE_URL"], "{url}");
        let text = err.to_string();
        assert!(
            text.contains(placeholder) && text.contains("host"),
            "{url}: {text}"
        );
    }
}

#[test]
fn bad_bridge_settings_stop_start_up() {
    let bridge = |r: &mut RawConfig| r.media_handler = Some("bridge".into());
    assert_eq!(named(with(bridge)), ["BRIDGE_URL"]);
    for url in [
        "https://agent/x",
        "wss://agent/{callsid}",
        "wss://agent/{call_sid",
    ] {
        assert_eq!(
            named(with(|r| {
                bridge(r);
                r.bridge_url = Some(url.into());
            })),
            ["BRIDGE_URL"],
            "{url}"
        );
    }
    let err = parse(with(|r| {
        bridge(r);
        r.bridge_url = Some("wss://agent/{callsid}".into());
    }))
    .unwrap_err();
    assert!(
        err.to_string().contains("unknown placeholder {callsid}"),
        "{err}"
    );
    for headers in [
        r#"{"Authorization": s3cret}"#,
        r#"{"Authorization": 5}"#,
        "s3cret",
    ] {
        let err = parse(with(|r| {
            bridge(r);
            r.bridge_url = Some("wss://agent".into());
            r.bridge_headers = Some(headers.into());
        }))
        .unwrap_err();
        assert_eq!(err.vars(), ["BRIDGE_HEADERS"]);
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(!format!("{err:?}").contains("s3cret"), "{err:?}");
    }
    for timeout in ["0", "-1", "soon"] {
        assert_eq!(
            named(with(|r| {
                bridge(r);
                r.bridge_url = Some("wss://agent".into());
                r.bridge_connect_timeout_secs = Some(timeout.into());
            })),
            ["BRIDGE_CONNECT_TIMEOUT_SECS"]
        );
    }
}

#[test]
fn bridge_settings_without_bridge_are_checked_then_ignored_with_a_warning() {
    let (c, warnings) = parse(with(|r| {
        r.bridge_url = Some("wss://agent".into());
        r.bridge_headers = Some("{}".into());
    }))
    .unwrap();
    assert_eq!(c.media.bridge(), None);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("BRIDGE_URL is set but ignored"));
    assert_eq!(
        named(with(|r| r.bridge_url = Some("https://agent".into()))),
        ["BRIDGE_URL"]
    );
}

#[test]
fn resume_limit_allows_zero() {
    for (raw, limit) in [("0", 0), ("5", 5)] {
        let (c, _) = parse(with(|r| r.resume_limit = Some(raw.into()))).unwrap();
        assert_eq!(c.resume_limit, limit);
    }
    for bad in ["-1", "two", "1.5"] {
        assert_eq!(
            named(with(|r| r.resume_limit = Some(bad.into()))),
            ["RESUME_LIMIT"]
        );
    }
}

#[test]
fn tenant_settings() {
    for (raw, key) in [
        ("none", TenantKey::None),
        ("account_sid", TenantKey::AccountSid),
        ("to", TenantKey::To),
    ] {
        let (c, _) = parse(with(|r| r.tenant_key = Some(raw.into()))).unwrap();
        assert_eq!(c.tenant_key, key);
    }
    let (c, warnings) = parse(with(|r| {
        r.tenant_key = Some("account_sid".into());
        r.default_tenant_limit = Some("10".into());
        r.tenant_metrics = Some("1".into());
    }))
    .unwrap();
    assert_eq!(
        (c.default_tenant_limit, c.tenant_metrics, warnings.len()),
        (Some(10), true, 0)
    );
    let (c, _) = parse(with(|r| r.tenant_metrics = Some("0".into()))).unwrap();
    assert!(!c.tenant_metrics);
    for bad in ["0", "-1", "ten", "1.5"] {
        assert_eq!(
            named(with(|r| {
                r.tenant_key = Some("to".into());
                r.default_tenant_limit = Some(bad.into());
            })),
            ["DEFAULT_TENANT_LIMIT"],
            "{bad}"
        );
    }
    assert_eq!(
        named(with(|r| r.tenant_key = Some("from".into()))),
        ["TENANT_KEY"]
    );
    assert_eq!(
        named(with(|r| r.tenant_metrics = Some("maybe".into()))),
        ["TENANT_METRICS"]
    );
    // Without a tenant key the tenant settings do nothing: said, not refused.
    let (_, warnings) = parse(with(|r| {
        r.default_tenant_limit = Some("10".into());
        r.tenant_metrics = Some("1".into());
    }))
    .unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
}

#[test]
fn every_bad_value_names_its_variable() {
    let cases: Vec<(&str, RawConfig)> = vec![
        ("REDIS_URL", with(|r| r.redis_url = Some("http://x".into()))),
        ("PORT", with(|r| r.port = Some("70000".into()))),
        (
            "LISTEN_ADDR",
            with(|r| r.listen_addr = Some("nowhere".into())),
        ),
        (
            "PUBLIC_URL",
            with(|r| r.public_url = Some("ftp://x".into())),
        ),
        (
            "PUBLIC_URL",
            with(|r| r.public_url = Some("https://x/?a=1".into())),
        ),
        ("REJECT_MODE", with(|r| r.reject_mode = Some("404".into()))),
        (
            "REJECT_REDIRECT_URL",
            with(|r| r.reject_redirect_url = Some("not a url".into())),
        ),
        (
            "RETRY_AFTER_SECS",
            with(|r| r.retry_after_secs = Some("-1".into())),
        ),
        (
            "CALL_STATE_TTL_SECS",
            with(|r| r.call_state_ttl_secs = Some("0".into())),
        ),
        (
            "CALL_LOCK_TTL_SECS",
            with(|r| r.call_lock_ttl_secs = Some("x".into())),
        ),
        (
            "CALL_LEASE_SECS",
            with(|r| r.call_lease_secs = Some("-5".into())),
        ),
        (
            "RENEW_INTERVAL_SECS",
            with(|r| r.renew_interval_secs = Some("30".into())),
        ),
        (
            "CALL_LOCK_TTL_SECS",
            with(|r| r.call_lock_ttl_secs = Some("5".into())),
        ),
        (
            "RESERVATION_SECS",
            with(|r| r.reservation_secs = Some("NaN".into())),
        ),
        (
            "DRAIN_TIMEOUT_SECS",
            with(|r| r.drain_timeout_secs = Some("inf".into())),
        ),
        ("REPLICA_ID", with(|r| r.replica_id = Some("a b".into()))),
        (
            "MEDIA_HANDLER",
            with(|r| r.media_handler = Some("loud".into())),
        ),
        ("LOG_FORMAT", with(|r| r.log_format = Some("xml".into()))),
        (
            "REDIS_TLS_CA_FILE",
            with(|r| {
                r.redis_url = Some("rediss://redis".into());
                r.redis_tls_ca_file = Some("/nonexistent/ca.pem".into());
            }),
        ),
        (
            "BRIDGE_URL",
            with(|r| r.bridge_url = Some("ws://{nope}".into())),
        ),
        (
            "BRIDGE_HEADERS",
            with(|r| r.bridge_headers = Some("[]".into())),
        ),
        (
            "BRIDGE_CONNECT_TIMEOUT_SECS",
            with(|r| r.bridge_connect_timeout_secs = Some("0".into())),
        ),
        ("RESUME_LIMIT", with(|r| r.resume_limit = Some("-1".into()))),
        ("TENANT_KEY", with(|r| r.tenant_key = Some("x".into()))),
        (
            "DEFAULT_TENANT_LIMIT",
            with(|r| r.default_tenant_limit = Some("0".into())),
        ),
        (
            "TENANT_METRICS",
            with(|r| r.tenant_metrics = Some("2".into())),
        ),
    ];
    for (var, raw) in cases {
        let err = parse(raw).unwrap_err();
        assert_eq!(err.vars(), [var], "{err}");
        assert!(err.to_string().starts_with(var));
    }
}

#[test]
fn every_bad_variable_is_named_at_once() {
    let err = parse(with(|r| {
        r.redis_url = Some("http://:hunter2@x".into());
        r.port = Some("70000".into());
        r.reject_mode = Some("404".into());
        r.call_lease_secs = Some("-5".into());
        r.media_handler = Some("bridge".into());
        r.bridge_headers = Some("{bad".into());
        r.tenant_key = Some("x".into());
        r.default_tenant_limit = Some("0".into());
        // Fine on its own: still no error for it.
        r.renew_interval_secs = Some("5".into());
    }))
    .unwrap_err();
    assert_eq!(
        err.vars(),
        [
            "REDIS_URL",
            "PORT",
            "REJECT_MODE",
            "CALL_LEASE_SECS",
            "BRIDGE_HEADERS",
            "BRIDGE_URL",
            "TENANT_KEY",
            "DEFAULT_TENANT_LIMIT",
        ]
    );
    let text = err.to_string();
    assert_eq!(text.lines().count(), 8, "one line per variable:\n{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn one_typo_is_one_error() {
    // A bad lease must not also blame the tick or the lock checked against it.
    assert_eq!(
        named(with(|r| {
            r.call_lease_secs = Some("3s".into());
            r.renew_interval_secs = Some("1".into());
            r.call_lock_ttl_secs = Some("2".into());
        })),
        ["CALL_LEASE_SECS"]
    );
}

#[test]
fn debug_of_the_config_redacts_every_secret() {
    let (c, _) = parse(with(|r| {
        r.redis_url = Some("redis://user:hunter2@redis:6379/0".into());
        r.twilio_auth_token = Some("tok3n-s3cret".into());
        r.public_url = Some("https://calls.example.com".into());
        r.media_handler = Some("bridge".into());
        r.bridge_url = Some("wss://agent.example.com".into());
        r.bridge_headers = Some(r#"{"Authorization":"Bearer b3arer"}"#.into());
    }))
    .unwrap();
    let debug = format!("{c:?}");
    for secret in ["hunter2", "tok3n-s3cret", "b3arer"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(
        debug.contains("redis://redis:6379/0"),
        "the address stays: {debug}"
    );
    assert!(
        debug.contains("authorization"),
        "header names stay: {debug}"
    );
}

#[test]
fn every_flag_has_help_and_secrets_hide_their_values() {
    let cmd = <RawConfig as clap::Args>::augment_args(clap::Command::new("serve"));
    let mut count = 0;
    for arg in cmd.get_arguments() {
        count += 1;
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        assert!(!help.is_empty(), "--{} has no help", arg.get_id());
        assert!(
            arg.get_env().is_some(),
            "--{} has no variable",
            arg.get_id()
        );
        let secret = matches!(
            arg.get_id().as_str(),
            "redis_url"
                | "twilio_auth_token"
                | "bridge_headers"
                | "api_token"
                | "twilio_api_key_secret"
        );
        assert_eq!(
            arg.is_hide_env_values_set(),
            secret,
            "--{}: hide_env_values",
            arg.get_id()
        );
    }
    assert_eq!(count, 46);
}

#[test]
fn the_waiting_room_and_whatsapp_are_checked_whole() {
    // Off by default; on with WAIT_MAX_SECS > 0.
    let (config, _) = Config::from_raw(&RawConfig::default()).unwrap();
    assert_eq!(config.waiting_room.settings, None);
    assert_eq!(config.twilio_api.base, "https://api.twilio.com");
    let raw = RawConfig {
        wait_max_secs: Some("90".into()),
        wait_poll_secs: Some("4".into()),
        wait_overflow_digit: Some("#".into()),
        ..RawConfig::default()
    };
    let (config, _) = Config::from_raw(&raw).unwrap();
    let settings = config.waiting_room.settings.unwrap();
    assert_eq!(settings.max_wait, Duration::from_secs(90));
    assert_eq!(settings.poll, Duration::from_secs(4));
    assert_eq!(settings.max_callers, 100);
    assert_eq!(config.waiting_room.overflow_digit, '#');
    // The default message (20 words) takes 8 s to say: with a 1 s pause and the gather's second
    // the hold lasts 10 s, past the 4 s poll, and a caller counts as gone only after two such holds.
    let hold = settings.hold.as_millis();
    assert!((9_999..=10_001).contains(&hold), "{hold} ms");
    assert_eq!(settings.gone_after(), settings.hold * 2);

    // Bad values, and WHATSAPP_FROM without an account or credentials, name their variables.
    let raw = RawConfig {
        wait_max_secs: Some("-1".into()),
        wait_max_callers: Some("0".into()),
        wait_overflow_digit: Some("12".into()),
        hold_music_url: Some("ftp://x".into()),
        whatsapp_from: Some("whatsapp:+14155238886".into()),
        twilio_api_key_sid: Some("SK1".into()),
        twilio_api_base: Some("http://api.example.com".into()),
        ..RawConfig::default()
    };
    let errors = Config::from_raw(&raw).unwrap_err();
    assert_eq!(
        errors.vars(),
        [
            "TWILIO_API_KEY_SECRET",
            "TWILIO_API_BASE",
            "WAIT_MAX_SECS",
            "WAIT_MAX_CALLERS",
            "HOLD_MUSIC_URL",
            "WAIT_OVERFLOW_DIGIT",
            "TWILIO_ACCOUNT_SID",
        ]
    );

    // An API key's secret is never shown, in an error or in Debug.
    let raw = RawConfig {
        whatsapp_from: Some("whatsapp:+14155238886".into()),
        twilio_account_sid: Some("AC0123456789abcdef0123456789abcdef".into()),
        twilio_api_key_sid: Some("SK0123456789abcdef0123456789abcdef".into()),
        twilio_api_key_secret: Some("hunter2-key-secret".into()),
        ..RawConfig::default()
    };
    let (config, _) = Config::from_raw(&raw).unwrap();
    assert!(config.twilio_api.credentials.is_some());
    assert!(config.waiting_room.whatsapp.is_some());
    assert!(!format!("{config:?}").contains("hunter2-key-secret"));
    let raw = RawConfig {
        twilio_account_sid: Some("AC0123".into()),
        ..raw
    };
    let errors = Config::from_raw(&raw).unwrap_err();
    assert!(!errors.to_string().contains("hunter2-key-secret"));
    assert_eq!(errors.vars(), ["TWILIO_ACCOUNT_SID"]);
}

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

#[test]
fn outbound_needs_its_token_public_url_and_twilio_credentials() {
    // Off by default; the pace and the reserve have their defaults.
    let (c, _) = parse(RawConfig::default()).unwrap();
    assert_eq!(c.outbound, None);
    assert_eq!(c.twilio_api.base, "https://api.twilio.com");
    // On, with an API key.
    let on = |raw: &mut RawConfig| {
        raw.api_token = Some("s3cret-api".into());
        raw.public_url = Some("https://calls.example.com".into());
        raw.twilio_account_sid = Some(ACCOUNT.into());
        raw.twilio_api_key_sid = Some("SK1".into());
        raw.twilio_api_key_secret = Some("k3y-s3cret".into());
    };
    let (c, _) = parse(with(|raw| {
        on(raw);
        raw.outbound_cps = Some("20".into());
        raw.inbound_reserve = Some("5".into());
    }))
    .unwrap();
    let outbound = c.outbound.clone().unwrap();
    assert_eq!(outbound.interval, Duration::from_millis(50));
    assert_eq!(outbound.inbound_reserve, 5);
    assert_eq!(c.twilio_api.credentials.as_ref().unwrap().username(), "SK1");
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("s3cret-api") && !debug.contains("k3y-s3cret"),
        "{debug}"
    );
    // The auth token stands in for a key.
    let (c, _) = parse(with(|raw| {
        on(raw);
        raw.twilio_api_key_sid = None;
        raw.twilio_api_key_secret = None;
        raw.twilio_auth_token = Some("t0ken".into());
    }))
    .unwrap();
    assert_eq!(
        c.twilio_api.credentials.as_ref().unwrap().username(),
        ACCOUNT
    );
    // What it needs, each named.
    assert_eq!(
        named(with(|raw| {
            on(raw);
            raw.public_url = None;
        })),
        ["PUBLIC_URL"]
    );
    assert_eq!(
        named(with(|raw| {
            on(raw);
            raw.twilio_account_sid = None;
        })),
        ["TWILIO_ACCOUNT_SID"]
    );
    assert_eq!(
        named(with(|raw| {
            on(raw);
            raw.twilio_api_key_secret = None;
        })),
        ["TWILIO_API_KEY_SECRET", "TWILIO_API_KEY_SID"]
    );
    // A reserve not below the cap, a bad pace, a bad base.
    assert_eq!(
        named(with(|raw| {
            on(raw);
            raw.max_concurrent_calls = Some("10".into());
            raw.inbound_reserve = Some("10".into());
        })),
        ["INBOUND_RESERVE"]
    );
    assert_eq!(
        named(with(|raw| raw.outbound_cps = Some("0".into()))),
        ["OUTBOUND_CPS"]
    );
    assert_eq!(
        named(with(|raw| {
            on(raw);
            raw.twilio_api_base = Some("http://api.example.com".into());
        })),
        ["TWILIO_API_BASE"]
    );
}
