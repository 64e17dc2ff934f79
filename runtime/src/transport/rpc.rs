//! One request, one response, on one stream, in codec frames.

use super::{Connection, SendHalf, TransportError};
use crate::proto::codec::{self, CodecError, Decode, Encode, HEADER_LEN};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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
    /// A frame started but its rest did not arrive in time.
    #[error("a frame stalled: {got} of {expected} bytes arrived in {} s", FRAME_TIMEOUT.as_secs())]
    Stalled {
        /// Bytes the frame needs (header included; the header's size while
        /// the header itself is incomplete).
        expected: u64,
        /// Bytes that arrived.
        got: u64,
    },
}

/// Once a frame's first byte has arrived, the rest must follow within this.
pub const FRAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads one frame's payload; `Ok(None)` if the stream ended cleanly first.
/// Waiting for a frame to start is unbounded (streams idle between
/// messages); once it has started, its rest must come within
/// [`FRAME_TIMEOUT`] (a peer that sends a header and part of a body is cut
/// off, not waited on forever).
pub async fn read_payload<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max_frame: usize,
) -> Result<Option<Vec<u8>>, RpcError> {
    let mut h = [0u8; HEADER_LEN];
    let first = r.read(&mut h).await?;
    if first == 0 {
        return Ok(None);
    }
    // Progress, for the error if the frame stalls.
    let got = AtomicU64::new(first as u64);
    let expected = AtomicU64::new(HEADER_LEN as u64);
    let rest = async {
        let mut n = first;
        while n < HEADER_LEN {
            let k = r.read(&mut h[n..]).await?;
            if k == 0 {
                return Err(CodecError::Truncated {
                    expected: HEADER_LEN as u64,
                    got: n as u64,
                }
                .into());
            }
            n += k;
            got.store(n as u64, Relaxed);
        }
        let len = codec::parse_header(&h, max_frame)?;
        expected.store((HEADER_LEN + len) as u64, Relaxed);
        // Grow with what arrives: a header alone must not make us allocate its claim.
        let mut body: Vec<u8> = Vec::with_capacity(len.min(64 << 10));
        while body.len() < len {
            let left = len - body.len();
            if body.capacity() == body.len() {
                body.reserve(left.min(body.len().max(64 << 10)));
            }
            let k = (&mut *r).take(left as u64).read_buf(&mut body).await?;
            if k == 0 {
                return Err(CodecError::Truncated {
                    expected: (HEADER_LEN + len) as u64,
                    got: (HEADER_LEN + body.len()) as u64,
                }
                .into());
            }
            got.store((HEADER_LEN + body.len()) as u64, Relaxed);
        }
        Ok(Some(body))
    };
    match tokio::time::timeout(FRAME_TIMEOUT, rest).await {
        Ok(r) => r,
        Err(_) => Err(RpcError::Stalled {
            expected: expected.load(Relaxed),
            got: got.load(Relaxed),
        }),
    }
}

/// Reads and decodes one message.
pub async fn read_msg<T, R>(r: &mut R, max_frame: usize) -> Result<Option<T>, RpcError>
where
    R: AsyncRead + Unpin + ?Sized,
    T: Decode,
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
    T: Encode,
{
    w.write_all(&codec::encode(msg)?).await?;
    Ok(())
}

/// Encodes and writes one message, then finishes the stream.
pub async fn write_msg<T>(w: &mut SendHalf, msg: &T) -> Result<(), RpcError>
where
    T: Encode,
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
    Req: Encode,
    Resp: Decode,
{
    let (mut s, mut r) = conn.open_bi().await?;
    write_msg(&mut s, req).await?;
    read_msg(&mut r, max_frame)
        .await?
        .ok_or(RpcError::NoResponse)
}
