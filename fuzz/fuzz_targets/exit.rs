//! The exit double on arbitrary datagrams and TUN packets: never panic, queues stay bounded.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use smolmix::exit::{ExitConfig, Server};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let Ok(mut server) = Server::new(ExitConfig::default(), t0) else { return };
    let peer = "198.51.100.2:40000".parse().expect("literal");
    for (k, chunk) in data.split(|&b| b == 0xfd).enumerate() {
        let now = t0 + Duration::from_millis(k as u64 * 7);
        match chunk.split_first() {
            Some((0, rest)) => server.handle_tun_packet(rest, now),
            Some((_, rest)) => server.handle_datagram(peer, rest, now),
            None => server.handle_timeout(now),
        }
        while server.poll_transmit().is_some() {
            server.pop_transmit();
        }
        while server.poll_tun().is_some() {
            server.pop_tun();
        }
    }
});
