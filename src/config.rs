//! Service configuration (SPEC §2): every environment variable, its default and its validation.
//! Each variable is also a flag of `serve`; a bad value stops start-up naming the variable.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Args;
use thiserror::Error;
use url::Url;

pub const DEFAULT_MAX_CONCURRENT_CALLS: u64 = 50;
pub const DEFAULT_REJECT_MESSAGE: &str =
    "All of our lines are busy right now. Please try again in a few minutes.";

/// The raw values as given on the command line or in the environment; empty means unset.
#[derive(Debug, Clone, Default, Args)]
pub struct RawConfig {
    #[arg(long, env = "MAX_CONCURRENT_CALLS")]
    pub max_concurrent_calls: Option<String>,
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    #[arg(long, env = "PORT")]
    pub port: Option<String>,
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen_addr: Option<String>,
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,
    #[arg(long, env = "REJECT_MODE")]
    pub reject_mode: Option<String>,
    #[arg(long, env = "REJECT_MESSAGE")]
    pub reject_message: Option<String>,
    #[arg(long, env = "REJECT_REDIRECT_URL")]
    pub reject_redirect_url: Option<String>,
    #[arg(long, env = "RETRY_AFTER_SECS")]
    pub retry_after_secs: Option<String>,
    #[arg(long, env = "CALL_STATE_TTL_SECS")]
    pub call_state_ttl_secs: Option<String>,
    #[arg(long, env = "CALL_LOCK_TTL_SECS")]
    pub call_lock_ttl_secs: Option<String>,
    #[arg(long, env = "CALL_LEASE_SECS")]
    pub call_lease_secs: Option<String>,
    #[arg(long, env = "RENEW_INTERVAL_SECS")]
    pub renew_interval_secs: Option<String>,
    #[arg(long, env = "RESERVATION_SECS")]
    pub reservation_secs: Option<String>,
    #[arg(long, env = "DRAIN_TIMEOUT_SECS")]
    pub drain_timeout_secs: Option<String>,
    #[arg(long, env = "REPLICA_ID")]
    pub replica_id: Option<String>,
    #[arg(long, env = "MEDIA_HANDLER")]
    pub media_handler: Option<String>,
    #[arg(long, env = "LOG_FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectMode {
    /// HTTP 503 with `Retry-After`: Twilio runs the number's fallback URL.
    ServiceUnavailable,
    /// HTTP 200 TwiML: say the message, then redirect or hang up.
    Twiml,
    /// HTTP 200 `<Reject reason="busy"/>`.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaHandlerKind {
    Echo,
    Silent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectConfig {
    pub mode: RejectMode,
    pub message: String,
    pub redirect_url: Option<String>,
    pub retry_after_secs: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub max_concurrent_calls: u64,
    pub redis_url: Option<String>,
    pub listen_addr: SocketAddr,
    /// Without a trailing slash, e.g. `https://calls.example.com`.
    pub public_url: Option<String>,
    pub twilio_auth_token: Option<String>,
    pub reject: RejectConfig,
    pub call_state_ttl: Duration,
    pub call_lock_ttl: Duration,
    pub call_lease: Duration,
    pub renew_interval: Duration,
    pub reservation: Duration,
    pub drain_timeout: Duration,
    pub replica_id: String,
    pub media_handler: MediaHandlerKind,
    pub log_format: LogFormat,
    /// SPEC §5's fixed stream timeouts; not configurable by environment, tests shorten them.
    pub stream_timeouts: StreamTimeouts,
}

/// The stream's timeouts; SPEC §5 fixes the defaults, tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTimeouts {
    /// A socket that says nothing for this long is closed (1000) as `idle_timeout`.
    pub idle: Duration,
    /// A socket must send `start` within this long of opening, else it is closed (1008).
    pub start: Duration,
    /// A write that waits this long means the peer stopped reading: closed (1008) as
    /// `slow_consumer`.
    pub write_stall: Duration,
}

impl Default for StreamTimeouts {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30),
            start: Duration::from_secs(10),
            write_stall: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

fn invalid(var: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Treats an empty value (`REDIS_URL=` in a compose file) as unset.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Positive seconds, fractions allowed (`0.5`), so tests can run fast ticks.
fn secs(var: &'static str, value: &Option<String>, default: f64) -> Result<Duration, ConfigError> {
    let Some(raw) = given(value) else {
        return Ok(Duration::from_secs_f64(default));
    };
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err(invalid(var, raw, "expected a positive number of seconds")),
    }
}

fn http_url(var: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| invalid(var, raw, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(var, raw, "expected an http:// or https:// URL"));
    }
    Ok(url)
}

impl Config {
    /// Validates the raw values. Returns the config and the warnings to log once logging is up.
    pub fn from_raw(raw: &RawConfig) -> Result<(Self, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();

        let max_concurrent_calls = match given(&raw.max_concurrent_calls) {
            None => DEFAULT_MAX_CONCURRENT_CALLS,
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n > 0 => n as u64,
                _ => {
                    warnings.push(format!(
                        "MAX_CONCURRENT_CALLS={v:?} is not a positive integer (there is no \
                         unlimited mode); using {DEFAULT_MAX_CONCURRENT_CALLS}"
                    ));
                    DEFAULT_MAX_CONCURRENT_CALLS
                }
            },
        };

        let redis_url = match given(&raw.redis_url) {
            None => None,
            Some(v) => {
                let scheme = v.split_once("://").map(|(s, _)| s).unwrap_or("");
                if !matches!(scheme, "redis" | "rediss" | "redis+unix" | "unix") {
                    return Err(invalid(
                        "REDIS_URL",
                        v,
                        "expected redis://, rediss://, redis+unix:// or unix://",
                    ));
                }
                calls_core::store::RedisStore::check_url(v)
                    .map_err(|e| invalid("REDIS_URL", v, e))?;
                Some(v.to_owned())
            }
        };

        let listen_addr = match (given(&raw.listen_addr), given(&raw.port)) {
            (Some(addr), _) => addr.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "LISTEN_ADDR",
                    addr,
                    "expected host:port, e.g. 127.0.0.1:8080",
                )
            })?,
            (None, Some(port)) => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| invalid("PORT", port, "expected a port number 0-65535"))?;
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
            }
            (None, None) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080),
        };

        let public_url = match given(&raw.public_url) {
            None => None,
            Some(v) => {
                let url = http_url("PUBLIC_URL", v)?;
                if url.query().is_some() || url.fragment().is_some() {
                    return Err(invalid(
                        "PUBLIC_URL",
                        v,
                        "must have no query string or fragment",
                    ));
                }
                Some(v.trim_end_matches('/').to_owned())
            }
        };

        let twilio_auth_token = given(&raw.twilio_auth_token).map(str::to_owned);
        if twilio_auth_token.is_some() && public_url.is_none() {
            return Err(invalid(
                "PUBLIC_URL",
                "",
                "must be set when TWILIO_AUTH_TOKEN is: signatures cannot be checked against a \
                 URL guessed from request headers",
            ));
        }

        let mode = match given(&raw.reject_mode).unwrap_or("503") {
            "503" => RejectMode::ServiceUnavailable,
            "twiml" => RejectMode::Twiml,
            "busy" => RejectMode::Busy,
            other => return Err(invalid("REJECT_MODE", other, "expected 503, twiml or busy")),
        };
        let redirect_url = match given(&raw.reject_redirect_url) {
            None => None,
            Some(v) => Some(http_url("REJECT_REDIRECT_URL", v)?.to_string()),
        };
        let retry_after_secs = match given(&raw.retry_after_secs) {
            None => 30,
            Some(v) => v.parse::<u64>().map_err(|_| {
                invalid("RETRY_AFTER_SECS", v, "expected a whole number of seconds")
            })?,
        };
        let reject = RejectConfig {
            mode,
            message: raw
                .reject_message
                .clone()
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_REJECT_MESSAGE.to_owned()),
            redirect_url,
            retry_after_secs,
        };

        let call_state_ttl = secs("CALL_STATE_TTL_SECS", &raw.call_state_ttl_secs, 3600.0)?;
        let call_lock_ttl = secs("CALL_LOCK_TTL_SECS", &raw.call_lock_ttl_secs, 60.0)?;
        let call_lease = secs("CALL_LEASE_SECS", &raw.call_lease_secs, 30.0)?;
        let renew_interval = secs(
            "RENEW_INTERVAL_SECS",
            &raw.renew_interval_secs,
            call_lease.as_secs_f64() / 3.0,
        )?;
        if renew_interval >= call_lease {
            return Err(invalid(
                "RENEW_INTERVAL_SECS",
                given(&raw.renew_interval_secs).unwrap_or(""),
                format!("must be shorter than CALL_LEASE_SECS ({call_lease:?}), or leases lapse"),
            ));
        }
        if call_lock_ttl <= renew_interval {
            return Err(invalid(
                "CALL_LOCK_TTL_SECS",
                given(&raw.call_lock_ttl_secs).unwrap_or(""),
                format!(
                    "must be longer than RENEW_INTERVAL_SECS ({renew_interval:?}), or locks lapse"
                ),
            ));
        }
        let reservation = secs("RESERVATION_SECS", &raw.reservation_secs, 30.0)?;
        let drain_timeout = secs("DRAIN_TIMEOUT_SECS", &raw.drain_timeout_secs, 600.0)?;

        let replica_id = match given(&raw.replica_id) {
            Some(id) => {
                if id.len() > 128
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(invalid(
                        "REPLICA_ID",
                        id,
                        "expected at most 128 of [A-Za-z0-9._-]",
                    ));
                }
                id.to_owned()
            }
            None => default_replica_id(),
        };

        let media_handler = match given(&raw.media_handler).unwrap_or("echo") {
            "echo" => MediaHandlerKind::Echo,
            "silent" => MediaHandlerKind::Silent,
            other => return Err(invalid("MEDIA_HANDLER", other, "expected echo or silent")),
        };
        let log_format = match given(&raw.log_format).unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("LOG_FORMAT", other, "expected text or json")),
        };

        Ok((
            Self {
                max_concurrent_calls,
                redis_url,
                listen_addr,
                public_url,
                twilio_auth_token,
                reject,
                call_state_ttl,
                call_lock_ttl,
                call_lease,
                renew_interval,
                reservation,
                drain_timeout,
                replica_id,
                media_handler,
                log_format,
                stream_timeouts: StreamTimeouts::default(),
            },
            warnings,
        ))
    }

    /// How long new admissions wait after Redis lost its data: one renewal tick, plus a margin
    /// (half a tick, at least one second) for a tick that runs late or meets a dead connection,
    /// so every live call has re-registered first.
    pub fn recovery_holdoff(&self) -> Duration {
        self.renew_interval + (self.renew_interval / 2).max(Duration::from_secs(1))
    }
}

/// Hostname plus pid: unique per process on a host, readable in dashboards.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".to_owned());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(100)
        .collect();
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: RawConfig) -> Result<(Config, Vec<String>), ConfigError> {
        Config::from_raw(&raw)
    }

    fn with(f: impl FnOnce(&mut RawConfig)) -> RawConfig {
        let mut raw = RawConfig::default();
        f(&mut raw);
        raw
    }

    #[test]
    fn defaults_follow_the_spec() {
        let (c, warnings) = parse(RawConfig::default()).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(c.max_concurrent_calls, 50);
        assert_eq!(c.redis_url, None);
        assert_eq!(c.listen_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.reject.mode, RejectMode::ServiceUnavailable);
        assert_eq!(c.reject.message, DEFAULT_REJECT_MESSAGE);
        assert_eq!(c.reject.retry_after_secs, 30);
        assert_eq!(c.call_state_ttl, Duration::from_secs(3600));
        assert_eq!(c.call_lock_ttl, Duration::from_secs(60));
        assert_eq!(c.call_lease, Duration::from_secs(30));
        assert_eq!(c.renew_interval, Duration::from_secs(10));
        assert_eq!(c.reservation, Duration::from_secs(30));
        assert_eq!(c.drain_timeout, Duration::from_secs(600));
        assert_eq!(c.media_handler, MediaHandlerKind::Echo);
        assert_eq!(c.log_format, LogFormat::Text);
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
        let (c, _) = parse(with(|r| {
            r.redis_url = Some(String::new());
            r.port = Some(" ".into());
        }))
        .unwrap();
        assert_eq!(c.redis_url, None);
        assert_eq!(c.listen_addr.port(), 8080);
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
        for url in [
            "redis://redis:6379/0",
            "rediss://user:pw@redis.example.com:6380/0",
            "redis+unix:///run/redis.sock",
            "unix:///run/redis.sock",
        ] {
            let (c, _) = parse(with(|r| r.redis_url = Some(url.into()))).unwrap();
            assert_eq!(c.redis_url.as_deref(), Some(url));
        }
    }

    #[test]
    fn auth_token_requires_public_url() {
        let err = parse(with(|r| r.twilio_auth_token = Some("secret".into()))).unwrap_err();
        assert_eq!(err.var, "PUBLIC_URL");
        let (c, _) = parse(with(|r| {
            r.twilio_auth_token = Some("secret".into());
            r.public_url = Some("https://calls.example.com/".into());
        }))
        .unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://calls.example.com"));
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
        }
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
        ];
        for (var, raw) in cases {
            let err = parse(raw).unwrap_err();
            assert_eq!(err.var, var, "{err}");
            assert!(err.to_string().starts_with(var));
        }
    }
}
