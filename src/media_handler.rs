//! What is done with a caller's audio, behind one small trait: `echo` and `silent` ship here, and a
//! voice-agent pipeline plugs in the same way without touching admission, state or the socket loop.

use crate::config::MediaHandlerKind;

/// One inbound 20 ms frame: the base64 payload as received and the audio it decodes to.
pub struct MediaFrame<'a> {
    pub payload_b64: &'a str,
    pub audio: &'a [u8],
    pub timestamp: Option<u64>,
}

/// Messages for Twilio, queued by a handler and sent in order by the stream loop.
#[derive(Default)]
pub struct Outbox {
    queued: Vec<Outbound>,
}

/// An outbound message in Twilio's protocol (`media`, `mark`, `clear`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Base64 mu-law audio to play to the caller.
    Media(String),
    /// Twilio echoes a mark back once the audio queued before it has played.
    Mark(String),
    /// Drops audio Twilio has buffered but not yet played (barge-in).
    Clear,
}

impl Outbox {
    pub fn push(&mut self, message: Outbound) {
        self.queued.push(message);
    }

    pub fn drain(&mut self) -> std::vec::Drain<'_, Outbound> {
        self.queued.drain(..)
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }
}

pub trait MediaHandler: Send {
    fn on_media(&mut self, frame: &MediaFrame<'_>, out: &mut Outbox);

    /// A mark from Twilio: audio sent before it has played.
    fn on_mark(&mut self, _name: &str, _out: &mut Outbox) {}

    fn on_dtmf(&mut self, _digit: &str, _out: &mut Outbox) {}
}

/// Sends each caller frame straight back (the classic Media Streams test) and answers each mark
/// after the audio before it, which in-order sending gives for free.
pub struct Echo;

impl MediaHandler for Echo {
    fn on_media(&mut self, frame: &MediaFrame<'_>, out: &mut Outbox) {
        // The payload is forwarded as received: no re-encoding of audio we did not change.
        out.push(Outbound::Media(frame.payload_b64.to_owned()));
    }

    fn on_mark(&mut self, name: &str, out: &mut Outbox) {
        out.push(Outbound::Mark(name.to_owned()));
    }
}

/// Takes audio and sends nothing back.
pub struct Silent;

impl MediaHandler for Silent {
    fn on_media(&mut self, _frame: &MediaFrame<'_>, _out: &mut Outbox) {}
}

pub fn new_handler(kind: MediaHandlerKind) -> Box<dyn MediaHandler> {
    match kind {
        MediaHandlerKind::Echo => Box::new(Echo),
        MediaHandlerKind::Silent => Box::new(Silent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_returns_frames_and_marks_in_order() {
        let mut echo = Echo;
        let mut out = Outbox::default();
        let frame = MediaFrame {
            payload_b64: "//8A",
            audio: &[0xff, 0xff, 0x00],
            timestamp: Some(20),
        };
        echo.on_media(&frame, &mut out);
        echo.on_mark("m1", &mut out);
        let sent: Vec<Outbound> = out.drain().collect();
        assert_eq!(
            sent,
            vec![Outbound::Media("//8A".into()), Outbound::Mark("m1".into())]
        );
        assert!(out.is_empty());
    }

    #[test]
    fn silent_sends_nothing() {
        let mut out = Outbox::default();
        let frame = MediaFrame {
            payload_b64: "//8A",
            audio: &[0xff, 0xff, 0x00],
            timestamp: None,
        };
        Silent.on_media(&frame, &mut out);
        Silent.on_mark("m", &mut out);
        assert!(out.is_empty());
    }
}
