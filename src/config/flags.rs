//! The `serve` flags: one per environment variable of the contract, as given (empty means unset),
//! with the help line that `serve --help` prints; `Config::from_raw` validates them.

use std::fmt;

use clap::Args;

use super::{
    DEFAULT_BRIDGE_CONNECT_TIMEOUT_SECS, DEFAULT_CALL_LEASE_SECS, DEFAULT_CALL_LOCK_TTL_SECS,
    DEFAULT_CALL_STATE_TTL_SECS, DEFAULT_DRAIN_TIMEOUT_SECS, DEFAULT_INBOUND_RESERVE,
    DEFAULT_LOG_FORMAT, DEFAULT_MAX_CONCURRENT_CALLS, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MEDIA_HANDLER, DEFAULT_OUTBOUND_CPS, DEFAULT_PORT, DEFAULT_REJECT_MODE,
    DEFAULT_RESERVATION_SECS, DEFAULT_RESUME_LIMIT, DEFAULT_RETRY_AFTER_SECS, DEFAULT_TENANT_KEY,
};

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
    #[arg(long, env = "MAX_CONNECTIONS", help = with_default(
        "Connections served at once (each live call holds one); past it /healthz still answers, the rest 503, then the backlog",
        DEFAULT_MAX_CONNECTIONS))]
    pub max_connections: Option<String>,
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
    #[arg(
        long,
        env = "API_TOKEN",
        hide_env_values = true,
        help = "Bearer token of the outbound calls API (/v1/*); unset: the API is off (404)"
    )]
    pub api_token: Option<String>,
    #[arg(long, env = "OUTBOUND_CPS", help = with_default(
        "Outbound calls placed per second, cluster-wide", DEFAULT_OUTBOUND_CPS))]
    pub outbound_cps: Option<String>,
    #[arg(long, env = "INBOUND_RESERVE", help = with_default(
        "Lines outbound calls never take: they dial only while live calls < MAX_CONCURRENT_CALLS - this",
        DEFAULT_INBOUND_RESERVE))]
    pub inbound_reserve: Option<String>,
    #[arg(long, env = "WAIT_MAX_SECS", help = with_default(
        "Waiting room: a call over the cap waits in line up to this long, in seconds; 0: no waiting room",
        0))]
    pub wait_max_secs: Option<String>,
    #[arg(long, env = "WAIT_MAX_CALLERS", help = with_default(
        "Waiting room: at most this many callers wait, cluster-wide", 100))]
    pub wait_max_callers: Option<String>,
    #[arg(long, env = "WAIT_POLL_SECS", help = with_default(
        "Waiting room: a waiting call comes back to /twilio/wait at least this often, in seconds",
        5))]
    pub wait_poll_secs: Option<String>,
    #[arg(
        long,
        env = "WAIT_MESSAGE",
        help = "Waiting room: said on joining and when the place changes; {position} is filled in [default: all of our lines are busy…]"
    )]
    pub wait_message: Option<String>,
    #[arg(
        long,
        env = "HOLD_MUSIC_URL",
        help = "Waiting room: audio played while waiting (an http(s) URL); unset: silence"
    )]
    pub hold_music_url: Option<String>,
    #[arg(long, env = "WAIT_OVERFLOW_DIGIT", help = with_default(
        "Waiting room: the digit that leaves the line for the overflow at once", 1))]
    pub wait_overflow_digit: Option<String>,
    #[arg(
        long,
        env = "WHATSAPP_FROM",
        help = "Set (whatsapp:+14155238886): every caller turned away gets one WhatsApp message; needs TWILIO_ACCOUNT_SID and credentials"
    )]
    pub whatsapp_from: Option<String>,
    #[arg(
        long,
        env = "WHATSAPP_MESSAGE",
        help = "The WhatsApp message's body; {from} {to} {tenant} filled in [default: sorry we missed your call…]"
    )]
    pub whatsapp_message: Option<String>,
    #[arg(long, env = "WHATSAPP_COOLDOWN_SECS", help = with_default(
        "At most one WhatsApp message per caller number per this many seconds, cluster-wide",
        3600))]
    pub whatsapp_cooldown_secs: Option<String>,
    #[arg(
        long,
        env = "TWILIO_ACCOUNT_SID",
        help = "The Twilio account (AC…) the REST API is called for (WhatsApp messages, outbound calls)"
    )]
    pub twilio_account_sid: Option<String>,
    #[arg(
        long,
        env = "TWILIO_API_KEY_SID",
        help = "A Twilio API key (SK…) for the REST API, with TWILIO_API_KEY_SECRET; unset: TWILIO_AUTH_TOKEN"
    )]
    pub twilio_api_key_sid: Option<String>,
    #[arg(
        long,
        env = "TWILIO_API_KEY_SECRET",
        hide_env_values = true,
        help = "The secret of TWILIO_API_KEY_SID; never logged"
    )]
    pub twilio_api_key_secret: Option<String>,
    #[arg(long, env = "TWILIO_API_BASE", help = with_default(
        "Base URL of Twilio's REST API (a region's edge, or a test double)",
        twilio_api::DEFAULT_BASE))]
    pub twilio_api_base: Option<String>,
}
