//! prosaas-calls: Twilio voice calls behind a cluster-wide concurrent-call limit.
//! The library holds everything; `main.rs` only parses the command line and runs the server.

pub mod call_sid;
pub mod keys;
pub mod state;
pub mod store;
pub mod testkit;
pub mod twilio;
