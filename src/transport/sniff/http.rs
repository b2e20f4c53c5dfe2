//! The `Host` of an HTTP/1.x request head (RFC 9112 §3 and §5, RFC 9110 §7.2).
//!
//! Stricter than a server need be, because the answer picks a destination: CRLF line ends only,
//! no obsolete line folding, no whitespace before a field's colon (RFC 9112 §5.1), exactly one
//! `Host` (RFC 9112 §3.2), and an origin-form target (`/path`): an absolute-form target would
//! name a host of its own, which a server must prefer to `Host` (RFC 9112 §3.2.2), so two
//! hosts would be in play and we accept neither.

use super::{normalize_host, SniffError, MAX_HTTP_HEAD};

/// Field lines in one head; a directory request has about 8.
const MAX_FIELDS: usize = 100;
const MAX_METHOD: usize = 32;

fn bad(what: &'static str) -> SniffError {
    SniffError::Http(what)
}

/// `Ok(None)`: a prefix, read more. `Ok(Some((host, port)))`: the head is complete.
pub(super) fn host(buf: &[u8]) -> Result<Option<(String, Option<u16>)>, SniffError> {
    let window = &buf[..buf.len().min(MAX_HTTP_HEAD)];
    let Some(end) = find(window, b"\r\n\r\n") else {
        if buf.len() >= MAX_HTTP_HEAD {
            return Err(SniffError::TooLarge(MAX_HTTP_HEAD));
        }
        // Fail early on a bad request line rather than wait for a head that is never valid.
        if let Some(eol) = find(buf, b"\r\n") {
            request_line(&buf[..eol])?;
        } else if buf.contains(&b'\n') {
            return Err(bad("a line ends in a bare LF"));
        }
        return Ok(None);
    };
    // Every line of the head, each without its CRLF (the head's last line ends at `end`).
    let head = &buf[..end];
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    request_line(strip_cr(first, head.len() > first.len())?)?;
    let mut hosts: Vec<&[u8]> = Vec::new();
    let mut fields = 0;
    let mut consumed = first.len();
    for line in lines {
        consumed += 1 + line.len();
        let line = strip_cr(line, consumed < head.len())?;
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(bad("more than 100 header fields"));
        }
        if let Some(value) = field(line)? {
            hosts.push(value);
        }
    }
    let [value] = hosts.as_slice() else { return Err(SniffError::HostCount(hosts.len())) };
    authority(value).map(Some)
}

/// Every line but the head's last ends in CR before its LF; a CR anywhere else is an error.
fn strip_cr(line: &[u8], had_lf: bool) -> Result<&[u8], SniffError> {
    let line = if had_lf { line.strip_suffix(b"\r").ok_or(bad("a line ends in a bare LF"))? } else { line };
    if line.contains(&b'\r') {
        return Err(bad("a bare CR inside a line"));
    }
    Ok(line)
}

/// `method SP request-target SP HTTP-version` (RFC 9112 §3), origin-form target only.
fn request_line(line: &[u8]) -> Result<(), SniffError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("the request line is not three parts separated by single spaces"));
    };
    if method.is_empty() || method.len() > MAX_METHOD || !method.iter().all(|&b| is_tchar(b)) {
        return Err(bad("the method is not a token"));
    }
    if target.first() != Some(&b'/') || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(bad("the request target is not in origin form (/path)"));
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(bad("the version is not HTTP/1.0 or HTTP/1.1"));
    }
    Ok(())
}

/// One field line `name ":" OWS value OWS` (RFC 9112 §5); `Some(value)` if it is `Host`.
fn field(line: &[u8]) -> Result<Option<&[u8]>, SniffError> {
    if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(bad("obsolete line folding"));
    }
    let colon = line.iter().position(|&b| b == b':').ok_or(bad("a field line without a colon"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(bad("a field name is not a token (or has whitespace before its colon)"));
    }
    // field-vchar, SP, HTAB and obs-text; no other control byte (NUL included).
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(bad("a control character in a field value"));
    }
    let value = trim_ows(value);
    Ok(name.eq_ignore_ascii_case(b"host").then_some(value))
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2–3.2.3); an empty port is no
/// port. IPv6 only between brackets, no userinfo.
fn authority(value: &[u8]) -> Result<(String, Option<u16>), SniffError> {
    let text = std::str::from_utf8(value).map_err(|_| SniffError::BadHost("not ASCII"))?;
    if text.is_empty() || text.contains('@') {
        return Err(SniffError::BadHost("empty, or with userinfo"));
    }
    let (host, port) = if text.starts_with('[') {
        let close = text.find(']').ok_or(SniffError::BadHost("an unclosed '['"))?;
        let (host, rest) = text.split_at(close + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':').ok_or(SniffError::BadHost("bytes after ']'"))?)),
        }
    } else {
        match text.split_once(':') {
            Some((_, p)) if p.contains(':') => return Err(SniffError::BadHost("IPv6 without brackets")),
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(SniffError::BadHost("port 0 or past 65535")),
            Ok(n) => Some(n),
        },
        Some(_) => return Err(SniffError::BadHost("a port that is not 1 to 5 digits")),
    };
    Ok((normalize_host(host)?, port))
}

/// RFC 9110 §5.6.2: `tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
/// "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
