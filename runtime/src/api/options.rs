//! Per-call options. What tasks and actors share — what they hold and
//! where they run — is one [`Placement`] with one set of builder methods
//! (`placement_builders!`) on both [`TaskOptions`] and
//! [`super::ActorOptions`]; each adds its own (retries for tasks; names,
//! restarts and concurrency for actors) and assembles its [`TaskSpec`].

use crate::ids::JobId;
use crate::proto::common::Resources;
use crate::proto::task::{TaskKind, TaskSpec, WireStrategy};
use prism_scheduler::{Quantity, ResourceSet, CPU};

pub(crate) fn qty(x: f64) -> Quantity {
    // Negative, NaN or absurd amounts become an impossible request that the
    // scheduler reports as infeasible, rather than a panic here.
    Quantity::from_f64(x).unwrap_or(Quantity::from_raw(i64::MAX / 2))
}

/// What a task or actor holds and where it may run.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub(crate) resources: ResourceSet,
    pub(crate) strategy: WireStrategy,
    pub(crate) group: Option<(super::PlacementGroup, u32)>,
    pub(crate) fail_if_infeasible: bool,
}

impl Placement {
    pub(crate) fn holding(resources: ResourceSet) -> Placement {
        Placement {
            resources,
            strategy: WireStrategy::Hybrid,
            group: None,
            fail_if_infeasible: false,
        }
    }

    /// Writes what and where into `spec` (a bundle's node is looked up).
    pub(crate) fn apply(&self, spec: &mut TaskSpec) -> super::Result<()> {
        spec.resources = Resources::from(&self.resources);
        spec.strategy = match &self.group {
            Some((pg, index)) => pg.strategy_for(*index)?,
            None => self.strategy.clone(),
        };
        spec.fail_if_infeasible = self.fail_if_infeasible;
        Ok(())
    }
}

/// The builder methods of [`Placement`], for an options type with a
/// `place: Placement` field. One definition: tasks and actors cannot drift.
macro_rules! placement_builders {
    ($held:literal) => {
        #[doc = concat!("CPUs held ", $held, " (fractions allowed; 0 for none).")]
        pub fn num_cpus(mut self, n: f64) -> Self {
            self.place.resources.set(prism_scheduler::CPU, super::options::qty(n));
            self
        }

        #[doc = concat!("GPUs held ", $held, "; its worker sees only these (`CUDA_VISIBLE_DEVICES`).")]
        pub fn num_gpus(mut self, n: f64) -> Self {
            self.place.resources.set(prism_scheduler::GPU, super::options::qty(n));
            self
        }

        #[doc = concat!("Memory in bytes reserved ", $held, ".")]
        pub fn memory(mut self, bytes: u64) -> Self {
            // Bytes in fixed point, as raylets count their memory.
            let q = prism_scheduler::Quantity::from_raw(
                (bytes as i64).saturating_mul(prism_scheduler::SCALE),
            );
            self.place.resources.set(prism_scheduler::MEMORY, q);
            self
        }

        #[doc = concat!("A custom resource held ", $held, ".")]
        pub fn resource(mut self, name: &str, amount: f64) -> Self {
            self.place.resources.set(name, super::options::qty(amount));
            self
        }

        /// Spread over nodes.
        pub fn spread(mut self) -> Self {
            self.place.strategy = crate::proto::task::WireStrategy::Spread;
            self
        }

        /// On `node`; `soft` falls back elsewhere when it is gone or cannot fit.
        pub fn node_affinity(mut self, node: crate::ids::NodeId, soft: bool) -> Self {
            self.place.strategy = crate::proto::task::WireStrategy::NodeAffinity { node, soft };
            self
        }

        /// Only on nodes whose labels match, e.g. `zone=a` or `zone in (a|b)`.
        pub fn label_selector(mut self, selector: &str) -> Self {
            self.place.strategy = crate::proto::task::WireStrategy::Labels(selector.to_string());
            self
        }

        /// Inside bundle `index` of `pg`, on its resources (waits for the
        /// group to be created first).
        pub fn placement_group(mut self, pg: &super::PlacementGroup, index: u32) -> Self {
            self.place.group = Some((*pg, index));
            self
        }

        /// Fail with `Infeasible` at once when no node can run it, instead of
        /// waiting (up to `PRISM_INFEASIBLE_TIMEOUT_MS`) for such a node to join.
        pub fn fail_if_infeasible(mut self) -> Self {
            self.place.fail_if_infeasible = true;
            self
        }
    };
}
pub(crate) use placement_builders;

/// Options for one task call. Built through `f::options()`.
#[derive(Debug, Clone)]
pub struct TaskOptions {
    pub(crate) function: &'static str,
    pub(crate) name: Option<String>,
    pub(crate) max_retries: u32,
    pub(crate) retry_exceptions: bool,
    pub(crate) place: Placement,
    pub(crate) residency: Option<crate::proto::common::Residency>,
}

impl TaskOptions {
    /// Defaults (Ray's): 1 CPU, 3 retries on system failures, hybrid placement.
    pub fn new(function: &'static str) -> TaskOptions {
        TaskOptions {
            function,
            name: None,
            max_retries: 3,
            retry_exceptions: false,
            place: Placement::holding(ResourceSet::new().with(CPU, Quantity::ONE)),
            residency: None,
        }
    }

    placement_builders!("while it runs");

    /// Retries after worker or node death (default 3).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Also retry when the function panics.
    pub fn retry_exceptions(mut self, yes: bool) -> Self {
        self.retry_exceptions = yes;
        self
    }

    /// Keeps what the task makes where `rule` allows: it runs on a node
    /// inside the rule, its result is stored under the rule (never
    /// inlined), and so is everything it puts and every task it submits. A
    /// task submitted inside a resident task inherits its rule.
    pub fn resident(mut self, rule: crate::proto::common::Residency) -> Self {
        self.residency = Some(rule);
        self
    }

    /// A display name for errors and state views.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// The display name (the function's name unless set).
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .unwrap_or_else(|| self.function.rsplit("::").next().unwrap_or(self.function))
    }

    /// The task's spec, without its arguments.
    pub(crate) fn spec(&self, job: JobId) -> super::Result<TaskSpec> {
        let id = crate::ids::TaskId::random();
        let mut spec = TaskSpec::new(id, job, self.function, self.display_name(), TaskKind::Task);
        self.place.apply(&mut spec)?;
        spec.max_retries = self.max_retries;
        spec.retry_exceptions = self.retry_exceptions;
        let rule = self.residency.clone().or_else(super::residency::inherited);
        if let Some(rule) = &rule {
            spec.strategy = super::residency::confine(&spec.strategy, rule);
        }
        spec.residency = rule.map(Box::new);
        Ok(spec)
    }
}

/// Forwards every [`TaskOptions`] builder method on a generated call type.
#[doc(hidden)]
#[macro_export]
macro_rules! __task_option_methods {
    () => {
        $crate::__task_option_methods!(@ num_cpus(n: f64), num_gpus(n: f64), memory(bytes: u64),
            resource(name: &str, amount: f64), max_retries(n: u32), retry_exceptions(yes: bool),
            node_affinity(node: $crate::NodeId, soft: bool), label_selector(selector: &str),
            name(name: &str), placement_group(pg: &$crate::PlacementGroup, index: u32),
            fail_if_infeasible(), resident(rule: $crate::Residency));
        /// Spread calls over nodes.
        pub fn spread(self) -> Self {
            Self(self.0.spread())
        }
    };
    (@ $($m:ident($($a:ident: $t:ty),*)),*) => {
        $(
            #[doc = concat!("See [`TaskOptions::", stringify!($m), "`](", "::prism::TaskOptions).")]
            pub fn $m(self, $($a: $t),*) -> Self {
                Self(self.0.$m($($a),*))
            }
        )*
    };
}
