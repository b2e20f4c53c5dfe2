//! LP `SphinxStream` frame header: the 16 bytes in front of every v9/v10 IPR message.
//!
//! Contract: [`LpHeader::encode`] / [`LpHeader::parse`] are byte-compatible with
//! `nym_lp_data::packet::frame` 1.21.6 (`LpFrameHeader` + `SphinxStreamFrameAttributes`),
//! allocate nothing and never panic on untrusted input (docs/ipr-protocol.md §4.1):
//!
//! ```text
//! offset 0  kind      u16 little-endian   3 = SphinxStream (0..2 are other LP kinds, not ours)
//! offset 2  stream_id u64 big-endian
//! offset 10 msg_type  u8                  0 = Open, 1 = Data (nym-lp-data 1.22 adds 2..4)
//! offset 11 seq       u32 big-endian
//! offset 15 reserved  u8                  written 0, ignored on parse (as nym-lp-data does)
//! offset 16 payload   the IPR message
//! ```
//!
//! Only `SphinxStream` frames are ours; every other first-two-bytes value means the message is
//! not an LP stream frame at all (a bare v8 message, garbage, or a different LP kind), which the
//! session counts and drops (docs/ipr-protocol.md §1.3: v9/v10 must be LP-framed).

use thiserror::Error;

/// Size of the LP frame header (`LpFrameHeader::SIZE`).
pub const LP_HEADER_LEN: usize = 16;

/// `LpFrameKind::SphinxStream` (docs/ipr-protocol.md §4.1).
pub const KIND_SPHINX_STREAM: u16 = 3;

/// Message type of a `SphinxStream` frame. The IPR ignores it for non-empty payloads
/// (docs/ipr-protocol.md §4.4); it replies with `Data` frames only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    /// Opens a stream; the SDK sends it with an empty payload, which the IPR ignores.
    Open = 0,
    /// Carries one IPR message.
    Data = 1,
}

/// Why a message is not an LP stream frame we can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LpError {
    /// Fewer than 16 bytes.
    #[error("message shorter than the 16-byte LP header")]
    Short,
    /// First two bytes are not `03 00`: a bare IPR message or another LP kind.
    #[error("not an LP SphinxStream frame (kind {0})")]
    NotStream(u16),
    /// Stream frame with a msg_type this client does not know (e.g. 1.22 OpenAck/Ping/Pong).
    #[error("unknown LP stream msg_type {0}")]
    UnknownMsgType(u8),
}

/// The parsed attributes of one `SphinxStream` frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LpHeader {
    /// The LP stream the frame belongs to; one per session.
    pub stream_id: u64,
    /// Open or Data.
    pub msg_type: MsgType,
    /// Per-stream frame counter (0, 1, 2, … wrapping); 0 on the IPR's inline control replies.
    pub seq: u32,
}

impl LpHeader {
    /// A `Data` frame header.
    pub const fn data(stream_id: u64, seq: u32) -> Self {
        LpHeader { stream_id, msg_type: MsgType::Data, seq }
    }

    /// The 16 header bytes.
    pub fn encode(&self) -> [u8; LP_HEADER_LEN] {
        let mut out = [0u8; LP_HEADER_LEN];
        self.write(&mut out);
        out
    }

    /// Write the header into the first 16 bytes of `dst` (used to fill reserved headroom).
    pub fn write(&self, dst: &mut [u8; LP_HEADER_LEN]) {
        let [k0, k1] = KIND_SPHINX_STREAM.to_le_bytes();
        let sid = self.stream_id.to_be_bytes();
        let seq = self.seq.to_be_bytes();
        *dst = [
            k0,
            k1,
            sid[0],
            sid[1],
            sid[2],
            sid[3],
            sid[4],
            sid[5],
            sid[6],
            sid[7],
            self.msg_type as u8,
            seq[0],
            seq[1],
            seq[2],
            seq[3],
            0,
        ];
    }

    /// Parse the header of `msg`, returning it with the payload that follows.
    pub fn parse(msg: &[u8]) -> Result<(LpHeader, &[u8]), LpError> {
        let (head, payload) = msg.split_first_chunk::<LP_HEADER_LEN>().ok_or(LpError::Short)?;
        let kind = u16::from_le_bytes([head[0], head[1]]);
        if kind != KIND_SPHINX_STREAM {
            return Err(LpError::NotStream(kind));
        }
        let msg_type = match head[10] {
            0 => MsgType::Open,
            1 => MsgType::Data,
            other => return Err(LpError::UnknownMsgType(other)),
        };
        let [_, _, s0, s1, s2, s3, s4, s5, s6, s7, _, q0, q1, q2, q3, _] = *head;
        let header = LpHeader {
            stream_id: u64::from_be_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
            msg_type,
            seq: u32::from_be_bytes([q0, q1, q2, q3]),
        };
        Ok((header, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use nym_lp_data::packet::frame::{
        LpFrame, LpFrameHeader, LpFrameKind, SphinxStreamFrameAttributes, SphinxStreamMsgType,
    };

    /// docs/ipr-protocol.md §1.6: Data frame, stream 0x0011223344556677, seq 5.
    const DATA_SEQ5: [u8; 16] =
        [0x03, 0x00, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x01, 0x00, 0x00, 0x00, 0x05, 0x00];

    #[test]
    fn encodes_the_reference_example() {
        assert_eq!(LpHeader::data(0x0011_2233_4455_6677, 5).encode(), DATA_SEQ5);
        let open = LpHeader { stream_id: 0x0011_2233_4455_6677, msg_type: MsgType::Open, seq: 0 };
        let mut expected = DATA_SEQ5;
        expected[10] = 0;
        expected[14] = 0;
        assert_eq!(open.encode(), expected);
    }

    #[test]
    fn parses_the_reference_example_and_splits_payload() {
        let mut msg = DATA_SEQ5.to_vec();
        msg.extend_from_slice(&[0x0a, 0x00]);
        let (h, payload) = LpHeader::parse(&msg).unwrap();
        assert_eq!(h, LpHeader::data(0x0011_2233_4455_6677, 5));
        assert_eq!(payload, &[0x0a, 0x00]);
    }

    fn published(stream_id: u64, msg_type: SphinxStreamMsgType, seq: u32, body: &[u8]) -> Vec<u8> {
        let attrs = SphinxStreamFrameAttributes { stream_id, msg_type, sequence_num: seq };
        let mut out = BytesMut::new();
        LpFrame::new_stream(attrs, body.to_vec()).encode(&mut out);
        out.to_vec()
    }

    #[test]
    fn identical_to_nym_lp_data_both_ways() {
        let cases = [
            (0u64, MsgType::Open, SphinxStreamMsgType::Open, 0u32),
            (1, MsgType::Data, SphinxStreamMsgType::Data, 1),
            (u64::MAX, MsgType::Data, SphinxStreamMsgType::Data, u32::MAX),
            (0xdead_beef_0102_0304, MsgType::Data, SphinxStreamMsgType::Data, 0x0102_0304),
        ];
        for (sid, ours, theirs, seq) in cases {
            let expected = published(sid, theirs, seq, b"xyz");
            let mut mine = LpHeader { stream_id: sid, msg_type: ours, seq }.encode().to_vec();
            mine.extend_from_slice(b"xyz");
            assert_eq!(mine, expected);

            // Their parser accepts our bytes ...
            let hdr = LpFrameHeader::parse(&mine).unwrap();
            assert_eq!(hdr.kind, LpFrameKind::SphinxStream);
            let attrs = SphinxStreamFrameAttributes::parse(&hdr.frame_attributes).unwrap();
            assert_eq!((attrs.stream_id, attrs.sequence_num), (sid, seq));
            assert_eq!(attrs.msg_type, theirs);
            // ... and ours accepts theirs.
            let (h, body) = LpHeader::parse(&expected).unwrap();
            assert_eq!(h, LpHeader { stream_id: sid, msg_type: ours, seq });
            assert_eq!(body, b"xyz");
        }
    }

    #[test]
    fn rejects_what_is_not_ours() {
        assert_eq!(LpHeader::parse(&DATA_SEQ5[..15]), Err(LpError::Short));
        assert_eq!(LpHeader::parse(&[]), Err(LpError::Short));
        // A bare v10 data response (no LP header) long enough to look like one.
        let bare = [0x0a, 0x00, 0x0e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(LpHeader::parse(&bare), Err(LpError::NotStream(0x000a)));
        let mut other_kind = DATA_SEQ5;
        other_kind[0] = 2;
        assert_eq!(LpHeader::parse(&other_kind), Err(LpError::NotStream(2)));
        let mut ping = DATA_SEQ5;
        ping[10] = 3;
        assert_eq!(LpHeader::parse(&ping), Err(LpError::UnknownMsgType(3)));
        // The reserved byte is not checked (nym-lp-data does not check it either).
        let mut reserved = DATA_SEQ5;
        reserved[15] = 0xff;
        assert!(LpHeader::parse(&reserved).is_ok());
    }
}
