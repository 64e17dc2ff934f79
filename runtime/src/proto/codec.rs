//! Length-framed rkyv messages with a version check.
//!
//! A frame is an 8-byte header — magic `PZ`, protocol version (u16 LE),
//! payload length (u32 LE) — and then the rkyv archive of one message.
//! Decoding validates the archive (bytecheck) and never panics: a bad magic,
//! another version, a length over the configured maximum, a short frame or
//! bytes that are not a valid archive each give a [`CodecError`], after
//! which the caller drops the connection (P-1).

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"PZ";
/// The wire protocol version; peers with another version are refused.
pub const PROTOCOL_VERSION: u16 = 21;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;

/// A frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The frame does not start with `PZ`: not a Prism peer, or a desynchronised stream.
    #[error("bad frame magic {0:02x?}: not a Prism peer")]
    BadMagic([u8; 2]),
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: peer speaks v{theirs}, this build speaks v{ours}")]
    VersionMismatch {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// The declared payload is over the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Declared length.
        len: u64,
        /// Configured maximum.
        max: u64,
    },
    /// The stream ended inside a frame.
    #[error("truncated frame: expected {expected} bytes, got {got}")]
    Truncated {
        /// Bytes the header promised (header included).
        expected: u64,
        /// Bytes that arrived.
        got: u64,
    },
    /// The payload is not a valid archive of the expected message type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message could not be serialised.
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// Encodes `msg` as one frame, header included.
pub fn encode<T: Encode>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let body =
        rkyv::to_bytes::<rancor::Error>(msg).map_err(|e| CodecError::Encode(e.to_string()))?;
    let len = u32::try_from(body.len())
        .map_err(|_| CodecError::Encode(format!("{} bytes is over 4 GiB", body.len())))?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&header(len));
    out.extend_from_slice(&body);
    Ok(out)
}

/// The header for a payload of `len` bytes.
pub fn header(len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..2].copy_from_slice(&MAGIC);
    h[2..4].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    h[4..].copy_from_slice(&len.to_le_bytes());
    h
}

/// Checks a header and returns the payload length it announces.
pub fn parse_header(h: &[u8; HEADER_LEN], max_frame: usize) -> Result<usize, CodecError> {
    if h[..2] != MAGIC {
        return Err(CodecError::BadMagic([h[0], h[1]]));
    }
    let theirs = u16::from_le_bytes([h[2], h[3]]);
    if theirs != PROTOCOL_VERSION {
        return Err(CodecError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > max_frame {
        return Err(CodecError::FrameTooLarge {
            len: len as u64,
            max: max_frame as u64,
        });
    }
    Ok(len)
}

/// The error type validation runs with: unlike `rancor::Error` in release
/// builds, it keeps what failed (which field, which check), so a malformed
/// message is reported precisely. It costs an allocation only on failure.
pub type Detailed = rancor::BoxedError;

/// A message the codec can decode: validated (bytecheck), then
/// deserialised. Every wire message derives what this needs.
pub trait Decode:
    Sized
    + Archive<
        Archived: for<'a> CheckBytes<HighValidator<'a, Detailed>>
                      + Deserialize<Self, HighDeserializer<Detailed>>,
    >
{
}

impl<T> Decode for T where
    T: Archive<
        Archived: for<'a> CheckBytes<HighValidator<'a, Detailed>>
                      + Deserialize<T, HighDeserializer<Detailed>>,
    >
{
}

/// A message the codec can encode.
pub trait Encode:
    for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

impl<T> Encode for T where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

/// Decodes one payload (the bytes after the header) as a `T`.
pub fn decode_payload<T: Decode>(payload: &[u8]) -> Result<T, CodecError> {
    // rkyv needs the archive aligned; a frame read off the wire is not.
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<T, Detailed>(&aligned).map_err(|e| {
        CodecError::Malformed(format!(
            "{} ({} bytes are not a valid {})",
            e,
            payload.len(),
            short_type_name::<T>()
        ))
    })
}

/// `HeadRequest` for `prism::proto::head::HeadRequest`.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Decodes one whole frame (header and payload) from a complete buffer.
pub fn decode_frame<T: Decode>(frame: &[u8], max_frame: usize) -> Result<T, CodecError> {
    let Some(h) = frame.first_chunk::<HEADER_LEN>() else {
        return Err(CodecError::Truncated {
            expected: HEADER_LEN as u64,
            got: frame.len() as u64,
        });
    };
    let len = parse_header(h, max_frame)?;
    let body = &frame[HEADER_LEN..];
    if body.len() < len {
        return Err(CodecError::Truncated {
            expected: (HEADER_LEN + len) as u64,
            got: frame.len() as u64,
        });
    }
    if body.len() > len {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes after the frame",
            body.len() - len
        )));
    }
    decode_payload(body)
}

/// A frame could not be read from a blocking stream.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The bytes are not a frame of the expected message.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Reads one message from a blocking stream (Unix sockets inside a
/// machine). `Ok(None)` at a clean end of stream, before a frame's first
/// byte; a stream that ends inside a frame is [`CodecError::Truncated`]
/// with the bytes that did arrive.
pub fn read_frame<T: Decode>(
    r: &mut impl std::io::Read,
    max_frame: usize,
) -> Result<Option<T>, ReadError> {
    let mut h = [0u8; HEADER_LEN];
    let got = read_full(r, &mut h)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(CodecError::Truncated {
            expected: HEADER_LEN as u64,
            got: got as u64,
        }
        .into());
    }
    let len = parse_header(&h, max_frame)?;
    let mut body = vec![0u8; len];
    let got = read_full(r, &mut body)?;
    if got < len {
        return Err(CodecError::Truncated {
            expected: (HEADER_LEN + len) as u64,
            got: (HEADER_LEN + got) as u64,
        }
        .into());
    }
    Ok(Some(decode_payload(&body)?))
}

/// Fills `buf` unless the stream ends first; returns the bytes read.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
