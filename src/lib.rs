//! prosaas-calls: Twilio voice calls behind a cluster-wide concurrent-call limit (the server).
//! The call lifecycle lives in `calls-core`, the wire formats in `twilio`; this crate adds HTTP.
//!
//! # Layout
//!
//! - [`config`]: every environment variable and flag, parsed and checked at once.
//! - [`cli`]: the operator's command line (`status`, `calls`, `tenants`) over a cluster view.
//! - [`app`]: one replica's parts, built once (config, the core's `Calls`, metrics, lifecycle).
//! - [`lifecycle`]: draining flag, stream tracker and the drain-deadline token.
//! - [`log_clock`]: the log lines' timestamps.
//! - [`http`]: the routes of the contract, thin handlers over `calls-core`.
//! - [`stream`]: one Media Streams WebSocket after the upgrade (`start`, then frame handlers or
//!   the voice-agent bridge), over an explicit `StreamContext`.
//! - [`renewal`]: the periodic tick task.
//! - [`outbound`]: outbound calls on this replica: the `/v1/calls` work and the dialer task.
//! - [`metrics`]: the Prometheus registry, fed by the core's events.
//! - [`server`]: the accept loop, and the drain on SIGTERM/SIGINT.
//! - [`whatsapp`]: the WhatsApp message to a caller turned away (docs/reference.md#waiting-room).

#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
mod http;
mod lifecycle;
pub mod log_clock;
mod metrics;
mod outbound;
mod renewal;
pub mod server;
mod stream;
mod whatsapp;
