//! The server name of a TLS ClientHello: the record layer (RFC 8446 §5.1), the ClientHello
//! (RFC 8446 §4.1.2) and its server_name extension (RFC 6066 §3). TLS 1.0 to 1.3 share this
//! layout; a TLS 1.3 hello is a 1.2 hello with more extensions.

use super::{normalize_host, Reader, SniffError, MAX_TLS_HELLO};

/// ContentType `handshake` (RFC 8446 §5.1).
pub(super) const CONTENT_HANDSHAKE: u8 = 22;
/// type, legacy_record_version, length.
pub(super) const RECORD_HEADER: usize = 5;
/// A ClientHello split over more records than this is refused (clients use one).
pub(super) const MAX_RECORDS: usize = 16;
/// RFC 8446 §5.1: a plaintext record carries at most 2^14 bytes, and no empty handshake fragment.
const MAX_RECORD: usize = 1 << 14;
const HANDSHAKE_HEADER: usize = 4;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;
/// More extensions than this is not a client we know (browsers send about 20).
const MAX_EXTENSIONS: usize = 128;

fn bad(what: &'static str) -> SniffError {
    SniffError::Tls(what)
}

/// `Ok(None)`: a prefix, read more. `Ok(Some(host))`: the ClientHello is complete and names
/// `host`. The first byte is known to be [`CONTENT_HANDSHAKE`].
pub(super) fn server_name(buf: &[u8]) -> Result<Option<String>, SniffError> {
    // The handshake message may be fragmented over several records: join their payloads.
    let mut handshake: Vec<u8> = Vec::new();
    let mut rest = buf;
    let mut records = 0;
    loop {
        if let Some(hello) = complete_hello(&handshake)? {
            return parse_hello(hello).map(Some);
        }
        if rest.is_empty() {
            return Ok(None);
        }
        if records == MAX_RECORDS {
            return Err(bad("ClientHello split over more than 16 records"));
        }
        let Some(header) = rest.get(..RECORD_HEADER) else {
            check_record_prefix(rest)?;
            return Ok(None);
        };
        check_record_prefix(header)?;
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Err(bad("record length is 0 or past 2^14"));
        }
        records += 1;
        let body = &rest[RECORD_HEADER..];
        let avail = len.min(body.len());
        handshake.extend_from_slice(&body[..avail]);
        if avail < len {
            // A partial record: the hello may still be complete within it.
            return complete_hello(&handshake)?.map(parse_hello).transpose();
        }
        rest = &body[len..];
    }
}

/// Checks the record header bytes present (all of them may not be there yet).
fn check_record_prefix(header: &[u8]) -> Result<(), SniffError> {
    if header.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
        return Err(bad("a record before the end of the ClientHello is not a handshake record"));
    }
    // legacy_record_version: 0x0301 for a first hello, 0x0300..=0x0303 seen in the wild.
    if header.get(1).is_some_and(|&major| major != 3) || header.get(2).is_some_and(|&minor| minor > 4) {
        return Err(bad("record version is not 3.0 to 3.4"));
    }
    Ok(())
}

/// The ClientHello body once all of it is there; errors as soon as its header is wrong.
fn complete_hello(handshake: &[u8]) -> Result<Option<&[u8]>, SniffError> {
    if handshake.first().is_some_and(|&t| t != CLIENT_HELLO) {
        return Err(bad("the first handshake message is not a ClientHello"));
    }
    let mut r = Reader::new(handshake);
    let (Some(_), Some(len)) = (r.u8(), r.u24()) else { return Ok(None) };
    if len > MAX_TLS_HELLO {
        return Err(SniffError::TooLarge(MAX_TLS_HELLO));
    }
    Ok(handshake.get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + len))
}

/// RFC 8446 §4.1.2: legacy_version, random, legacy_session_id, cipher_suites,
/// legacy_compression_methods, extensions; the body must end with the extensions.
fn parse_hello(body: &[u8]) -> Result<String, SniffError> {
    let mut r = Reader::new(body);
    let version = r.u16().ok_or(bad("ClientHello ends in its version"))?;
    if version >> 8 != 3 {
        return Err(bad("ClientHello version is not 3.x"));
    }
    r.take(32).ok_or(bad("ClientHello ends in its random"))?;
    let session = r.vec8().ok_or(bad("session id overruns the ClientHello"))?;
    if session.len() > 32 {
        return Err(bad("session id longer than 32 bytes"));
    }
    let suites = r.vec16().ok_or(bad("cipher suites overrun the ClientHello"))?;
    if suites.len() < 2 || suites.len() % 2 != 0 {
        return Err(bad("cipher suite list is empty or of odd length"));
    }
    let compression = r.vec8().ok_or(bad("compression methods overrun the ClientHello"))?;
    if compression.is_empty() {
        return Err(bad("no compression method"));
    }
    if r.is_empty() {
        return Err(SniffError::NoServerName); // a hello without extensions (SSL 3.0 style)
    }
    let extensions = r.vec16().ok_or(bad("extensions overrun the ClientHello"))?;
    if !r.is_empty() {
        return Err(bad("bytes after the extensions"));
    }
    let mut r = Reader::new(extensions);
    let mut seen: Vec<u16> = Vec::new();
    let mut name = None;
    while !r.is_empty() {
        let (Some(kind), Some(data)) = (r.u16(), r.vec16()) else {
            return Err(bad("an extension overruns the extension list"));
        };
        // RFC 8446 §4.2: no extension type twice. Two server names would be two answers.
        if seen.contains(&kind) {
            return Err(bad("an extension appears twice"));
        }
        if seen.len() == MAX_EXTENSIONS {
            return Err(bad("more than 128 extensions"));
        }
        seen.push(kind);
        if kind == EXT_SERVER_NAME {
            name = Some(parse_server_name(data)?);
        }
    }
    name.ok_or(SniffError::NoServerName)
}

/// RFC 6066 §3: `ServerName server_name_list<1..2^16-1>`, each a name_type and, for host_name
/// (the only type defined), an opaque `HostName<1..2^16-1>`. One name per type; ASCII, no IP
/// address literal.
fn parse_server_name(data: &[u8]) -> Result<String, SniffError> {
    let mut r = Reader::new(data);
    let list = r.vec16().ok_or(bad("server name list overruns its extension"))?;
    if !r.is_empty() || list.is_empty() {
        return Err(bad("server_name extension is not exactly one non-empty list"));
    }
    let mut r = Reader::new(list);
    let mut host: Option<&[u8]> = None;
    while !r.is_empty() {
        // Another name_type would have a layout RFC 6066 does not define: we cannot skip it.
        if r.u8() != Some(NAME_TYPE_HOST) {
            return Err(bad("a server name of a type other than host_name"));
        }
        let name = r.vec16().ok_or(bad("a host name overruns the server name list"))?;
        if name.is_empty() || host.is_some() {
            return Err(bad("an empty host name, or two of them"));
        }
        host = Some(name);
    }
    let host = host.ok_or(bad("no host name in the server name list"))?;
    let text = std::str::from_utf8(host).map_err(|_| SniffError::BadHost("not ASCII"))?;
    let host = normalize_host(text)?;
    if host.parse::<std::net::IpAddr>().is_ok() || text.starts_with('[') {
        return Err(SniffError::BadHost("an IP address as a TLS server name (RFC 6066 §3 forbids it)"));
    }
    Ok(host)
}
