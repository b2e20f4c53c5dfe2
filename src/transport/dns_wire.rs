//! The DNS wire format we speak (RFC 1035 §4): a query for one name and type, and the parts of a
//! reply we read. Sans-IO: bytes in, values out; used by the marked resolver
//! ([`super::resolver`]) and by the `up` DNS check (system/dns_check.rs).
//!
//! Contract:
//! - [`encode_query`] writes a standard query (RD, one question, class IN) or nothing at all.
//! - [`parse_reply`] checks that a datagram answers a query built by [`encode_query`]: our id,
//!   QR set, opcode QUERY, our question echoed (case-insensitively: resolvers may apply 0x20
//!   case randomisation). An error response without a question (allowed for FORMERR/REFUSED)
//!   is accepted too.
//! - [`parse_addresses`] also reads the answer section: the addresses of the type asked for,
//!   of the name asked for or of the end of a CNAME chain starting at it (RFC 1034 §3.6.2),
//!   followed within the answer section only, never by another query. Records for other names
//!   are ignored: a reply cannot add addresses for a name we did not ask about.
//!
//! Every read is bounds-checked, compression pointers must point backwards (so decoding ends),
//! and every count is capped: a hostile datagram is an error value, never a panic or a loop
//! (fuzz/fuzz_targets/dns_wire.rs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bytes of a DNS header.
pub const HEADER: usize = 12;
/// RFC 1035 §2.3.4: a name is at most 255 bytes on the wire, a label at most 63.
pub const MAX_NAME: usize = 255;
const MAX_LABEL: usize = 63;
/// Answer records we look at; more are ignored.
pub const MAX_RECORDS: usize = 64;
/// CNAME links followed from the name asked for (resolvers give up at about 8 as well).
pub const MAX_CNAME_HOPS: usize = 8;
/// Addresses returned from one reply.
pub const MAX_ADDRS: usize = 16;
/// Compression pointers followed while decoding one name.
const MAX_POINTERS: usize = 32;
/// Flags of our query: RD (recursion desired), everything else zero (RFC 1035 §4.1.1).
const FLAGS_RD: u16 = 0x0100;
const CLASS_IN: u16 = 1;
const TYPE_CNAME: u16 = 5;

/// The record types we ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    /// An IPv4 address (RFC 1035 §3.4.1).
    A,
    /// An IPv6 address (RFC 3596 §2.1).
    Aaaa,
}

impl QType {
    /// The TYPE value on the wire.
    pub fn code(self) -> u16 {
        match self {
            QType::A => 1,
            QType::Aaaa => 28,
        }
    }
}

/// A name that cannot be put in a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub &'static str);

/// What a reply's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// RFC 1035 §4.1.1 RCODE: 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED.
    pub rcode: u8,
    /// ANCOUNT: records in the answer section.
    pub answers: u16,
    /// TC: the server truncated the reply to fit the datagram.
    pub truncated: bool,
}

/// Why a datagram is not an answer to our query; callers skip such datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Shorter than a header, or than the header and our question.
    #[error("shorter than a DNS header and our question")]
    Short,
    /// The id is not our query's.
    #[error("another query id")]
    WrongId,
    /// QR not set, or an opcode other than QUERY.
    #[error("not a response to a standard query")]
    NotAResponse,
    /// The question section does not echo ours.
    #[error("another question")]
    WrongQuestion,
    /// A record or name in the answer section is malformed (which part, in words).
    #[error("malformed answer section: {0}")]
    Malformed(&'static str),
}

/// Appends the query for `name` and `qtype` (class IN, RD) with `id` to `out`; on error `out`
/// is left as it was. A final dot is optional; `"."` and `""` are the root.
pub fn encode_query(id: u16, name: &str, qtype: QType, out: &mut Vec<u8>) -> Result<(), NameError> {
    let start = out.len();
    for v in [id, FLAGS_RD, 1, 0, 0, 0] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > MAX_LABEL {
                out.truncate(start);
                return Err(NameError("every label is 1 to 63 bytes"));
            }
            out.push(label.len() as u8); // ≤ 63, checked above
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() - start - HEADER > MAX_NAME {
        out.truncate(start);
        return Err(NameError("longer than 255 bytes"));
    }
    out.extend_from_slice(&qtype.code().to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(())
}

/// Checks that `buf` answers `query` (as built by [`encode_query`]); see the module docs.
pub fn parse_reply(query: &[u8], buf: &[u8]) -> Result<Reply, ReplyError> {
    let (Some(qh), Some(h)) = (query.get(..HEADER), buf.get(..HEADER)) else { return Err(ReplyError::Short) };
    if h[..2] != qh[..2] {
        return Err(ReplyError::WrongId);
    }
    let flags = u16::from_be_bytes([h[2], h[3]]);
    let (qr, opcode, rcode) = (flags & 0x8000 != 0, (flags >> 11) & 0xf, (flags & 0xf) as u8);
    if !qr || opcode != 0 {
        return Err(ReplyError::NotAResponse);
    }
    let qdcount = u16::from_be_bytes([h[4], h[5]]);
    let answers = u16::from_be_bytes([h[6], h[7]]);
    let reply = Reply { rcode, answers, truncated: flags & 0x0200 != 0 };
    if qdcount == 0 && rcode != 0 {
        return Ok(reply);
    }
    let question = &query[HEADER..];
    let echoed = buf.get(HEADER..HEADER + question.len()).ok_or(ReplyError::Short)?;
    if qdcount != 1 || !echoed.eq_ignore_ascii_case(question) {
        return Err(ReplyError::WrongQuestion);
    }
    Ok(reply)
}

/// A reply and the addresses it gives for the name and type of our query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// The header.
    pub reply: Reply,
    /// At most [`MAX_ADDRS`], in the order of the answer section.
    pub addrs: Vec<IpAddr>,
}

/// [`parse_reply`], then the answer section; see the module docs.
pub fn parse_addresses(query: &[u8], buf: &[u8]) -> Result<Addresses, ReplyError> {
    let reply = parse_reply(query, buf)?;
    let mut addrs = Vec::new();
    if reply.rcode != 0 || reply.answers == 0 {
        return Ok(Addresses { reply, addrs });
    }
    // Our own query: its name and type (it was built by encode_query).
    let (qname, qend) = read_name(query, HEADER)?;
    let qtype = query.get(qend..qend + 2).map(|t| u16::from_be_bytes([t[0], t[1]])).ok_or(ReplyError::Short)?;
    let addr_len = match qtype {
        1 => 4,
        28 => 16,
        _ => return Err(ReplyError::WrongQuestion),
    };
    // parse_reply checked that the question section echoes ours: the answers follow it.
    let mut pos = query.len();
    let mut records: Vec<(Vec<u8>, u16, usize, usize)> = Vec::new(); // owner, type, data start, length
    for _ in 0..usize::from(reply.answers).min(MAX_RECORDS) {
        let (owner, at) = read_name(buf, pos)?;
        let fixed = buf.get(at..at + 10).ok_or(ReplyError::Malformed("a record ends in its header"))?;
        let (rtype, class) = (u16::from_be_bytes([fixed[0], fixed[1]]), u16::from_be_bytes([fixed[2], fixed[3]]));
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let start = at + 10;
        if buf.len() < start + len {
            return Err(ReplyError::Malformed("record data past the end of the datagram"));
        }
        if class == CLASS_IN {
            records.push((owner, rtype, start, len));
        }
        pos = start + len;
    }
    // Follow CNAMEs from the name asked for, within these records only.
    let mut name = qname;
    for hop in 0..=MAX_CNAME_HOPS {
        let Some(&(_, _, start, len)) = records.iter().find(|r| r.1 == TYPE_CNAME && r.0 == name) else { break };
        if hop == MAX_CNAME_HOPS {
            return Err(ReplyError::Malformed("a CNAME chain longer than 8"));
        }
        let (target, end) = read_name(buf, start)?;
        if end != start + len {
            return Err(ReplyError::Malformed("CNAME data is not exactly one name"));
        }
        name = target;
    }
    for &(_, _, start, len) in records.iter().filter(|r| r.1 == qtype && r.0 == name) {
        let data = &buf[start..start + len]; // in bounds: checked when the record was read
        let ip = match (addr_len, data.len()) {
            (4, 4) => IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            (16, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(data);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return Err(ReplyError::Malformed("an address record of the wrong length")),
        };
        if addrs.len() < MAX_ADDRS && !addrs.contains(&ip) {
            addrs.push(ip);
        }
    }
    Ok(Addresses { reply, addrs })
}

/// Decodes the name at `pos` (RFC 1035 §4.1.4) into its uncompressed wire form, lower-cased
/// (length-prefixed labels, so a dot inside a label is not a separator), and the position
/// after it in `msg` (after the first pointer, if any). Pointers must point before
/// the label they replace, so every jump goes backwards and decoding ends.
fn read_name(msg: &[u8], pos: usize) -> Result<(Vec<u8>, usize), ReplyError> {
    let mut name = Vec::new();
    let mut at = pos;
    let mut end = None;
    let mut wire_len = 0usize;
    for _ in 0..=MAX_POINTERS {
        loop {
            let len = *msg.get(at).ok_or(ReplyError::Malformed("a name runs past the datagram"))?;
            match len & 0xc0 {
                0x00 if len == 0 => return Ok((name, end.unwrap_or(at + 1))),
                0x00 => {
                    let label = msg
                        .get(at + 1..at + 1 + usize::from(len))
                        .ok_or(ReplyError::Malformed("a label runs past the datagram"))?;
                    wire_len += 1 + label.len();
                    if wire_len + 1 > MAX_NAME {
                        return Err(ReplyError::Malformed("a name longer than 255 bytes"));
                    }
                    name.push(len);
                    name.extend(label.iter().map(u8::to_ascii_lowercase));
                    at += 1 + label.len();
                }
                0xc0 => {
                    let low = *msg.get(at + 1).ok_or(ReplyError::Malformed("a pointer runs past the datagram"))?;
                    let target = (usize::from(len & 0x3f) << 8) | usize::from(low);
                    if target >= at {
                        return Err(ReplyError::Malformed("a compression pointer that does not point back"));
                    }
                    end.get_or_insert(at + 2);
                    at = target;
                    break;
                }
                _ => return Err(ReplyError::Malformed("an extended label type")),
            }
        }
    }
    Err(ReplyError::Malformed("more than 32 compression pointers in a name"))
}

#[cfg(test)]
pub(crate) mod tests;
