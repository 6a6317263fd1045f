//! The wire format of one raft RPC between two nodes.
//!
//! A request frame is `[version: u8][kind: u8][from: u64 BE][to: u64 BE][token: u64 BE]
//! [payload]` (the token binds `from` to the sender's session, see
//! [`crate::transport::cluster`]), a reply
//! frame is `[version: u8][status: u8][payload]` where a failed status carries a UTF-8 message.
//! The header is parsed by hand so that a corrupted or truncated frame gives a clear
//! [`FrameError`] and never a panic; payloads are bincode (serde mode) and decoded with a size
//! limit, so a corrupted length prefix cannot make a node allocate gigabytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{NodeId, RemoteError, RemoteErrorKind, RpcKind};

/// The frame format's version; a peer speaking another version is refused.
pub const FRAME_VERSION: u8 = 2;

/// Request header length: version, kind, from, to, token.
pub const REQUEST_HEADER_LEN: usize = 1 + 1 + 8 + 8 + 8;

/// Reply header length: version, status.
pub const REPLY_HEADER_LEN: usize = 2;

/// The largest payload a node decodes or sends. What travels stays well below it: a command
/// is at most [`crate::proposer::MAX_COMMAND_BYTES`], an append-entries message is split
/// above [`crate::network::MAX_APPEND_BYTES`], snapshot chunks are openraft's (3 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// ractor_cluster's limit on one inbound message, given to its node server: a frame with a
/// payload at [`MAX_PAYLOAD_BYTES`], plus ractor's own envelope. A larger message makes the
/// receiving session close, so the sender refuses it first ([`FrameError::TooLarge`]).
pub const MAX_FRAME_BYTES: usize = MAX_PAYLOAD_BYTES + REQUEST_HEADER_LEN + 64 * 1024;

/// A frame that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the header needs.
    #[error("truncated {what}: {len} bytes, the header alone needs {need}")]
    Truncated {
        /// Which frame (request or reply).
        what: &'static str,
        /// How many bytes arrived.
        len: usize,
        /// How many the header needs.
        need: usize,
    },
    /// A frame version this node does not speak.
    #[error("unsupported {what} frame version {found} (this node speaks {FRAME_VERSION})")]
    Version {
        /// Which frame.
        what: &'static str,
        /// The version found.
        found: u8,
    },
    /// An unknown RPC kind or reply status byte.
    #[error("unknown {what} byte {found:#04x}")]
    UnknownTag {
        /// Which tag (rpc kind, reply status, error kind).
        what: &'static str,
        /// The byte found.
        found: u8,
    },
    /// A frame over [`MAX_PAYLOAD_BYTES`] of payload: refused before sending.
    #[error(
        "a {kind} frame of {len} bytes is over the limit of {MAX_PAYLOAD_BYTES} bytes of payload"
    )]
    TooLarge {
        /// The rpc.
        kind: &'static str,
        /// Its size.
        len: usize,
    },
    /// The payload does not decode as the expected type.
    #[error("malformed {what} payload: {reason}")]
    Payload {
        /// The type that was expected.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
}

/// A parsed request frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    /// Which RPC.
    pub kind: RpcKind,
    /// The sending node.
    pub from: NodeId,
    /// The node the sender meant to reach.
    pub to: NodeId,
    /// The session token the receiver issued to `from` (0 for pings and bindings).
    pub token: u64,
    /// The RPC's body.
    pub payload: Vec<u8>,
}

impl RequestFrame {
    /// Serializes the frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REQUEST_HEADER_LEN + self.payload.len());
        out.push(FRAME_VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.from.to_be_bytes());
        out.extend_from_slice(&self.to.to_be_bytes());
        out.extend_from_slice(&self.token.to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses a frame, rejecting anything malformed.
    pub fn decode(mut bytes: Vec<u8>) -> Result<Self, FrameError> {
        if bytes.len() < REQUEST_HEADER_LEN {
            return Err(FrameError::Truncated {
                what: "request",
                len: bytes.len(),
                need: REQUEST_HEADER_LEN,
            });
        }
        if bytes[0] != FRAME_VERSION {
            return Err(FrameError::Version {
                what: "request",
                found: bytes[0],
            });
        }
        let kind = RpcKind::from_byte(bytes[1]).ok_or(FrameError::UnknownTag {
            what: "rpc kind",
            found: bytes[1],
        })?;
        let from = u64::from_be_bytes(bytes[2..10].try_into().expect("8-byte slice"));
        let to = u64::from_be_bytes(bytes[10..18].try_into().expect("8-byte slice"));
        let token = u64::from_be_bytes(bytes[18..26].try_into().expect("8-byte slice"));
        let payload = bytes.split_off(REQUEST_HEADER_LEN);
        Ok(Self {
            kind,
            from,
            to,
            token,
            payload,
        })
    }
}

/// Serializes a reply: the handler's answer or its error.
pub fn encode_reply(reply: &Result<Vec<u8>, RemoteError>) -> Vec<u8> {
    match reply {
        Ok(payload) => {
            let mut out = Vec::with_capacity(REPLY_HEADER_LEN + payload.len());
            out.extend_from_slice(&[FRAME_VERSION, 0]);
            out.extend_from_slice(payload);
            out
        }
        Err(e) => {
            let mut out = Vec::with_capacity(REPLY_HEADER_LEN + 1 + e.message.len());
            out.extend_from_slice(&[FRAME_VERSION, 1, e.kind as u8]);
            out.extend_from_slice(e.message.as_bytes());
            out
        }
    }
}

/// Parses a reply frame into the handler's answer or its error.
pub fn decode_reply(mut bytes: Vec<u8>) -> Result<Result<Vec<u8>, RemoteError>, FrameError> {
    if bytes.len() < REPLY_HEADER_LEN {
        return Err(FrameError::Truncated {
            what: "reply",
            len: bytes.len(),
            need: REPLY_HEADER_LEN,
        });
    }
    if bytes[0] != FRAME_VERSION {
        return Err(FrameError::Version {
            what: "reply",
            found: bytes[0],
        });
    }
    match bytes[1] {
        0 => Ok(Ok(bytes.split_off(REPLY_HEADER_LEN))),
        1 => {
            let Some(&kind) = bytes.get(2) else {
                return Err(FrameError::Truncated {
                    what: "error reply",
                    len: bytes.len(),
                    need: REPLY_HEADER_LEN + 1,
                });
            };
            let kind = RemoteErrorKind::from_byte(kind).ok_or(FrameError::UnknownTag {
                what: "remote error kind",
                found: kind,
            })?;
            let message = String::from_utf8_lossy(&bytes[3..]).into_owned();
            Ok(Err(RemoteError { kind, message }))
        }
        other => Err(FrameError::UnknownTag {
            what: "reply status",
            found: other,
        }),
    }
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_PAYLOAD_BYTES>()
}

/// Encodes a payload with bincode (serde mode).
pub fn encode_payload<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, FrameError> {
    bincode::serde::encode_to_vec(value, bincode_config()).map_err(|e| FrameError::Payload {
        what,
        reason: e.to_string(),
    })
}

/// Decodes a payload with bincode (serde mode); trailing bytes are an error too, since they
/// mean the frame was not what the sender meant.
pub fn decode_payload<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, FrameError> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, bincode_config()).map_err(|e| {
            FrameError::Payload {
                what,
                reason: e.to_string(),
            }
        })?;
    if used != bytes.len() {
        return Err(FrameError::Payload {
            what,
            reason: format!("{} trailing bytes after {used}", bytes.len() - used),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RequestFrame {
        RequestFrame {
            kind: RpcKind::AppendEntries,
            from: 1,
            to: 2,
            token: 77,
            payload: vec![9, 8, 7],
        }
    }

    #[test]
    fn request_frame_round_trips() {
        let frame = sample();
        assert_eq!(RequestFrame::decode(frame.encode()).unwrap(), frame);
    }

    #[test]
    fn every_truncation_of_a_request_header_is_a_clear_error() {
        let bytes = sample().encode();
        for len in 0..REQUEST_HEADER_LEN {
            let err = RequestFrame::decode(bytes[..len].to_vec()).unwrap_err();
            assert!(
                matches!(err, FrameError::Truncated { len: l, .. } if l == len),
                "{err}"
            );
            assert!(err.to_string().contains("truncated request"));
        }
    }

    #[test]
    fn corrupted_header_bytes_are_rejected_not_misread() {
        let mut bad_version = sample().encode();
        bad_version[0] = 0xee;
        assert!(matches!(
            RequestFrame::decode(bad_version),
            Err(FrameError::Version { found: 0xee, .. })
        ));
        let mut bad_kind = sample().encode();
        bad_kind[1] = 0x7f;
        assert!(matches!(
            RequestFrame::decode(bad_kind),
            Err(FrameError::UnknownTag { found: 0x7f, .. })
        ));
    }

    #[test]
    fn replies_round_trip_and_reject_garbage() {
        let ok: Result<Vec<u8>, RemoteError> = Ok(vec![1, 2]);
        assert_eq!(decode_reply(encode_reply(&ok)).unwrap(), ok);
        let err: Result<Vec<u8>, RemoteError> = Err(RemoteError {
            kind: RemoteErrorKind::UnknownNode,
            message: "no node 9 here".into(),
        });
        assert_eq!(decode_reply(encode_reply(&err)).unwrap(), err);
        assert!(decode_reply(vec![FRAME_VERSION]).is_err());
        assert!(decode_reply(vec![FRAME_VERSION, 1]).is_err());
        assert!(decode_reply(vec![FRAME_VERSION, 5, 0]).is_err());
    }

    #[test]
    fn truncated_or_corrupted_payloads_fail_to_decode_without_panicking() {
        let value: (u64, String, Vec<u32>) = (42, "lease".into(), vec![1, 2, 3]);
        let bytes = encode_payload("sample", &value).unwrap();
        for len in 0..bytes.len() {
            let err = decode_payload::<(u64, String, Vec<u32>)>("sample", &bytes[..len]);
            assert!(err.is_err(), "a {len}-byte prefix decoded");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_payload::<(u64, String, Vec<u32>)>("sample", &longer).is_err());
        // A huge length prefix is refused by the limit, not allocated.
        let huge = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(decode_payload::<Vec<u8>>("sample", &huge).is_err());
    }
}
