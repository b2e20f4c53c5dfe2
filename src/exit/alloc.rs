//! IP allocation for connected clients, exactly as the IPR does it (docs/ipr-protocol.md §3.3).
//!
//! Contract:
//! - A client gets one 16-bit suffix `x`, drawn uniformly from `[2, 65534]`, and with it the
//!   pair `10.0.(x >> 8).(x & 0xff)` / `fc00::x`. Both addresses of a pair share `x`, so one
//!   set of used suffixes is enough to keep both pools consistent.
//! - `x = 1` is the exit's own TUN address (`10.0.0.1`, `fc00::1`) and is outside the drawn
//!   range, `x = 0` and `x = 65535` (network and broadcast of 10.0.0.0/16) likewise.
//! - Up to 100 random draws; if all hit a used suffix the connect fails with `NoAvailableIp`,
//!   even when free addresses remain. This is the real allocator's behaviour ("make IP
//!   allocation smarter" is an open item of nymtech/nym #3936), so the double keeps it.
//! - The table is bounded by the address space itself: at most 65 533 entries.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use nym_ip_packet_requests::IpPair;
use rand::Rng;

/// Number of random draws before giving up (HEAD `util/generate_new_ip.rs`).
const MAX_ALLOCATION_TRIES: usize = 100;
/// Smallest suffix handed out: 0 is the network address, 1 the exit's TUN address.
const FIRST_SUFFIX: u16 = 2;
/// Largest suffix handed out: 65535 would be 10.0.255.255, the /16 broadcast address.
const LAST_SUFFIX: u16 = 65534;

/// The exit's own IPv4 TUN address; never allocated.
pub const TUN_IPV4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The exit's own IPv6 TUN address; never allocated.
pub const TUN_IPV6: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 1);
/// Prefix length of the IPv4 pool 10.0.0.0/16.
pub const TUN_IPV4_PREFIX: u8 = 16;
/// Prefix length of the IPv6 pool fc00::/112.
pub const TUN_IPV6_PREFIX: u8 = 112;

/// The set of suffixes currently owned by a client.
#[derive(Debug, Default)]
pub(crate) struct IpAllocator {
    /// Suffixes `x` in use; the pair is derived from `x`.
    used: HashSet<u16>,
}

impl IpAllocator {
    /// Draws a free pair, or `None` after 100 colliding draws (`NoAvailableIp`).
    pub(crate) fn allocate(&mut self, rng: &mut impl Rng) -> Option<IpPair> {
        for _ in 0..MAX_ALLOCATION_TRIES {
            let x = rng.gen_range(FIRST_SUFFIX..=LAST_SUFFIX);
            if self.used.insert(x) {
                return Some(pair_from_suffix(x));
            }
        }
        None
    }

    /// Returns a pair to the pool. Freeing a pair that was never allocated is a no-op.
    pub(crate) fn free(&mut self, ips: IpPair) {
        if let Some(x) = suffix_of(ips) {
            self.used.remove(&x);
        }
    }

    /// Number of allocated pairs.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.used.len()
    }
}

/// `x = 0x0307` → `10.0.3.7` / `fc00::307` (docs/ipr-protocol.md §3.3).
pub(crate) fn pair_from_suffix(x: u16) -> IpPair {
    let [hi, lo] = x.to_be_bytes();
    IpPair::new(Ipv4Addr::new(10, 0, hi, lo), Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, x))
}

/// The suffix shared by both addresses of an allocated pair, or `None` for a foreign pair.
fn suffix_of(ips: IpPair) -> Option<u16> {
    let [a, b, hi, lo] = ips.ipv4.octets();
    let x = u16::from_be_bytes([hi, lo]);
    let consistent = a == 10 && b == 0 && pair_from_suffix(x).ipv6 == ips.ipv6;
    consistent.then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn suffix_mapping_matches_the_reference_example() {
        let ips = pair_from_suffix(0x0307);
        assert_eq!(ips.ipv4, Ipv4Addr::new(10, 0, 3, 7));
        assert_eq!(ips.ipv6, "fc00::307".parse::<Ipv6Addr>().unwrap());
        assert_eq!(suffix_of(ips), Some(0x0307));
    }

    #[test]
    fn never_hands_out_the_tun_address_and_stays_in_the_pool() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut alloc = IpAllocator::default();
        for _ in 0..5000 {
            let ips = alloc.allocate(&mut rng).unwrap();
            assert_ne!(ips.ipv4, TUN_IPV4);
            assert_ne!(ips.ipv6, TUN_IPV6);
            let [a, b, hi, lo] = ips.ipv4.octets();
            assert_eq!((a, b), (10, 0));
            assert!((FIRST_SUFFIX..=LAST_SUFFIX).contains(&u16::from_be_bytes([hi, lo])));
            assert_eq!(ips.ipv6.segments()[..7], [0xfc00, 0, 0, 0, 0, 0, 0]);
        }
        assert_eq!(alloc.len(), 5000);
    }

    #[test]
    fn free_returns_the_pair_and_ignores_foreign_pairs() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut alloc = IpAllocator::default();
        let ips = alloc.allocate(&mut rng).unwrap();
        alloc.free(IpPair::new(Ipv4Addr::new(192, 0, 2, 1), TUN_IPV6));
        assert_eq!(alloc.len(), 1);
        alloc.free(ips);
        assert_eq!(alloc.len(), 0);
    }

    #[test]
    fn gives_up_after_one_hundred_collisions() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut alloc = IpAllocator::default();
        alloc.used.extend(FIRST_SUFFIX..=LAST_SUFFIX);
        assert!(alloc.allocate(&mut rng).is_none());
    }
}
