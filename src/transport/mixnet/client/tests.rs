//! The transport's pure parts: uplink message shape, bounded downlink queue, counters, and the
//! offline failure of `connect`. Sending and receiving through a live client need the mixnet.

use std::time::{Duration, Instant};

use super::*;
use crate::transport::mixnet::options::CONTROL_REPLY_SURBS;
use crate::transport::mixnet::tests::IPR;

#[test]
fn uplink_message_is_anonymous_with_the_configured_surbs() {
    let ipr = parse_recipient(IPR).unwrap();
    for surbs in [0, 4, 10] {
        match input_message(ipr, b"\x01lp-frame", surbs) {
            InputMessage::Anonymous { recipient, data, reply_surbs, lane, max_retransmissions } => {
                assert_eq!(recipient.to_string(), IPR);
                assert_eq!(data, b"\x01lp-frame");
                assert_eq!(reply_surbs, surbs);
                assert_eq!(lane, TransmissionLane::General);
                assert_eq!(max_retransmissions, None, "uplink keeps the SDK's retransmission");
            }
            other => panic!("expected an anonymous message, got {other:?}"),
        }
    }
}

#[test]
fn default_options_keep_four_spare_surbs() {
    let ipr = parse_recipient(IPR).unwrap();
    let m = input_message(ipr, b"x", MixnetOptions::default().reply_surbs);
    assert!(matches!(m, InputMessage::Anonymous { reply_surbs: 4, .. }));
}

#[test]
fn control_messages_carry_enough_surbs_for_an_immediate_answer() {
    // The IPR answers only with SURBs above its reserve of 10.
    let t0 = Instant::now();
    let mut supply = ReplySupply::new(4, t0);
    assert!(surbs_for(MessageKind::Control, CONTROL_REPLY_SURBS, &mut supply, t0) > 10);
    assert_eq!(surbs_for(MessageKind::Control, CONTROL_REPLY_SURBS, &mut supply, t0), CONTROL_REPLY_SURBS);
    let mut rich = ReplySupply::new(50, t0);
    assert_eq!(surbs_for(MessageKind::Control, CONTROL_REPLY_SURBS, &mut rich, t0), CONTROL_REPLY_SURBS);
    assert_eq!(surbs_for(MessageKind::Control, 4, &mut rich, t0), 4, "a small setting is honoured");
    supply.sent(20);
    assert_eq!(
        surbs_for(MessageKind::Data, CONTROL_REPLY_SURBS, &mut supply, t0),
        0,
        "stocked: a data message carries none"
    );
}

#[test]
fn zero_reply_surbs_are_refused() {
    let o = MixnetOptions { reply_surbs: 0, ..Default::default() };
    assert!(matches!(o.validate(), Err(MixnetError::NoReplySurbs)));
    assert!(MixnetOptions::default().validate().is_ok());
}

#[tokio::test]
async fn queue_is_bounded_and_counts_drops() {
    let counters = Arc::new(Counters::default());
    let (tx, mut q) = RecvQueue::new(2, counters.clone());
    offer(&tx, b"one".to_vec(), &counters);
    offer(&tx, b"two".to_vec(), &counters);
    offer(&tx, b"three".to_vec(), &counters); // full: dropped
    let mut buf = [0u8; 64];
    assert_eq!(q.recv(&mut buf).await.unwrap(), 3);
    assert_eq!(&buf[..3], b"one");
    assert_eq!(q.try_recv(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"two");
    assert_eq!(q.try_recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    let s = counters.snapshot(4, &ReplySupply::new(4, Instant::now()));
    assert_eq!((s.messages_in, s.bytes_in, s.recv_queue_drops), (2, 6, 1));
    assert_eq!(s.reply_surbs_spare, 4);
}

#[tokio::test]
async fn oversize_messages_are_dropped_and_the_next_one_delivered() {
    let counters = Arc::new(Counters::default());
    let (tx, mut q) = RecvQueue::new(8, counters.clone());
    offer(&tx, vec![7u8; 9], &counters);
    offer(&tx, vec![1u8; 8], &counters);
    offer(&tx, vec![7u8; 100], &counters);
    offer(&tx, Vec::new(), &counters); // empty: passed up, the session counts junk
    let mut buf = [0u8; 8];
    assert_eq!(q.recv(&mut buf).await.unwrap(), 8);
    assert_eq!(buf, [1u8; 8]);
    assert_eq!(q.try_recv(&mut buf).unwrap(), 0);
    assert_eq!(counters.snapshot(0, &ReplySupply::new(1, Instant::now())).oversize_drops, 2);
}

#[tokio::test]
async fn a_stopped_client_ends_recv() {
    let counters = Arc::new(Counters::default());
    let (tx, mut q) = RecvQueue::new(4, counters.clone());
    offer(&tx, b"last".to_vec(), &counters);
    drop(tx);
    let mut buf = [0u8; 8];
    assert_eq!(q.recv(&mut buf).await.unwrap(), 4, "queued messages are still delivered");
    assert_eq!(q.recv(&mut buf).await.unwrap_err().kind(), io::ErrorKind::NotConnected);
    assert_eq!(q.try_recv(&mut buf).unwrap_err().kind(), io::ErrorKind::NotConnected);
}

#[tokio::test]
async fn recv_is_cancel_safe() {
    let counters = Arc::new(Counters::default());
    let (tx, mut q) = RecvQueue::new(4, counters.clone());
    let mut buf = [0u8; 8];
    // Nothing queued: a cancelled recv loses nothing.
    assert!(tokio::time::timeout(Duration::from_millis(20), q.recv(&mut buf)).await.is_err());
    offer(&tx, b"after".to_vec(), &counters);
    assert_eq!(q.recv(&mut buf).await.unwrap(), 5);
}

#[tokio::test]
async fn connect_rejects_a_bad_address_before_any_network() {
    let opts = MixnetOptions { nym_api_urls: vec!["http://127.0.0.1:9/".into()], ..Default::default() };
    let e = MixnetTransport::connect("udp://192.0.2.1:9", &opts).await.unwrap_err();
    assert!(matches!(e, MixnetError::BadAddress(_)), "{e}");
}

/// Offline `up --ipr <nym address>`: the directory lookup fails first, naming the URL.
#[tokio::test]
async fn connect_fails_fast_without_a_directory() {
    let url = "http://127.0.0.1:9/";
    let opts = MixnetOptions {
        nym_api_urls: vec![url.into()],
        directory_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let t = Instant::now();
    match MixnetTransport::connect(IPR, &opts).await {
        Err(e @ MixnetError::DirectoryUnreachable { .. }) => assert!(e.to_string().contains(url), "{e}"),
        Err(e) => panic!("expected DirectoryUnreachable, got {e}"),
        Ok(t) => panic!("connected?! {t:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
}

/// The driver and the library spawn these on a multi-thread runtime.
#[test]
fn futures_and_transport_are_send() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    let opts = MixnetOptions::default();
    send(&MixnetTransport::connect(IPR, &opts));
    send(&crate::transport::mixnet::list_exits(&opts));
    send(&crate::transport::mixnet::best_ipr(&opts));
    send_sync::<MixnetTransport>();
    send_sync::<MixnetError>();
}

#[test]
fn sdk_start_up_errors_about_the_directory_name_it() {
    let opts = MixnetOptions { nym_api_urls: vec!["http://127.0.0.1:9/".into()], ..Default::default() };
    let e = classify(&opts, nym_sdk::Error::NoNymAPIUrl);
    assert!(matches!(e, MixnetError::DirectoryUnreachable { ref url, .. } if url == "http://127.0.0.1:9/"), "{e}");
    let e = classify(&opts, nym_sdk::Error::NoGatewayAvailable);
    assert!(matches!(e, MixnetError::Client(_)), "{e}");
}
