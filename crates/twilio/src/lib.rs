//! The Twilio wire protocol, free of I/O: request signatures, TwiML documents, Media Streams messages.
//! The HTTP and WebSocket handlers build on these; nothing here touches the network or the store.
//!
//! # Layout
//!
//! - [`form`]: the form Twilio's requests carry, parsed as `form_urlencoded` does, for less work.
//! - [`signature`]: `X-Twilio-Signature`, computed and checked.
//! - [`stream_token`]: the per-call `token` parameter that binds a stream to its call.
//! - [`call_status`]: a call's status as the REST API and status callbacks spell it.
//! - [`twiml`]: the documents Twilio's requests are answered with, and the URLs they name.
//! - [`messages`]: Media Streams JSON: `inbound` (serde), `fast` (a plain `media` frame in one
//!   pass), `outbound` (frames built into a reused buffer).
//! - [`payload`]: a `media` payload's base64 checked and measured without decoding it.
//!
//! `tests/fuzz_*.rs` are property tests of all of them (docs/fuzzing.md); `tests/media_alloc.rs`
//! proves the media hot path allocation-free; `examples/media_throughput.rs` times it.

#![forbid(unsafe_code)]

pub mod call_status;
pub mod form;
pub mod messages;
pub mod payload;
pub mod signature;
pub mod stream_token;
pub mod twiml;
