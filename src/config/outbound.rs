//! Outbound calls' settings (docs/reference.md#outbound): `API_TOKEN`, `OUTBOUND_CPS`,
//! `INBOUND_RESERVE`, and what they need (`PUBLIC_URL`, Twilio's REST credentials).

use std::time::Duration;

use super::{Checker, ConfigError, RawConfig, Secret, given};
use crate::config::TwilioApiConfig;

/// `OUTBOUND_CPS` when unset: Twilio's default calls per second for an account.
pub const DEFAULT_OUTBOUND_CPS: f64 = 1.0;
/// `INBOUND_RESERVE` when unset.
pub const DEFAULT_INBOUND_RESERVE: u64 = 0;

/// The API is on (`API_TOKEN` set): the token, the pace, the reserve and the REST client's
/// settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundConfig {
    pub api_token: Secret<String>,
    /// 1 / `OUTBOUND_CPS`: the least time between two placed calls, cluster-wide.
    pub interval: Duration,
    /// `INBOUND_RESERVE`: lines outbound calls never take.
    pub inbound_reserve: u64,
}

/// Reads the variables. `OUTBOUND_CPS` and `INBOUND_RESERVE` are checked whether or not the API
/// is on; with `API_TOKEN`, `PUBLIC_URL` and Twilio's account and credentials must be set.
pub(super) fn parse(
    c: &mut Checker,
    raw: &RawConfig,
    max_concurrent_calls: u64,
    public_url_set: bool,
    twilio: &TwilioApiConfig,
) -> Option<OutboundConfig> {
    let cps = match given(&raw.outbound_cps) {
        None => DEFAULT_OUTBOUND_CPS,
        Some(v) => c.or(
            match v.parse::<f64>() {
                Ok(n) if n.is_finite() && n > 0.0 && n <= 10_000.0 => Ok(n),
                _ => Err(ConfigError::new(
                    "OUTBOUND_CPS",
                    v,
                    "expected a positive number of calls per second (up to 10000)",
                )),
            },
            DEFAULT_OUTBOUND_CPS,
        ),
    };
    let inbound_reserve = match given(&raw.inbound_reserve) {
        None => DEFAULT_INBOUND_RESERVE,
        Some(v) => c.or(
            v.parse::<u64>().map_err(|_| {
                ConfigError::new("INBOUND_RESERVE", v, "expected a whole number of lines")
            }),
            DEFAULT_INBOUND_RESERVE,
        ),
    };
    if inbound_reserve >= max_concurrent_calls && !c.failed("INBOUND_RESERVE") {
        c.errors.push(ConfigError::new(
            "INBOUND_RESERVE",
            &inbound_reserve.to_string(),
            format!(
                "must be below MAX_CONCURRENT_CALLS ({max_concurrent_calls}): outbound calls need a line"
            ),
        ));
    }
    let api_token = given(&raw.api_token)?;
    if !public_url_set && !c.failed("PUBLIC_URL") {
        c.errors.push(ConfigError::hidden(
            "PUBLIC_URL",
            "must be set when API_TOKEN is: Twilio requests the voice webhook and status callback of a placed call there",
        ));
    }
    if twilio.account_sid.is_none() {
        c.errors.push(ConfigError::hidden(
            "TWILIO_ACCOUNT_SID",
            "must be set when API_TOKEN is: calls are placed through Twilio's REST API",
        ));
    } else if twilio.credentials.is_none() {
        c.errors.push(ConfigError::hidden(
            "TWILIO_API_KEY_SID",
            "TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET (or TWILIO_AUTH_TOKEN) must be set when API_TOKEN is",
        ));
    }
    Some(OutboundConfig {
        api_token: Secret::new(api_token.to_owned()),
        interval: Duration::from_secs_f64(1.0 / cps),
        inbound_reserve,
    })
}
