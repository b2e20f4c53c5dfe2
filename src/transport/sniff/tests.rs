//! The sniffer on captured and hand-built ClientHellos and request heads, every prefix of
//! them, and mutated copies (no panic, no verdict from a mutilated prefix).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// What curl 7.88.1 (OpenSSL 3.0.19) sent for `https://validator.nymtech.net:44333/api/`,
/// captured with a TCP listener on loopback: one 517-byte record, SNI at offset 153.
const CURL_HELLO: &str = "
    1603010200010001fc0303e13ebc15a3444644245166566f2b9fdefb6c92348cfe4d8a5a817054e6a8183320d51f398f
    c5faefaf71176307dace59962c4aa29ccf4f20a3bcec563c3e9ebbd6003e130213031301c02cc030009fcca9cca8ccaa
    c02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff01000175
    0000001a001800001576616c696461746f722e6e796d746563682e6e6574000b000403000102000a00160014001d0017
    001e00190018010001010102010301040010000e000c02683208687474702f312e31001600000017000000310000000d
    002a0028040305030603080708080809080a080b080408050806040105010601030303010302040205020602002b0009
    080304030303020301002d00020101003300260024001d0020b0bd189fd73bf7039aa5440f73192935b51c5fb5065e17
    3ecc6f0218625ecf09001500a80000000000000000000000000000000000000000000000000000000000000000000000
    000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
    000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
    00000000000000000000000000000000000000000000000000000000000000000000000000
";

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

fn tls(host: &str) -> Result<Sniffed, SniffError> {
    Ok(Sniffed::Found(Target::Tls { host: host.to_string() }))
}

fn http(host: &str, port: Option<u16>) -> Result<Sniffed, SniffError> {
    Ok(Sniffed::Found(Target::Http { host: host.to_string(), port }))
}

/// A ClientHello handshake message (without record) with these extensions.
fn handshake(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([7u8; 32]); // random
    body.push(0); // empty session id
    body.extend([0, 2, 0x13, 0x01, 1, 0]); // one suite, the null compression method
    let mut exts = Vec::new();
    for (kind, data) in extensions {
        exts.extend(kind.to_be_bytes());
        exts.extend((data.len() as u16).to_be_bytes());
        exts.extend(data);
    }
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    hs
}

/// The server_name extension's data for these (name_type, name) entries.
fn server_names(names: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in names {
        list.push(*kind);
        list.extend((name.len() as u16).to_be_bytes());
        list.extend(*name);
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend(list);
    data
}

/// `hs` in TLS records of at most `size` bytes each.
fn records(hs: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in hs.chunks(size) {
        out.extend([22, 3, 1]);
        out.extend((chunk.len() as u16).to_be_bytes());
        out.extend(chunk);
    }
    out
}

fn hello_for(name: &[u8]) -> Vec<u8> {
    records(&handshake(&[(10, vec![0, 2, 0, 29]), (0, server_names(&[(0, name)]))]), 1 << 14)
}

#[test]
fn curl_hello_names_its_server() {
    let hello = hex(CURL_HELLO);
    assert_eq!(hello.len(), 517);
    assert_eq!(sniff(&hello), tls("validator.nymtech.net"));
    let mut more = hello.clone();
    more.extend(b"\x14\x03\x03\x00\x01\x01 and whatever follows");
    assert_eq!(sniff(&more), tls("validator.nymtech.net"), "bytes after the hello are not read");
    for n in 0..hello.len() {
        assert_eq!(sniff(&hello[..n]), Ok(Sniffed::NeedMore), "prefix of {n} bytes");
    }
}

#[test]
fn a_hello_fragmented_over_records_is_joined() {
    let hs = hex(CURL_HELLO)[5..].to_vec();
    for size in [1, 2, 3, 4, 5, 50, 100, 511] {
        let split = records(&hs, size);
        if hs.len().div_ceil(size) > tls::MAX_RECORDS {
            assert!(matches!(sniff(&split), Err(SniffError::Tls(_))), "{size}: too many records");
            continue;
        }
        assert_eq!(sniff(&split), tls("validator.nymtech.net"), "records of {size}");
        for n in 0..split.len() {
            assert_eq!(sniff(&split[..n]), Ok(Sniffed::NeedMore), "records of {size}, prefix {n}");
        }
    }
}

#[test]
fn hand_built_hellos() {
    assert_eq!(sniff(&hello_for(b"Nym-API.Example.")), tls("nym-api.example"));
    assert_eq!(sniff(&hello_for(b"a")), tls("a"));
    // No extensions at all, extensions without server_name.
    let mut bare = handshake(&[]);
    bare.truncate(bare.len() - 2);
    bare[3] -= 2;
    assert_eq!(sniff(&records(&bare, 1 << 14)), Err(SniffError::NoServerName));
    assert_eq!(sniff(&records(&handshake(&[(10, vec![0, 0])]), 1 << 14)), Err(SniffError::NoServerName));
}

#[test]
fn malformed_hellos_are_errors() {
    let tls_err = |b: &[u8]| matches!(sniff(b), Err(SniffError::Tls(_)));
    let host_err = |b: &[u8]| matches!(sniff(b), Err(SniffError::BadHost(_)));
    let good = handshake(&[(0, server_names(&[(0, b"a.example")]))]);
    let two_names = handshake(&[(0, server_names(&[(0, b"a.example"), (0, b"b.example")]))]);
    assert!(tls_err(&records(&two_names, 1 << 14)));
    let other_type = handshake(&[(0, server_names(&[(1, b"a.example")]))]);
    assert!(tls_err(&records(&other_type, 1 << 14)));
    let twice = handshake(&[(0, server_names(&[(0, b"a.example")])), (0, server_names(&[(0, b"a.example")]))]);
    assert!(tls_err(&records(&twice, 1 << 14)), "the same extension twice");
    assert!(tls_err(&records(&handshake(&[(0, vec![0, 0])]), 1 << 14)), "an empty list");
    assert!(tls_err(&records(&handshake(&[(0, server_names(&[(0, b"")]))]), 1 << 14)), "an empty name");
    for name in [&b"192.0.2.1"[..], b"[2001:db8::1]", b"::1", b"a..b", b"a b", b"caf\xc3\xa9.example", b"a\0b"] {
        assert!(host_err(&hello_for(name)), "{:?}", String::from_utf8_lossy(name));
    }
    // Record layer.
    let rec = records(&good, 1 << 14);
    let mut v = rec.clone();
    v[1] = 2; // SSL 2 record version
    assert!(tls_err(&v));
    assert!(tls_err(&[22, 3, 1, 0, 0]), "an empty record");
    assert!(tls_err(&[22, 3, 1, 0x40, 1]), "a record past 2^14");
    assert!(tls_err(&[22, 3, 9]), "checked before the length is there");
    let mut second = records(&good, 10);
    second[15] = 23; // the second record is application data
    assert!(tls_err(&second));
    assert!(tls_err(&records(&good, 3)), "more than 16 records");
    // Handshake layer.
    let mut not_hello = good.clone();
    not_hello[0] = 2; // ServerHello
    assert!(tls_err(&records(&not_hello, 1 << 14)));
    assert_eq!(sniff(&[22, 3, 1, 0, 4, 1, 0, 0x40, 1]), Err(SniffError::TooLarge(MAX_TLS_HELLO)));
    let mut version = good.clone();
    version[4] = 2;
    assert!(tls_err(&records(&version, 1 << 14)));
    let mut session = good.clone();
    session[38] = 33; // session id length past 32
    assert!(tls_err(&records(&session, 1 << 14)));
    let mut suites = good.clone();
    suites[40] = 1; // odd cipher suite list length
    assert!(tls_err(&records(&suites, 1 << 14)));
    let mut trailing = good.clone();
    trailing.push(0);
    trailing[3] += 1; // the byte is inside the hello, after the extensions
    assert!(tls_err(&records(&trailing, 1 << 14)));
    let mut overrun = good;
    let n = overrun.len();
    overrun[n - 10] += 1; // the host name's length (low byte) points past the list
    assert!(tls_err(&records(&overrun, 1 << 14)));
}

const CURL_GET: &[u8] = b"GET /api/v1/epoch/key-rotation-info HTTP/1.1\r\nHost: 198.18.0.20:8000\r\n\
    user-agent: nym-sdk/1.21.6\r\naccept: application/json\r\ncontent-type: application/json\r\n\r\n";

#[test]
fn request_heads_name_their_host() {
    assert_eq!(sniff(CURL_GET), http("198.18.0.20", Some(8000)));
    for n in 0..CURL_GET.len() {
        assert_eq!(sniff(&CURL_GET[..n]), Ok(Sniffed::NeedMore), "prefix of {n} bytes");
    }
    let mut body = CURL_GET.to_vec();
    body.extend(b"{\"not\": \"read\"}\r\n\r\nHost: evil.example\r\n\r\n");
    assert_eq!(sniff(&body), http("198.18.0.20", Some(8000)), "the body is not the head");
    let cases: &[(&[u8], Result<Sniffed, SniffError>)] = &[
        (b"GET / HTTP/1.1\r\nHost: Validator.NymTech.net.\r\n\r\n", http("validator.nymtech.net", None)),
        (b"POST /x HTTP/1.0\r\nhOsT:\t [2001:DB8::1]:8080 \t\r\n\r\n", http("2001:db8::1", Some(8080))),
        (b"GET / HTTP/1.1\r\nX: y\r\nHost: a.example:\r\nZ:\r\n\r\n", http("a.example", None)),
        (b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", http("::1", None)),
        (b"GET / HTTP/1.1\r\n\r\n", Err(SniffError::HostCount(0))),
        (b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", Err(SniffError::HostCount(2))),
    ];
    for (head, want) in cases {
        assert_eq!(&sniff(head), want, "{}", String::from_utf8_lossy(head));
    }
}

#[test]
fn malformed_heads_are_errors() {
    let bad_heads: &[&[u8]] = &[
        b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", // absolute form
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example\r\n\r\n", // authority form
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", // whitespace before the colon
        b"GET / HTTP/1.1\r\nX: y\r\n Host: a\r\n\r\n", // obsolete folding
        b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", // a bare LF
        b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", // a bare CR
        b"GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
    ];
    for head in bad_heads {
        assert!(matches!(sniff(head), Err(SniffError::Http(_))), "{}", String::from_utf8_lossy(head));
    }
    for host in
        ["", "a:0", "a:65536", "a:123456", "a:8x", "u@a", "::1", "::1:80", "[::1", "[::1]x", "[a]", "a b", "caf\u{e9}"]
    {
        let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert!(matches!(sniff(head.as_bytes()), Err(SniffError::BadHost(_))), "{host:?}");
    }
    // A bad request line fails before the head is complete; a head that never ends, at the cap.
    assert!(matches!(sniff(b"GET http://x/ HTTP/1.1\r\nHo"), Err(SniffError::Http(_))));
    assert!(matches!(sniff(b"GET / HTTP/1.1\nHost"), Err(SniffError::Http(_))));
    let mut endless = b"GET / HTTP/1.1\r\nX: ".to_vec();
    endless.resize(MAX_HTTP_HEAD - 1, b'a');
    assert_eq!(sniff(&endless), Ok(Sniffed::NeedMore));
    endless.push(b'a');
    assert_eq!(sniff(&endless), Err(SniffError::TooLarge(MAX_HTTP_HEAD)));
    assert_eq!(sniff(b"\x00GET"), Err(SniffError::UnknownProtocol(0)));
    assert_eq!(sniff(b"{\"json\": 1}"), Err(SniffError::UnknownProtocol(b'{')));
}

#[test]
fn hosts_are_normalised() {
    let ok = |h: &str| normalize_host(h).unwrap();
    assert_eq!(ok("Nym.Example."), "nym.example");
    assert_eq!(ok("_srv.xn--caf-dma.example"), "_srv.xn--caf-dma.example");
    assert_eq!(ok("[2001:DB8:0::1]"), "2001:db8::1");
    assert_eq!(ok("2001:db8:0:0::1"), "2001:db8::1");
    assert_eq!(ok("192.0.2.1"), "192.0.2.1");
    let long = vec!["a".repeat(63); 4].join("."); // 255 characters
    for bad in ["", ".", "a..b", ".a", "a b", "a/b", "[192.0.2.1]", &"a".repeat(64), &long] {
        assert!(normalize_host(bad).is_err(), "{bad:?}");
    }
    assert!(normalize_host(&long[..253]).is_ok());
}

/// Mutated copies of valid inputs: never a panic, and a verdict only with a valid host.
#[test]
fn mutations_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x736d);
    let seeds = [hex(CURL_HELLO), CURL_GET.to_vec(), records(&handshake(&[(0, server_names(&[(0, b"a")]))]), 7)];
    let mut found = 0;
    for i in 0..30_000 {
        let mut v = seeds[i % seeds.len()].clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..v.len());
            match rng.gen_range(0..4) {
                0 => v[at] = rng.gen(),
                1 => v[at] ^= 1 << rng.gen_range(0..8),
                2 => v.truncate(at.max(1)),
                _ => v.insert(at, rng.gen()),
            }
        }
        if let Ok(Sniffed::Found(Target::Tls { host } | Target::Http { host, .. })) = sniff(&v) {
            assert_eq!(normalize_host(&host).as_ref(), Ok(&host));
            found += 1;
        }
    }
    assert!(found > 1000, "most single-byte mutations leave a valid host: {found}");
}
