//! Per-call options: resources, retries, placement, a display name.

use crate::ids::NodeId;
use crate::proto::common::Resources;
use crate::proto::task::WireStrategy;
use prism_scheduler::{Quantity, ResourceSet, CPU, GPU, MEMORY};

/// Options for one task call. Built through `f::options()`.
#[derive(Debug, Clone)]
pub struct TaskOptions {
    pub(crate) function: &'static str,
    pub(crate) name: Option<String>,
    pub(crate) resources: ResourceSet,
    pub(crate) max_retries: u32,
    pub(crate) retry_exceptions: bool,
    pub(crate) strategy: WireStrategy,
    pub(crate) placement: Option<(super::PlacementGroup, u32)>,
    pub(crate) fail_if_infeasible: bool,
}

pub(crate) fn qty(x: f64) -> Quantity {
    // Negative, NaN or absurd amounts become an impossible request that the
    // scheduler reports as infeasible, rather than a panic here.
    Quantity::from_f64(x).unwrap_or(Quantity::from_raw(i64::MAX / 2))
}

impl TaskOptions {
    /// Defaults (Ray's): 1 CPU, 3 retries on system failures, hybrid placement.
    pub fn new(function: &'static str) -> TaskOptions {
        TaskOptions {
            function,
            name: None,
            resources: ResourceSet::new().with(CPU, Quantity::ONE),
            max_retries: 3,
            retry_exceptions: false,
            strategy: WireStrategy::Hybrid,
            placement: None,
            fail_if_infeasible: false,
        }
    }

    /// CPUs held while it runs (fractions allowed; 0 for none).
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.resources.set(CPU, qty(n));
        self
    }

    /// GPUs held while it runs; the task sees only these (`CUDA_VISIBLE_DEVICES`).
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.resources.set(GPU, qty(n));
        self
    }

    /// Memory in bytes reserved while it runs.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.resources.set(MEMORY, Quantity::from_raw(bytes as i64));
        self
    }

    /// A custom resource.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.resources.set(name, qty(amount));
        self
    }

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

    /// Spread calls over nodes.
    pub fn spread(mut self) -> Self {
        self.strategy = WireStrategy::Spread;
        self
    }

    /// Run on `node`; `soft` falls back elsewhere when it is gone or cannot fit.
    pub fn node_affinity(mut self, node: NodeId, soft: bool) -> Self {
        self.strategy = WireStrategy::NodeAffinity { node, soft };
        self
    }

    /// Only on nodes whose labels match, e.g. `zone=a` or `zone in (a|b)`.
    pub fn label_selector(mut self, selector: &str) -> Self {
        self.strategy = WireStrategy::Labels(selector.to_string());
        self
    }

    /// Runs inside bundle `index` of `pg`, on its resources (waits for the
    /// group to be created first).
    pub fn placement_group(mut self, pg: &super::PlacementGroup, index: u32) -> Self {
        self.placement = Some((*pg, index));
        self
    }

    /// Fail with `Infeasible` at once when no node can run it, instead of
    /// waiting (up to `PRISM_INFEASIBLE_TIMEOUT_MS`) for such a node to join.
    pub fn fail_if_infeasible(mut self) -> Self {
        self.fail_if_infeasible = true;
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

    pub(crate) fn wire_resources(&self) -> Resources {
        Resources::from(&self.resources)
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
            name(name: &str), placement_group(pg: &$crate::PlacementGroup, index: u32));
        /// Spread calls over nodes.
        pub fn spread(self) -> Self {
            Self(self.0.spread())
        }
        /// See [`TaskOptions::fail_if_infeasible`](::prism::TaskOptions).
        pub fn fail_if_infeasible(self) -> Self {
            Self(self.0.fail_if_infeasible())
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
