//! What the exit gives a session on connect: its addresses, its MTU and the protocol version.
//!
//! One type, defined here where the connect reply is parsed: the session keeps it, the
//! [`Event::Connected`](super::Event::Connected) event carries it, and the link, the VPN driver
//! and the library's stack all read it.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The smallest MTU of a link that carries IPv6 (RFC 8200 §5).
pub use crate::pipeline::IPV6_MIN_MTU as MIN_MTU_V6;
/// The smallest MTU every IPv4 host must accept whole (RFC 791: 576-byte datagrams).
pub const MIN_MTU_V4: u16 = 576;
/// The largest MTU taken from an exit: jumbo frames; the IPR's own default is 1420.
pub const MAX_EXIT_MTU: u16 = 9000;

/// What the exit gave us on connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// The exit-side IPv4 address our packets are translated to.
    pub ipv4: Ipv4Addr,
    /// The exit-side IPv6 address our packets are translated to.
    pub ipv6: Ipv6Addr,
    /// The exit's egress MTU; reported by v10 exits only.
    pub mtu: Option<u16>,
    /// The protocol version the exit accepted (10 or 9).
    pub version: u8,
}

impl Allocation {
    /// MTU the IPR uses when it does not report one (v9: `CLIENT_MTU_FALLBACK`,
    /// docs/ipr-protocol.md §3.4).
    pub const V9_MTU: u16 = 1420;

    /// The exit's MTU, or the IPR's default when it did not say (v9).
    pub fn mtu_or_default(&self) -> u16 {
        self.mtu.unwrap_or(Self::V9_MTU)
    }

    /// The MTU to give the tunnel: what the exit announced, clamped to what it can sanely be.
    /// The exit's word is untrusted input: Linux switches IPv6 off on an interface whose MTU
    /// drops below 1280 (RFC 8200 §5), which deletes the tunnel's IPv6 routes and lets IPv6
    /// out of the tunnel while it still looks connected; 0 would fail `ip link set`. So with
    /// IPv6 tunnelled nothing below [`MIN_MTU_V6`] is used, without it nothing below
    /// [`MIN_MTU_V4`], and nothing above [`MAX_EXIT_MTU`] (a larger bundle could not cross
    /// the mixnet as one message anyway).
    pub fn tunnel_mtu(&self, ipv6: bool) -> u16 {
        let floor = if ipv6 { MIN_MTU_V6 } else { MIN_MTU_V4 };
        self.mtu_or_default().clamp(floor, MAX_EXIT_MTU)
    }

    /// Whether the exit's MTU lies outside what [`Allocation::tunnel_mtu`] keeps to (the
    /// session logs it once, on connect).
    pub fn mtu_out_of_range(&self) -> bool {
        self.mtu.is_some_and(|m| !(MIN_MTU_V6..=MAX_EXIT_MTU).contains(&m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(mtu: Option<u16>) -> Allocation {
        Allocation { ipv4: Ipv4Addr::new(10, 0, 0, 2), ipv6: Ipv6Addr::LOCALHOST, mtu, version: 10 }
    }

    #[test]
    fn the_exits_mtu_is_clamped_never_below_1280_with_ipv6() {
        assert_eq!(alloc(None).tunnel_mtu(true), 1420, "v9: the IPR's default");
        assert_eq!(alloc(Some(1500)).tunnel_mtu(true), 1500);
        for hostile in [0, 1, 1200, 1279] {
            assert_eq!(alloc(Some(hostile)).tunnel_mtu(true), MIN_MTU_V6, "{hostile}");
            assert!(alloc(Some(hostile)).mtu_out_of_range());
        }
        assert_eq!(alloc(Some(1200)).tunnel_mtu(false), 1200, "IPv4 only: a small MTU is honoured");
        assert_eq!(alloc(Some(0)).tunnel_mtu(false), MIN_MTU_V4);
        assert_eq!(alloc(Some(u16::MAX)).tunnel_mtu(true), MAX_EXIT_MTU);
        assert!(!alloc(Some(1420)).mtu_out_of_range() && !alloc(None).mtu_out_of_range());
    }
}
