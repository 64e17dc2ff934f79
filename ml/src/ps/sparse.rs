//! A sparse parameter-server shard as a pure state machine: rows of an
//! embedding-style table (`dim` floats each, created at zero on first
//! touch), updated with Adagrad, under the same modes as the dense shards.
//! A pull or push names only the rows a batch touches. Steps, restores
//! and checkpoints behave as the dense shards' ([`super::steps`]).
//!
//! - **PS-5** a push changes exactly the rows it names; no other row is
//!   created or changed.

use super::shard::Mode;
use super::steps::{Pushed, Steps};
use std::collections::HashMap;

/// Adagrad: `a += g²; w -= lr · g / (√a + ε)`, `a` starting at `initial`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Adagrad {
    /// Learning rate.
    pub lr: f32,
    /// The accumulator's start (0.1 as TensorFlow's).
    pub initial: f32,
}

/// Row gradients of one step: row → summed gradient.
type RowSums = HashMap<u64, Vec<f32>>;

/// One shard of a sparse table.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct SparseState {
    dim: usize,
    /// Row → (weights, Adagrad accumulators).
    rows: HashMap<u64, (Vec<f32>, Vec<f32>)>,
    opt: Adagrad,
    /// Which steps may start, and which completed (PS-1, PS-2, PS-4, PS-6).
    steps: Steps<RowSums>,
    updates: u64,
    rows_pushed: u64,
}

impl SparseState {
    /// An empty table of `dim`-wide rows.
    pub fn new(dim: usize, workers: usize, mode: Mode, opt: Adagrad) -> SparseState {
        SparseState {
            dim: dim.max(1),
            rows: HashMap::new(),
            opt,
            steps: Steps::new(workers, mode),
            updates: 0,
            rows_pushed: 0,
        }
    }

    /// The state as checkpoint bytes (rows, accumulators and steps).
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        prism::Value::encode(self)
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string())
    }

    /// A shard restored from [`SparseState::to_bytes`] (PS-4, PS-6).
    pub fn restored(bytes: &[u8]) -> Result<SparseState, String> {
        let mut s: SparseState = prism::Value::decode(bytes).map_err(|e| e.to_string())?;
        s.steps.restored();
        Ok(s)
    }

    /// PS-6: every worker stopped between steps; the state about to be
    /// saved lost nothing.
    pub fn mark_stopped(&mut self) {
        self.steps.mark_stopped();
    }

    /// Steps `worker` has pushed (where a restarted worker resumes).
    pub fn done(&self, worker: usize) -> u64 {
        self.steps.done(worker)
    }

    /// PS-4: a pull for a step past the lost ones moves a restored
    /// synchronous shard on to it.
    pub fn catch_up(&mut self, step: u64) {
        self.steps.catch_up(step);
    }

    /// The rows `ids` (zeros for rows never pushed) for step `step`, or
    /// `None` while the step must wait (PS-1, PS-2).
    pub fn pull(&self, step: u64, ids: &[u64]) -> Option<Vec<f32>> {
        self.steps.ready(step).then(|| {
            let zero = vec![0.0; self.dim];
            ids.iter()
                .flat_map(|id| self.rows.get(id).map_or(&zero, |(w, _)| w).clone())
                .collect()
        })
    }

    /// `worker`'s gradients for `step`: `grads` holds `dim` floats per id.
    pub fn push(
        &mut self,
        worker: usize,
        step: u64,
        ids: &[u64],
        grads: &[f32],
    ) -> Result<(), String> {
        if grads.len() != ids.len() * self.dim {
            return Err(format!(
                "{} gradient values for {} rows of {}",
                grads.len(),
                ids.len(),
                self.dim
            ));
        }
        self.rows_pushed += ids.len() as u64;
        let rows = || ids.iter().zip(grads.chunks_exact(self.dim));
        let add = |sums: &mut RowSums| {
            for (id, g) in rows() {
                let s = sums.entry(*id).or_insert_with(|| vec![0.0; g.len()]);
                for (s, g) in s.iter_mut().zip(g) {
                    *s += g;
                }
            }
        };
        match self.steps.push(worker, step, add) {
            Pushed::Apply => {
                for (id, g) in rows() {
                    self.apply(*id, g);
                }
                self.updates += 1;
            }
            Pushed::Complete(steps) => {
                let scale = 1.0 / self.steps.workers() as f32;
                for sums in steps {
                    for (id, g) in sums {
                        let g: Vec<f32> = g.iter().map(|x| x * scale).collect();
                        self.apply(id, &g);
                    }
                    self.updates += 1;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, id: u64, g: &[f32]) {
        let Adagrad { lr, initial } = self.opt;
        let (w, acc) = self
            .rows
            .entry(id)
            .or_insert_with(|| (vec![0.0; g.len()], vec![initial; g.len()]));
        for ((w, a), g) in w.iter_mut().zip(acc.iter_mut()).zip(g) {
            *a += g * g;
            *w -= lr * g / (a.sqrt() + 1e-8);
        }
    }

    /// Every row held, by id.
    pub fn rows(&self) -> Vec<(u64, Vec<f32>)> {
        let mut v: Vec<(u64, Vec<f32>)> = self
            .rows
            .iter()
            .map(|(id, (w, _))| (*id, w.clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// Updates applied (pushes, or complete steps when synchronous).
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Rows named by pushes so far (with repeats).
    pub fn rows_pushed(&self) -> u64 {
        self.rows_pushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPT: Adagrad = Adagrad {
        lr: 1.0,
        initial: 0.0,
    };

    #[test]
    fn ps_5_a_push_changes_only_the_rows_it_names() {
        let mut s = SparseState::new(2, 1, Mode::Async, OPT);
        assert_eq!(
            s.pull(0, &[7, 9]).unwrap(),
            vec![0.0; 4],
            "unseen rows are zero"
        );
        s.push(0, 0, &[7], &[3.0, -4.0]).unwrap();
        let rows = s.rows();
        assert_eq!(rows.len(), 1, "only row 7 exists");
        // Adagrad's first step moves each weight by lr (·sign).
        assert_eq!(rows[0], (7, vec![-1.0, 1.0]));
        assert_eq!(s.pull(0, &[9, 7]).unwrap(), vec![0.0, 0.0, -1.0, 1.0]);
        assert!(s.push(0, 1, &[1, 2], &[1.0]).is_err(), "wrong size");
        assert_eq!(s.rows_pushed(), 1);
    }

    #[test]
    fn sync_sparse_averages_each_rows_gradients_once_per_step() {
        let mut s = SparseState::new(
            1,
            2,
            Mode::Sync,
            Adagrad {
                lr: 0.5,
                initial: 1.0,
            },
        );
        s.push(0, 0, &[1], &[2.0]).unwrap();
        assert!(s.pull(1, &[1]).is_none());
        s.push(1, 0, &[1, 2], &[0.0, 3.0]).unwrap();
        // Row 1: mean 1.0 → a = 2, w = -0.5/√2; row 2: mean 1.5 → a = 3.25.
        let rows = s.rows();
        assert!((rows[0].1[0] + 0.5 / 2f32.sqrt()).abs() < 1e-6, "{rows:?}");
        assert!(
            (rows[1].1[0] + 0.5 * 1.5 / 3.25f32.sqrt()).abs() < 1e-6,
            "{rows:?}"
        );
        assert_eq!(s.updates(), 1);
    }

    #[test]
    fn a_restored_sparse_shard_keeps_rows_accumulators_and_steps() {
        let opt = Adagrad {
            lr: 0.5,
            initial: 1.0,
        };
        let mut s = SparseState::new(1, 2, Mode::Sync, opt);
        s.push(0, 0, &[1], &[2.0]).unwrap();
        s.push(1, 0, &[1, 2], &[0.0, 3.0]).unwrap();
        s.push(0, 1, &[2], &[1.0]).unwrap();
        let mut r = SparseState::restored(&s.to_bytes().unwrap()).unwrap();
        assert_eq!(r.rows(), s.rows());
        assert_eq!((r.done(0), r.done(1), r.updates()), (2, 1, 1));
        // The same next step from both: the accumulators came back too.
        s.push(1, 1, &[2], &[1.0]).unwrap();
        r.push(1, 1, &[2], &[1.0]).unwrap();
        assert_eq!(r.rows(), s.rows());
        // PS-4: a crash lost steps; a pull past them moves it on.
        let mut lost = SparseState::restored(&s.to_bytes().unwrap()).unwrap();
        assert!(lost.pull(5, &[2]).is_none());
        lost.catch_up(5);
        assert_eq!(lost.pull(5, &[2]), s.pull(2, &[2]));
    }
}
