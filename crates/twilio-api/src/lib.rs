//! Twilio's REST API as the server calls it: send a message (the waiting room's WhatsApp
//! hand-off), place a call and end one (outbound calls), typed, with Twilio's errors typed too.
//!
//! # Layout
//!
//! - [`client`]: [`TwilioClient`]: reqwest with rustls, a timeout on every request, basic auth.
//! - [`credentials`]: [`Credentials`]: the account SID with an auth token or an API key; the
//!   secret never shows in `Debug`.
//! - [`resources`]: what is sent ([`NewMessage`], [`NewCall`], [`EndCall`]) and what comes back
//!   ([`Message`], [`Call`]).
//! - [`error`]: [`ApiError`]: Twilio's status, code and message; 429 and timeouts told apart, and
//!   whether a failed request may still have been acted on.
//!
//! The tests (`tests/against_double.rs`) run against the simulator's Twilio REST double, a real
//! process (docs/rest_double.md).

#![forbid(unsafe_code)]

pub mod client;
pub mod credentials;
pub mod error;
pub mod resources;

pub use client::{BuildError, DEFAULT_BASE, DEFAULT_TIMEOUT, TwilioClient};
pub use credentials::{Credentials, Secret};
pub use error::ApiError;
pub use resources::{Call, CallEvent, CallStatus, EndCall, Message, NewCall, NewMessage};
