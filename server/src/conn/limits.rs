//! Connection admission: a global limit and a per-IP limit, checked by the
//! acceptor and released by the worker that closes the connection.

use std::collections::HashMap;
use std::net::IpAddr;

use parking_lot::Mutex;

use crate::api::error::ApiError;

/// Why a connection is refused at accept: answered at once and closed,
/// never counted against the limits.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A connection limit (503).
    Capacity(&'static str),
    /// The connection-attempt rate limit (429 with `Retry-After`).
    Rate(ApiError),
}

#[derive(Debug)]
pub(crate) struct ConnLimits {
    max_total: usize,
    max_per_ip: usize,
    /// Open connections: total, and per peer address.
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl ConnLimits {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> ConnLimits {
        ConnLimits {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// Counts a new connection from `ip`, or says which limit refuses it.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<(), &'static str> {
        let mut open = self.open.lock();
        if open.0 >= self.max_total {
            return Err("too many connections");
        }
        let per_ip = open.1.entry(ip).or_insert(0);
        if *per_ip >= self.max_per_ip {
            return Err("too many connections from this address");
        }
        *per_ip += 1;
        open.0 += 1;
        Ok(())
    }

    /// Forgets a closed connection from `ip`.
    pub(crate) fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock();
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_counted_and_released() {
        let limits = ConnLimits::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(limits.admit(a).is_ok());
        assert!(limits.admit(a).is_ok());
        assert!(limits.admit(a).is_err(), "per-IP limit");
        assert!(limits.admit(b).is_ok());
        assert!(limits.admit(b).is_err(), "global limit");
        limits.release(a);
        assert!(limits.admit(b).is_ok());
    }
}
