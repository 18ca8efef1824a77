//! What is done with a caller's audio frame by frame, behind one small trait: `echo` and `silent`.
//! The voice-agent bridge relays whole messages instead, so it is a mode of its own (`bridge`).

/// One inbound 20 ms frame: the base64 payload as received and the audio it decodes to.
pub struct MediaFrame<'a> {
    pub payload_b64: &'a str,
    /// The decoded audio; empty for a handler whose `needs_audio` is false (the payload is still
    /// checked to be valid base64 before the handler sees it).
    pub audio: &'a [u8],
    pub timestamp: Option<u64>,
}

/// Messages for Twilio, queued by a handler and sent in order by the stream loop. Payloads and
/// names are copied into one buffer that lives as long as the socket, so queuing a frame
/// allocates nothing once that buffer has grown to a frame's size.
#[derive(Default)]
pub struct Outbox {
    queued: Vec<Queued>,
    text: String,
}

/// A queued message; its text is `Outbox::text[start..end]`.
#[derive(Clone, Copy)]
enum Queued {
    Media(usize, usize),
    Mark(usize, usize),
    Clear,
}

/// An outbound message in Twilio's protocol (`media`, `mark`, `clear`), as queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// Base64 mu-law audio to play to the caller.
    Media(&'a str),
    /// Twilio echoes a mark back once the audio queued before it has played.
    Mark(&'a str),
    /// Drops audio Twilio has buffered but not yet played (barge-in).
    Clear,
}

impl Outbox {
    pub fn push(&mut self, message: Outbound<'_>) {
        let queued = match message {
            Outbound::Media(payload) => Queued::Media(self.keep(payload), self.text.len()),
            Outbound::Mark(name) => Queued::Mark(self.keep(name), self.text.len()),
            Outbound::Clear => Queued::Clear,
        };
        self.queued.push(queued);
    }

    pub fn media(&mut self, payload_b64: &str) {
        self.push(Outbound::Media(payload_b64));
    }

    pub fn mark(&mut self, name: &str) {
        self.push(Outbound::Mark(name));
    }

    pub fn clear(&mut self) {
        self.push(Outbound::Clear);
    }

    /// The queued messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Outbound<'_>> {
        self.queued.iter().map(|queued| match *queued {
            Queued::Media(start, end) => Outbound::Media(&self.text[start..end]),
            Queued::Mark(start, end) => Outbound::Mark(&self.text[start..end]),
            Queued::Clear => Outbound::Clear,
        })
    }

    /// Forgets what was sent, keeping the memory for the next frame.
    pub fn reset(&mut self) {
        self.queued.clear();
        self.text.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    fn keep(&mut self, text: &str) -> usize {
        let start = self.text.len();
        self.text.push_str(text);
        start
    }
}

pub trait MediaHandler: Send {
    fn on_media(&mut self, frame: &MediaFrame<'_>, out: &mut Outbox);

    /// Whether `on_media` reads `frame.audio`. A handler that does not is spared decoding every
    /// payload: fifty a second per call, for nothing.
    fn needs_audio(&self) -> bool {
        true
    }

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
        out.media(frame.payload_b64);
    }

    fn needs_audio(&self) -> bool {
        false
    }

    fn on_mark(&mut self, name: &str, out: &mut Outbox) {
        out.mark(name);
    }
}

/// Takes audio and sends nothing back.
pub struct Silent;

impl MediaHandler for Silent {
    fn on_media(&mut self, _frame: &MediaFrame<'_>, _out: &mut Outbox) {}

    fn needs_audio(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload_b64: &str) -> MediaFrame<'_> {
        MediaFrame {
            payload_b64,
            audio: &[],
            timestamp: Some(20),
        }
    }

    /// Echo's whole behaviour: each frame back as received, each mark answered after the audio
    /// before it, DTMF answered with nothing, and no decoding asked for.
    #[test]
    fn echo_sends_frames_back_and_answers_marks_after_them() {
        let mut echo = Echo;
        assert!(!echo.needs_audio(), "echo forwards the payload undecoded");
        let mut out = Outbox::default();
        echo.on_media(&frame("//8A"), &mut out);
        echo.on_dtmf("5", &mut out);
        echo.on_media(&frame("AAAA/w=="), &mut out);
        echo.on_mark("m1", &mut out);
        echo.on_media(&frame("fn5+"), &mut out);
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            [
                Outbound::Media("//8A"),
                Outbound::Media("AAAA/w=="),
                Outbound::Mark("m1"),
                Outbound::Media("fn5+"),
            ]
        );
        // The stream loop resets the outbox after sending: the next frame goes out alone.
        out.reset();
        assert!(out.is_empty());
        echo.on_mark("m2", &mut out);
        assert_eq!(out.iter().collect::<Vec<_>>(), [Outbound::Mark("m2")]);
    }

    /// The outbox keeps every queued message's text apart in its one shared buffer, in order,
    /// whatever their lengths and kinds (`clear` carries no text).
    #[test]
    fn outbox_returns_each_message_as_queued() {
        let mut out = Outbox::default();
        out.media("a");
        out.clear();
        out.mark("");
        out.media("0123456789");
        out.mark("name with spaces");
        assert_eq!(
            out.iter().collect::<Vec<_>>(),
            [
                Outbound::Media("a"),
                Outbound::Clear,
                Outbound::Mark(""),
                Outbound::Media("0123456789"),
                Outbound::Mark("name with spaces"),
            ]
        );
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
