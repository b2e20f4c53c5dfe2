//! Both directions of the pipeline on arbitrary bytes: never panic, and whatever is emitted
//! must be no longer than what a packet may be. The first byte picks the direction, so one
//! corpus exercises fragments, NAT state and ICMP errors across both.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use smolmix::pipeline::{Action, Config, Limits, Pipeline};

fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        local_v4: Ipv4Addr::new(100, 86, 0, 2),
        local_v6: Ipv6Addr::new(0xfd6d, 0x6978, 0, 0, 0, 0, 0, 2),
        mtu: 1500,
        limits: Limits::default(),
    };
    let mut p = Pipeline::with_seed(cfg, 7);
    p.set_allocated(Ipv4Addr::new(10, 0, 3, 7), Some(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0x307)));
    let t0 = Instant::now();
    // Split the input into packets at 0xff 0xff markers: several packets share one pipeline.
    for (k, chunk) in data.split(|&b| b == 0xff).enumerate() {
        let Some((&dir, rest)) = chunk.split_first() else { continue };
        let mut buf = rest.to_vec();
        let now = t0 + Duration::from_millis(k as u64 * 10);
        let out = if dir & 1 == 0 { p.handle_tun(&mut buf, now) } else { p.handle_exit(&mut buf, now) };
        if let Action::ToExit(b) | Action::ToTun(b) = out {
            assert!(b.len() <= 65535);
        }
        if dir & 0x80 != 0 {
            p.handle_timeout(now + Duration::from_secs(120));
        }
    }
});
