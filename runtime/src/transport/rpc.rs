//! One request, one response, on one stream, in codec frames.

use super::{Connection, SendHalf, TransportError};
use crate::proto::codec::{self, CodecError, HEADER_LEN};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A request/response exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The connection or stream failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The peer sent a frame we cannot decode (or we could not encode).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Reading or writing the stream failed.
    #[error("stream I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the stream without answering.
    #[error("the peer closed the stream without a response")]
    NoResponse,
}

/// Reads one frame's payload; `Ok(None)` if the stream ended cleanly first.
pub async fn read_payload<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max_frame: usize,
) -> Result<Option<Vec<u8>>, RpcError> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut h[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(CodecError::Truncated {
                expected: HEADER_LEN as u64,
                got: got as u64,
            }
            .into());
        }
        got += n;
    }
    let len = codec::parse_header(&h, max_frame)?;
    // Grow with what arrives: a header alone must not make us allocate its claim.
    let mut body = Vec::with_capacity(len.min(64 << 10));
    r.take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(CodecError::Truncated {
            expected: (HEADER_LEN + len) as u64,
            got: (HEADER_LEN + body.len()) as u64,
        }
        .into());
    }
    Ok(Some(body))
}

/// Reads and decodes one message.
pub async fn read_msg<T, R>(r: &mut R, max_frame: usize) -> Result<Option<T>, RpcError>
where
    R: AsyncRead + Unpin + ?Sized,
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    match read_payload(r, max_frame).await? {
        Some(p) => Ok(Some(codec::decode_payload(&p)?)),
        None => Ok(None),
    }
}

/// Encodes and writes one message on a stream that stays open.
pub async fn write_frame<T, W>(w: &mut W, msg: &T) -> Result<(), RpcError>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    w.write_all(&codec::encode(msg)?).await?;
    Ok(())
}

/// Encodes and writes one message, then finishes the stream.
pub async fn write_msg<T>(w: &mut SendHalf, msg: &T) -> Result<(), RpcError>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    let frame = codec::encode(msg)?;
    w.write_all(&frame).await?;
    w.shutdown().await?;
    Ok(())
}

/// Sends `req` on a new stream and waits for the response.
pub async fn call<Req, Resp>(
    conn: &dyn Connection,
    req: &Req,
    max_frame: usize,
) -> Result<Resp, RpcError>
where
    Req: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    Resp: Archive,
    Resp::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<Resp, HighDeserializer<rancor::Error>>,
{
    let (mut s, mut r) = conn.open_bi().await?;
    write_msg(&mut s, req).await?;
    read_msg(&mut r, max_frame)
        .await?
        .ok_or(RpcError::NoResponse)
}
