//! What is done with a caller's audio frame by frame, behind one small trait: `echo` and `silent`.
//! The voice-agent bridge relays whole messages instead, so it is a mode of its own (`bridge`).

use twilio::payload::{Base64, Payloads};

/// Messages for Twilio, queued by a handler and sent in order by the stream loop. Payloads and
/// names are copied into buffers that live as long as the socket, so queuing a frame allocates
/// nothing once they have grown to a frame's size. Payloads are kept apart from names so that
/// they come back still known to be base64: the frame copies them without an escape scan.
#[derive(Default)]
pub(crate) struct Outbox {
    queued: Vec<Queued>,
    payloads: Payloads,
    text: String,
}

/// A queued message; a payload is `Outbox::payloads[start..end]`, a name `Outbox::text[start..end]`.
#[derive(Clone, Copy)]
enum Queued {
    Media(usize, usize),
    Mark(usize, usize),
}

/// An outbound message in Twilio's protocol, as queued: the `media` and `mark` a handler sends
/// (`clear` goes out only from the bridge, for the agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outbound<'a> {
    /// Base64 mu-law audio to play to the caller.
    Media(Base64<'a>),
    /// Twilio echoes a mark back once the audio queued before it has played.
    Mark(&'a str),
}

impl Outbox {
    pub(crate) fn push(&mut self, message: Outbound<'_>) {
        let queued = match message {
            Outbound::Media(payload) => {
                let kept = self.payloads.push(payload);
                Queued::Media(kept.start, kept.end)
            }
            Outbound::Mark(name) => Queued::Mark(self.keep(name), self.text.len()),
        };
        self.queued.push(queued);
    }

    pub(crate) fn media(&mut self, payload_b64: Base64<'_>) {
        self.push(Outbound::Media(payload_b64));
    }

    pub(crate) fn mark(&mut self, name: &str) {
        self.push(Outbound::Mark(name));
    }

    /// The queued messages, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Outbound<'_>> {
        self.queued.iter().filter_map(|queued| match *queued {
            // Always there: the range is the one `push` got back for this payload.
            Queued::Media(start, end) => self.payloads.get(start..end).map(Outbound::Media),
            Queued::Mark(start, end) => Some(Outbound::Mark(&self.text[start..end])),
        })
    }

    /// Forgets what was sent, keeping the memory for the next frame.
    pub(crate) fn reset(&mut self) {
        self.queued.clear();
        self.payloads.clear();
        self.text.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    fn keep(&mut self, text: &str) -> usize {
        let start = self.text.len();
        self.text.push_str(text);
        start
    }
}

/// What is done with a call's frames. The stream checks each payload is valid base64 before a
/// handler sees it; none decodes it (a handler that reads the audio would decode it here).
pub(crate) trait MediaHandler: Send {
    /// One inbound 20 ms frame: its base64 payload as received.
    fn on_media(&mut self, payload_b64: Base64<'_>, out: &mut Outbox);

    /// A mark from Twilio: audio sent before it has played.
    fn on_mark(&mut self, _name: &str, _out: &mut Outbox) {}

    fn on_dtmf(&mut self, _digit: &str, _out: &mut Outbox) {}
}

/// Sends each caller frame straight back (the classic Media Streams test) and answers each mark
/// after the audio before it, which in-order sending gives for free.
pub(crate) struct Echo;

impl MediaHandler for Echo {
    fn on_media(&mut self, payload_b64: Base64<'_>, out: &mut Outbox) {
        // The payload is forwarded as received: no re-encoding of audio we did not change.
        out.media(payload_b64);
    }

    fn on_mark(&mut self, name: &str, out: &mut Outbox) {
        out.mark(name);
    }
}

/// Takes audio and sends nothing back.
pub(crate) struct Silent;

impl MediaHandler for Silent {
    fn on_media(&mut self, _payload_b64: Base64<'_>, _out: &mut Outbox) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> Base64<'_> {
        Base64::new(text).expect("valid base64").0
    }

    /// Echo's whole behaviour: each frame back as received, each mark answered after the audio
    /// before it, DTMF answered with nothing.
    #[test]
    fn echo_sends_frames_back_and_answers_marks_after_them() {
        let mut echo = Echo;
        let mut out = Outbox::default();
        echo.on_media(b64("//8A"), &mut out);
        echo.on_dtmf("5", &mut out);
        echo.on_media(b64("AAAA/w=="), &mut out);
        echo.on_mark("m1", &mut out);
        echo.on_media(b64("fn5+"), &mut out);
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            [
                Outbound::Media(b64("//8A")),
                Outbound::Media(b64("AAAA/w==")),
                Outbound::Mark("m1"),
                Outbound::Media(b64("fn5+")),
            ]
        );
        // The stream loop resets the outbox after sending: the next frame goes out alone.
        out.reset();
        assert!(out.is_empty());
        echo.on_mark("m2", &mut out);
        assert_eq!(out.iter().collect::<Vec<_>>(), [Outbound::Mark("m2")]);
    }

    /// The outbox keeps every queued message's text apart in its one shared buffer, in order,
    /// whatever their lengths and kinds.
    #[test]
    fn outbox_returns_each_message_as_queued() {
        let mut out = Outbox::default();
        out.media(b64("YQ=="));
        out.mark("");
        out.media(b64("0123456789+/"));
        out.mark("name with spaces");
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            [
                Outbound::Media(b64("YQ==")),
                Outbound::Mark(""),
                Outbound::Media(b64("0123456789+/")),
                Outbound::Mark("name with spaces"),
            ]
        );
    }

    #[test]
    fn silent_sends_nothing() {
        let mut out = Outbox::default();
        Silent.on_media(b64("//8A"), &mut out);
        Silent.on_mark("m", &mut out);
        assert!(out.is_empty());
    }
}
