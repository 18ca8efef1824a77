//! The Twilio call simulator behind `prosaas-calls-sim`: many calls' webhooks, Media Streams and
//! real-time audio from one process, and the figures a benchmark needs from them.

#![forbid(unsafe_code)]

pub mod agent;
pub mod call;
pub mod conn;
pub mod error;
pub mod frames;
pub mod histogram;
pub mod outbox;
pub mod procfs;
pub mod report;
pub mod rest_double;
pub mod rng;
pub mod run;
pub mod stats;
pub mod target;
pub mod tenants;
pub mod timeline;
pub mod tls;
pub mod webhook;
pub mod ws;
