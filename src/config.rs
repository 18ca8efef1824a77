//! Service configuration (docs/reference.md#configuration): every environment variable, its default
//! and its validation. Each variable is also a flag of `serve`; every bad value is named at once
//! and stops start-up.
//!
//! Secrets (`REDIS_URL`'s credentials, `TWILIO_AUTH_TOKEN`, `BRIDGE_HEADERS`' values) are held in
//! [`Secret`], hidden from `--help`, and never repeated in an error.

mod bridge;
mod flags;
mod outbound;
mod secret;
mod twilio_api;
mod waiting_room;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use calls_core::store::{ClientCert, RedisSettings, RedisTarget, RedisTls, pem_file};
use thiserror::Error;
use url::Url;

pub use self::bridge::{
    BridgeConfig, BridgeUrl, DEFAULT_BRIDGE_CONNECT_TIMEOUT_SECS, DotSegment, Placeholder,
    parse_headers,
};
pub use self::flags::RawConfig;
pub use self::outbound::{DEFAULT_INBOUND_RESERVE, DEFAULT_OUTBOUND_CPS, OutboundConfig};
pub use self::secret::{Secret, redact_userinfo};
pub use self::twilio_api::{DEFAULT_TWILIO_API_BASE, TwilioApiConfig};
pub use self::waiting_room::{
    DEFAULT_WAIT_MESSAGE, DEFAULT_WHATSAPP_MESSAGE, WaitingRoomConfig, WhatsAppConfig,
};

pub use calls_core::store::{
    DEFAULT_CALL_LEASE_SECS, DEFAULT_CALL_LOCK_TTL_SECS, DEFAULT_CALL_STATE_TTL_SECS,
    DEFAULT_MAX_CONCURRENT_CALLS, DEFAULT_RENEWS_PER_LEASE, DEFAULT_RESERVATION_SECS,
    DEFAULT_STORE_OP_TIMEOUT,
};

pub const DEFAULT_PORT: u16 = 8080;
/// Each live call holds one connection (its stream) for its whole length; webhooks hold one for a
/// moment. Far above what a replica's calls need, far below a container's file-descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const DEFAULT_REJECT_MODE: RejectMode = RejectMode::ServiceUnavailable;
pub const DEFAULT_REJECT_MESSAGE: &str =
    "All of our lines are busy right now. Please try again in a few minutes.";
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 30;
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 600;
pub const DEFAULT_MEDIA_HANDLER: MediaHandlerKind = MediaHandlerKind::Echo;
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;
pub const DEFAULT_RESUME_LIMIT: u32 = 2;
pub const DEFAULT_TENANT_KEY: TenantKey = TenantKey::None;

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
    /// Relays the call to a voice agent; settings in [`Media::Bridge`].
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

/// What is done with a call's media (`MEDIA_HANDLER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// Each caller frame sent back.
    Echo,
    /// Audio taken, nothing sent back.
    Silent,
    /// Each call relayed to the voice agent (docs/reference.md#bridge).
    Bridge(BridgeConfig),
}

impl Media {
    /// The `MEDIA_HANDLER` spelling this is.
    pub fn kind(&self) -> MediaHandlerKind {
        match self {
            Self::Echo => MediaHandlerKind::Echo,
            Self::Silent => MediaHandlerKind::Silent,
            Self::Bridge(_) => MediaHandlerKind::Bridge,
        }
    }

    /// The bridge's settings, with `MEDIA_HANDLER=bridge`.
    pub fn bridge(&self) -> Option<&BridgeConfig> {
        match self {
            Self::Bridge(bridge) => Some(bridge),
            Self::Echo | Self::Silent => None,
        }
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

/// `TENANT_KEY`: which webhook field names a call's tenant (docs/reference.md#tenants).
pub use calls_core::tenant::TenantKey;

impl Choice for TenantKey {
    const ALL: &'static [Self] = &Self::ALL;
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
    pub redis: Option<RedisSettings>,
    pub listen_addr: SocketAddr,
    /// `MAX_CONNECTIONS`: connections served at once (docs/reference.md#connections).
    pub max_connections: usize,
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
    /// `MEDIA_HANDLER`, with the `BRIDGE_*` settings of `bridge`.
    pub media: Media,
    /// `RESUME_LIMIT`: continuations granted per call (docs/reference.md#after-stream); 0 turns
    /// them off.
    pub resume_limit: u32,
    pub tenant_key: TenantKey,
    /// `DEFAULT_TENANT_LIMIT`: the cap of a tenant without its own; `None`: only the global cap.
    pub default_tenant_limit: Option<u64>,
    /// `TENANT_METRICS=1`: per-tenant Prometheus labels.
    pub tenant_metrics: bool,
    /// Twilio's REST API (`TWILIO_ACCOUNT_SID`, credentials, `TWILIO_API_BASE`).
    pub twilio_api: TwilioApiConfig,
    /// The waiting room and the WhatsApp hand-off (docs/reference.md#waiting-room).
    pub waiting_room: WaitingRoomConfig,
    /// `API_TOKEN` set: the outbound API and its dialer are on (docs/reference.md#outbound).
    pub outbound: Option<OutboundConfig>,
    pub log_format: LogFormat,
    /// The stream's fixed timeouts (docs/reference.md#media-stream); not configurable by
    /// environment, tests shorten them.
    pub stream_timeouts: StreamTimeouts,
    /// Bound on one state-store operation; not configurable by environment.
    pub store_op_timeout: Duration,
}

/// The stream's timeouts; docs/reference.md#media-stream fixes the defaults, tests shorten them.
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

/// Every bad variable of one start-up, in the order of docs/reference.md#configuration; never
/// empty.
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

        let max_connections = match given(&raw.max_connections) {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(v) => c.or(
                match v.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(ConfigError::new(
                        "MAX_CONNECTIONS",
                        v,
                        "expected a positive integer",
                    )),
                },
                DEFAULT_MAX_CONNECTIONS,
            ),
        };

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
        let media = match (media_handler, bridge) {
            (MediaHandlerKind::Silent, _) => Media::Silent,
            (MediaHandlerKind::Bridge, Some(bridge)) => Media::Bridge(bridge),
            // A bridge whose settings failed has its errors recorded: this value is never used.
            (MediaHandlerKind::Echo | MediaHandlerKind::Bridge, _) => Media::Echo,
        };
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

        let twilio_api = self::twilio_api::parse(&mut c, raw);
        let waiting_room = self::waiting_room::parse(&mut c, raw, &twilio_api);
        let outbound = outbound::parse(
            &mut c,
            raw,
            max_concurrent_calls,
            public_url.is_some(),
            &twilio_api,
        );

        if !c.errors.is_empty() {
            return Err(ConfigErrors(c.errors));
        }
        let config = Self {
            max_concurrent_calls,
            redis,
            listen_addr,
            max_connections,
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
            media,
            resume_limit,
            tenant_key,
            default_tenant_limit,
            tenant_metrics,
            twilio_api,
            waiting_room,
            outbound,
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

    /// How long new admissions wait after Redis lost its data (one tick and a margin).
    pub fn recovery_holdoff(&self) -> Duration {
        calls_core::store::recovery_holdoff(self.renew_interval)
    }
}

/// `REDIS_URL` and the `REDIS_TLS_*` files that go with it, each variable's error on its own.
fn parse_redis(c: &mut Checker, raw: &RawConfig) -> Option<RedisSettings> {
    let url = given(&raw.redis_url);
    let target = url.and_then(|v| {
        // The value is shown without its credentials: a typo must not print the password.
        c.ok(RedisTarget::parse(v)
            .map_err(|reason| ConfigError::new("REDIS_URL", &redact_userinfo(v), reason)))
    });

    let file = |c: &mut Checker, var: &'static str, value: &Option<String>| {
        let v = given(value)?;
        c.ok(pem_file(v).map_err(|reason| ConfigError::new(var, v, reason)))
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
    let tls = RedisTls {
        ca_file,
        client_cert,
    };
    match RedisSettings::of(url?, target?, tls) {
        Ok(settings) => Some(settings),
        Err(err) => {
            // Each mismatch between the files and the URL is named above, variable by variable.
            if c.errors.is_empty() {
                c.errors
                    .push(ConfigError::hidden("REDIS_URL", err.to_string()));
            }
            None
        }
    }
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
    if !headers.is_empty() && url.as_ref().is_some_and(BridgeUrl::is_plain_remote) {
        c.warnings.push(
            "BRIDGE_HEADERS go to the voice agent over plain ws:// (BRIDGE_URL): what they carry \
             (a token?) crosses the network in the clear; use wss:// unless the path between is \
             private"
                .to_owned(),
        );
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
mod tests;
