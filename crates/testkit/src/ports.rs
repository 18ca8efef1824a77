//! Loopback ports for the harness's listeners, drawn from below the kernel's ephemeral range, as
//! scripts/lib/ports.sh draws them for the scripts.
//!
//! A port from a port-0 bind lies inside that range, so by the time a redis-server, replica or
//! nginx binds it, it can be the local port of any parallel test's outgoing connection (the
//! simulators open them by the thousand) and the bind fails. The kernel never hands an outgoing
//! connection a port below `ip_local_port_range`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::TcpListener;

/// How many ports are tried before giving up.
const TRIES: usize = 200;

/// A loopback port that was free a moment ago, below the ephemeral range.
pub fn free_port() -> io::Result<u16> {
    free_port_run(1)
}

/// The first of `count` consecutive loopback ports that were all free a moment ago, below the
/// ephemeral range (scripts/cluster takes BASE..BASE+12).
pub fn free_port_run(count: u16) -> io::Result<u16> {
    let (low, ceiling) = range();
    let span = u64::from(ceiling.saturating_sub(low).saturating_sub(count).max(1));
    // Random keys per RandomState, so parallel tests draw apart.
    let mut seed = RandomState::new().build_hasher().finish();
    for _ in 0..TRIES {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let Ok(start) = u16::try_from(u64::from(low) + (seed >> 33) % span) else {
            continue;
        };
        if (0..count).all(|offset| TcpListener::bind(("127.0.0.1", start + offset)).is_ok()) {
            return Ok(start);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no run of {count} free loopback ports below the ephemeral range in {TRIES} tries"),
    ))
}

/// Where ports are drawn from: 10000 up to the lowest ephemeral port, or 20000 to 40000 when the
/// ephemeral range starts too low to leave room below it.
fn range() -> (u16, u16) {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if low > 11_000 {
        (10_000, low)
    } else {
        (20_000, 40_000)
    }
}
