//! Hot-path IPR data messages, written and parsed by hand without allocation.
//!
//! The published types would cost a `Bytes` allocation and a bincode pass per message. The
//! wire format is tiny and fixed (docs/ipr-protocol.md §1.2, §1.4, §1.5), so this module writes the
//! header in front of a bundle that already sits in its final buffer, and slices the bundle out
//! of a response in place. The tests prove both byte-identical to the published encoder/decoder.
//!
//! ```text
//! data request  = [version][0x01 IpPacketRouter][0x00 Data][varint len][bundle]
//! data response = [version][0x00 Data][varint len][bundle]
//! varint (bincode 1.3 varint, big-endian): v <= 250 -> 1 byte; else 0xFB + u16 BE,
//!                                          0xFC + u32 BE, 0xFD + u64 BE
//! ```
//!
//! Like bincode's `DefaultOptions` the parser rejects trailing bytes (docs/ipr-protocol.md §1.2)
//! and, like bincode, it accepts non-minimal varints.

use thiserror::Error;

/// Why a payload could not be used. Cheap to build: the hot path may produce many. Defined here,
/// below [`message`](super::message), which re-exports it: both parse untrusted payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MessageError {
    /// Shorter than its header or its length prefix says.
    #[error("message truncated")]
    Truncated,
    /// Bytes after the end its length prefix says (bincode's `DefaultOptions` rejects them too).
    #[error("trailing bytes after the message")]
    TrailingBytes,
    /// A version byte neither v9 nor v10.
    #[error("unsupported IPR version {0}")]
    UnknownVersion(u8),
    /// Neither Data (0x00) nor Control (0x01).
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// A varint whose first byte is 0xFE or 0xFF.
    #[error("invalid varint marker {0:#04x}")]
    BadVarint(u8),
    /// A control response the published types do not decode.
    #[error("control message does not decode")]
    Decode,
    /// bincode failed to serialize a control request (never seen; logged).
    #[error("request could not be serialized")]
    Encode,
}

/// `ServiceProviderType::IpPacketRouter` (second byte of every v8+ request,
/// docs/ipr-protocol.md §1.3).
pub const SERVICE_PROVIDER_IPR: u8 = 0x01;
/// Enum tag of `IpPacketRequestData::Data` / `IpPacketResponseData::Data`.
pub const TAG_DATA: u8 = 0x00;
/// Enum tag of `IpPacketRequestData::Control` / `IpPacketResponseData::Control`.
pub const TAG_CONTROL: u8 = 0x01;

/// Worst-case data request header: 3 fixed bytes + a 5-byte varint (`0xFC` + u32). A bundle is
/// at most one 65 535-byte packet + its 2-byte prefix, so the u64 form is never needed.
pub const DATA_REQUEST_HEADER_MAX: usize = 8;
/// Header of a data request whose bundle is 251..=65 535 bytes (every full bundle): 3 + 3.
pub const DATA_REQUEST_HEADER_TYPICAL: usize = 6;

const VARINT_U16: u8 = 0xFB;
const VARINT_U32: u8 = 0xFC;
const VARINT_U64: u8 = 0xFD;

/// Encoded length of `v` as a bincode varint.
pub fn varint_len(v: u64) -> usize {
    match v {
        0..=250 => 1,
        251..=0xFFFF => 3,
        0x1_0000..=0xFFFF_FFFF => 5,
        _ => 9,
    }
}

/// Write the data request header for a bundle of `bundle_len` bytes so that it *ends* at the
/// end of `out`, and return the header length. The caller reserves `DATA_REQUEST_HEADER_MAX`
/// bytes of headroom before the bundle and sends `headroom[MAX - len ..] + bundle`.
pub fn write_data_request_header(version: u8, bundle_len: usize, out: &mut [u8; DATA_REQUEST_HEADER_MAX]) -> usize {
    debug_assert!(bundle_len <= u32::MAX as usize, "a bundle is at most 65 537 bytes");
    const SP: u8 = SERVICE_PROVIDER_IPR;
    let (image, hlen) = match bundle_len {
        0..=250 => ([0, 0, 0, 0, version, SP, TAG_DATA, bundle_len as u8], 4),
        251..=0xFFFF => {
            let [a, b] = (bundle_len as u16).to_be_bytes();
            ([0, 0, version, SP, TAG_DATA, VARINT_U16, a, b], 6)
        }
        _ => {
            let [a, b, c, d] = u32::try_from(bundle_len).unwrap_or(u32::MAX).to_be_bytes();
            ([version, SP, TAG_DATA, VARINT_U32, a, b, c, d], 8)
        }
    };
    *out = image;
    hlen
}

/// Read one bincode varint from the front of `src`, returning it and the rest.
pub fn read_varint(src: &[u8]) -> Result<(u64, &[u8]), MessageError> {
    let (&first, rest) = src.split_first().ok_or(MessageError::Truncated)?;
    match first {
        0..=250 => Ok((first as u64, rest)),
        VARINT_U16 => {
            let (b, rest) = rest.split_first_chunk::<2>().ok_or(MessageError::Truncated)?;
            Ok((u16::from_be_bytes(*b) as u64, rest))
        }
        VARINT_U32 => {
            let (b, rest) = rest.split_first_chunk::<4>().ok_or(MessageError::Truncated)?;
            Ok((u32::from_be_bytes(*b) as u64, rest))
        }
        VARINT_U64 => {
            let (b, rest) = rest.split_first_chunk::<8>().ok_or(MessageError::Truncated)?;
            Ok((u64::from_be_bytes(*b), rest))
        }
        _ => Err(MessageError::BadVarint(first)),
    }
}

/// Parse a data response `[version][0x00][varint len][bundle]`; returns (version, bundle).
/// The version is returned as found; the caller decides which versions it accepts.
pub fn parse_data_response(payload: &[u8]) -> Result<(u8, &[u8]), MessageError> {
    let [version, tag, rest @ ..] = payload else {
        return Err(MessageError::Truncated);
    };
    if *tag != TAG_DATA {
        return Err(MessageError::UnknownTag(*tag));
    }
    let (len, bundle) = read_varint(rest)?;
    match (bundle.len() as u64).cmp(&len) {
        std::cmp::Ordering::Less => Err(MessageError::Truncated),
        std::cmp::Ordering::Greater => Err(MessageError::TrailingBytes),
        std::cmp::Ordering::Equal => Ok((*version, bundle)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use nym_ip_packet_requests::{v10, v9};

    fn hand_request(version: u8, bundle: &[u8]) -> Vec<u8> {
        let mut hdr = [0u8; DATA_REQUEST_HEADER_MAX];
        let n = write_data_request_header(version, bundle.len(), &mut hdr);
        let mut out = hdr[DATA_REQUEST_HEADER_MAX - n..].to_vec();
        out.extend_from_slice(bundle);
        out
    }

    /// Lengths straddling every varint boundary (250/251, 65535/65536) and a 1500-B bundle.
    const LENGTHS: [usize; 9] = [0, 1, 62, 250, 251, 1500, 1558, 65_535, 65_537];

    #[test]
    fn data_request_is_byte_identical_to_published_encoder() {
        for len in LENGTHS {
            let bundle: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let b = Bytes::from(bundle.clone());
            assert_eq!(hand_request(10, &bundle), v10::new_data_request(b.clone()).to_bytes().unwrap());
            assert_eq!(hand_request(9, &bundle), v9::new_data_request(b).to_bytes().unwrap());
        }
    }

    #[test]
    fn reference_header_examples() {
        // docs/ipr-protocol.md §1.6: header of a data request carrying a 1500-B bundle, and of a
        // 62-B bundle.
        let mut hdr = [0u8; DATA_REQUEST_HEADER_MAX];
        assert_eq!(write_data_request_header(10, 1500, &mut hdr), 6);
        assert_eq!(&hdr[2..], &[0x0a, 0x01, 0x00, 0xfb, 0x05, 0xdc]);
        assert_eq!(write_data_request_header(10, 62, &mut hdr), 4);
        assert_eq!(&hdr[4..], &[0x0a, 0x01, 0x00, 0x3e]);
        assert_eq!(write_data_request_header(9, 65_537, &mut hdr), 8);
        assert_eq!(hdr, [0x09, 0x01, 0x00, 0xfc, 0x00, 0x01, 0x00, 0x01]);
    }

    #[test]
    fn hand_parser_accepts_what_the_published_encoder_emits() {
        for len in LENGTHS {
            let bundle: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let r10 = v10::new_ip_packet_response(Bytes::from(bundle.clone())).to_bytes().unwrap();
            assert_eq!(parse_data_response(&r10).unwrap(), (10, &bundle[..]));
            let r9 = v9::new_ip_packet_response(Bytes::from(bundle.clone())).to_bytes().unwrap();
            assert_eq!(parse_data_response(&r9).unwrap(), (9, &bundle[..]));
        }
    }

    #[test]
    fn hand_built_response_decodes_with_published_types() {
        // The reference 65-B example of docs/ipr-protocol.md §1.6: one 60-B packet.
        let mut msg = vec![0x0a, 0x00, 0x3e, 0x00, 0x3c];
        msg.extend_from_slice(&[0x45; 60]);
        let decoded = v10::response::IpPacketResponse::from_bytes(&msg).unwrap();
        match decoded.data {
            v10::response::IpPacketResponseData::Data(d) => assert_eq!(&d.ip_packet[..], &msg[3..]),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(parse_data_response(&msg).unwrap(), (10, &msg[3..]));
    }

    #[test]
    fn varint_forms_and_errors() {
        assert_eq!(read_varint(&[250]).unwrap().0, 250);
        assert_eq!(read_varint(&[0xfb, 0x00, 0xfb]).unwrap().0, 251);
        assert_eq!(read_varint(&[0xfb, 0x00, 0x05]).unwrap().0, 5); // non-minimal, as bincode
        assert_eq!(read_varint(&[0xfc, 0, 1, 0, 0]).unwrap().0, 65_536);
        assert_eq!(read_varint(&[0xfd, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap().0, 1 << 32);
        assert_eq!(read_varint(&[0xfe]), Err(MessageError::BadVarint(0xfe)));
        assert_eq!(read_varint(&[0xfc, 0, 1]), Err(MessageError::Truncated));
        assert_eq!(read_varint(&[]), Err(MessageError::Truncated));
        for v in [0u64, 250, 251, 65_535, 65_536, u32::MAX as u64, u64::MAX] {
            let n = varint_len(v);
            assert_eq!(n, bincode_len(v));
        }
    }

    fn bincode_len(v: u64) -> usize {
        use bincode::Options;
        let o = bincode::DefaultOptions::new().with_big_endian().with_varint_encoding();
        o.serialize(&v).unwrap().len()
    }

    #[test]
    fn parse_rejects_malformed() {
        assert_eq!(parse_data_response(&[0x0a]), Err(MessageError::Truncated));
        assert_eq!(parse_data_response(&[0x0a, 0x01, 0x00]), Err(MessageError::UnknownTag(1)));
        assert_eq!(parse_data_response(&[0x0a, 0x00, 0x03, 1, 2]), Err(MessageError::Truncated));
        assert_eq!(parse_data_response(&[0x0a, 0x00, 0x01, 1, 2]), Err(MessageError::TrailingBytes));
        // u64 length far beyond the buffer must not overflow anything.
        let huge = [0x0a, 0x00, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0];
        assert_eq!(parse_data_response(&huge), Err(MessageError::Truncated));
    }
}
