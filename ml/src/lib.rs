//! Prism's ML layer, built on the public task/actor API only.
//!
//! # Layout
//!
//! - [`tensor`]: `tch::Tensor`s in the object store. [`tensor::put`] writes
//!   one (host copy first for GPU tensors), [`tensor::get`] wraps the stored
//!   object as a `tch::Tensor` over the shared segment, without a copy.
//! - [`data`]: Ray Data-like datasets: blocks of rows in the object store,
//!   parallel `map_batches`, deterministic `shuffle`, equal `split`s for n
//!   trainers, streaming `iter_batches` with prefetch, and the bundled
//!   digits data set ([`data::digits`]).
//!
//! # The main loop
//!
//! ```no_run
//! # fn main() -> Result<(), prism_ml::MlError> {
//! let _cluster = prism::init()?;
//! let (train, _test) = prism_ml::data::digits(256)?.train_test_split(0.2, 7)?;
//! for shard in train.split(2)? {
//!     for batch in shard.iter_batches(32) {
//!         let batch = batch?;
//!         assert_eq!(batch.features.size()[1], 64);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod artifacts;
pub mod data;
pub mod pipeline;
pub mod ps;
pub mod quant;
pub mod recipes;
pub mod registry;
pub mod tensor;
pub mod track;
pub mod train;

#[doc(hidden)]
pub mod __private {
    pub use inventory;
}

/// A failure in the ML layer.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// The runtime refused (object store, task, cluster).
    #[error(transparent)]
    Prism(#[from] prism::Error),
    /// libtorch failed.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A tch tensor of a kind the object store cannot hold.
    #[error("tensors of kind {0:?} cannot be stored (supported: f32, f64, f16, bf16, i64, i32, u8, bool)")]
    UnsupportedKind(tch::Kind),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A data file is malformed.
    #[error("{path}: {detail}")]
    BadFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong, with the line or offset.
        detail: String,
    },
    /// A dataset operation got arguments that cannot work.
    #[error("dataset: {0}")]
    Dataset(String),
    /// A training run failed (bad configuration, a loop error, too many
    /// worker failures).
    #[error("training: {0}")]
    Train(String),
    /// The trainer was preempted (SIGTERM while it ran): every rank stopped
    /// at `step`, after a checkpoint there when it has a directory.
    #[error("preempted: training stopped at step {step}{}", if *.checkpointed { " after saving a checkpoint (the next run resumes from it)" } else { " (no checkpoint directory: the next run starts over)" })]
    Preempted {
        /// The step every rank stopped at.
        step: u64,
        /// Whether a checkpoint was saved there.
        checkpointed: bool,
    },
    /// A data set broke its declared expectations (nothing was trained).
    #[error("data validation failed: {0}")]
    Validation(String),
    /// A promotion gate refused a challenger (the alias did not move).
    #[error("promotion refused: {0}")]
    Promotion(String),
}

/// `Result` with [`MlError`].
pub type Result<T, E = MlError> = std::result::Result<T, E>;
