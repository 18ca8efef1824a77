//! The JSON messages of Twilio's bidirectional Media Streams (docs/reference.md#media-stream):
//! inbound events and outbound frames. `media` is the hot path (one per 20 ms per call): parsing
//! borrows from the frame, building reuses a buffer.
//!
//! - [`inbound`]: every event as a typed message, read by serde (any JSON spelling, every error).
//! - [`fast`]: a plain `media` frame read in one pass; it declines what it cannot decide alike.
//!   Twilio's own spelling of one is matched first as a template (`layout`).
//! - [`outbound`]: `media`, `mark` and `clear` frames written into a reused buffer.

pub mod fast;
pub mod inbound;
mod layout;
mod outbound;

pub use inbound::{
    Connected, Dtmf, Inbound, MAX_REPORTED_EVENT_LEN, Mark, Media, MediaFormat, ParseError, Start,
    Stop, Track,
};
pub use outbound::{MediaHead, TextBuf, clear, mark, media, media_after, media_after_base64};

/// Parses one text frame. Fields this crate does not use are skipped unread. A `media` frame as
/// Twilio sends it is parsed without allocating; only a string with JSON escapes (copied to
/// unescape it) or an unknown field holding an object or array (serde_json keeps a nesting stack
/// while skipping it) costs an allocation.
#[inline]
pub fn parse(text: &str) -> Result<Inbound<'_>, ParseError> {
    // Fifty `media` frames a second per call: Twilio's own spelling is matched as a template,
    // any other plain one read by a one-pass scanner, both far cheaper than serde; everything
    // else, and every error, by serde.
    if let Some(media) = layout::media(text).or_else(|| fast::parse(text)) {
        return Ok(Inbound::Media(media));
    }
    inbound::parse(text)
}

/// Checks a shortcut parser (`fast`, `layout`) against serde: whatever it read from `text` must be
/// what the full parser reads; returns whether it read anything.
#[cfg(test)]
fn agrees_with_serde(text: &str, read: Option<Media<'_>>) -> bool {
    match read {
        None => false,
        Some(read) => {
            assert_eq!(
                inbound::parse(text).ok(),
                Some(Inbound::Media(read)),
                "{text}"
            );
            true
        }
    }
}
