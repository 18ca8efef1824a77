//! Everything about one Twilio Media Streams socket after the upgrade: the session, the frame
//! handlers (`echo`, `silent`) and the voice-agent bridge.

pub mod bridge;
pub mod ending;
pub mod handler;
pub mod session;
#[cfg(test)]
mod tests;
