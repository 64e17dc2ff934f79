//! Values that cross process boundaries: anything rkyv can archive and
//! check. Task arguments and results, `put` payloads.

use super::error::Error;
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// Archived bytes, aligned for rkyv.
pub type Encoded = AlignedVec;

/// A value Prism can move between processes: rkyv-archivable with
/// validation. Derive `rkyv::Archive, rkyv::Serialize, rkyv::Deserialize`
/// on your types to make them one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross processes: Prism task arguments, results and `put` values must derive rkyv's `Archive`, `Serialize` and `Deserialize`",
    label = "not rkyv-archivable"
)]
pub trait Value: Sized + Send + 'static {
    /// Archives the value.
    fn encode(&self) -> Result<Encoded, Error>;
    /// Validates archived bytes and deserialises them.
    fn decode(bytes: &[u8]) -> Result<Self, Error>;
    /// The archived size in bytes (archives into a counter, writing nothing).
    fn encoded_len(&self) -> Result<usize, Error>;
    /// Archives the value straight into `out`, which is exactly
    /// [`Value::encoded_len`] bytes and 16-byte aligned.
    fn encode_into(&self, out: &mut [u8]) -> Result<(), Error>;
}

/// A writer that only counts, to size an archive before writing it in place.
#[derive(Debug, Default)]
pub struct Counter(usize);

impl rkyv::ser::Positional for Counter {
    fn pos(&self) -> usize {
        self.0
    }
}

impl<E> rkyv::ser::Writer<E> for Counter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.0 += bytes.len();
        Ok(())
    }
}

impl<T> Value for T
where
    T: Archive + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    T: for<'a> Serialize<HighSerializer<Counter, ArenaHandle<'a>, rancor::Error>>,
    T: for<'a, 'b> Serialize<
        HighSerializer<rkyv::ser::writer::Buffer<'b>, ArenaHandle<'a>, rancor::Error>,
    >,
    T: Send + 'static,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    fn encode(&self) -> Result<Encoded, Error> {
        rkyv::to_bytes::<rancor::Error>(self).map_err(|e| Error::Encode(e.to_string()))
    }

    fn encoded_len(&self) -> Result<usize, Error> {
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, Counter::default())
            .map(|c| c.0)
            .map_err(|e| Error::Encode(e.to_string()))
    }

    fn encode_into(&self, out: &mut [u8]) -> Result<(), Error> {
        let want = out.len();
        let buf = rkyv::ser::writer::Buffer::from(out);
        let written = rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, buf)
            .map_err(|e| Error::Encode(e.to_string()))?;
        if written.len() != want {
            return Err(Error::Encode(format!(
                "archived {} bytes where {want} were sized",
                written.len()
            )));
        }
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let decode = |b: &[u8]| {
            rkyv::from_bytes::<T, rancor::Error>(b).map_err(|e| Error::Decode {
                type_name: std::any::type_name::<T>(),
                detail: e.to_string(),
            })
        };
        if (bytes.as_ptr() as usize).is_multiple_of(16) {
            decode(bytes)
        } else {
            let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
            aligned.extend_from_slice(bytes);
            decode(&aligned)
        }
    }
}
