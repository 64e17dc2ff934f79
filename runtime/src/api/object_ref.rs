//! `ObjectRef<T>`: a reference to a value that exists, or will, somewhere
//! in the cluster. Refs are cheap to clone. A ref inside a value (a
//! `Vec<ObjectRef<T>>` argument, say) stays a ref: archiving it records the
//! id and makes sure the object is reachable from other processes, and a
//! process that deserialises one it does not own borrows it
//! (`borrowing.rs`).

use super::core::{self, Core};
use super::error::{Error, Result};
use super::value::{Encoded, Value};
use crate::proto::task::ReplyTo;
use prism_objectstore::ObjectId;
use rkyv::rancor::Fallible;
use rkyv::{Archive, Deserialize, Place, Serialize};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// Frees the owner's bookkeeping (or ends a borrow) when the last local
/// clone is dropped.
#[derive(Debug)]
#[doc(hidden)]
pub struct OwnerGuard {
    pub(crate) id: ObjectId,
    pub(crate) core: Arc<Core>,
    /// A deserialised copy of a ref this process does not own.
    pub(crate) borrowed: bool,
    /// A copy of a ref this process owns, read back out of a value: counted
    /// as a borrower of its own (BR-4).
    pub(crate) self_borrow: bool,
    /// Who owns the object (archived with the ref, so that a process that
    /// reads it out of a `put` value registers there).
    pub(crate) owner: Option<ReplyTo>,
}

impl OwnerGuard {
    pub(crate) fn new(id: ObjectId, core: Arc<Core>) -> Arc<OwnerGuard> {
        let owner = core.direct.reply_to;
        Arc::new(OwnerGuard {
            id,
            core,
            borrowed: false,
            self_borrow: false,
            owner,
        })
    }
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        if self.self_borrow {
            self.core.on_borrows(vec![self.id], true);
        } else if self.borrowed {
            self.core.drop_borrow(self.id);
        } else {
            self.core.release(self.id);
        }
    }
}

/// A reference to a (future) value of type `T`.
pub struct ObjectRef<T> {
    pub(crate) id: ObjectId,
    pub(crate) guard: Option<Arc<OwnerGuard>>,
    pub(crate) _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        ObjectRef {
            id: self.id,
            guard: self.guard.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRef({})", self.id)
    }
}

impl<T> ObjectRef<T> {
    pub(crate) fn owned(id: ObjectId, core: Arc<Core>) -> Self {
        ObjectRef {
            id,
            guard: Some(OwnerGuard::new(id, core)),
            _t: PhantomData,
        }
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.id
    }
}

impl<T: Value> ObjectRef<T> {
    /// Blocks until the value is ready and returns it.
    pub fn get(&self) -> Result<T> {
        core::current()?.get::<T>(self.id, None)
    }

    /// Like [`ObjectRef::get`], failing with [`Error::Timeout`] after `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        core::current()?.get::<T>(self.id, Some(timeout))
    }
}

impl<T: Value> std::future::IntoFuture for ObjectRef<T> {
    type Output = Result<T>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        // The ref itself moves into the future (not just its id): dropping
        // it would release the owned slot before the value is read.
        let this = self;
        Box::pin(async move {
            let core = core::current()?;
            core.ready(this.id).await;
            // Small results are held here: no blocking thread needed.
            if let Some(value) = core.get_inline::<T>(this.id) {
                drop(this);
                return value;
            }
            let c = core.clone();
            tokio::task::spawn_blocking(move || {
                let value = c.get::<T>(this.id, None);
                drop(this);
                value
            })
            .await
            .map_err(|e| Error::Disconnected(e.to_string()))?
        })
    }
}

/// Bytes of an archived ref: its id, then its owner's node and connection
/// (zeros when not known).
const ARCHIVED_LEN: usize = 40;

// Archived as its id and, where it is counted (inside a task's arguments,
// a task's result or a put), its owner. Serialising a ref is how it escapes this process,
// so that is where its value is made reachable by others.
impl<T> Archive for ObjectRef<T> {
    type Archived = [u8; ARCHIVED_LEN];
    /// Whether it is counted.
    type Resolver = bool;

    fn resolve(&self, counted: bool, out: Place<Self::Archived>) {
        let mut bytes = [0u8; ARCHIVED_LEN];
        bytes[..16].copy_from_slice(&self.id.0);
        // Elsewhere (a channel) it is kept for good (OW-2): its
        // readers need not register, so they are not told where.
        if let Some(owner) = self
            .guard
            .as_ref()
            .and_then(|g| g.owner)
            .filter(|_| counted)
        {
            bytes[16..32].copy_from_slice(&owner.node.0);
            bytes[32..].copy_from_slice(&owner.conn.to_le_bytes());
        }
        bytes.resolve([(); ARCHIVED_LEN], out)
    }
}

impl<T, S: Fallible + ?Sized> Serialize<S> for ObjectRef<T> {
    fn serialize(&self, _serializer: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
        let Ok(core) = core::current() else {
            return Ok(false);
        };
        // Inside a task's arguments, a result or a put it is counted (OW-3),
        // else kept (OW-2).
        let counted = super::borrowing::tracked(self.id, &self.guard);
        core.escape(self.id, counted);
        if !counted && self.guard.as_ref().is_some_and(|g| g.borrowed) {
            core.borrowed.keep_for_good(self.id);
        }
        Ok(counted)
    }
}

impl<T, D: Fallible + ?Sized> Deserialize<ObjectRef<T>, D> for [u8; ARCHIVED_LEN] {
    #[inline]
    fn deserialize(&self, _d: &mut D) -> std::result::Result<ObjectRef<T>, D::Error> {
        let mut raw = [0u8; 16];
        raw.copy_from_slice(&self[..16]);
        let id = ObjectId(raw);
        // Kept small enough to inline: a value may hold 10,000 refs.
        let guard = match super::borrowing::decoding() {
            super::borrowing::NOT_COUNTED => None,
            // In a value, a ref archived without its owner (a
            // channel's) is kept by that owner for good: nothing to count.
            super::borrowing::VALUE if self[16..32] == [0u8; 16] => None,
            _ => borrow(id, self),
        };
        Ok(ObjectRef {
            id,
            guard,
            _t: PhantomData,
        })
    }
}

/// A ref from a task's arguments or a `get` value that this process does
/// not own is borrowed: counted while held.
#[cold]
#[inline(never)]
fn borrow(id: ObjectId, archived: &[u8; ARCHIVED_LEN]) -> Option<Arc<OwnerGuard>> {
    let core = core::current().ok()?;
    if core.owned.get(id).is_some() {
        // Its owner reads it back out of a value: counted, so the object
        // outlives the value while this copy is held (BR-4). In a task's
        // arguments its submitter holds it, as before.
        let in_value = super::borrowing::decoding() == super::borrowing::VALUE;
        if !in_value || core.owned.borrow(id, false).is_none() {
            return None;
        }
        let owner = core.direct.reply_to;
        return Some(Arc::new(OwnerGuard {
            id,
            core,
            borrowed: false,
            self_borrow: true,
            owner,
        }));
    }
    let mut node = [0u8; 16];
    node.copy_from_slice(&archived[16..32]);
    let mut conn = [0u8; 8];
    conn.copy_from_slice(&archived[32..]);
    let owner = (node != [0u8; 16]).then(|| ReplyTo {
        node: crate::ids::NodeId(node),
        conn: u64::from_le_bytes(conn),
    });
    if !super::borrowing::decoded(id, owner) {
        return None;
    }
    core.borrowed.add(id);
    Some(Arc::new(OwnerGuard {
        id,
        core,
        borrowed: true,
        self_borrow: false,
        owner,
    }))
}

/// A task argument: a value, or a ref resolved before the task runs.
#[derive(Debug)]
pub enum Arg<T> {
    /// A value.
    Value(T),
    /// A reference to one.
    Ref(ObjectRef<T>),
}

/// An argument after encoding.
#[doc(hidden)]
#[derive(Debug)]
pub enum EncodedArg {
    /// Archived bytes, and the refs archived inside them (kept alive until
    /// the task ends).
    Value(Encoded, Vec<super::borrowing::Tracked>),
    /// An object id, and the ref that keeps it alive until submission.
    Ref(ObjectId, Option<Arc<OwnerGuard>>),
}

impl<T: Value> Arg<T> {
    /// Archives a value argument.
    #[doc(hidden)]
    pub fn encode(self) -> Result<EncodedArg> {
        Ok(match self {
            Arg::Value(v) => {
                let (bytes, refs) = super::borrowing::track_args(|| v.encode());
                EncodedArg::Value(bytes?, refs)
            }
            Arg::Ref(r) => EncodedArg::Ref(r.id, r.guard),
        })
    }
}

/// What a remote function accepts for a parameter of type `T`: a `T`, an
/// `ObjectRef<T>`, or a `&ObjectRef<T>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be passed for a `{T}` parameter of a remote function or actor method",
    label = "expected a `{T}`, an `ObjectRef<{T}>` or a `&ObjectRef<{T}>`",
    note = "a value argument must derive rkyv's `Archive`, `Serialize` and `Deserialize` to cross processes"
)]
pub trait IntoArg<T> {
    /// Converts.
    fn into_arg(self) -> Arg<T>;
}

impl<T: Value> IntoArg<T> for T {
    fn into_arg(self) -> Arg<T> {
        Arg::Value(self)
    }
}

impl<T> IntoArg<T> for ObjectRef<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Ref(self)
    }
}

impl<T> IntoArg<T> for &ObjectRef<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Ref(self.clone())
    }
}
