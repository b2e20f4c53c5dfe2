//! The codec on hand-built queries and replies (RFC 1035 §4.1 by hand), and on mutated ones.
//! [`response`] and [`record`] also build the replies of the resolver's test server.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// `nymtech.net` A IN, id 0x1234, RD.
const QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
    \x07nymtech\x03net\x00\x00\x01\x00\x01";

/// The query turned into a response: QR, RD, RA and `rcode`, no records.
pub(crate) fn response(query: &[u8], rcode: u8) -> Vec<u8> {
    let mut r = query.to_vec();
    r[2] = 0x81;
    r[3] = 0x80 | rcode;
    r
}

/// Appends one record: `owner` (wire bytes, possibly a pointer), type, class IN, TTL 60, data.
pub(crate) fn record(out: &mut Vec<u8>, owner: &[u8], rtype: u16, data: &[u8]) {
    out.extend(owner);
    out.extend(rtype.to_be_bytes());
    out.extend(CLASS_IN.to_be_bytes());
    out.extend(60u32.to_be_bytes());
    out.extend((data.len() as u16).to_be_bytes());
    out.extend(data);
    let n = u16::from_be_bytes([out[6], out[7]]) + 1;
    out[6..8].copy_from_slice(&n.to_be_bytes());
}

fn query(name: &str, qtype: QType) -> Vec<u8> {
    let mut q = Vec::new();
    encode_query(0x4242, name, qtype, &mut q).unwrap();
    q
}

fn ips(v: &[&str]) -> Vec<IpAddr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

/// The name of the question (offset 12) as a compression pointer.
pub(crate) const AT_QNAME: &[u8] = b"\xc0\x0c";

#[test]
fn encodes_queries() {
    let mut out = Vec::new();
    encode_query(0x1234, "nymtech.net", QType::A, &mut out).unwrap();
    assert_eq!(out, QUERY);
    out.clear();
    encode_query(0x1234, "nymtech.net.", QType::A, &mut out).unwrap();
    assert_eq!(out, QUERY, "a trailing dot is the same name");
    out.clear();
    encode_query(0x1234, "nymtech.net", QType::Aaaa, &mut out).unwrap();
    assert_eq!(out[out.len() - 4..], [0, 28, 0, 1]);
    out.clear();
    encode_query(7, ".", QType::A, &mut out).unwrap();
    assert_eq!(&out[HEADER..], b"\x00\x00\x01\x00\x01", "the root");
}

#[test]
fn rejects_bad_names_without_writing() {
    let long_label = format!("{}.net", "a".repeat(64));
    let long_name = vec!["a".repeat(63); 4].join("."); // 4 × 64 + 1 = 257 bytes
    for name in ["a..b", ".a", long_label.as_str(), long_name.as_str()] {
        let mut out = vec![9];
        assert!(encode_query(1, name, QType::A, &mut out).is_err(), "{name}");
        assert_eq!(out, [9]);
    }
}

#[test]
fn parses_reply_headers() {
    let nx = response(QUERY, 3);
    assert_eq!(parse_reply(QUERY, &nx), Ok(Reply { rcode: 3, answers: 0, truncated: false }));
    let mut answer = response(QUERY, 0);
    answer[2] |= 0x02; // TC
    record(&mut answer, AT_QNAME, 1, &[192, 0, 2, 1]);
    assert_eq!(parse_reply(QUERY, &answer), Ok(Reply { rcode: 0, answers: 1, truncated: true }));
    let mut upper = nx.clone();
    upper[13..20].copy_from_slice(b"NyMtEcH");
    assert!(parse_reply(QUERY, &upper).is_ok(), "0x20 case randomisation");
    let mut refused = response(QUERY, 5);
    refused[5] = 0;
    refused.truncate(HEADER);
    assert_eq!(parse_reply(QUERY, &refused).map(|r| r.rcode), Ok(5), "REFUSED without a question");

    assert_eq!(parse_reply(QUERY, &nx[..11]), Err(ReplyError::Short));
    assert_eq!(parse_reply(QUERY, &nx[..20]), Err(ReplyError::Short));
    assert_eq!(parse_reply(QUERY, QUERY), Err(ReplyError::NotAResponse), "our own query reflected");
    let mut other_id = nx.clone();
    other_id[1] ^= 1;
    assert_eq!(parse_reply(QUERY, &other_id), Err(ReplyError::WrongId));
    let mut other_name = nx.clone();
    other_name[14] = b'x';
    assert_eq!(parse_reply(QUERY, &other_name), Err(ReplyError::WrongQuestion));
    let mut notify = nx;
    notify[2] |= 4 << 3; // opcode NOTIFY
    assert_eq!(parse_reply(QUERY, &notify), Err(ReplyError::NotAResponse));
}

#[test]
fn reads_addresses_of_the_name_asked_for() {
    let q = query("api.example", QType::A);
    let mut r = response(&q, 0);
    record(&mut r, AT_QNAME, 1, &[192, 0, 2, 1]);
    record(&mut r, b"\x03API\x07EXAMPLE\x00", 1, &[192, 0, 2, 2]); // uncompressed, upper case
    record(&mut r, AT_QNAME, 1, &[192, 0, 2, 1]); // a duplicate
    record(&mut r, AT_QNAME, 28, &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]); // not asked
    record(&mut r, b"\x05other\x07example\x00", 1, &[203, 0, 113, 9]); // another name
    let got = parse_addresses(&q, &r).unwrap();
    assert_eq!(got.addrs, ips(&["192.0.2.1", "192.0.2.2"]));
    assert_eq!(got.reply.answers, 5);

    let q6 = query("api.example", QType::Aaaa);
    let mut r6 = response(&q6, 0);
    record(&mut r6, AT_QNAME, 1, &[192, 0, 2, 1]);
    record(&mut r6, AT_QNAME, 28, &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(parse_addresses(&q6, &r6).unwrap().addrs, ips(&["2001:db8::1"]));

    // NXDOMAIN and NODATA: no addresses, no error.
    assert!(parse_addresses(&q, &response(&q, 3)).unwrap().addrs.is_empty());
    assert!(parse_addresses(&q, &response(&q, 0)).unwrap().addrs.is_empty());
}

#[test]
fn follows_cname_chains_within_the_answer() {
    let q = query("api.example", QType::A);
    let mut r = response(&q, 0);
    let first_target = r.len() + 12; // where the first record's data (a name) will start
    record(&mut r, AT_QNAME, TYPE_CNAME, b"\x03cdn\x03net\x00");
    // The next link points at "cdn.net" by compression; the address is for its target.
    let pointer = [0xc0 | (first_target >> 8) as u8, first_target as u8];
    record(&mut r, &pointer, TYPE_CNAME, b"\x04edge\xc0\x0c");
    record(&mut r, b"\x04edge\x03api\x07example\x00", 1, &[198, 51, 100, 7]);
    record(&mut r, AT_QNAME, 1, &[192, 0, 2, 99]); // an address beside a CNAME: not the chain's end
    assert_eq!(parse_addresses(&q, &r).unwrap().addrs, ips(&["198.51.100.7"]));

    // A loop (api -> b -> api) is cut at 8 links.
    let mut looped = response(&q, 0);
    record(&mut looped, AT_QNAME, TYPE_CNAME, b"\x01b\x00");
    record(&mut looped, b"\x01b\x00", TYPE_CNAME, b"\x03api\x07example\x00");
    assert!(matches!(parse_addresses(&q, &looped), Err(ReplyError::Malformed(_))));
    // CNAME data with bytes after the name.
    let mut trailing = response(&q, 0);
    record(&mut trailing, AT_QNAME, TYPE_CNAME, b"\x01b\x00\x00");
    assert!(matches!(parse_addresses(&q, &trailing), Err(ReplyError::Malformed(_))));
}

#[test]
fn malformed_answers_are_errors() {
    let q = query("api.example", QType::A);
    let bad = |r: &[u8]| matches!(parse_addresses(&q, r), Err(ReplyError::Malformed(_)));
    let base = response(&q, 0);
    let mut short = base.clone();
    record(&mut short, AT_QNAME, 1, &[192, 0, 2, 1]);
    for cut in base.len()..short.len() {
        assert!(bad(&short[..cut]), "cut at {cut}");
    }
    let mut wrong_len = base.clone();
    record(&mut wrong_len, AT_QNAME, 1, &[192, 0, 2]);
    assert!(bad(&wrong_len));
    let mut forward = base.clone();
    record(&mut forward, b"\xc0\xff", 1, &[192, 0, 2, 1]); // points ahead
    assert!(bad(&forward));
    let mut itself = base.clone();
    let at = itself.len();
    record(&mut itself, &[0xc0 | (at >> 8) as u8, at as u8], 1, &[192, 0, 2, 1]); // points at itself
    assert!(bad(&itself));
    let mut extended = base.clone();
    record(&mut extended, b"\x41x\x00", 1, &[192, 0, 2, 1]); // label type 01
    assert!(bad(&extended));
    let mut long = base.clone();
    let name: Vec<u8> = (0..5).flat_map(|_| std::iter::once(60u8).chain([b'a'; 60])).chain([0]).collect();
    record(&mut long, &name, 1, &[192, 0, 2, 1]); // 306 bytes
    assert!(bad(&long));
    // Another class is not an address of ours; more records than ANCOUNT are not read.
    let mut chaos = base.clone();
    record(&mut chaos, AT_QNAME, 1, &[192, 0, 2, 1]);
    let class_at = chaos.len() - 4 - 2 - 4 - 2;
    chaos[class_at..class_at + 2].copy_from_slice(&3u16.to_be_bytes());
    assert!(parse_addresses(&q, &chaos).unwrap().addrs.is_empty());
    let mut extra = base;
    record(&mut extra, AT_QNAME, 1, &[192, 0, 2, 1]);
    record(&mut extra, AT_QNAME, 1, &[192, 0, 2, 2]);
    extra[7] = 1;
    assert_eq!(parse_addresses(&q, &extra).unwrap().addrs, ips(&["192.0.2.1"]));
}

#[test]
fn caps_addresses() {
    let q = query("api.example", QType::A);
    let mut r = response(&q, 0);
    for i in 0..100u8 {
        record(&mut r, AT_QNAME, 1, &[10, 0, 0, i]);
    }
    let got = parse_addresses(&q, &r).unwrap().addrs;
    assert_eq!(got.len(), MAX_ADDRS);
    assert_eq!(got[0], "10.0.0.0".parse::<IpAddr>().unwrap());
}

#[test]
fn mutations_never_panic() {
    let q = query("api.example", QType::A);
    let mut seed = response(&q, 0);
    record(&mut seed, AT_QNAME, TYPE_CNAME, b"\x03cdn\xc0\x10");
    record(&mut seed, b"\x03cdn\xc0\x10", 1, &[192, 0, 2, 1]);
    assert_eq!(parse_addresses(&q, &seed).unwrap().addrs, ips(&["192.0.2.1"]));
    let mut rng = StdRng::seed_from_u64(53);
    for _ in 0..30_000 {
        let mut v = seed.clone();
        for _ in 0..rng.gen_range(1..4) {
            if v.is_empty() {
                break;
            }
            let at = rng.gen_range(0..v.len());
            match rng.gen_range(0..3) {
                0 => v[at] = rng.gen(),
                1 => v.truncate(at),
                _ => v.insert(at, rng.gen()),
            }
        }
        if let Ok(a) = parse_addresses(&q, &v) {
            assert!(a.addrs.len() <= MAX_ADDRS);
        }
    }
}
