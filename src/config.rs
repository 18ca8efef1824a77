//! Service configuration (SPEC §2): every environment variable, its default and its validation.
//! Each variable is also a flag of `serve`; every bad value is named at once and stops start-up.
//!
//! Secrets (`REDIS_URL`'s credentials, `TWILIO_AUTH_TOKEN`, `BRIDGE_HEADERS`' values) are held in
//! [`Secret`], hidden from `--help`, and never repeated in an error.

mod bridge;
mod redis;
mod secret;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Args;
use thiserror::Error;
use url::Url;

pub use self::bridge::{
    BridgeConfig, BridgeUrl, DEFAULT_BRIDGE_CONNECT_TIMEOUT_SECS, Placeholder, parse_headers,
};
pub use self::redis::{
    ClientCert, DEFAULT_REDIS_PORT, DEFAULT_SENTINEL_PORT, HostPort, RedisConfig, RedisTarget,
    RedisTls, SentinelTarget,
};
pub use self::secret::{Secret, redact_userinfo};

pub const DEFAULT_MAX_CONCURRENT_CALLS: u64 = 50;
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_REJECT_MODE: RejectMode = RejectMode::ServiceUnavailable;
pub const DEFAULT_REJECT_MESSAGE: &str =
    "All of our lines are busy right now. Please try again in a few minutes.";
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 30;
pub const DEFAULT_CALL_STATE_TTL_SECS: u64 = 3600;
pub const DEFAULT_CALL_LOCK_TTL_SECS: u64 = 60;
pub const DEFAULT_CALL_LEASE_SECS: u64 = 30;
/// `RENEW_INTERVAL_SECS` defaults to the lease divided by this: a lease survives two missed ticks.
pub const DEFAULT_RENEWS_PER_LEASE: u32 = 3;
pub const DEFAULT_RESERVATION_SECS: u64 = 30;
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 600;
pub const DEFAULT_MEDIA_HANDLER: MediaHandlerKind = MediaHandlerKind::Echo;
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;
pub const DEFAULT_RESUME_LIMIT: u32 = 2;
pub const DEFAULT_TENANT_KEY: TenantKey = TenantKey::None;
/// Not a variable: the bound on one state-store operation (connect, command, script).
pub const DEFAULT_STORE_OP_TIMEOUT: Duration = Duration::from_secs(2);

/// A flag's help line with its default, so `--help` and the constants never disagree.
fn with_default(text: &str, default: impl fmt::Display) -> String {
    format!("{text} [default: {default}]")
}

/// The raw values as given on the command line or in the environment; empty means unset.
/// `serve --help` is the reference: one line per variable. Secrets hide their values there.
/// No `Debug`: it holds the secrets unwrapped; [`Config`] is what may be printed.
#[derive(Clone, Default, Args)]
pub struct RawConfig {
    #[arg(long, env = "MAX_CONCURRENT_CALLS", help = with_default(
        "Global cap on live calls across all replicas; not a positive integer: a warning and the default",
        DEFAULT_MAX_CONCURRENT_CALLS))]
    pub max_concurrent_calls: Option<String>,
    #[arg(
        long,
        env = "REDIS_URL",
        hide_env_values = true,
        help = "Shared state: redis://, rediss://, redis+unix://, unix://, redis+sentinel://, rediss+sentinel://; unset: in-process state, one replica only"
    )]
    pub redis_url: Option<String>,
    #[arg(
        long,
        env = "REDIS_TLS_CA_FILE",
        help = "PEM file of the CA(s) that sign the Redis server's certificate (rediss only) [default: the system's roots]"
    )]
    pub redis_tls_ca_file: Option<String>,
    #[arg(
        long,
        env = "REDIS_TLS_CERT_FILE",
        help = "PEM client certificate for a Redis that requires one (rediss only; with REDIS_TLS_KEY_FILE)"
    )]
    pub redis_tls_cert_file: Option<String>,
    #[arg(
        long,
        env = "REDIS_TLS_KEY_FILE",
        help = "PEM private key of REDIS_TLS_CERT_FILE"
    )]
    pub redis_tls_key_file: Option<String>,
    #[arg(long, env = "PORT", help = with_default(
        "HTTP/WebSocket port on all interfaces", DEFAULT_PORT))]
    pub port: Option<String>,
    #[arg(
        long,
        env = "LISTEN_ADDR",
        help = "host:port to listen on, e.g. 127.0.0.1:8080; overrides PORT"
    )]
    pub listen_addr: Option<String>,
    #[arg(
        long,
        env = "PUBLIC_URL",
        help = "External base URL Twilio uses (https://calls.example.com); the stream URL and signed URLs are built from it"
    )]
    pub public_url: Option<String>,
    #[arg(
        long,
        env = "TWILIO_AUTH_TOKEN",
        hide_env_values = true,
        help = "Set: every Twilio request must carry a valid X-Twilio-Signature (needs PUBLIC_URL); unset: not checked"
    )]
    pub twilio_auth_token: Option<String>,
    #[arg(long, env = "REJECT_MODE", help = with_default(
        "Answer over the limit: 503 (Retry-After), twiml (say, then redirect or hang up) or busy",
        DEFAULT_REJECT_MODE.as_str()))]
    pub reject_mode: Option<String>,
    #[arg(
        long,
        env = "REJECT_MESSAGE",
        help = "What twiml mode (and the fallback) says [default: all of our lines are busy…]"
    )]
    pub reject_message: Option<String>,
    #[arg(
        long,
        env = "REJECT_REDIRECT_URL",
        help = "Where twiml mode redirects after the message (e.g. a WhatsApp flow); unset: hang up"
    )]
    pub reject_redirect_url: Option<String>,
    #[arg(long, env = "RETRY_AFTER_SECS", help = with_default(
        "Retry-After of a 503, in seconds", DEFAULT_RETRY_AFTER_SECS))]
    pub retry_after_secs: Option<String>,
    #[arg(long, env = "CALL_STATE_TTL_SECS", help = with_default(
        "TTL of a call's state in Redis, in seconds", DEFAULT_CALL_STATE_TTL_SECS))]
    pub call_state_ttl_secs: Option<String>,
    #[arg(long, env = "CALL_LOCK_TTL_SECS", help = with_default(
        "TTL of a call's stream lock, in seconds", DEFAULT_CALL_LOCK_TTL_SECS))]
    pub call_lock_ttl_secs: Option<String>,
    #[arg(long, env = "CALL_LEASE_SECS", help = with_default(
        "A live call's slot lease, in seconds: a dead replica's slots free within it",
        DEFAULT_CALL_LEASE_SECS))]
    pub call_lease_secs: Option<String>,
    #[arg(
        long,
        env = "RENEW_INTERVAL_SECS",
        help = "Renewal tick, in seconds: leases, locks, counters, reclaim, heartbeat [default: lease / 3]"
    )]
    pub renew_interval_secs: Option<String>,
    #[arg(long, env = "RESERVATION_SECS", help = with_default(
        "How long a slot reserved by the voice webhook waits for its stream, in seconds",
        DEFAULT_RESERVATION_SECS))]
    pub reservation_secs: Option<String>,
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", help = with_default(
        "On SIGTERM/SIGINT, how long live calls may go on, in seconds", DEFAULT_DRAIN_TIMEOUT_SECS))]
    pub drain_timeout_secs: Option<String>,
    #[arg(
        long,
        env = "REPLICA_ID",
        help = "Names this replica in state and metrics [default: hostname-pid]"
    )]
    pub replica_id: Option<String>,
    #[arg(long, env = "MEDIA_HANDLER", help = with_default(
        "What is done with caller audio: echo, silent or bridge (to a voice agent)",
        DEFAULT_MEDIA_HANDLER.as_str()))]
    pub media_handler: Option<String>,
    #[arg(long, env = "LOG_FORMAT", help = with_default(
        "Log lines as text or json", DEFAULT_LOG_FORMAT.as_str()))]
    pub log_format: Option<String>,
    #[arg(
        long,
        env = "BRIDGE_URL",
        help = "bridge: the voice agent's ws:// or wss:// URL; may hold {call_sid} {account_sid} {from} {to} {tenant}"
    )]
    pub bridge_url: Option<String>,
    #[arg(
        long,
        env = "BRIDGE_HEADERS",
        hide_env_values = true,
        help = r#"bridge: JSON object of extra handshake headers for the agent, e.g. {"Authorization":"Bearer …"}; never logged"#
    )]
    pub bridge_headers: Option<String>,
    #[arg(long, env = "BRIDGE_CONNECT_TIMEOUT_SECS", help = with_default(
        "bridge: how long the agent has to accept the WebSocket, in seconds",
        DEFAULT_BRIDGE_CONNECT_TIMEOUT_SECS))]
    pub bridge_connect_timeout_secs: Option<String>,
    #[arg(long, env = "RESUME_LIMIT", help = with_default(
        "How many times one call may continue on a new stream after losing its stream; 0: never",
        DEFAULT_RESUME_LIMIT))]
    pub resume_limit: Option<String>,
    #[arg(long, env = "TENANT_KEY", help = with_default(
        "Which webhook field names a call's tenant: none, account_sid or to",
        DEFAULT_TENANT_KEY.as_str()))]
    pub tenant_key: Option<String>,
    #[arg(
        long,
        env = "DEFAULT_TENANT_LIMIT",
        help = "Cap for a tenant without its own limit (a positive integer); unset: only the global cap"
    )]
    pub default_tenant_limit: Option<String>,
    #[arg(
        long,
        env = "TENANT_METRICS",
        help = "1: per-tenant labels in Prometheus metrics [default: 0]"
    )]
    pub tenant_metrics: Option<String>,
}

/// A closed set of spellings for one variable; `as_str` is the spelling, used in logs too.
trait Choice: Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
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

impl RejectMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ServiceUnavailable => "503",
            Self::Twiml => "twiml",
            Self::Busy => "busy",
        }
    }
}

impl Choice for RejectMode {
    const ALL: &'static [Self] = &[Self::ServiceUnavailable, Self::Twiml, Self::Busy];
    fn as_str(self) -> &'static str {
        Self::as_str(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaHandlerKind {
    Echo,
    Silent,
    /// Relays the call to a voice agent (SPEC §8); settings in [`Config::bridge`].
    Bridge,
}

impl MediaHandlerKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Silent => "silent",
            Self::Bridge => "bridge",
        }
    }
}

impl Choice for MediaHandlerKind {
    const ALL: &'static [Self] = &[Self::Echo, Self::Silent, Self::Bridge];
    fn as_str(self) -> &'static str {
        Self::as_str(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

impl Choice for LogFormat {
    const ALL: &'static [Self] = &[Self::Text, Self::Json];
    fn as_str(self) -> &'static str {
        Self::as_str(self)
    }
}

/// `TENANT_KEY` (SPEC §10): which webhook field names a call's tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantKey {
    /// No tenants: only the global cap.
    None,
    /// `AccountSid` (e.g. one Twilio subaccount per business).
    AccountSid,
    /// `To`: the number called.
    To,
}

impl TenantKey {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::AccountSid => "account_sid",
            Self::To => "to",
        }
    }
}

impl Choice for TenantKey {
    const ALL: &'static [Self] = &[Self::None, Self::AccountSid, Self::To];
    fn as_str(self) -> &'static str {
        Self::as_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectConfig {
    pub mode: RejectMode,
    pub message: String,
    pub redirect_url: Option<String>,
    pub retry_after_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub max_concurrent_calls: u64,
    /// `REDIS_URL` and `REDIS_TLS_*`; `None`: in-process state, one replica.
    pub redis: Option<RedisConfig>,
    pub listen_addr: SocketAddr,
    /// Without a trailing slash, e.g. `https://calls.example.com`.
    pub public_url: Option<String>,
    pub twilio_auth_token: Option<Secret<String>>,
    pub reject: RejectConfig,
    pub call_state_ttl: Duration,
    pub call_lock_ttl: Duration,
    pub call_lease: Duration,
    pub renew_interval: Duration,
    pub reservation: Duration,
    pub drain_timeout: Duration,
    pub replica_id: String,
    pub media_handler: MediaHandlerKind,
    /// Set exactly when `media_handler` is `Bridge`.
    pub bridge: Option<BridgeConfig>,
    /// `RESUME_LIMIT`: continuations granted per call (SPEC §9); 0 turns them off.
    pub resume_limit: u32,
    pub tenant_key: TenantKey,
    /// `DEFAULT_TENANT_LIMIT`: the cap of a tenant without its own; `None`: only the global cap.
    pub default_tenant_limit: Option<u64>,
    /// `TENANT_METRICS=1`: per-tenant Prometheus labels.
    pub tenant_metrics: bool,
    pub log_format: LogFormat,
    /// SPEC §5's fixed stream timeouts; not configurable by environment, tests shorten them.
    pub stream_timeouts: StreamTimeouts,
    /// Bound on one state-store operation; not configurable by environment.
    pub store_op_timeout: Duration,
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

/// One bad variable: its name, its value as it may be shown (redacted, or not at all), and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ConfigError {
    pub var: &'static str,
    /// `None` where the value must not be repeated (`BRIDGE_HEADERS`) or there is none.
    pub shown: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shown {
            Some(value) => write!(f, "{}={value:?}: {}", self.var, self.reason),
            None => write!(f, "{}: {}", self.var, self.reason),
        }
    }
}

impl ConfigError {
    fn new(var: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            var,
            shown: Some(value.to_owned()),
            reason: reason.into(),
        }
    }

    fn hidden(var: &'static str, reason: impl Into<String>) -> Self {
        Self {
            var,
            shown: None,
            reason: reason.into(),
        }
    }
}

/// Every bad variable of one start-up, in the order of SPEC §2; never empty.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The variables named, in order.
    pub fn vars(&self) -> Vec<&'static str> {
        self.0.iter().map(|e| e.var).collect()
    }
}

/// One line per bad variable.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            let newline = if i == 0 { "" } else { "\n" };
            write!(f, "{newline}{err}")?;
        }
        Ok(())
    }
}

/// Gathers every bad variable of one parse, carrying on with defaults after each.
#[derive(Default)]
struct Checker {
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
}

impl Checker {
    fn ok<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|err| self.errors.push(err)).ok()
    }

    /// The value, or `fallback` once the error is recorded: later checks still run.
    fn or<T>(&mut self, result: Result<T, ConfigError>, fallback: T) -> T {
        self.ok(result).unwrap_or(fallback)
    }

    fn failed(&self, var: &str) -> bool {
        self.errors.iter().any(|e| e.var == var)
    }

    fn unused(&mut self, var: &str, unless: &str) {
        self.warnings
            .push(format!("{var} is set but ignored unless {unless}"));
    }
}

/// Treats an empty value (`REDIS_URL=` in a compose file) as unset.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Positive seconds, fractions allowed (`0.5`), so tests can run fast ticks.
fn secs(
    var: &'static str,
    value: &Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(raw) = given(value) else {
        return Ok(default);
    };
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(Duration::from_secs_f64(v)),
        _ => Err(ConfigError::new(
            var,
            raw,
            "expected a positive number of seconds",
        )),
    }
}

fn choice<T: Choice>(
    var: &'static str,
    value: &Option<String>,
    default: T,
) -> Result<T, ConfigError> {
    let Some(raw) = given(value) else {
        return Ok(default);
    };
    T::ALL
        .iter()
        .copied()
        .find(|c| c.as_str() == raw)
        .ok_or_else(|| {
            let names: Vec<&str> = T::ALL.iter().map(|c| c.as_str()).collect();
            ConfigError::new(var, raw, format!("expected one of: {}", names.join(", ")))
        })
}

fn http_url(var: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| ConfigError::new(var, raw, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(
            var,
            raw,
            "expected an http:// or https:// URL",
        ));
    }
    Ok(url)
}

/// `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`.
fn flag(var: &'static str, value: &Option<String>) -> Result<bool, ConfigError> {
    match given(value).map(str::to_ascii_lowercase).as_deref() {
        None | Some("0" | "false" | "no" | "off") => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some(other) => Err(ConfigError::new(var, other, "expected 1 or 0")),
    }
}

impl Config {
    /// Validates the raw values. Returns the config and the warnings to log once logging is up,
    /// or every bad variable at once.
    pub fn from_raw(raw: &RawConfig) -> Result<(Self, Vec<String>), ConfigErrors> {
        let mut c = Checker::default();

        let max_concurrent_calls = match given(&raw.max_concurrent_calls) {
            None => DEFAULT_MAX_CONCURRENT_CALLS,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => {
                    c.warnings.push(format!(
                        "MAX_CONCURRENT_CALLS={v:?} is not a positive integer (there is no \
                         unlimited mode); using {DEFAULT_MAX_CONCURRENT_CALLS}"
                    ));
                    DEFAULT_MAX_CONCURRENT_CALLS
                }
            },
        };

        let redis = parse_redis(&mut c, raw);

        let listen_addr = c.or(
            listen_addr(raw),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
        );

        let public_url = match given(&raw.public_url) {
            None => None,
            Some(v) => c.ok(public_url(v)),
        };
        let twilio_auth_token = given(&raw.twilio_auth_token).map(|t| Secret::new(t.to_owned()));
        if twilio_auth_token.is_some() && public_url.is_none() && !c.failed("PUBLIC_URL") {
            c.errors.push(ConfigError::hidden(
                "PUBLIC_URL",
                "must be set when TWILIO_AUTH_TOKEN is: signatures cannot be checked against a \
                 URL guessed from request headers",
            ));
        }

        let reject = RejectConfig {
            mode: c.or(
                choice("REJECT_MODE", &raw.reject_mode, DEFAULT_REJECT_MODE),
                DEFAULT_REJECT_MODE,
            ),
            message: raw
                .reject_message
                .clone()
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_REJECT_MESSAGE.to_owned()),
            redirect_url: match given(&raw.reject_redirect_url) {
                None => None,
                Some(v) => c
                    .ok(http_url("REJECT_REDIRECT_URL", v))
                    .map(|u| u.to_string()),
            },
            retry_after_secs: match given(&raw.retry_after_secs) {
                None => DEFAULT_RETRY_AFTER_SECS,
                Some(v) => c.or(
                    v.parse::<u64>().map_err(|_| {
                        ConfigError::new(
                            "RETRY_AFTER_SECS",
                            v,
                            "expected a whole number of seconds",
                        )
                    }),
                    DEFAULT_RETRY_AFTER_SECS,
                ),
            },
        };

        let timings = parse_timings(&mut c, raw);

        let replica_id = match given(&raw.replica_id) {
            Some(id) => c.or(replica_id(id), String::new()),
            None => default_replica_id(),
        };

        let media_handler = c.or(
            choice("MEDIA_HANDLER", &raw.media_handler, DEFAULT_MEDIA_HANDLER),
            DEFAULT_MEDIA_HANDLER,
        );
        let bridge = parse_bridge(&mut c, raw, media_handler);
        let log_format = c.or(
            choice("LOG_FORMAT", &raw.log_format, DEFAULT_LOG_FORMAT),
            DEFAULT_LOG_FORMAT,
        );

        let resume_limit = match given(&raw.resume_limit) {
            None => DEFAULT_RESUME_LIMIT,
            Some(v) => c.or(
                v.parse::<u32>().map_err(|_| {
                    ConfigError::new(
                        "RESUME_LIMIT",
                        v,
                        "expected a whole number (0 turns continuations off)",
                    )
                }),
                DEFAULT_RESUME_LIMIT,
            ),
        };
        let tenant_key = c.or(
            choice("TENANT_KEY", &raw.tenant_key, DEFAULT_TENANT_KEY),
            DEFAULT_TENANT_KEY,
        );
        let default_tenant_limit = match given(&raw.default_tenant_limit) {
            None => None,
            Some(v) => c.ok(match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(ConfigError::new(
                    "DEFAULT_TENANT_LIMIT",
                    v,
                    "expected a positive integer",
                )),
            }),
        };
        let tenant_metrics = c.or(flag("TENANT_METRICS", &raw.tenant_metrics), false);
        if tenant_key == TenantKey::None && !c.failed("TENANT_KEY") {
            if default_tenant_limit.is_some() {
                c.unused("DEFAULT_TENANT_LIMIT", "TENANT_KEY is account_sid or to");
            }
            if tenant_metrics {
                c.unused("TENANT_METRICS", "TENANT_KEY is account_sid or to");
            }
        }

        if !c.errors.is_empty() {
            return Err(ConfigErrors(c.errors));
        }
        let config = Self {
            max_concurrent_calls,
            redis,
            listen_addr,
            public_url,
            twilio_auth_token,
            reject,
            call_state_ttl: timings.state_ttl,
            call_lock_ttl: timings.lock_ttl,
            call_lease: timings.lease,
            renew_interval: timings.renew_interval,
            reservation: timings.reservation,
            drain_timeout: timings.drain_timeout,
            replica_id,
            media_handler,
            bridge,
            resume_limit,
            tenant_key,
            default_tenant_limit,
            tenant_metrics,
            log_format,
            stream_timeouts: StreamTimeouts::default(),
            store_op_timeout: DEFAULT_STORE_OP_TIMEOUT,
        };
        Ok((config, c.warnings))
    }

    /// `TWILIO_AUTH_TOKEN`, for the signature check only: never log it.
    pub fn auth_token(&self) -> Option<&str> {
        self.twilio_auth_token.as_ref().map(|t| t.expose().as_str())
    }

    /// How long new admissions wait after Redis lost its data: one renewal tick, plus a margin
    /// (half a tick, at least one second) for a tick that runs late or meets a dead connection,
    /// so every live call has re-registered first.
    pub fn recovery_holdoff(&self) -> Duration {
        self.renew_interval + (self.renew_interval / 2).max(Duration::from_secs(1))
    }
}

/// `REDIS_URL` and the `REDIS_TLS_*` files that go with it.
fn parse_redis(c: &mut Checker, raw: &RawConfig) -> Option<RedisConfig> {
    let url = given(&raw.redis_url);
    let target = url.and_then(|v| {
        // The value is shown without its credentials: a typo must not print the password.
        c.ok(RedisTarget::parse(v)
            .map_err(|reason| ConfigError::new("REDIS_URL", &redact_userinfo(v), reason)))
    });

    let file = |c: &mut Checker, var: &'static str, value: &Option<String>| {
        let v = given(value)?;
        c.ok(redis::pem_file(v).map_err(|reason| ConfigError::new(var, v, reason)))
    };
    let ca_file = file(c, "REDIS_TLS_CA_FILE", &raw.redis_tls_ca_file);
    let cert_file = file(c, "REDIS_TLS_CERT_FILE", &raw.redis_tls_cert_file);
    let key_file = file(c, "REDIS_TLS_KEY_FILE", &raw.redis_tls_key_file);
    match (
        given(&raw.redis_tls_cert_file),
        given(&raw.redis_tls_key_file),
    ) {
        (Some(_), None) => c.errors.push(ConfigError::hidden(
            "REDIS_TLS_KEY_FILE",
            "must be set with REDIS_TLS_CERT_FILE: a client certificate needs its key",
        )),
        (None, Some(_)) => c.errors.push(ConfigError::hidden(
            "REDIS_TLS_CERT_FILE",
            "must be set with REDIS_TLS_KEY_FILE: a key needs its client certificate",
        )),
        _ => {}
    }
    // TLS files beside a plain-text URL mean a forgotten `s`: refuse rather than connect in clear.
    if !c.failed("REDIS_URL") && !target.as_ref().is_some_and(RedisTarget::is_tls) {
        let why = if url.is_some() {
            "set, but REDIS_URL is not a TLS URL (rediss:// or rediss+sentinel://)"
        } else {
            "set, but REDIS_URL is not"
        };
        for (var, value) in [
            ("REDIS_TLS_CA_FILE", &raw.redis_tls_ca_file),
            ("REDIS_TLS_CERT_FILE", &raw.redis_tls_cert_file),
            ("REDIS_TLS_KEY_FILE", &raw.redis_tls_key_file),
        ] {
            if given(value).is_some() {
                c.errors.push(ConfigError::hidden(var, why));
            }
        }
    }
    let client_cert = match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Some(ClientCert {
            cert_file,
            key_file,
        }),
        _ => None,
    };
    Some(RedisConfig {
        url: Secret::new(url?.to_owned()),
        target: target?,
        tls: RedisTls {
            ca_file,
            client_cert,
        },
    })
}

fn listen_addr(raw: &RawConfig) -> Result<SocketAddr, ConfigError> {
    match (given(&raw.listen_addr), given(&raw.port)) {
        (Some(addr), _) => addr.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new(
                "LISTEN_ADDR",
                addr,
                "expected host:port, e.g. 127.0.0.1:8080",
            )
        }),
        (None, Some(port)) => port
            .parse::<u16>()
            .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            .map_err(|_| ConfigError::new("PORT", port, "expected a port number 0-65535")),
        (None, None) => Ok(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            DEFAULT_PORT,
        )),
    }
}

fn public_url(raw: &str) -> Result<String, ConfigError> {
    let url = http_url("PUBLIC_URL", raw)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            "PUBLIC_URL",
            raw,
            "must have no query string or fragment",
        ));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

fn replica_id(id: &str) -> Result<String, ConfigError> {
    if id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ConfigError::new(
            "REPLICA_ID",
            id,
            "expected at most 128 of [A-Za-z0-9._-]",
        ));
    }
    Ok(id.to_owned())
}

struct Timings {
    state_ttl: Duration,
    lock_ttl: Duration,
    lease: Duration,
    renew_interval: Duration,
    reservation: Duration,
    drain_timeout: Duration,
}

/// The TTLs, the lease and the tick, with the orderings that keep leases and locks alive.
fn parse_timings(c: &mut Checker, raw: &RawConfig) -> Timings {
    let default = |secs: u64| Duration::from_secs(secs);
    let mut timing = |var, value, fallback| c.or(secs(var, value, fallback), fallback);
    let state_ttl = timing(
        "CALL_STATE_TTL_SECS",
        &raw.call_state_ttl_secs,
        default(DEFAULT_CALL_STATE_TTL_SECS),
    );
    let lock_ttl = timing(
        "CALL_LOCK_TTL_SECS",
        &raw.call_lock_ttl_secs,
        default(DEFAULT_CALL_LOCK_TTL_SECS),
    );
    let lease = timing(
        "CALL_LEASE_SECS",
        &raw.call_lease_secs,
        default(DEFAULT_CALL_LEASE_SECS),
    );
    let renew_interval = timing(
        "RENEW_INTERVAL_SECS",
        &raw.renew_interval_secs,
        lease / DEFAULT_RENEWS_PER_LEASE,
    );
    let reservation = timing(
        "RESERVATION_SECS",
        &raw.reservation_secs,
        default(DEFAULT_RESERVATION_SECS),
    );
    let drain_timeout = timing(
        "DRAIN_TIMEOUT_SECS",
        &raw.drain_timeout_secs,
        default(DEFAULT_DRAIN_TIMEOUT_SECS),
    );
    // Orderings are checked only between values that parsed, so one typo is one error.
    let parsed = |c: &Checker, vars: &[&str]| !vars.iter().any(|v| c.failed(v));
    if parsed(c, &["CALL_LEASE_SECS", "RENEW_INTERVAL_SECS"]) && renew_interval >= lease {
        c.errors.push(ConfigError::new(
            "RENEW_INTERVAL_SECS",
            given(&raw.renew_interval_secs).unwrap_or(""),
            format!("must be shorter than CALL_LEASE_SECS ({lease:?}), or leases lapse"),
        ));
    }
    if parsed(
        c,
        &[
            "CALL_LEASE_SECS",
            "RENEW_INTERVAL_SECS",
            "CALL_LOCK_TTL_SECS",
        ],
    ) && lock_ttl <= renew_interval
    {
        c.errors.push(ConfigError::new(
            "CALL_LOCK_TTL_SECS",
            given(&raw.call_lock_ttl_secs).unwrap_or(""),
            format!("must be longer than RENEW_INTERVAL_SECS ({renew_interval:?}), or locks lapse"),
        ));
    }
    Timings {
        state_ttl,
        lock_ttl,
        lease,
        renew_interval,
        reservation,
        drain_timeout,
    }
}

/// `BRIDGE_*`: checked whenever given (a bad value is a bad value), used only with `bridge`.
fn parse_bridge(
    c: &mut Checker,
    raw: &RawConfig,
    handler: MediaHandlerKind,
) -> Option<BridgeConfig> {
    let url = given(&raw.bridge_url).and_then(|v| {
        c.ok(BridgeUrl::parse(v)
            .map_err(|reason| ConfigError::new("BRIDGE_URL", &redact_userinfo(v), reason)))
    });
    let headers = match given(&raw.bridge_headers) {
        None => Vec::new(),
        // Never the value: it holds the agent's credentials.
        Some(v) => c.or(
            parse_headers(v).map_err(|reason| ConfigError::hidden("BRIDGE_HEADERS", reason)),
            Vec::new(),
        ),
    };
    let default_timeout = Duration::from_secs(DEFAULT_BRIDGE_CONNECT_TIMEOUT_SECS);
    let connect_timeout = c.or(
        secs(
            "BRIDGE_CONNECT_TIMEOUT_SECS",
            &raw.bridge_connect_timeout_secs,
            default_timeout,
        ),
        default_timeout,
    );
    if handler != MediaHandlerKind::Bridge {
        for (var, value) in [
            ("BRIDGE_URL", &raw.bridge_url),
            ("BRIDGE_HEADERS", &raw.bridge_headers),
            (
                "BRIDGE_CONNECT_TIMEOUT_SECS",
                &raw.bridge_connect_timeout_secs,
            ),
        ] {
            if given(value).is_some() {
                c.unused(var, "MEDIA_HANDLER=bridge");
            }
        }
        return None;
    }
    if given(&raw.bridge_url).is_none() {
        c.errors.push(ConfigError::hidden(
            "BRIDGE_URL",
            "required with MEDIA_HANDLER=bridge: the voice agent's ws:// or wss:// URL",
        ));
    }
    Some(BridgeConfig {
        url: url?,
        headers,
        connect_timeout,
    })
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
        assert_eq!(c.media_handler, MediaHandlerKind::Echo);
        assert_eq!(c.bridge, None);
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
            assert_eq!(redis.url.expose(), url);
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
        assert_eq!(c.media_handler, MediaHandlerKind::Bridge);
        let bridge = c.bridge.expect("bridge");
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
        let bridge = c.bridge.unwrap();
        assert!(bridge.headers.is_empty());
        assert_eq!(bridge.connect_timeout, Duration::from_secs(5));
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
        assert_eq!(c.bridge, None);
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
            debug.contains(r#"host: "redis", port: 6379"#),
            "the address stays: {debug}"
        );
        assert!(
            debug.contains("authorization"),
            "header names stay: {debug}"
        );
        let raw_debug = format!("{:?}", c.redis.as_ref().map(|r| &r.url));
        assert!(!raw_debug.contains("hunter2"));
    }

    #[test]
    fn every_flag_has_help_and_secrets_hide_their_values() {
        let cmd = RawConfig::augment_args(clap::Command::new("serve"));
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
                "redis_url" | "twilio_auth_token" | "bridge_headers"
            );
            assert_eq!(
                arg.is_hide_env_values_set(),
                secret,
                "--{}: hide_env_values",
                arg.get_id()
            );
        }
        assert_eq!(count, 29);
    }
}
