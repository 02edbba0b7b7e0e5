//! Framing of guest-protocol messages on a byte stream.
//!
//! A frame is `header_len: u32 BE`, `data_len: u32 BE`, a JSON header `{"id":…,"msg":{…}}`, then
//! `data_len` raw bytes. Splitting bytes from JSON keeps output and file contents cheap (no
//! escaping, no base64) while the control part stays readable in a packet dump.
//!
//! Decoding is two steps on purpose: [`FrameCodec`] only cuts the stream into [`RawFrame`]s and
//! fails only when the stream itself is unusable (a length over the limit), while
//! [`Frame::decode`] parses the header and fails per frame. A peer that sends one bad header gets
//! an error reply and the connection keeps serving.

use super::RequestId;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// Largest JSON header accepted. Headers hold paths and directory listings, never bulk data.
pub const MAX_HEADER_LEN: usize = 4 * 1024 * 1024;
/// Largest data section accepted. Senders split bulk bytes into chunks well under this.
pub const MAX_DATA_LEN: usize = 4 * 1024 * 1024;

const PREFIX_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "frame too large: header {header_len} bytes (max {MAX_HEADER_LEN}), data {data_len} bytes (max {MAX_DATA_LEN})"
    )]
    TooLarge { header_len: usize, data_len: usize },
    #[error("malformed frame header for request {id}: {message}")]
    Malformed { id: RequestId, message: String },
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// A frame cut from the stream whose header has not been parsed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub header: Bytes,
    pub data: Bytes,
}

/// A decoded frame carrying one message of type `M` (host or guest message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<M> {
    pub id: RequestId,
    pub msg: M,
    pub data: Bytes,
}

#[derive(Serialize)]
struct HeaderOut<'a, M> {
    id: RequestId,
    msg: &'a M,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderIn<M> {
    id: RequestId,
    msg: M,
}

/// Used to salvage the id of a frame whose message does not parse, so the error reply can name it.
#[derive(Deserialize)]
struct IdOnly {
    id: RequestId,
}

impl<M> Frame<M> {
    pub fn new(id: RequestId, msg: M) -> Self {
        Frame {
            id,
            msg,
            data: Bytes::new(),
        }
    }

    pub fn with_data(id: RequestId, msg: M, data: Bytes) -> Self {
        Frame { id, msg, data }
    }
}

impl<M: DeserializeOwned> Frame<M> {
    pub fn decode(raw: RawFrame) -> Result<Self, FrameError> {
        match serde_json::from_slice::<HeaderIn<M>>(&raw.header) {
            Ok(h) => Ok(Frame {
                id: h.id,
                msg: h.msg,
                data: raw.data,
            }),
            Err(err) => {
                let id = serde_json::from_slice::<IdOnly>(&raw.header).map_or(0, |h| h.id);
                Err(FrameError::Malformed {
                    id,
                    message: err.to_string(),
                })
            }
        }
    }
}

impl<M: Serialize> Frame<M> {
    /// Appends this frame's wire form to `dst`.
    pub fn encode_into(&self, dst: &mut BytesMut) -> Result<(), FrameError> {
        let header = serde_json::to_vec(&HeaderOut {
            id: self.id,
            msg: &self.msg,
        })
        .map_err(|e| FrameError::Malformed {
            id: self.id,
            message: e.to_string(),
        })?;
        if header.len() > MAX_HEADER_LEN || self.data.len() > MAX_DATA_LEN {
            return Err(FrameError::TooLarge {
                header_len: header.len(),
                data_len: self.data.len(),
            });
        }
        dst.reserve(PREFIX_LEN + header.len() + self.data.len());
        dst.put_u32(header.len() as u32);
        dst.put_u32(self.data.len() as u32);
        dst.put_slice(&header);
        dst.put_slice(&self.data);
        Ok(())
    }
}

/// Cuts a byte stream into [`RawFrame`]s and writes [`Frame`]s of any message type.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = RawFrame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RawFrame>, FrameError> {
        if src.len() < PREFIX_LEN {
            return Ok(None);
        }
        let header_len = u32::from_be_bytes(src[0..4].try_into().expect("4 bytes")) as usize;
        let data_len = u32::from_be_bytes(src[4..8].try_into().expect("4 bytes")) as usize;
        if header_len > MAX_HEADER_LEN || data_len > MAX_DATA_LEN {
            return Err(FrameError::TooLarge {
                header_len,
                data_len,
            });
        }
        let total = PREFIX_LEN + header_len + data_len;
        if src.len() < total {
            // Grow as bytes arrive rather than trusting the peer's length with a big allocation.
            src.reserve((total - src.len()).min(64 * 1024));
            return Ok(None);
        }
        src.advance(PREFIX_LEN);
        let header = src.split_to(header_len).freeze();
        let data = src.split_to(data_len).freeze();
        Ok(Some(RawFrame { header, data }))
    }
}

impl<M: Serialize> Encoder<Frame<M>> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame<M>, dst: &mut BytesMut) -> Result<(), FrameError> {
        frame.encode_into(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::{CommandLine, ExecRequest, GuestMessage, HostMessage, OutputStream};
    use proptest::prelude::*;

    fn encode<M: Serialize>(frame: &Frame<M>) -> BytesMut {
        let mut buf = BytesMut::new();
        frame.encode_into(&mut buf).unwrap();
        buf
    }

    #[test]
    fn round_trips_an_exec_request() {
        let frame = Frame::new(
            7,
            HostMessage::Exec(ExecRequest {
                command: CommandLine::Shell {
                    script: "echo hi".into(),
                },
                cwd: Some("/workspace".into()),
                env: [("A".to_string(), "b".to_string())].into(),
                stdin: true,
                timeout_ms: Some(1000),
            }),
        );
        let mut buf = encode(&frame);
        let raw = FrameCodec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(Frame::<HostMessage>::decode(raw).unwrap(), frame);
        assert!(buf.is_empty());
    }

    #[test]
    fn malformed_header_names_the_request_and_leaves_the_stream_usable() {
        let mut buf = BytesMut::new();
        let bad = br#"{"id":42,"msg":{"type":"no_such_thing"}}"#;
        buf.put_u32(bad.len() as u32);
        buf.put_u32(0);
        buf.put_slice(bad);
        buf.extend_from_slice(&encode(&Frame::new(43, HostMessage::ListPorts)));

        let raw = FrameCodec.decode(&mut buf).unwrap().unwrap();
        match Frame::<HostMessage>::decode(raw) {
            Err(FrameError::Malformed { id, .. }) => assert_eq!(id, 42),
            other => panic!("expected a malformed-frame error, got {other:?}"),
        }
        let next = FrameCodec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(Frame::<HostMessage>::decode(next).unwrap().id, 43);
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut buf = BytesMut::new();
        buf.put_u32(u32::MAX);
        buf.put_u32(0);
        assert!(matches!(
            FrameCodec.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
    }

    proptest! {
        /// Any byte soup either waits for more input, yields frames, or fails cleanly: never panics,
        /// never yields a frame longer than the limits.
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(raw)) = FrameCodec.decode(&mut buf) {
                prop_assert!(raw.header.len() <= MAX_HEADER_LEN && raw.data.len() <= MAX_DATA_LEN);
                let _ = Frame::<HostMessage>::decode(raw.clone());
                let _ = Frame::<GuestMessage>::decode(raw);
            }
        }

        /// Frames survive being split at arbitrary points, as TCP and Unix sockets may deliver them.
        #[test]
        fn frames_survive_arbitrary_splits(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            ids in proptest::collection::vec(1u64.., 1..5),
            cut in 1usize..64,
        ) {
            let frames: Vec<_> = ids.iter().map(|&id| Frame::with_data(
                id, GuestMessage::Output { stream: OutputStream::Stderr }, Bytes::from(data.clone()))).collect();
            let mut wire = BytesMut::new();
            for f in &frames { f.encode_into(&mut wire).unwrap(); }
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(cut) {
                buf.extend_from_slice(chunk);
                while let Some(raw) = FrameCodec.decode(&mut buf).unwrap() {
                    got.push(Frame::<GuestMessage>::decode(raw).unwrap());
                }
            }
            prop_assert_eq!(got, frames);
        }
    }
}
