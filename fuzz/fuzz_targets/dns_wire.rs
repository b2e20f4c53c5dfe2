//! The DNS codec on arbitrary replies to a fixed query (A and AAAA): never a panic, never more
//! than MAX_ADDRS addresses, and only addresses of the family asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smolmix::transport::dns_wire::{encode_query, parse_addresses, QType, MAX_ADDRS};

fuzz_target!(|data: &[u8]| {
    for qtype in [QType::A, QType::Aaaa] {
        let mut query = Vec::new();
        encode_query(0x4242, "directory.example", qtype, &mut query).expect("a valid name");
        // Let the input keep our id, so that more of it reaches the answer section.
        let mut reply = data.to_vec();
        if let Some(id) = reply.get_mut(..2) {
            id.copy_from_slice(&[0x42, 0x42]);
        }
        if let Ok(a) = parse_addresses(&query, &reply) {
            assert!(a.addrs.len() <= MAX_ADDRS);
            assert!(a.addrs.iter().all(|ip| ip.is_ipv4() == (qtype == QType::A)));
        }
    }
});
