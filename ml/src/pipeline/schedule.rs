//! Pipeline schedules as pure data: for each stage, the order in which it
//! runs the forward (`F(mb)`) and backward (`B(mb)`) passes of one batch's
//! `m` micro-batches on `p` stages.
//!
//! - **PP-1** every stage runs every micro-batch's forward before its
//!   backward, and backwards in the order of their forwards;
//! - **PP-2** GPipe runs all forwards, then all backwards (`m` activations
//!   alive at once); 1F1B (PipeDream-flush) runs `p - s - 1` warm-up
//!   forwards on stage `s`, then alternates one forward and one backward,
//!   so at most `p - s` (≤ `p`) micro-batches' activations are alive on a
//!   stage at any moment.

/// One pass of one micro-batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Forward of micro-batch `mb`.
    F(u32),
    /// Backward of micro-batch `mb`.
    B(u32),
}

/// Which schedule.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// All forwards, then all backwards.
    GPipe,
    /// One forward, one backward (PipeDream-flush).
    OneFOneB,
}

/// Stage `stage`'s order of passes for `m` micro-batches on `p` stages.
pub fn stage_ops(schedule: Schedule, p: u32, stage: u32, m: u32) -> Vec<Op> {
    match schedule {
        Schedule::GPipe => (0..m).map(Op::F).chain((0..m).map(Op::B)).collect(),
        Schedule::OneFOneB => {
            let warm = (p - stage - 1).min(m);
            let mut ops: Vec<Op> = (0..warm).map(Op::F).collect();
            let (mut f, mut b) = (warm, 0);
            while b < m {
                if f < m {
                    ops.push(Op::F(f));
                    f += 1;
                }
                ops.push(Op::B(b));
                b += 1;
            }
            ops
        }
    }
}

/// The most micro-batches whose activations a stage holds at once under
/// `ops` (a forward keeps them until its backward).
pub fn peak_alive(ops: &[Op]) -> usize {
    let (mut alive, mut peak) = (0usize, 0usize);
    for op in ops {
        match op {
            Op::F(_) => {
                alive += 1;
                peak = peak.max(alive);
            }
            Op::B(_) => alive = alive.saturating_sub(1),
        }
    }
    peak
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_f_one_b_on_two_stages_and_four_micro_batches() {
        use Op::{B, F};
        assert_eq!(
            stage_ops(Schedule::OneFOneB, 2, 0, 4),
            vec![F(0), F(1), B(0), F(2), B(1), F(3), B(2), B(3)]
        );
        assert_eq!(
            stage_ops(Schedule::OneFOneB, 2, 1, 4),
            vec![F(0), B(0), F(1), B(1), F(2), B(2), F(3), B(3)]
        );
    }

    proptest! {
        #[test]
        fn pp_1_and_pp_2_hold_for_every_shape(p in 1u32..6, m in 1u32..12, sched in 0u8..2) {
            let schedule = if sched == 0 { Schedule::GPipe } else { Schedule::OneFOneB };
            for s in 0..p {
                let ops = stage_ops(schedule, p, s, m);
                prop_assert_eq!(ops.len(), 2 * m as usize);
                let fwd: Vec<u32> = ops.iter().filter_map(|o| match o { Op::F(i) => Some(*i), _ => None }).collect();
                let bwd: Vec<u32> = ops.iter().filter_map(|o| match o { Op::B(i) => Some(*i), _ => None }).collect();
                prop_assert_eq!(&fwd, &(0..m).collect::<Vec<_>>());
                prop_assert_eq!(&bwd, &(0..m).collect::<Vec<_>>());
                for i in 0..m {
                    let f = ops.iter().position(|o| *o == Op::F(i)).unwrap();
                    let b = ops.iter().position(|o| *o == Op::B(i)).unwrap();
                    prop_assert!(f < b, "PP-1: F({}) before B({})", i, i);
                }
                let peak = peak_alive(&ops);
                match schedule {
                    Schedule::GPipe => prop_assert_eq!(peak, m as usize),
                    Schedule::OneFOneB => prop_assert!(peak <= (p - s).min(m) as usize, "PP-2: {} alive on stage {}", peak, s),
                }
            }
        }
    }
}
