//! prosaas-calls: Twilio voice calls behind a cluster-wide concurrent-call limit.
//! The library holds everything; `main.rs` only parses the command line and runs the server.

pub mod admission;
pub mod app;
pub mod call_sid;
pub mod config;
pub mod http;
pub mod keys;
pub mod live_calls;
pub mod media_handler;
pub mod media_stream;
pub mod metrics;
pub mod renewal;
pub mod server;
pub mod sim;
pub mod state;
pub mod store;
pub mod testkit;
pub mod twilio;
