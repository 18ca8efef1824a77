//! The label sets of the labelled counters, one enum each: a call site names a variant, never a
//! string, and every variant exists at zero from start-up (docs/reference.md#metrics).

use twilio::messages::ParseError;

/// Declares a label enum: its variants, their label values, and `ALL` in that order.
macro_rules! labels {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $value:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, for the series that exist at zero from start-up.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value,)+
                }
            }
        }
    };
}

labels! {
    /// `media_messages_dropped_total{reason}`: why an inbound stream message was dropped.
    MediaDrop {
        Malformed => "malformed",
        UnknownEvent => "unknown_event",
        BinaryFrame => "binary_frame",
        BadBase64 => "bad_base64",
        MediaBeforeStart => "media_before_start",
        BeforeStart => "before_start",
        DuplicateStart => "duplicate_start",
        BadStart => "bad_start",
        NoStart => "no_start",
        TooLarge => "too_large",
        SlowConsumer => "slow_consumer",
        /// `bridge`: past the bound of what waits while the agent is dialled.
        DialQueueFull => "dial_queue_full",
        /// The peer broke the WebSocket protocol (a bad frame, text that is not UTF-8): the
        /// socket is closed (1002, 1007) and the call ends as `error`.
        ProtocolError => "protocol_error",
        /// A `start` claimed a reserved, live or handed-over call, or a continuation, without
        /// that call's stream token (docs/reference.md#stream-token): closed with 1008.
        BadToken => "bad_token",
    }
}

impl MediaDrop {
    /// The drop a message Twilio's parser refused counts as.
    pub fn of(err: &ParseError) -> Self {
        match err {
            ParseError::UnknownEvent(_) => Self::UnknownEvent,
            ParseError::Malformed(_) | ParseError::MissingField { .. } => Self::Malformed,
        }
    }
}

labels! {
    /// `http_requests_rejected_total{reason}`: why a Twilio request was refused before any state
    /// changed, or (`stream_passed_on`) a draining replica's stream upgrade left to another replica.
    HttpReject {
        MissingSignature => "missing_signature",
        BadSignature => "bad_signature",
        MissingCallSid => "missing_call_sid",
        InvalidCallSid => "invalid_call_sid",
        ExpectedFormBody => "expected_form_body",
        StreamPassedOn => "stream_passed_on",
        /// A request body not all in within `BODY_READ_TIMEOUT` (408, connection closed).
        BodyTimeout => "body_timeout",
        /// A connection over `MAX_CONNECTIONS`, answered 503 from the overflow (server::connections).
        ConnectionLimit => "connection_limit",
    }
}

labels! {
    /// `bridge_failures_total{reason}`: why a voice agent could not be reached, or was lost or
    /// stalled.
    BridgeFailure {
        ConnectTimeout => "connect_timeout",
        ConnectRefused => "connect_refused",
        ConnectError => "connect_error",
        Tls => "tls",
        HandshakeRejected => "handshake_rejected",
        Handshake => "handshake",
        Lost => "lost",
        Stalled => "stalled",
        /// Not dialled: a caller's value would have been a `..` segment of `BRIDGE_URL`'s path.
        UnsafeUrl => "unsafe_url",
    }
}

labels! {
    /// `bridge_messages_total{direction}`.
    Direction {
        ToAgent => "to_agent",
        ToTwilio => "to_twilio",
    }
}

labels! {
    /// `bridge_messages_dropped_total{reason}`: what a voice agent sent that never reached Twilio.
    BridgeDrop {
        UnknownEvent => "unknown_event",
        NotJson => "not_json",
        /// Valid JSON with no `event`, or `media`/`mark` without its payload or name.
        BadMessage => "bad_message",
        BinaryFrame => "binary_frame",
        TooLarge => "too_large",
        /// Audio a `clear` overtook before it was sent.
        Cleared => "cleared",
    }
}

labels! {
    /// `calls_after_stream_total{answer}`: what `/twilio/after-stream` answered.
    Answer {
        Hangup => "hangup",
        Fallback => "fallback",
        Continue => "continue",
    }
}

labels! {
    /// `calls_whatsapp_total{result}`: what became of a caller's WhatsApp message
    /// (docs/reference.md#waiting-room).
    WhatsAppResult {
        Sent => "sent",
        Failed => "failed",
        /// The number had one within `WHATSAPP_COOLDOWN_SECS`.
        Cooldown => "cooldown",
        /// The caller's `From` is no E.164 number (withheld, a SIP or client identity).
        NoNumber => "no_number",
    }
}

labels! {
    /// `calls_outbound_total{result}`: how an outbound call ended up (docs/reference.md#outbound);
    /// `answered` counts the answer, whatever ends the call later.
    OutboundResult {
        Answered => "answered",
        Busy => "busy",
        NoAnswer => "no-answer",
        Failed => "failed",
        Canceled => "canceled",
    }
}

impl OutboundResult {
    /// The result a status counts as, if it is one (`completed` follows `answered`, counted then).
    pub(crate) fn of(status: calls_core::outbound::OutboundStatus) -> Option<Self> {
        use calls_core::outbound::OutboundStatus as S;
        match status {
            S::InProgress => Some(Self::Answered),
            S::Busy => Some(Self::Busy),
            S::NoAnswer => Some(Self::NoAnswer),
            S::Failed => Some(Self::Failed),
            S::Canceled => Some(Self::Canceled),
            S::Queued | S::Dialing | S::Ringing | S::Completed => None,
        }
    }
}
