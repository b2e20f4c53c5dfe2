//! IPR control requests (encode) and IPR responses (decode), for protocol v9 and v10.
//!
//! Contract:
//! - Control requests are built with the published `nym_ip_packet_requests` 1.21.6 types, so their
//!   bytes follow the crate (docs/ipr-protocol.md §1.4). Connect uses `v9::`/`v10::
//!   new_connect_request(None)`; Disconnect and Ping only exist as v8 constructors, whose version
//!   byte we overwrite (docs/ipr-protocol.md §1.4). `buffer_timeout` is always `None` (server
//!   default 20 ms): a `Some(0)` would panic the IPR's listener task (docs/ipr-protocol.md §2.4),
//!   and any other value is a fingerprint. The constructors draw a random `request_id` and stamp
//!   the wall clock; the IPR ignores the timestamp in v8+ (docs/ipr-protocol.md §1.4), so this is
//!   the one clock read in the session and it is harmless.
//! - [`decode_response`] selects the decoder by the version byte (docs/ipr-protocol.md §1.5: a v9
//!   decoder rejects a v10 connect response and vice versa), takes the allocation-free path of
//!   `data` for Data, and the published bincode types for the rare control responses. Any input
//!   yields a value or a [`MessageError`], never a panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use nym_ip_packet_requests::v8::request::IpPacketRequest;
use nym_ip_packet_requests::v8::response as r9;
use nym_ip_packet_requests::{v10, v9, ConnectFailureReason};
use thiserror::Error;

pub use super::data::MessageError;
use super::data::{parse_data_response, TAG_CONTROL, TAG_DATA};

/// A control request ready to be framed: its bytes and the id the response will echo.
#[derive(Debug, Clone)]
pub struct ControlRequest {
    /// The serialized IPR request, without the LP header.
    pub bytes: Vec<u8>,
    /// The random id the IPR echoes in its response.
    pub request_id: u64,
}

fn finish(mut req: IpPacketRequest, id: u64, version: u8) -> Result<ControlRequest, MessageError> {
    req.protocol.version = version;
    let bytes = req.to_bytes().map_err(|e| {
        tracing::error!(error = %e, "bincode failed to serialize an IPR request");
        MessageError::Encode
    })?;
    Ok(ControlRequest { bytes, request_id: id })
}

/// Connect request (dynamic connect, docs/ipr-protocol.md §1.4) for `version` 10 or 9 (anything
/// else: 9).
pub fn encode_connect(version: u8) -> Result<ControlRequest, MessageError> {
    let (req, id) =
        if version == v10::VERSION { v10::new_connect_request(None) } else { v9::new_connect_request(None) };
    let v = req.protocol.version;
    finish(req, id, v)
}

/// Disconnect request: frees the IPs at once instead of after 60–70 s of silence
/// (docs/ipr-protocol.md §3.6).
pub fn encode_disconnect(version: u8) -> Result<ControlRequest, MessageError> {
    let (req, id) = IpPacketRequest::new_disconnect_request();
    finish(req, id, version)
}

/// Ping request. Not used for keepalive: it does not refresh IPR activity
/// (docs/ipr-protocol.md §3.6).
pub fn encode_ping(version: u8) -> Result<ControlRequest, MessageError> {
    let (req, id) = IpPacketRequest::new_ping();
    finish(req, id, version)
}

/// Why the IPR refused a connect (docs/ipr-protocol.md §1.5; the real IPR only ever sends
/// `NoAvailableIp`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectDenial {
    /// The IPR holds a session for this client already.
    #[error("IPR says the client is already connected")]
    AlreadyConnected,
    /// The IPR's address pool is exhausted.
    #[error("IPR has no free IP address")]
    NoAvailableIp,
    /// Any other reason, as the IPR worded it.
    #[error("IPR refused: {0}")]
    Other(String),
}

impl From<ConnectFailureReason> for ConnectDenial {
    fn from(r: ConnectFailureReason) -> Self {
        match r {
            ConnectFailureReason::ClientAlreadyConnected => ConnectDenial::AlreadyConnected,
            ConnectFailureReason::NoAvailableIp => ConnectDenial::NoAvailableIp,
            ConnectFailureReason::Other(s) => ConnectDenial::Other(s),
        }
    }
}

/// The addresses (and, from v10, the MTU) of a successful connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOk {
    /// The tunnel IPv4 address allocated to this client.
    pub ipv4: Ipv4Addr,
    /// The tunnel IPv6 address allocated to this client.
    pub ipv6: Ipv6Addr,
    /// The exit's MTU in bytes; v10 only (`None` from v9).
    pub mtu: Option<u16>,
}

/// Informational responses. `ExitPolicyDenied` is the only one the real IPR sends
/// (docs/ipr-protocol.md §1.5, §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Info {
    /// A data packet to `dst` ("ip:port", port 0 for ICMP) was refused by the exit policy.
    ExitPolicyDenied {
        /// The refused destination, "ip:port".
        dst: String,
    },
    /// The IPR does not speak the request's protocol version.
    VersionMismatch {
        /// Protocol version of the request.
        request: u8,
        /// Protocol version the IPR answers with.
        response: u8,
    },
    /// Free-form text from the IPR.
    Generic(String),
}

/// One decoded IPR response. `Data` borrows the bundle from the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    /// Downlink IP packets.
    Data {
        /// Protocol version byte of the response.
        version: u8,
        /// The packets, MultiIpPacketCodec-framed (see [`Unbundler`](super::Unbundler)).
        bundle: &'a [u8],
    },
    /// The answer to a Connect request.
    Connect {
        /// Protocol version byte of the response.
        version: u8,
        /// Id of the request it answers.
        request_id: u64,
        /// The allocation, or why the IPR refused.
        result: Result<ConnectOk, ConnectDenial>,
    },
    /// The answer to a Disconnect request.
    Disconnect {
        /// Protocol version byte of the response.
        version: u8,
        /// Id of the request it answers.
        request_id: u64,
        /// Whether the IPR freed the session.
        success: bool,
    },
    /// The IPR dropped the client on its own.
    UnrequestedDisconnect {
        /// Protocol version byte of the response.
        version: u8,
        /// The IPR's reason, as text.
        reason: String,
    },
    /// The answer to a Ping request.
    Pong {
        /// Protocol version byte of the response.
        version: u8,
        /// Id of the request it answers.
        request_id: u64,
    },
    /// The answer to a Health request.
    Health {
        /// Protocol version byte of the response.
        version: u8,
        /// Id of the request it answers.
        request_id: u64,
    },
    /// An informational notice.
    Info {
        /// Protocol version byte of the response.
        version: u8,
        /// Id of the request it refers to.
        request_id: u64,
        /// What the IPR reports.
        info: Info,
    },
}

/// Decode one IPR response (the payload after the LP header). Versions other than 9 and 10
/// are refused: v8 must not arrive inside LP (docs/ipr-protocol.md §1.3) and nothing else exists.
pub fn decode_response(payload: &[u8]) -> Result<Response<'_>, MessageError> {
    let [version, tag, ..] = *payload else {
        return Err(MessageError::Truncated);
    };
    if version != v9::VERSION && version != v10::VERSION {
        return Err(MessageError::UnknownVersion(version));
    }
    match tag {
        TAG_DATA => {
            let (version, bundle) = parse_data_response(payload)?;
            Ok(Response::Data { version, bundle })
        }
        TAG_CONTROL if version == v10::VERSION => decode_control_v10(payload),
        TAG_CONTROL => decode_control_v9(payload),
        other => Err(MessageError::UnknownTag(other)),
    }
}

fn bincode_err(e: bincode::Error) -> MessageError {
    tracing::trace!(error = %e, "undecodable IPR control response");
    MessageError::Decode
}

fn decode_control_v10(payload: &[u8]) -> Result<Response<'static>, MessageError> {
    use v10::response::{ConnectResponseReply, ControlResponse, IpPacketResponseData};
    let resp = v10::response::IpPacketResponse::from_bytes(payload).map_err(bincode_err)?;
    let version = resp.version;
    let IpPacketResponseData::Control(control) = resp.data else {
        return Err(MessageError::Decode); // unreachable: tag checked by the caller
    };
    Ok(match *control {
        ControlResponse::Connect(c) => Response::Connect {
            version,
            request_id: c.request_id,
            result: match c.reply {
                ConnectResponseReply::Success(s) => {
                    Ok(ConnectOk { ipv4: s.ips.ipv4, ipv6: s.ips.ipv6, mtu: Some(s.mtu) })
                }
                ConnectResponseReply::Failure(f) => Err(f.into()),
            },
        },
        // The remaining branches are the v8 types re-exported by v10 (docs/ipr-protocol.md §1.5).
        ControlResponse::Disconnect(d) => disconnect(version, d),
        ControlResponse::UnrequestedDisconnect(u) => unrequested(version, u),
        ControlResponse::Pong(p) => Response::Pong { version, request_id: p.request_id },
        ControlResponse::Health(h) => Response::Health { version, request_id: h.request_id },
        ControlResponse::Info(i) => info(version, i),
    })
}

fn decode_control_v9(payload: &[u8]) -> Result<Response<'static>, MessageError> {
    use r9::{ConnectResponseReply, ControlResponse, IpPacketResponseData};
    let resp = r9::IpPacketResponse::from_bytes(payload).map_err(bincode_err)?;
    let version = resp.version;
    let IpPacketResponseData::Control(control) = resp.data else {
        return Err(MessageError::Decode);
    };
    Ok(match *control {
        ControlResponse::Connect(c) => Response::Connect {
            version,
            request_id: c.request_id,
            result: match c.reply {
                ConnectResponseReply::Success(s) => Ok(ConnectOk { ipv4: s.ips.ipv4, ipv6: s.ips.ipv6, mtu: None }),
                ConnectResponseReply::Failure(f) => Err(f.into()),
            },
        },
        ControlResponse::Disconnect(d) => disconnect(version, d),
        ControlResponse::UnrequestedDisconnect(u) => unrequested(version, u),
        ControlResponse::Pong(p) => Response::Pong { version, request_id: p.request_id },
        ControlResponse::Health(h) => Response::Health { version, request_id: h.request_id },
        ControlResponse::Info(i) => info(version, i),
    })
}

fn disconnect(version: u8, d: r9::DisconnectResponse) -> Response<'static> {
    let success = matches!(d.reply, r9::DisconnectResponseReply::Success);
    Response::Disconnect { version, request_id: d.request_id, success }
}

fn unrequested(version: u8, u: r9::UnrequestedDisconnect) -> Response<'static> {
    Response::UnrequestedDisconnect { version, reason: u.reason.to_string() }
}

fn info(version: u8, i: r9::InfoResponse) -> Response<'static> {
    let info = match i.reply {
        r9::InfoResponseReply::ExitPolicyFilterCheckFailed { dst } => Info::ExitPolicyDenied { dst },
        r9::InfoResponseReply::VersionMismatch { request_version, response_version } => {
            Info::VersionMismatch { request: request_version, response: response_version }
        }
        r9::InfoResponseReply::Generic { msg } => Info::Generic(msg),
    };
    Response::Info { version, request_id: i.request_id, info }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bincode::Options;
    use nym_ip_packet_requests::v8::request::{ControlRequest as Ctl, IpPacketRequestData};

    pub(crate) const ID: [u8; 9] = [0xfd, 1, 2, 3, 4, 5, 6, 7, 8];

    /// docs/ipr-protocol.md §1.6 v10 connect success 10.0.3.7 / fc00::307, mtu 1500 (36 B), for
    /// request id ID.
    pub(crate) fn connect_ok_v10(id: u64) -> Vec<u8> {
        let mut m = vec![0x0a, 0x01, 0x00];
        m.push(0xfd);
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0x00, 10, 0, 3, 7]);
        m.extend_from_slice(&"fc00::307".parse::<Ipv6Addr>().unwrap().octets());
        m.extend_from_slice(&[0xfb, 0x05, 0xdc]);
        m
    }

    /// docs/ipr-protocol.md §1.6 v9 connect success, same addresses (33 B).
    pub(crate) fn connect_ok_v9(id: u64) -> Vec<u8> {
        let mut m = connect_ok_v10(id);
        m[0] = 0x09;
        m.truncate(33);
        m
    }

    fn decode_request(bytes: &[u8]) -> IpPacketRequest {
        let o = bincode::DefaultOptions::new().with_big_endian().with_varint_encoding();
        o.deserialize(bytes).unwrap()
    }

    #[test]
    fn connect_requests_decode_with_published_types() {
        for v in [10u8, 9] {
            let c = encode_connect(v).unwrap();
            let req = decode_request(&c.bytes);
            assert_eq!(req.protocol.version, v);
            assert_eq!(req.id(), Some(c.request_id));
            let IpPacketRequestData::Control(ctl) = req.data else { panic!("not control") };
            let Ctl::Connect(conn) = *ctl else { panic!("not connect") };
            assert_eq!(conn.buffer_timeout, None, "never Some(0), docs/ipr-protocol.md §2.4");
            // docs/ipr-protocol.md §1.6 layout: ver spt Ctrl Connect id None, then the 15-B
            // timestamp at most.
            assert_eq!(&c.bytes[..4], &[v, 0x01, 0x01, 0x00]);
            let id_len = super::super::data::varint_len(c.request_id);
            assert_eq!(c.bytes[4 + id_len], 0x00, "buffer_timeout None");
        }
    }

    #[test]
    fn disconnect_and_ping_carry_the_overridden_version() {
        let d = encode_disconnect(10).unwrap();
        assert_eq!(&d.bytes[..4], &[0x0a, 0x01, 0x01, 0x01]);
        let req = decode_request(&d.bytes);
        assert_eq!(req.id(), Some(d.request_id));
        let p = encode_ping(9).unwrap();
        assert_eq!(&p.bytes[..4], &[0x09, 0x01, 0x01, 0x02]);
        assert_eq!(decode_request(&p.bytes).id(), Some(p.request_id));
    }

    #[test]
    fn reference_connect_responses() {
        let id = 0x0102_0304_0506_0708;
        let v10 = connect_ok_v10(id);
        assert_eq!(v10.len(), 36);
        let ok = ConnectOk { ipv4: Ipv4Addr::new(10, 0, 3, 7), ipv6: "fc00::307".parse().unwrap(), mtu: Some(1500) };
        let expect = Response::Connect { version: 10, request_id: id, result: Ok(ok) };
        assert_eq!(decode_response(&v10), Ok(expect));

        let v9 = connect_ok_v9(id);
        assert_eq!(v9.len(), 33);
        let expect = Response::Connect { version: 9, request_id: id, result: Ok(ConnectOk { mtu: None, ..ok }) };
        assert_eq!(decode_response(&v9), Ok(expect));

        // The version byte selects the tree (docs/ipr-protocol.md §1.5): swap the bytes and both
        // fail.
        let mut v10_as_9 = v10.clone();
        v10_as_9[0] = 9;
        assert_eq!(decode_response(&v10_as_9), Err(MessageError::Decode));
        let mut v9_as_10 = v9.clone();
        v9_as_10[0] = 10;
        assert_eq!(decode_response(&v9_as_10), Err(MessageError::Decode));
    }

    #[test]
    fn reference_failure_pong_info() {
        let mut fail = vec![0x0a, 0x01, 0x00];
        fail.extend_from_slice(&ID);
        fail.extend_from_slice(&[0x01, 0x01]);
        let expect = Response::Connect {
            version: 10,
            request_id: 0x0102_0304_0506_0708,
            result: Err(ConnectDenial::NoAvailableIp),
        };
        assert_eq!(decode_response(&fail), Ok(expect));

        let mut pong = vec![0x0a, 0x01, 0x03];
        pong.extend_from_slice(&ID);
        assert_eq!(decode_response(&pong), Ok(Response::Pong { version: 10, request_id: 0x0102_0304_0506_0708 }));

        let mut info = vec![0x0a, 0x01, 0x05, 0x00, 0x02, 0x0d];
        info.extend_from_slice(b"192.168.1.1:0");
        info.push(0x01);
        assert_eq!(info.len(), 20);
        let expect =
            Response::Info { version: 10, request_id: 0, info: Info::ExitPolicyDenied { dst: "192.168.1.1:0".into() } };
        assert_eq!(decode_response(&info), Ok(expect));
    }

    #[test]
    fn disconnect_and_unrequested_responses() {
        let mut ok = vec![0x09, 0x01, 0x01, 0x07, 0x00];
        assert_eq!(decode_response(&ok), Ok(Response::Disconnect { version: 9, request_id: 7, success: true }));
        ok[4] = 0x01;
        ok.push(0x00); // Failure(ClientNotConnected)
        assert_eq!(decode_response(&ok), Ok(Response::Disconnect { version: 9, request_id: 7, success: false }));
        let unreq = [0x0a, 0x01, 0x02, 0x00];
        assert!(matches!(decode_response(&unreq), Ok(Response::UnrequestedDisconnect { version: 10, .. })));
    }

    #[test]
    fn refuses_unknown_versions_and_tags() {
        assert_eq!(decode_response(&[0x08, 0x00, 0x00]), Err(MessageError::UnknownVersion(8)));
        assert_eq!(decode_response(&[0x0a, 0x02]), Err(MessageError::UnknownTag(2)));
        assert_eq!(decode_response(&[0x0a]), Err(MessageError::Truncated));
        assert_eq!(decode_response(&[0x0a, 0x01, 0x09]), Err(MessageError::Decode));
    }
}
