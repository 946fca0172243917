//! Picking a host port for a new route: the lowest port of the range that no
//! route holds in the registry and that can be bound now. A route that has
//! one keeps it (its old container may hold it right now, so it is not
//! probed).

use std::collections::BTreeSet;
use std::net::{IpAddr, TcpListener};

/// Where new host ports come from.
#[derive(Debug, Clone, Copy)]
pub struct PortPool {
    pub first: u16,
    pub last: u16,
    pub address: IpAddr,
    /// Whether `address:port` is free on the host now.
    pub probe: fn(IpAddr, u16) -> bool,
}

/// The range has no port left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no free host port in [routes] port_range {first}-{last}: {allocated} allocated to routes, \
     {busy} in use on the host; widen port_range in the agent's config or remove routes"
)]
pub struct NoFreePort {
    pub first: u16,
    pub last: u16,
    pub allocated: usize,
    pub busy: usize,
}

/// A TCP listener on `address:port` can be made now (a bind, closed at once).
pub fn bindable(address: IpAddr, port: u16) -> bool {
    TcpListener::bind((address, port)).is_ok()
}

/// The lowest port of `pool` not in `taken` whose probe says free.
pub fn pick(pool: &PortPool, taken: &BTreeSet<u16>) -> Result<u16, NoFreePort> {
    let mut busy = 0;
    for port in pool.first..=pool.last {
        if taken.contains(&port) {
            continue;
        }
        if (pool.probe)(pool.address, port) {
            return Ok(port);
        }
        busy += 1;
    }
    Err(NoFreePort {
        first: pool.first,
        last: pool.last,
        allocated: taken
            .iter()
            .filter(|p| (pool.first..=pool.last).contains(*p))
            .count(),
        busy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn pool(first: u16, last: u16, probe: fn(IpAddr, u16) -> bool) -> PortPool {
        PortPool {
            first,
            last,
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            probe,
        }
    }

    fn always(_: IpAddr, _: u16) -> bool {
        true
    }

    fn odd_only(_: IpAddr, port: u16) -> bool {
        port % 2 == 1
    }

    #[test]
    fn the_lowest_free_port_that_binds() {
        let taken = BTreeSet::from([100, 101]);
        assert_eq!(pick(&pool(100, 110, always), &taken), Ok(102));
        assert_eq!(pick(&pool(100, 110, odd_only), &taken), Ok(103));
        assert_eq!(pick(&pool(5, 5, always), &BTreeSet::new()), Ok(5));
    }

    fn never(_: IpAddr, _: u16) -> bool {
        false
    }

    #[test]
    fn an_exhausted_range_says_why() {
        let taken = BTreeSet::from([100, 101, 7]);
        let err = pick(&pool(100, 101, always), &taken).unwrap_err();
        assert_eq!((err.allocated, err.busy), (2, 0));
        let err = pick(&pool(100, 104, never), &taken).unwrap_err();
        assert_eq!((err.allocated, err.busy), (2, 3));
        let text = err.to_string();
        assert!(
            text.contains("port_range 100-104") && text.contains("2 allocated to routes"),
            "{text}"
        );
    }

    #[test]
    fn a_held_port_does_not_bind() {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        assert!(!bindable(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        drop(held);
        assert!(bindable(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
}
