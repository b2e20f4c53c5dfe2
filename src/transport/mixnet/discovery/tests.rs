//! Discovery on hand-built directory lists, and the offline behaviour against loopback ports.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).unwrap()
}

fn cand(addr: &str, version: &str, perf: u8) -> Candidate {
    Candidate {
        address: format!("{addr}.key@gw{addr}"),
        identity: format!("id-{addr}"),
        version: v(version),
        performance: perf,
    }
}

#[test]
fn version_maps_to_protocol() {
    assert_eq!(ipr_protocol(&v("1.29.9")), None);
    assert_eq!(ipr_protocol(&v("1.30.0")), Some(9));
    assert_eq!(ipr_protocol(&v("1.36.99")), Some(9));
    assert_eq!(ipr_protocol(&v("1.37.0")), Some(10));
    assert_eq!(ipr_protocol(&v("1.40.1")), Some(10));
    // A pre-release sorts before its release (semver): not yet v9.
    assert_eq!(ipr_protocol(&v("1.30.0-rc.1")), None);
}

#[test]
fn rank_drops_old_nodes_and_sorts_by_performance_then_protocol() {
    let exits = rank(vec![
        cand("a", "1.29.0", 100), // too old for v9: dropped
        cand("b", "1.30.2", 80),
        cand("c", "1.37.0", 80), // same score as b, v10 first
        cand("d", "1.38.0", 95),
        cand("e", "1.33.0", 0),
    ]);
    let order: Vec<&str> = exits.iter().map(|e| e.identity.as_str()).collect();
    assert_eq!(order, ["id-d", "id-c", "id-b", "id-e"]);
    assert_eq!(exits[0].ipr_protocol, Some(10));
    assert_eq!(exits[2].ipr_protocol, Some(9));
    assert_eq!(exits[0].performance, 0.95);
    assert_eq!(exits[0].version, "1.38.0");
    assert_eq!(exits[0].address, "d.key@gwd");
}

#[test]
fn rank_keeps_one_entry_per_address_and_clamps_scores() {
    let mut dup = cand("x", "1.37.0", 40);
    dup.identity = "id-x2".into();
    let exits = rank(vec![cand("x", "1.37.0", 30), dup, cand("y", "1.37.0", 250)]);
    assert_eq!(exits.len(), 2);
    assert_eq!(exits[0].performance, 1.0, "a score above 100 % is clamped");
    assert_eq!(exits[1].identity, "id-x2", "the better-scored duplicate wins");
    assert!(rank(Vec::new()).is_empty());
}

#[test]
fn rank_is_bounded() {
    let many = (0..MAX_EXITS + 10).map(|i| cand(&i.to_string(), "1.37.0", 50));
    assert_eq!(rank(many).len(), MAX_EXITS);
}

#[test]
fn choice_is_weighted_by_performance_and_skips_zero() {
    let exits = rank(vec![cand("hi", "1.37.0", 90), cand("lo", "1.37.0", 10), cand("dead", "1.37.0", 0)]);
    let mut rng = StdRng::seed_from_u64(7);
    let mut hi = 0;
    for _ in 0..10_000 {
        let pick = choose(&exits, &mut rng).unwrap();
        assert_ne!(pick.identity, "id-dead");
        hi += usize::from(pick.identity == "id-hi");
    }
    // Expected 9 000; ±300 is > 9 standard deviations (sqrt(10 000 · 0.9 · 0.1) = 30).
    assert!((8_700..=9_300).contains(&hi), "{hi}");
}

#[test]
fn no_choice_when_empty_or_all_dead() {
    let mut rng = StdRng::seed_from_u64(1);
    assert!(choose(&[], &mut rng).is_none());
    let dead = rank(vec![cand("a", "1.37.0", 0), cand("b", "1.30.0", 0)]);
    assert!(choose(&dead, &mut rng).is_none());
}

fn offline(url: &str, timeout: Duration) -> MixnetOptions {
    MixnetOptions { nym_api_urls: vec![url.to_string()], directory_timeout: timeout, ..Default::default() }
}

fn assert_unreachable(r: Result<impl std::fmt::Debug, MixnetError>, url: &str) -> String {
    match r {
        Err(e @ MixnetError::DirectoryUnreachable { .. }) => {
            let line = e.to_string();
            assert!(line.contains(url), "{line}");
            assert!(!line.contains('\n'), "one line: {line}");
            line
        }
        other => panic!("expected DirectoryUnreachable naming {url}, got {other:?}"),
    }
}

/// Nothing listens on loopback port 9: the refusal must surface at once, naming the URL.
#[tokio::test]
async fn list_exits_fails_fast_when_the_directory_refuses() {
    let url = "http://127.0.0.1:9/";
    let opts = offline(url, Duration::from_secs(5));
    let t = Instant::now();
    let line = assert_unreachable(list_exits(&opts).await, url);
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(matches!(best_ipr(&opts).await, Err(MixnetError::DirectoryUnreachable { .. })));
    eprintln!("{line}");
}

/// A directory that accepts and never answers: the timeout, not the SDK, ends the wait.
#[tokio::test]
async fn list_exits_times_out_on_a_silent_directory() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s); // keep it open, say nothing
        }
    });
    let url = format!("http://127.0.0.1:{port}/api/");
    let opts = offline(&url, Duration::from_millis(1500));
    let t = Instant::now();
    let line = assert_unreachable(list_exits(&opts).await, &url);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(4), "{took:?}");
    assert!(line.contains("no answer within 1.5 s"), "{line}");
    let gw = nym_sdk::mixnet::NodeIdentity::from_base58_string(crate::transport::mixnet::tests::IPR_GATEWAY).unwrap();
    assert_unreachable(lookup_protocol(&opts, gw).await, &url);
    hold.abort();
}

#[tokio::test]
async fn malformed_directory_url_is_its_own_error() {
    let opts = offline("not a url", Duration::from_secs(1));
    assert!(matches!(list_exits(&opts).await, Err(MixnetError::BadDirectoryUrl(_))));
}
