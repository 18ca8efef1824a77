//! The one integration-test binary: real `redis-server`, replica and nginx processes, never a mock.
//! Each module is one area of the contract; `helpers` holds what more than one of them needs.

mod helpers;

mod cluster_nginx;
mod operations;
mod recovery;
mod round_trips;
mod self_healing;
mod sim_e2e;
mod state_caps;
mod store_suite;
mod stream_bad_input;
mod stream_drain;
mod twilio_e2e;
