//! The directory relay's sniffer on arbitrary first bytes: never a panic; a verdict only with
//! a normalised host, and the same verdict for every longer input (bytes after a complete
//! ClientHello or request head are not read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use smolmix::transport::sniff::{normalize_host, sniff, Sniffed, Target};

fuzz_target!(|data: &[u8]| {
    let verdict = sniff(data);
    if let Ok(Sniffed::Found(Target::Tls { host } | Target::Http { host, .. })) = &verdict {
        assert_eq!(normalize_host(host).as_ref(), Ok(host));
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\r\n\r\n\x16\x03\x01");
        assert_eq!(sniff(&longer), verdict);
    }
});
