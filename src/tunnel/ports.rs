//! Local port allocation for the tunnel's sockets.
//!
//! # Contract
//!
//! TCP and UDP have separate port spaces, as in any IP stack. Ephemeral ports come from the
//! IANA dynamic range 49152–65535 (RFC 6335 §6), starting at a random offset and probing
//! upwards, so two tunnels (or two runs) do not reuse the same 4-tuples in lockstep
//! (RFC 6056 §3.3.1 would randomise every pick; one random start is enough here because the
//! allocated IP itself changes per session). A port is held until [`Ports::release`], which the
//! stack calls only once the socket is gone — for TCP that is after `TIME-WAIT`, so a new
//! connection never meets the old one's segments. The table is bounded by the range itself
//! (16 384 entries per protocol).

use std::collections::HashSet;
use std::ops::RangeInclusive;

/// The IANA dynamic/private port range (RFC 6335 §6).
pub(crate) const EPHEMERAL: RangeInclusive<u16> = 49152..=65535;
const EPHEMERAL_COUNT: u32 = 65535 - 49152 + 1;

/// Which port space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Tcp,
    Udp,
}

/// Why a port could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortError {
    /// Every ephemeral port of this protocol is in use.
    Exhausted,
    /// The requested port is already bound.
    InUse(u16),
}

/// Ports in use, per protocol.
#[derive(Debug)]
pub(crate) struct Ports {
    tcp: HashSet<u16>,
    udp: HashSet<u16>,
    /// Where the next ephemeral search starts (offset into [`EPHEMERAL`]).
    cursor: u32,
}

impl Ports {
    /// `seed` picks the first ephemeral port (pass a random number).
    pub(crate) fn new(seed: u32) -> Self {
        Ports { tcp: HashSet::new(), udp: HashSet::new(), cursor: seed % EPHEMERAL_COUNT }
    }

    fn set(&mut self, proto: Proto) -> &mut HashSet<u16> {
        match proto {
            Proto::Tcp => &mut self.tcp,
            Proto::Udp => &mut self.udp,
        }
    }

    /// The next free ephemeral port, now marked in use.
    pub(crate) fn ephemeral(&mut self, proto: Proto) -> Result<u16, PortError> {
        let start = self.cursor;
        for i in 0..EPHEMERAL_COUNT {
            let off = (start + i) % EPHEMERAL_COUNT;
            // off < 16384, so the sum stays within u16.
            let port = EPHEMERAL.start() + off as u16;
            if self.set(proto).insert(port) {
                self.cursor = (off + 1) % EPHEMERAL_COUNT;
                return Ok(port);
            }
        }
        Err(PortError::Exhausted)
    }

    /// Marks `port` in use; port 0 means "any ephemeral port".
    pub(crate) fn bind(&mut self, proto: Proto, port: u16) -> Result<u16, PortError> {
        if port == 0 {
            return self.ephemeral(proto);
        }
        if self.set(proto).insert(port) {
            Ok(port)
        } else {
            Err(PortError::InUse(port))
        }
    }

    /// Frees `port` for reuse.
    pub(crate) fn release(&mut self, proto: Proto, port: u16) {
        self.set(proto).remove(&port);
    }

    /// Ports in use for `proto`.
    #[cfg(test)]
    fn in_use(&self, proto: Proto) -> usize {
        match proto {
            Proto::Tcp => self.tcp.len(),
            Proto::Udp => self.udp.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_ports_are_in_range_and_distinct() {
        let mut p = Ports::new(16380);
        let a = p.ephemeral(Proto::Tcp).unwrap();
        let b = p.ephemeral(Proto::Tcp).unwrap();
        let c = p.ephemeral(Proto::Tcp).unwrap();
        let d = p.ephemeral(Proto::Tcp).unwrap();
        let e = p.ephemeral(Proto::Tcp).unwrap();
        assert_eq!([a, b, c, d, e], [65532, 65533, 65534, 65535, 49152], "wraps at the top");
        assert!(EPHEMERAL.contains(&a));
    }

    #[test]
    fn tcp_and_udp_are_separate_spaces() {
        let mut p = Ports::new(0);
        assert_eq!(p.bind(Proto::Udp, 5353), Ok(5353));
        assert_eq!(p.bind(Proto::Udp, 5353), Err(PortError::InUse(5353)));
        assert_eq!(p.bind(Proto::Tcp, 5353), Ok(5353));
        p.release(Proto::Udp, 5353);
        assert_eq!(p.bind(Proto::Udp, 5353), Ok(5353));
    }

    #[test]
    fn ephemeral_skips_bound_ports() {
        let mut p = Ports::new(0);
        p.bind(Proto::Udp, 49152).unwrap();
        assert_eq!(p.ephemeral(Proto::Udp), Ok(49153));
        assert_eq!(p.bind(Proto::Udp, 0), Ok(49154), "port 0 is any ephemeral port");
    }

    #[test]
    fn exhaustion_is_an_error_and_release_recovers() {
        let mut p = Ports::new(12345);
        for _ in 0..EPHEMERAL_COUNT {
            p.ephemeral(Proto::Tcp).unwrap();
        }
        assert_eq!(p.in_use(Proto::Tcp), EPHEMERAL_COUNT as usize);
        assert_eq!(p.ephemeral(Proto::Tcp), Err(PortError::Exhausted));
        assert_eq!(p.ephemeral(Proto::Udp).map(|x| EPHEMERAL.contains(&x)), Ok(true));
        p.release(Proto::Tcp, 50000);
        assert_eq!(p.ephemeral(Proto::Tcp), Ok(50000));
    }
}
