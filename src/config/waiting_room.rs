//! The waiting room's and the WhatsApp hand-off's settings (docs/reference.md#waiting-room):
//! `WAIT_*`, `HOLD_MUSIC_URL`, `WHATSAPP_*`, checked whole at start-up.

use std::time::Duration;

use calls_core::wait::{DEFAULT_WAIT_MAX_CALLERS, DEFAULT_WAIT_POLL_SECS, WaitSettings};

use super::twilio_api::TwilioApiConfig;
use super::{Checker, ConfigError, RawConfig, given, http_url};

pub const DEFAULT_WAIT_MESSAGE: &str = "All of our lines are busy. You are number {position} in line. Press 1 to get a WhatsApp message instead.";
pub const DEFAULT_WHATSAPP_MESSAGE: &str = "Sorry we missed your call: all of our lines were busy. Reply here and we will help you right away.";
const DEFAULT_WHATSAPP_COOLDOWN_SECS: u64 = 3600;
const DEFAULT_WAIT_OVERFLOW_DIGIT: char = '1';

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingRoomConfig {
    /// `None`: `WAIT_MAX_SECS=0`, no waiting room.
    pub settings: Option<WaitSettings>,
    /// `WAIT_MESSAGE`, `{position}` not yet filled in.
    pub message: String,
    pub hold_music_url: Option<String>,
    pub overflow_digit: char,
    /// `None` without `WHATSAPP_FROM`.
    pub whatsapp: Option<WhatsAppConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsAppConfig {
    /// `WHATSAPP_FROM`, e.g. `whatsapp:+14155238886`.
    pub from: String,
    /// `WHATSAPP_MESSAGE`, placeholders not yet filled in.
    pub message: String,
    pub cooldown: Duration,
}

fn whole(
    c: &mut Checker,
    var: &'static str,
    value: &Option<String>,
    default: u64,
    min: u64,
) -> u64 {
    let Some(raw) = given(value) else {
        return default;
    };
    c.or(
        match raw.parse::<u64>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(ConfigError::new(
                var,
                raw,
                if min == 0 {
                    "expected a whole number"
                } else {
                    "expected a positive whole number"
                },
            )),
        },
        default,
    )
}

pub(super) fn parse(c: &mut Checker, raw: &RawConfig, api: &TwilioApiConfig) -> WaitingRoomConfig {
    let max_wait = whole(c, "WAIT_MAX_SECS", &raw.wait_max_secs, 0, 0);
    let max_callers = whole(
        c,
        "WAIT_MAX_CALLERS",
        &raw.wait_max_callers,
        DEFAULT_WAIT_MAX_CALLERS,
        1,
    );
    let poll = whole(
        c,
        "WAIT_POLL_SECS",
        &raw.wait_poll_secs,
        DEFAULT_WAIT_POLL_SECS,
        1,
    );
    let message = raw
        .wait_message
        .clone()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_WAIT_MESSAGE.to_owned());
    // The longest hold: the message said with a position (one word whatever its digits).
    let (_, hold_secs) = twilio::twiml::hold_timing(
        poll,
        twilio::twiml::spoken_secs(&message.replace("{position}", "1")),
    );
    let settings = (max_wait > 0).then(|| WaitSettings {
        max_wait: Duration::from_secs(max_wait),
        max_callers,
        poll: Duration::from_secs(poll),
        hold: Duration::from_secs_f64(hold_secs),
    });
    let hold_music_url = given(&raw.hold_music_url)
        .and_then(|v| c.ok(http_url("HOLD_MUSIC_URL", v)).map(|u| u.to_string()));
    let overflow_digit = match given(&raw.wait_overflow_digit) {
        None => DEFAULT_WAIT_OVERFLOW_DIGIT,
        Some(v) => {
            let mut chars = v.chars();
            match (chars.next(), chars.next()) {
                (Some(d), None) if d.is_ascii_digit() || d == '*' || d == '#' => d,
                _ => {
                    c.errors.push(ConfigError::new(
                        "WAIT_OVERFLOW_DIGIT",
                        v,
                        "expected one key: 0-9, * or #",
                    ));
                    DEFAULT_WAIT_OVERFLOW_DIGIT
                }
            }
        }
    };
    let cooldown = whole(
        c,
        "WHATSAPP_COOLDOWN_SECS",
        &raw.whatsapp_cooldown_secs,
        DEFAULT_WHATSAPP_COOLDOWN_SECS,
        1,
    );
    let whatsapp = given(&raw.whatsapp_from).and_then(|from| {
        if !from.starts_with("whatsapp:+") {
            c.errors.push(ConfigError::new(
                "WHATSAPP_FROM",
                from,
                "expected whatsapp:+ and the sender's number, e.g. whatsapp:+14155238886",
            ));
            return None;
        }
        if api.account_sid.is_none() && !c.failed("TWILIO_ACCOUNT_SID") {
            c.errors.push(ConfigError::hidden(
                "TWILIO_ACCOUNT_SID",
                "must be set with WHATSAPP_FROM (the account that sends the messages)",
            ));
        }
        if api.account_sid.is_some() && api.credentials.is_none() {
            c.errors.push(ConfigError::hidden(
                "TWILIO_AUTH_TOKEN",
                "WHATSAPP_FROM needs credentials: TWILIO_AUTH_TOKEN, or TWILIO_API_KEY_SID and \
                 TWILIO_API_KEY_SECRET",
            ));
        }
        Some(WhatsAppConfig {
            from: from.to_owned(),
            message: raw
                .whatsapp_message
                .clone()
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_WHATSAPP_MESSAGE.to_owned()),
            cooldown: Duration::from_secs(cooldown),
        })
    });
    WaitingRoomConfig {
        settings,
        message,
        hold_music_url,
        overflow_digit,
        whatsapp,
    }
}
