//! prosaas-calls: Twilio voice calls behind a cluster-wide concurrent-call limit (the server).
//! The call lifecycle lives in `calls-core`, the wire formats in `twilio`; this crate adds HTTP.
//!
//! # Layout
//!
//! - [`config`]: every environment variable and flag, parsed and checked at once.
//! - [`cli`]: the operator's command line (`status`, `calls`, `tenants`) over a cluster view.
//! - [`app`]: one replica's shared state (config, the core's `Calls`, metrics, lifecycle).
//! - [`lifecycle`]: draining flag, stream tracker and the drain-deadline token.
//! - [`http`]: the routes of the contract, thin handlers over `calls-core`.
//! - [`session`]: one Media Streams WebSocket, generic over a sink and stream of messages.
//! - [`media_handler`]: what is done with caller audio (`echo`, `silent`).
//! - [`bridge`]: `MEDIA_HANDLER=bridge`, each call relayed to a voice agent.
//! - [`renewal`]: the periodic tick task.
//! - [`metrics`]: the Prometheus registry, fed by the core's events.
//! - [`server`]: the accept loop, and the drain on SIGTERM/SIGINT.

#![forbid(unsafe_code)]

pub mod app;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod http;
pub mod lifecycle;
pub mod media_handler;
pub mod metrics;
pub mod renewal;
pub mod server;
pub mod session;
