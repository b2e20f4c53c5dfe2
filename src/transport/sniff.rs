//! Which host a client wants, from the first bytes it sends: the server name of a TLS
//! ClientHello, or the `Host` of an HTTP/1.x request head. Sans-IO: bytes in, a verdict out.
//!
//! The directory relay (docs/directory-relay.md §4) reads these bytes from the SDK's HTTP client
//! before it dials anything, and connects only to a host of its allowlist. So this parser sees
//! input from our own process, but it decides where a socket outside the tunnel goes: it is
//! strict, and anything it does not fully understand is an error, never a guess.
//!
//! Contract of [`sniff`]:
//! - [`Sniffed::NeedMore`]: `buf` is a proper prefix of something that may still parse; read
//!   more and call again with the longer buffer. Never returned past [`MAX_TLS_HELLO`] or
//!   [`MAX_HTTP_HEAD`] bytes: a longer input is [`SniffError::TooLarge`].
//! - [`Sniffed::Found`]: the whole ClientHello, or the whole request head, parsed; bytes after
//!   it are not looked at.
//! - `Err`: the input cannot become a valid ClientHello or request head. Every length is
//!   checked before it is used; no input makes it panic (fuzz/fuzz_targets/sniff.rs).
//!
//! The first byte decides: 22 (a TLS handshake record) is TLS, an ASCII letter is HTTP (every
//! method is a token, and the ones a client sends start with a letter), anything else is an
//! error.

mod http;
mod tls;

use std::net::IpAddr;

/// Largest ClientHello handshake message we accept (its 24-bit length). rustls and OpenSSL send
/// 0.5 to 2 KB, post-quantum key shares included; 16 KiB is one full TLS record.
pub const MAX_TLS_HELLO: usize = 16 * 1024;
/// Largest request head (request line and header fields, up to the empty line). A directory
/// request is ~300 bytes; 8 KiB is the common server limit.
pub const MAX_HTTP_HEAD: usize = 8 * 1024;
/// What a reader must be ready to buffer to get a verdict: the largest ClientHello (with its
/// handshake header) split over the most records we accept, or the largest request head.
pub const MAX_SNIFF: usize = MAX_TLS_HELLO + 4 + tls::MAX_RECORDS * tls::RECORD_HEADER;

/// RFC 1035 §2.3.4 and RFC 1123 §2.1: a host name is at most 253 characters in text (255 on the
/// wire), a label 1 to 63.
const MAX_HOST: usize = 253;
const MAX_LABEL: usize = 63;

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A TLS connection to the server name in the ClientHello (RFC 6066 §3). The port is not in
    /// the ClientHello: whoever dials decides it.
    Tls {
        /// The server name, normalised by [`normalize_host`]; never an IP address.
        host: String,
    },
    /// A plain HTTP/1.x request for `Host` (RFC 9112 §3.2).
    Http {
        /// The host of the `Host` field, normalised by [`normalize_host`] (IPv6 without brackets).
        host: String,
        /// The port of the `Host` field, if it has one (otherwise 80).
        port: Option<u16>,
    },
}

/// The result of looking at the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// Not enough bytes yet; read more.
    NeedMore,
    /// The complete ClientHello or request head names this target.
    Found(Target),
}

/// Why the bytes are not a ClientHello or request head we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniffError {
    /// The first byte starts neither a TLS handshake record nor an HTTP method.
    #[error("neither TLS nor HTTP/1.x (first byte {0:#04x})")]
    UnknownProtocol(u8),
    /// The ClientHello or request head would be longer than we buffer.
    #[error("longer than {0} bytes")]
    TooLarge(usize),
    /// A TLS record or handshake field is malformed (which one, in words).
    #[error("malformed TLS: {0}")]
    Tls(&'static str),
    /// The ClientHello has no server_name extension (a client dialling an IP address sends
    /// none: it must be told the host by name).
    #[error("the TLS ClientHello names no server (no server_name extension)")]
    NoServerName,
    /// The request line or a header field is malformed (which part, in words).
    #[error("malformed HTTP/1.x request head: {0}")]
    Http(&'static str),
    /// The request has no `Host` field, or more than one (RFC 9112 §3.2: a server must reject both).
    #[error("the HTTP request must have exactly one Host field (it has {0})")]
    HostCount(usize),
    /// The server name or `Host` is not a valid host.
    #[error("bad host name: {0}")]
    BadHost(&'static str),
}

/// Looks at the first bytes of a connection; see the module docs for the contract.
pub fn sniff(buf: &[u8]) -> Result<Sniffed, SniffError> {
    match buf.first() {
        None => Ok(Sniffed::NeedMore),
        Some(&tls::CONTENT_HANDSHAKE) => {
            Ok(tls::server_name(buf)?.map_or(Sniffed::NeedMore, |host| Sniffed::Found(Target::Tls { host })))
        }
        Some(b) if b.is_ascii_alphabetic() => {
            Ok(http::host(buf)?.map_or(Sniffed::NeedMore, |(host, port)| Sniffed::Found(Target::Http { host, port })))
        }
        Some(&b) => Err(SniffError::UnknownProtocol(b)),
    }
}

/// A host as we compare it: an IP address in its canonical text (IPv6 without brackets, an
/// IPv4-mapped one as such), or a DNS name in ASCII lower case without a final dot, made of
/// labels of 1 to 63 letters, digits, `-` and `_`, at most 253 characters. Internationalised
/// names are sent as A-labels (`xn--…`), so anything non-ASCII is an error.
pub fn normalize_host(host: &str) -> Result<String, SniffError> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if let Some(v6) = bare {
        return match v6.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => Ok(ip.to_string()),
            Err(_) => Err(SniffError::BadHost("not an IPv6 address between brackets")),
        };
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err(SniffError::BadHost("empty"));
    }
    if name.len() > MAX_HOST {
        return Err(SniffError::BadHost("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL {
            return Err(SniffError::BadHost("every label is 1 to 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(SniffError::BadHost("only letters, digits, '-' and '_' in a label"));
        }
    }
    Ok(name.to_ascii_lowercase())
}

/// A big-endian reader over a slice that reports running out instead of panicking; `None`
/// means "the input ends here", which the caller turns into "need more" or an error.
#[derive(Debug, Clone)]
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    /// A vector with a `len_bytes`-byte length prefix (RFC 8446 §3.4).
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

#[cfg(test)]
mod tests;
