//! Actors: `#[prism::actor]` types, their handles, options, names and kills.
//!
//! ```ignore
//! #[prism::actor]
//! struct Counter { n: u64 }
//!
//! #[prism::actor]
//! impl Counter {
//!     fn new(start: u64) -> Self { Counter { n: start } }
//!     fn add(&mut self, by: u64) -> u64 { self.n += by; self.n }
//! }
//!
//! let c = Counter::options().name("counter").max_restarts(1).spawn(0u64)?;
//! assert_eq!(c.add(5u64)?.get()?, 5);
//! ```

use super::core::{self};
use super::error::Result;
use super::object_ref::{EncodedArg, ObjectRef};
use super::options::{placement_builders, Placement};
use crate::ids::{ActorId, HandleId, JobId, TaskId};
use crate::proto::task::{ActorCreate, TaskKind, TaskSpec};
use prism_scheduler::ResourceSet;
use rkyv::rancor::Fallible;
use rkyv::{Archive, Deserialize, Place, Serialize};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A type made an actor by `#[prism::actor]`.
pub trait ActorClass: Sized + 'static {
    /// Its registered name.
    const CLASS: &'static str;
    /// The generated type carrying its remote methods.
    type Stub: From<ActorLink> + Clone;
}

/// The untyped part of a handle: the actor, and this caller's call order.
#[derive(Debug, Clone)]
pub struct ActorLink {
    pub(crate) id: ActorId,
    caller: HandleId,
    seq: Arc<AtomicU64>,
    /// The actor's residency rule, where this handle was made by `spawn`
    /// or `get_actor`, or passed in a value from such a handle (the caller
    /// then places tasks reading its results inside it).
    rule: Option<Arc<crate::proto::common::Residency>>,
}

impl ActorLink {
    pub(crate) fn new(id: ActorId) -> ActorLink {
        ActorLink {
            id,
            caller: HandleId::random(),
            seq: Arc::new(AtomicU64::new(0)),
            rule: None,
        }
    }

    /// The actor.
    pub fn id(&self) -> ActorId {
        self.id
    }

    /// Calls `method` (used by the generated stubs).
    #[doc(hidden)]
    pub fn call<R>(&self, method: &'static str, args: Vec<EncodedArg>) -> Result<ObjectRef<R>> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let rule = self.rule.as_deref();
        core::current()?.submit_call(self.id, self.caller, seq, method, args, rule)
    }
}

/// A handle to an actor: cheap to clone, and can be passed to tasks and
/// other actors (its calls then go from there straight to the actor's node).
/// Its remote methods are reached through `Deref`.
pub struct ActorHandle<T: ActorClass> {
    link: ActorLink,
    stub: T::Stub,
    created: Option<ObjectRef<()>>,
    _t: PhantomData<fn() -> T>,
}

impl<T: ActorClass> Clone for ActorHandle<T> {
    fn clone(&self) -> Self {
        ActorHandle {
            link: self.link.clone(),
            stub: self.stub.clone(),
            created: self.created.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: ActorClass> std::fmt::Debug for ActorHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorHandle<{}>({})", T::CLASS, self.link.id)
    }
}

impl<T: ActorClass> std::ops::Deref for ActorHandle<T> {
    type Target = T::Stub;
    fn deref(&self) -> &T::Stub {
        &self.stub
    }
}

impl<T: ActorClass> ActorHandle<T> {
    /// A handle to actor `id`; `rule`, its residency rule where known
    /// (tasks reading its results are then placed inside it).
    pub(crate) fn from_id(
        id: ActorId,
        created: Option<ObjectRef<()>>,
        rule: Option<crate::proto::common::Residency>,
    ) -> Self {
        let mut link = ActorLink::new(id);
        link.rule = rule.map(Arc::new);
        ActorHandle {
            stub: T::Stub::from(link.clone()),
            link,
            created,
            _t: PhantomData,
        }
    }

    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.link.id
    }

    /// Waits until the constructor has run (calls made before wait for it
    /// anyway); fails with the constructor's panic or the name clash.
    pub fn ready(&self) -> Result<()> {
        match &self.created {
            Some(r) => r.get(),
            None => Ok(()),
        }
    }
}

/// A handle inside a value: its actor, and the actor's residency rule
/// where the handle knows it, so that a handle passed to a task or an
/// actor places the readers of its results inside the rule as the
/// original does. Its call order is the receiver's own.
#[doc(hidden)]
#[derive(Archive, Serialize, Deserialize)]
pub struct HandleWire {
    id: [u8; 16],
    rule: Option<crate::proto::common::Residency>,
}

impl<T: ActorClass> ActorHandle<T> {
    fn wire(&self) -> HandleWire {
        HandleWire {
            id: self.link.id.0,
            rule: self.link.rule.as_deref().cloned(),
        }
    }
}

impl<T: ActorClass> Archive for ActorHandle<T> {
    type Archived = ArchivedHandleWire;
    type Resolver = HandleWireResolver;

    fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
        self.wire().resolve(resolver, out)
    }
}

impl<T: ActorClass, S: Fallible + ?Sized> Serialize<S> for ActorHandle<T>
where
    HandleWire: Serialize<S>,
{
    fn serialize(&self, s: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
        self.wire().serialize(s)
    }
}

impl<T: ActorClass, D: Fallible + ?Sized> Deserialize<ActorHandle<T>, D> for ArchivedHandleWire
where
    ArchivedHandleWire: Deserialize<HandleWire, D>,
{
    fn deserialize(&self, d: &mut D) -> std::result::Result<ActorHandle<T>, D::Error> {
        let w: HandleWire = Deserialize::<HandleWire, D>::deserialize(self, d)?;
        Ok(ActorHandle::from_id(ActorId(w.id), None, w.rule))
    }
}

/// How to create an actor. Built through `Type::options()`.
#[derive(Debug, Clone)]
pub struct ActorOptions {
    pub(crate) class: &'static str,
    pub(crate) place: Placement,
    pub(crate) name: Option<String>,
    pub(crate) namespace: String,
    pub(crate) detached: bool,
    pub(crate) max_restarts: u32,
    pub(crate) max_task_retries: u32,
    pub(crate) max_concurrency: u32,
    pub(crate) residency: Option<crate::proto::common::Residency>,
}

impl ActorOptions {
    /// Defaults: no resources held while alive (like Ray's running actors),
    /// no restarts, one call at a time, owned by its creator's job.
    pub fn new(class: &'static str) -> ActorOptions {
        ActorOptions {
            class,
            place: Placement::holding(ResourceSet::new()),
            name: None,
            namespace: default_namespace(),
            detached: false,
            max_restarts: 0,
            max_task_retries: 0,
            max_concurrency: 1,
            residency: None,
        }
    }

    placement_builders!("for the actor's lifetime");

    /// A name, unique among live actors of its namespace (`get_actor`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
    /// The namespace of its name (default: the job's, `PRISM_NAMESPACE`,
    /// else `default`).
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = ns.to_string();
        self
    }
    /// Lives until killed, not with its creator's job.
    pub fn detached(mut self) -> Self {
        self.detached = true;
        self
    }
    /// Constructor re-runs allowed after its worker dies.
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = n;
        self
    }
    /// Re-sends of a call that was running when the worker died.
    pub fn max_task_retries(mut self, n: u32) -> Self {
        self.max_task_retries = n;
        self
    }
    /// Calls run at once: `async fn(&self)` methods interleave up to `n`.
    pub fn max_concurrency(mut self, n: u32) -> Self {
        self.max_concurrency = n.max(1);
        self
    }

    /// Keeps what the actor makes where `rule` allows: it is placed (and
    /// restarted) only on nodes inside the rule and is not built elsewhere
    /// (pinned there); every method's result is stored under the rule
    /// (never inlined), and so is everything its methods put and every
    /// task they submit. An actor created inside a resident task inherits
    /// its rule.
    pub fn resident(mut self, rule: crate::proto::common::Residency) -> Self {
        self.residency = Some(rule);
        self
    }

    /// The constructor task that creates actor `actor` for `job`.
    pub(crate) fn spec(&self, actor: ActorId, job: JobId) -> Result<TaskSpec> {
        let short = self.class.rsplit("::").next().unwrap_or(self.class);
        let create = ActorCreate {
            actor_id: actor,
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            detached: self.detached,
            max_restarts: self.max_restarts,
            max_task_retries: self.max_task_retries,
            max_concurrency: self.max_concurrency,
            restarts: 0,
        };
        let name = format!("{short}::new");
        let kind = TaskKind::CreateActor(create);
        let mut spec = TaskSpec::new(TaskId(actor.0), job, self.class, &name, kind);
        self.place.apply(&mut spec)?;
        let rule = self.residency.clone().or_else(super::residency::inherited);
        if let Some(rule) = &rule {
            spec.strategy = super::residency::confine(&spec.strategy, rule);
        }
        spec.residency = rule.map(Box::new);
        Ok(spec)
    }
}

/// Creates an actor (used by the generated `spawn`).
#[doc(hidden)]
pub fn spawn<T: ActorClass>(opts: &ActorOptions, args: Vec<EncodedArg>) -> Result<ActorHandle<T>> {
    let (id, created, rule) = core::current()?.create_actor(opts, args)?;
    Ok(ActorHandle::from_id(id, Some(created), rule))
}

/// The namespace actors are named in unless told: the job's own
/// (`PRISM_NAMESPACE`, set for submitted jobs), else `default`.
pub(crate) fn default_namespace() -> String {
    // Read once: it is fixed for the process, and options are made per actor.
    static NAMESPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAMESPACE
        .get_or_init(|| {
            std::env::var(crate::raylet::workers::vars::NAMESPACE)
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into())
        })
        .clone()
}

/// A live named actor in the job's namespace (`PRISM_NAMESPACE`, else
/// `default`).
pub fn get_actor<T: ActorClass>(name: &str) -> Result<ActorHandle<T>> {
    get_actor_in::<T>(&default_namespace(), name)
}

/// A live named actor in `namespace`.
pub fn get_actor_in<T: ActorClass>(namespace: &str, name: &str) -> Result<ActorHandle<T>> {
    let (id, rule) = core::current()?.lookup_actor(namespace, name)?;
    Ok(ActorHandle::from_id(id, None, rule))
}

/// Kills an actor's worker. Pending calls fail with `ActorDied`; with
/// `no_restart` it stays dead, otherwise `max_restarts` applies.
pub fn kill<T: ActorClass>(handle: &ActorHandle<T>, no_restart: bool) -> Result<()> {
    core::current()?.kill_actor(handle.id(), no_restart)
}

/// Forwards every [`ActorOptions`] builder method on a generated options type.
#[doc(hidden)]
#[macro_export]
macro_rules! __actor_option_methods {
    () => {
        $crate::__actor_option_methods!(@ num_cpus(n: f64), num_gpus(n: f64), memory(bytes: u64),
            resource(name: &str, amount: f64), name(name: &str), namespace(ns: &str),
            max_restarts(n: u32), max_task_retries(n: u32), max_concurrency(n: u32),
            node_affinity(node: $crate::NodeId, soft: bool), label_selector(selector: &str),
            placement_group(pg: &$crate::PlacementGroup, index: u32),
            resident(rule: $crate::Residency));
        /// Lives until killed, not with its creator's job.
        pub fn detached(self) -> Self {
            Self(self.0.detached())
        }
        /// Spread over nodes.
        pub fn spread(self) -> Self {
            Self(self.0.spread())
        }
        /// Die at once when no node can host it.
        pub fn fail_if_infeasible(self) -> Self {
            Self(self.0.fail_if_infeasible())
        }
    };
    (@ $($m:ident($($a:ident: $t:ty),*)),*) => {
        $(
            #[doc = concat!("See `ActorOptions::", stringify!($m), "`.")]
            pub fn $m(self, $($a: $t),*) -> Self {
                Self(self.0.$m($($a),*))
            }
        )*
    };
}
