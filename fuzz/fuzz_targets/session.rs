//! The IPR session on arbitrary messages from the exit: never panic, every yielded packet lies
//! inside the message, and the session keeps producing valid transmit messages afterwards.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use smolmix::ipr::{Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig::new(0x0011_2233_4455_6677), t0);
    for (k, msg) in data.split(|&b| b == 0xfe).enumerate() {
        let now = t0 + Duration::from_millis(k as u64);
        for pkt in s.handle_message(msg, now) {
            assert!(pkt.len() <= msg.len());
        }
        s.send_ip(msg, now);
        s.flush();
        while s.poll_transmit().is_some() {
            s.pop_transmit();
        }
        s.handle_timeout(now);
        while s.poll_event().is_some() {}
    }
});
