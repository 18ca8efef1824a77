//! The Twilio REST double (`prosaas-calls-sim twilio-api`): the parts of Twilio's REST API the
//! server calls (Messages, Calls, a call's Status), answered as Twilio answers them, recorded.
//!
//! # Layout
//!
//! - [`server`]: the HTTP server: Twilio's routes with basic auth, and the `/_double/*` control
//!   routes a test or benchmark uses (behaviours, outcomes, the record).
//! - [`resources`]: Twilio's JSON (Message, Call, errors) and the form checks behind its 400s.
//! - [`behaviour`]: per endpoint, answer, fail, hang or rate-limit.
//! - [`record`]: every request, in memory and in a JSONL file.
//! - [`dialer`] and [`outcome`]: placed calls rung to an outcome, status callbacks, and answered
//!   calls driven through the voice webhook and the Media Stream by the simulator's call code.
//!
//! The HTTP interface and the flags are in docs/rest_double.md.

pub mod behaviour;
pub mod clock;
pub mod dialer;
pub mod outcome;
pub mod record;
pub mod resources;
pub mod server;

pub use record::{Answer, AuthSeen, Recorded};
pub use server::{Config, RestDouble};

/// The account the double serves when not told another (any `AC` + 32 hex digits will do).
pub const DEFAULT_ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
