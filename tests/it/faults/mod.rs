//! Faults between hosts, over real network separation: replicas, Redis, Sentinel and nginx each on a
//! host of its own (`testkit::netns`), the paths between them cut with drop rules (docs/operations.md).
//!
//! The test process is `.1` on each network: it plays Twilio (webhooks, media streams, the
//! simulator) and the operator (`redis-cli`, `/metrics`), and is never cut off itself.

mod kit;

use testkit::netns::{self, Network};

/// A network for `test`, or `None` where this machine cannot make one: said on stderr, and with
/// `CI` set a failure, never a silent skip (CI runs as root with iproute2 and nftables).
pub fn network(test: &str) -> Option<Network> {
    let made = netns::check().and_then(|()| Network::new().map_err(|err| err.to_string()));
    match made {
        Ok(network) => Some(network),
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but {test} cannot make network namespaces: {why}"
            );
            eprintln!("SKIPPED {test}: {why} (run the tests as root to include it)");
            None
        }
    }
}
