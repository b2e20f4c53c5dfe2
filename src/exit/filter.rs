//! Uplink packet checks: the IPR's `parse_packet` and its non-global destination filter.
//!
//! Contract (docs/ipr-protocol.md §5.2 steps 1, 4, 5):
//! - [`classify`] slices a client packet with etherparse. It needs an IPv4/IPv6 header and a
//!   transport: TCP, UDP, ICMPv4, ICMPv6, or a protocol etherparse does not know (the real server's
//!   etherparse 0.13 reported those as `TransportSlice::Unknown` and forwarded them). A fragment
//!   has no transport slice and is refused, which is what the real server does with client-side
//!   IPv4 fragments (docs/ipr-protocol.md §7 item 14). The destination port is the TCP/UDP port,
//!   else 0.
//! - [`is_global`] is the `!is_global_ip` filter of PR #6670 (`allow_local_ips = false`),
//!   following the std `is_global` definition the IPR uses. The double applies it only with
//!   `--deny-non-global`, because tests use documentation ranges that it would deny.
//! - The exit policy itself (torrc-style rules fetched from nymtech.net) is not modelled:
//!   the double behaves like an open proxy apart from this filter.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{IpNumber, NetSlice, SlicedPacket, TransportSlice};

/// What the server needs from a client packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Uplink {
    /// Source address: the only thing that ties the packet to a client
    /// (docs/ipr-protocol.md §5.2 step 2).
    pub(crate) src: IpAddr,
    /// Destination with the TCP/UDP port, or port 0 for everything else.
    pub(crate) dst: SocketAddr,
}

/// Why a client packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Not a well-formed IPv4/IPv6 packet (`PacketParseFailed`).
    #[error("not a parseable IP packet")]
    Parse,
    /// No transport header, e.g. a fragment (`PacketMissingTransportHeader`).
    #[error("IP packet without a transport header")]
    NoTransport,
}

/// docs/ipr-protocol.md §5.2 steps 1 and 4 for one packet of a client bundle.
pub(crate) fn classify(packet: &[u8]) -> Result<Uplink, PacketError> {
    let sliced = SlicedPacket::from_ip(packet).map_err(|_| PacketError::Parse)?;
    let (src, dst, payload) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            (IpAddr::V4(v4.header().source_addr()), IpAddr::V4(v4.header().destination_addr()), v4.payload())
        }
        Some(NetSlice::Ipv6(v6)) => {
            (IpAddr::V6(v6.header().source_addr()), IpAddr::V6(v6.header().destination_addr()), v6.payload())
        }
        _ => return Err(PacketError::Parse),
    };
    let port = match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => tcp.destination_port(),
        Some(TransportSlice::Udp(udp)) => udp.destination_port(),
        Some(TransportSlice::Icmpv4(_) | TransportSlice::Icmpv6(_)) => 0,
        None => {
            let known = [IpNumber::TCP, IpNumber::UDP, IpNumber::ICMP, IpNumber::IPV6_ICMP];
            if payload.fragmented || known.contains(&payload.ip_number) {
                return Err(PacketError::NoTransport);
            }
            0
        }
    };
    Ok(Uplink { src, dst: SocketAddr::new(dst, port) })
}

/// Whether `ip` is globally routable in the sense of std's (unstable) `IpAddr::is_global`.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    let special = o[0] == 0                                  // "this network" 0/8
        || ip.is_private()                                  // 10/8, 172.16/12, 192.168/16
        || (o[0] == 100 && (o[1] & 0xc0) == 64)             // shared CGNAT 100.64/10
        || ip.is_loopback()                                 // 127/8
        || ip.is_link_local()                               // 169.254/16
        // IETF protocol assignments 192.0.0/24, except the two global anycast addresses.
        || (o[0] == 192 && o[1] == 0 && o[2] == 0 && o[3] != 9 && o[3] != 10)
        || ip.is_documentation()                            // 192.0.2/24, 198.51.100/24, 203.0.113/24
        || (o[0] == 198 && (o[1] & 0xfe) == 18)             // benchmarking 198.18/15
        || (o[0] & 0xf0) == 240                             // reserved 240/4, includes broadcast
        ;
    !special
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let in_2001_23 = s[0] == 0x2001 && s[1] < 0x200;
    // Inside 2001::/23 only these are global (RFC 9637 / IANA special-purpose registry).
    let global_in_2001_23 = u128::from(ip) == 0x2001_0001_0000_0000_0000_0000_0000_0001
        || u128::from(ip) == 0x2001_0001_0000_0000_0000_0000_0000_0002
        || (s[1] == 0x3)                                    // AMT 2001:3::/32
        || (s[1] == 0x4 && s[2] == 0x112)                   // AS112-v6 2001:4:112::/48
        || (0x20..=0x3f).contains(&s[1]); // ORCHIDv2 2001:20::/28, drone 2001:30::/28
    let special = ip.is_unspecified()
        || ip.is_loopback()
        || (s[..6] == [0, 0, 0, 0, 0, 0xffff])              // IPv4-mapped ::ffff:0:0/96
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)    // local-use NAT64 64:ff9b:1::/48
        || (s[..4] == [0x100, 0, 0, 0])                     // discard-only 100::/64
        || (in_2001_23 && !global_in_2001_23)
        || (s[0] == 0x2001 && s[1] == 0xdb8)                // documentation 2001:db8::/32
        || s[0] == 0x2002                                   // 6to4 2002::/16 (listed in docs/ipr-protocol.md §5.2)
        || (s[0] & 0xfe00) == 0xfc00                        // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80                        // link-local fe80::/10
        ;
    !special
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp4(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4(src, dst, 64).udp(5000, dport).write(&mut out, &[1, 2, 3]).unwrap();
        out
    }

    #[test]
    fn udp_and_tcp_carry_their_port_icmp_gets_port_zero() {
        let p = udp4([10, 0, 3, 7], [192, 0, 2, 80], 53);
        let u = classify(&p).unwrap();
        assert_eq!(u.src, IpAddr::V4(Ipv4Addr::new(10, 0, 3, 7)));
        assert_eq!(u.dst, "192.0.2.80:53".parse().unwrap());

        let mut icmp = Vec::new();
        PacketBuilder::ipv6([0xfc; 16], [0x20; 16], 64).icmpv6_echo_request(1, 1).write(&mut icmp, &[0; 8]).unwrap();
        assert_eq!(classify(&icmp).unwrap().dst.port(), 0);
    }

    #[test]
    fn unknown_protocols_pass_fragments_and_garbage_do_not() {
        // IPv4, protocol 47 (GRE), 4 bytes payload; checksum is not verified by the slicer.
        let mut gre = vec![0x45, 0, 0, 24, 0, 0, 0, 0, 64, 47, 0, 0, 10, 0, 0, 2, 192, 0, 2, 1];
        gre.extend_from_slice(&[0; 4]);
        assert_eq!(classify(&gre).unwrap().dst.port(), 0);

        let mut frag = udp4([10, 0, 0, 2], [192, 0, 2, 1], 9);
        frag[6] = 0x20; // more-fragments flag
        assert_eq!(classify(&frag), Err(PacketError::NoTransport));

        assert_eq!(classify(&[]), Err(PacketError::Parse));
        assert_eq!(classify(&[0x45, 0, 0]), Err(PacketError::Parse));
        assert!(classify(&[0x60; 39]).is_err());
    }

    #[test]
    fn global_filter_matches_the_reference_list() {
        let denied = [
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "172.16.0.1",
            "192.0.0.1",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.1",
            "203.0.113.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:1.2.3.4",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002::1",
            "fc00::2",
            "fd00::1",
            "fe80::1",
        ];
        for ip in denied {
            assert!(!is_global(ip.parse().unwrap()), "{ip} must be denied");
        }
        let allowed = ["1.1.1.1", "8.8.8.8", "192.0.0.9", "224.0.0.1", "2606:4700::1111", "2001:20::1", "64:ff9b::1"];
        for ip in allowed {
            assert!(is_global(ip.parse().unwrap()), "{ip} must be allowed");
        }
    }
}
