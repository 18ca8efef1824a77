//! The one integration-test binary: real `redis-server`, replica and nginx processes, never a mock.
//! Each module is one area of the contract; `helpers` holds what more than one of them needs.

// A test binary exports nothing: `pub` in `helpers` is how its sibling modules reach it.
#![allow(unreachable_pub)]

mod helpers;

mod admission_deadline;
mod bridge;
mod cli;
mod cluster_nginx;
mod cluster_script;
mod compose_prod;
mod continuity;
mod crash_cycles;
mod docs;
mod faults;
mod http_limits;
mod kubernetes;
mod operations;
mod outbound;
mod recovery;
mod redis_tls;
mod round_trips;
mod scripts;
mod secrets;
mod self_healing;
mod sentinel;
mod sim_e2e;
mod sim_tls;
mod state_caps;
mod stream_bad_input;
mod stream_contract;
mod stream_drain;
mod stream_endings;
mod tenants;
mod tls_front;
mod twilio_api_double;
mod twilio_e2e;
mod twilio_setup;
mod waiting_room;
