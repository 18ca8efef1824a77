//! The Twilio wire protocol, free of I/O: request signatures, TwiML documents, Media Streams messages.
//! The HTTP and WebSocket handlers build on these; nothing here touches the network or the store.

#![forbid(unsafe_code)]

pub mod messages;
pub mod payload;
pub mod signature;
pub mod twiml;
