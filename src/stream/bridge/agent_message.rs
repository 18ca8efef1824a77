//! What a voice agent may send toward Twilio (docs/reference.md#bridge): `media`, `mark` and
//! `clear`, read for the one field each carries. Everything else is dropped, with the reason it is
//! counted under.

use std::borrow::Cow;

use serde::Deserialize;
use twilio::messages::fast;

use crate::metrics::BridgeDrop;

/// A message from the agent that goes to Twilio (rebuilt with the call's `streamSid`).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AgentMessage<'a> {
    Media(Cow<'a, str>),
    Mark(Cow<'a, str>),
    Clear,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    media: Option<Payload<'a>>,
    #[serde(borrow)]
    mark: Option<Name<'a>>,
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Name<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// The message, or why it is dropped.
pub(super) fn parse(text: &str) -> Result<AgentMessage<'_>, BridgeDrop> {
    // Most of an agent's messages are plain `media`: Twilio's own one-pass reader takes them.
    if let Some(media) = fast::parse(text) {
        return Ok(AgentMessage::Media(media.payload));
    }
    let raw: Raw<'_> = serde_json::from_str(text).map_err(|err| {
        if err.classify() == serde_json::error::Category::Data {
            BridgeDrop::BadMessage
        } else {
            BridgeDrop::NotJson
        }
    })?;
    match raw.event.as_deref() {
        Some("media") => raw
            .media
            .map(|m| AgentMessage::Media(m.payload))
            .ok_or(BridgeDrop::BadMessage),
        Some("mark") => raw
            .mark
            .map(|m| AgentMessage::Mark(m.name))
            .ok_or(BridgeDrop::BadMessage),
        Some("clear") => Ok(AgentMessage::Clear),
        Some(_) => Err(BridgeDrop::UnknownEvent),
        None => Err(BridgeDrop::BadMessage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_messages_twilio_takes_are_read_whatever_their_stream_sid() {
        assert_eq!(
            parse(r#"{"event":"media","streamSid":"MZagent","media":{"payload":"//8A"}}"#),
            Ok(AgentMessage::Media("//8A".into()))
        );
        assert_eq!(
            parse(r#"{"media":{"payload":"AA=="},"event":"media"}"#),
            Ok(AgentMessage::Media("AA==".into()))
        );
        assert_eq!(
            parse(r#"{"event":"mark","streamSid":"x","mark":{"name":"m \"1\""}}"#),
            Ok(AgentMessage::Mark("m \"1\"".into()))
        );
        assert_eq!(
            parse(r#"{"event":"clear","streamSid":"x"}"#),
            Ok(AgentMessage::Clear)
        );
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        assert_eq!(parse("hello"), Err(BridgeDrop::NotJson));
        assert_eq!(parse(r#"{"event":"media""#), Err(BridgeDrop::NotJson));
        assert_eq!(
            parse(r#"{"event":"transcript","text":"hi"}"#),
            Err(BridgeDrop::UnknownEvent)
        );
        assert_eq!(parse(r#"{"event":"media"}"#), Err(BridgeDrop::BadMessage));
        assert_eq!(
            parse(r#"{"event":"mark","mark":{}}"#),
            Err(BridgeDrop::BadMessage)
        );
        assert_eq!(parse(r#"{"text":"no event"}"#), Err(BridgeDrop::BadMessage));
        assert_eq!(parse("[1,2]"), Err(BridgeDrop::BadMessage));
    }
}
