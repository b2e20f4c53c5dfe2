//! Inbound message classification and outbound response encoding, with the published types.
//!
//! Contract:
//! - [`decode_request`] runs steps 1–5 of the docs/ipr-protocol.md §6.2 checklist, in that order:
//!   LP detection (kind 3 and ≥ 16 bytes), empty LP payload ignored, `len ≥ 2`, service
//!   provider byte `0x01`, version window, bincode decode of the v8 request tree (shared by
//!   v8/v9/v10, trailing bytes rejected), then "LP ⇔ version ≥ 9". Every failure is a typed
//!   [`Reject`] that the server turns into a counter; nothing here panics on any input.
//! - Encoding writes the optional 16-byte LP header (`kind 3 LE, stream_id BE, msg_type Data,
//!   seq BE, reserved 0`, built with `nym_lp_data`) and then the response serialized with the
//!   published `nym_ip_packet_requests` response types, so the bytes are an independent check
//!   of the client's hand-rolled codec, not a copy of it.
//! - Only the v10 connect success differs from v8/v9 (`mtu: u16`, docs/ipr-protocol.md §1.5); every
//!   other v10 response type is a re-export of the v8 one, so non-connect responses are encoded
//!   with the v8 tree and the request's version byte.

use bytes::{BufMut, Bytes, BytesMut};
use nym_ip_packet_requests::v10::response as v10r;
use nym_ip_packet_requests::v8::request::IpPacketRequest;
use nym_ip_packet_requests::v8::response as v8r;
use nym_ip_packet_requests::{ConnectFailureReason, IpPair};
use nym_lp_data::packet::frame::{LpFrameHeader, LpFrameKind, SphinxStreamFrameAttributes, SphinxStreamMsgType};
use serde::Serialize;

/// Oldest version the newest IPR accepts (`MAX_NON_STREAM_VERSION`, docs/ipr-protocol.md §1.3).
pub(crate) const V8: u8 = 8;
/// First version that must travel inside an LP SphinxStream frame.
pub(crate) const V9: u8 = 9;
/// v9 plus `mtu` in the connect success.
pub(crate) const V10: u8 = 10;
/// Second byte of every v8+ request: `ServiceProviderType::IpPacketRouter`
/// (docs/ipr-protocol.md §1.3).
const SERVICE_PROVIDER_IPR: u8 = 0x01;
/// `LpFrameKind::SphinxStream` as it appears on the wire (u16 little-endian).
const LP_KIND_SPHINX_STREAM: u16 = 3;

/// The bincode configuration of `nym_ip_packet_requests::make_bincode_serializer`
/// (docs/ipr-protocol.md §1.2). `DefaultOptions` rejects trailing bytes, which is what makes v9 and
/// v10 connect responses mutually undecodable.
pub(crate) fn bincode_options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_big_endian().with_varint_encoding()
}

/// Why an inbound message produced no reply. All of these are silent on the real IPR
/// (docs/ipr-protocol.md §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// LP SphinxStream frame whose msg_type the HEAD server does not know (only Open/Data).
    #[error("LP frame with unknown stream msg_type")]
    LpAttributes,
    /// LP frame with an empty payload: a stream Open. Ignored, no state
    /// (docs/ipr-protocol.md §4.4).
    #[error("LP frame with empty payload (stream open)")]
    EmptyLpPayload,
    /// Fewer than 2 bytes of IPR message (`EmptyPacket`).
    #[error("message shorter than 2 bytes")]
    TooShort,
    /// Second byte is not `IpPacketRouter`.
    #[error("service provider byte {0:#04x} is not the IPR")]
    ServiceProvider(u8),
    /// Version outside 8..=max_version.
    #[error("unsupported version {0}")]
    Version(u8),
    /// The v8 request tree did not decode (or had trailing bytes).
    #[error("request does not decode")]
    Decode,
    /// v8 inside LP, or v9/v10 bare.
    #[error("version {version} not allowed on this transport (lp: {lp})")]
    Transport {
        /// Version byte of the request.
        version: u8,
        /// Whether the request came inside an LP frame.
        lp: bool,
    },
}

/// A request that passed steps 1–5 of docs/ipr-protocol.md §6.2.
#[derive(Debug)]
pub(crate) struct Inbound {
    /// Stream id of the carrying LP frame; `None` for a bare (v8) message.
    pub(crate) stream_id: Option<u64>,
    /// The decoded request; `request.protocol.version` is 8, 9 or 10.
    pub(crate) request: IpPacketRequest,
}

/// Steps 1–5 of docs/ipr-protocol.md §6.2 for one transport message (one UDP datagram = one Nym
/// message).
pub(crate) fn decode_request(msg: &[u8], max_version: u8) -> Result<Inbound, Reject> {
    use bincode::Options;

    // 1. LP detection. Kinds 0/1/2 and short messages fall through as bare IPR messages,
    // where their first byte (0..=3) then fails the version check, as on the real server.
    let (stream_id, body) = match lp_stream(msg)? {
        Some((_, [])) => return Err(Reject::EmptyLpPayload),
        Some((stream_id, payload)) => (Some(stream_id), payload),
        None => (None, msg),
    };
    // 2. Length and service provider byte (`Protocol::try_from(&[u8; 2])`).
    let (version, provider) = match body {
        [v, p, ..] => (*v, *p),
        _ => return Err(Reject::TooShort),
    };
    if provider != SERVICE_PROVIDER_IPR {
        return Err(Reject::ServiceProvider(provider));
    }
    // 3. Version window: 8, 9 and (unless mimicking a v9-only node) 10.
    if !(V8..=max_version.min(V10)).contains(&version) {
        return Err(Reject::Version(version));
    }
    // 4. Decode the v8 tree, which is the request tree of v9 and v10 too
    //    (docs/ipr-protocol.md §1.4).
    let request: IpPacketRequest = bincode_options().deserialize(body).map_err(|_| Reject::Decode)?;
    // 5. LP ⇔ version ≥ 9.
    let lp = stream_id.is_some();
    if lp != (version >= V9) {
        return Err(Reject::Transport { version, lp });
    }
    Ok(Inbound { stream_id, request })
}

/// `Some((stream_id, payload))` for an LP SphinxStream frame, `None` for a bare message.
fn lp_stream(msg: &[u8]) -> Result<Option<(u64, &[u8])>, Reject> {
    let is_lp = matches!(msg, [lo, hi, ..] if u16::from_le_bytes([*lo, *hi]) == LP_KIND_SPHINX_STREAM)
        && msg.len() >= LpFrameHeader::SIZE;
    if !is_lp {
        return Ok(None);
    }
    let header = LpFrameHeader::parse(msg).map_err(|_| Reject::LpAttributes)?;
    if header.kind != LpFrameKind::SphinxStream {
        return Ok(None);
    }
    let attrs = SphinxStreamFrameAttributes::parse(&header.frame_attributes).map_err(|_| Reject::LpAttributes)?;
    let payload = msg.get(LpFrameHeader::SIZE..).unwrap_or_default();
    Ok(Some((attrs.stream_id, payload)))
}

/// Serialization of one of our own responses failed; cannot happen with these types, but
/// is surfaced as a counter rather than a panic.
#[derive(Debug, thiserror::Error)]
#[error("response encoding failed: {0}")]
pub struct EncodeError(#[from] bincode::Error);

/// Where a response goes: inside an LP Data frame with this stream id and seq, or raw (v8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Envelope {
    /// `None`: raw reply to a v8 (non-stream) client.
    pub(crate) stream_id: Option<u64>,
    /// LP sequence number; 0 for inline control replies (docs/ipr-protocol.md §4.4).
    pub(crate) seq: u32,
}

impl Envelope {
    /// Inline control reply: same stream as the request, seq always 0
    /// (docs/ipr-protocol.md §4.4, §6.2 item 7).
    pub(crate) fn control(stream_id: Option<u64>) -> Self {
        Self { stream_id, seq: 0 }
    }
}

/// Appends the LP header (if any) and `response` to `dst`.
fn encode<T: Serialize>(dst: &mut BytesMut, env: Envelope, response: &T) -> Result<(), EncodeError> {
    use bincode::Options;
    if let Some(stream_id) = env.stream_id {
        let attrs =
            SphinxStreamFrameAttributes { stream_id, msg_type: SphinxStreamMsgType::Data, sequence_num: env.seq };
        LpFrameHeader::new(LpFrameKind::SphinxStream, attrs.encode()).encode(dst);
    }
    bincode_options().serialize_into(dst.writer(), response)?;
    Ok(())
}

/// Connect reply. v10 success carries the MTU (36 bytes with a 9-byte request id); v8/v9
/// success is 3 bytes shorter; failure is identical in both trees.
pub(crate) fn encode_connect(
    dst: &mut BytesMut,
    env: Envelope,
    version: u8,
    request_id: u64,
    reply: Result<IpPair, ConnectFailureReason>,
    mtu: u16,
) -> Result<(), EncodeError> {
    if version >= V10 {
        let reply = match reply {
            Ok(ips) => v10r::ConnectResponseReply::Success(v10r::ConnectSuccess { ips, mtu }),
            Err(reason) => v10r::ConnectResponseReply::Failure(reason),
        };
        let connect = v10r::ConnectResponse { request_id, reply };
        let response = v10r::IpPacketResponse {
            version,
            data: v10r::IpPacketResponseData::Control(Box::new(v10r::ControlResponse::Connect(connect))),
        };
        encode(dst, env, &response)
    } else {
        let reply = match reply {
            Ok(ips) => v8r::ConnectResponseReply::Success(v8r::ConnectSuccess { ips }),
            Err(reason) => v8r::ConnectResponseReply::Failure(reason),
        };
        let connect = v8r::ConnectResponse { request_id, reply };
        encode_control(dst, env, version, v8r::ControlResponse::Connect(connect))
    }
}

/// Any non-connect control reply (Disconnect, Pong, Health, Info), byte-identical in v8–v10.
pub(crate) fn encode_control(
    dst: &mut BytesMut,
    env: Envelope,
    version: u8,
    control: v8r::ControlResponse,
) -> Result<(), EncodeError> {
    let response = v8r::IpPacketResponse { version, data: v8r::IpPacketResponseData::Control(Box::new(control)) };
    encode(dst, env, &response)
}

/// A downlink Data response carrying one MultiIpPacketCodec bundle.
pub(crate) fn encode_data(dst: &mut BytesMut, env: Envelope, version: u8, bundle: Bytes) -> Result<(), EncodeError> {
    let response = v8r::IpPacketResponse {
        version,
        data: v8r::IpPacketResponseData::Data(v8r::DataResponse { ip_packet: bundle }),
    };
    encode(dst, env, &response)
}

/// The Health reply body: 10 build-information strings and `routable: None`, as the real server
/// sends (docs/ipr-protocol.md §1.5). `BinaryBuildInformationOwned` lives in `nym-bin-common`,
/// which this crate does not depend on; the field is built through its serde impl from the 10
/// strings in declaration order, so the type is still the published one.
pub(crate) fn health_reply() -> Result<v8r::HealthResponseReply, serde::de::value::Error> {
    use serde::de::value::SeqDeserializer;
    use serde::Deserialize;
    const BUILD_INFO: [&str; 10] = [
        "smolmix-exit",            // binary_name
        "",                        // build_timestamp
        env!("CARGO_PKG_VERSION"), // build_version
        "",                        // commit_sha
        "",                        // commit_timestamp
        "",                        // commit_branch
        "",                        // rustc_version
        "",                        // rustc_channel
        "release",                 // cargo_profile
        "",                        // cargo_triple
    ];
    let strings = SeqDeserializer::<_, serde::de::value::Error>::new(BUILD_INFO.into_iter());
    Ok(v8r::HealthResponseReply { build_info: Deserialize::deserialize(strings)?, routable: None })
}
