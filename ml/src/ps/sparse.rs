//! A sparse parameter-server shard as a pure state machine: rows of an
//! embedding-style table (`dim` floats each, created at zero on first
//! touch), updated with Adagrad, under the same modes as the dense shards.
//! A pull or push names only the rows a batch touches.
//!
//! - **PS-5** a push changes exactly the rows it names; no other row is
//!   created or changed.

use super::gate::StalenessGate;
use super::shard::Mode;
use std::collections::{BTreeMap, HashMap};

/// Adagrad: `a += g²; w -= lr · g / (√a + ε)`, `a` starting at `initial`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Adagrad {
    /// Learning rate.
    pub lr: f32,
    /// The accumulator's start (0.1 as TensorFlow's).
    pub initial: f32,
}

/// Row gradients for one step: row → summed gradient, and how many pushes.
type Pending = (usize, HashMap<u64, Vec<f32>>);

/// One shard of a sparse table.
#[derive(Debug, Clone)]
pub struct SparseState {
    dim: usize,
    rows: HashMap<u64, (Vec<f32>, Vec<f32>)>,
    opt: Adagrad,
    mode: Mode,
    workers: usize,
    applied: u64,
    pending: BTreeMap<u64, Pending>,
    gate: StalenessGate,
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
            mode,
            workers: workers.max(1),
            applied: 0,
            pending: BTreeMap::new(),
            gate: StalenessGate::new(workers, mode.bound()),
            updates: 0,
            rows_pushed: 0,
        }
    }

    /// The rows `ids` (zeros for rows never pushed) for step `step`, or
    /// `None` while the step must wait (PS-1, PS-2).
    pub fn pull(&self, step: u64, ids: &[u64]) -> Option<Vec<f32>> {
        let ready = match self.mode {
            Mode::Sync => self.applied >= step,
            Mode::Async => true,
            Mode::Stale(_) => self.gate.may_start(step),
        };
        ready.then(|| {
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
        self.gate.finished(worker, step);
        self.rows_pushed += ids.len() as u64;
        let rows = ids.iter().zip(grads.chunks_exact(self.dim));
        match self.mode {
            Mode::Sync => {
                let (count, sums) = self.pending.entry(step).or_default();
                for (id, g) in rows {
                    let s = sums.entry(*id).or_insert_with(|| vec![0.0; g.len()]);
                    for (s, g) in s.iter_mut().zip(g) {
                        *s += g;
                    }
                }
                *count += 1;
                while self
                    .pending
                    .get(&self.applied)
                    .is_some_and(|(c, _)| *c >= self.workers)
                {
                    let (_, sums) = self.pending.remove(&self.applied).unwrap_or_default();
                    let scale = 1.0 / self.workers as f32;
                    for (id, g) in sums {
                        let g: Vec<f32> = g.iter().map(|x| x * scale).collect();
                        self.apply(id, &g);
                    }
                    self.updates += 1;
                    self.applied += 1;
                }
            }
            Mode::Async | Mode::Stale(_) => {
                for (id, g) in rows {
                    self.apply(*id, g);
                }
                self.updates += 1;
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
}
