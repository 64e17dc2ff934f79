//! Object and client ids.

use std::fmt;

/// An object's id; prints as `o-<32 hex digits>`.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct ObjectId(pub [u8; 16]);

impl ObjectId {
    /// A fresh random id.
    pub fn random() -> ObjectId {
        ObjectId(rand::random())
    }

    /// The prefix and first 8 hex digits.
    pub fn short(&self) -> String {
        self.to_string()[..10].to_string()
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("o-")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// The hasher of maps and sets keyed by ids ([`ObjectId`], or a key that
/// holds one). A `get` of a value holding 10,000 refs touches several such
/// maps per ref; aHash costs a fraction of std's SipHash there and is
/// seeded per process from the OS, so ids crafted by a peer cannot force
/// collisions.
pub type IdHasher = ahash::RandomState;

/// A process using the store (a worker, a driver, the raylet itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);
