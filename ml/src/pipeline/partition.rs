//! Cutting the model's linear layers into `p` contiguous stages: by layer
//! count, or balanced by parameter count — the largest stage's share as
//! small as any cut can make it, so that no stage holds up the pipeline
//! with most of the work (a model whose widths vary, e.g. a wide middle).

/// How [`PipelineTrainer`](super::PipelineTrainer) cuts its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// As equal numbers of layers as can be (the default).
    #[default]
    Layers,
    /// The largest stage's parameter count as small as can be.
    Params,
}

/// `layers` linear layers cut into `p` contiguous runs, as equal as can be.
pub fn partition(layers: usize, p: usize) -> Vec<(u32, u32)> {
    crate::ps::ranges(layers, p)
        .into_iter()
        .map(|(a, b)| (a as u32, b as u32))
        .collect()
}

/// The parameters of each linear layer of an MLP of these widths
/// (weights and bias).
pub fn layer_params(widths: &[i64]) -> Vec<u64> {
    widths
        .windows(2)
        .map(|w| (w[0].max(0) as u64 + 1) * w[1].max(0) as u64)
        .collect()
}

/// `costs.len()` layers cut into `p` contiguous, non-empty runs (fewer when
/// there are fewer layers) minimising the largest run's total cost; of
/// the cuts that reach that minimum, the one whose earlier stages are
/// largest (a deterministic choice).
pub fn balanced(costs: &[u64], p: usize) -> Vec<(u32, u32)> {
    let n = costs.len();
    if n == 0 {
        return vec![(0, 0)];
    }
    let p = p.clamp(1, n);
    let mut prefix = vec![0u64; n + 1];
    for (i, c) in costs.iter().enumerate() {
        prefix[i + 1] = prefix[i] + c;
    }
    let sum = |a: usize, b: usize| prefix[b] - prefix[a];
    // best[k][i]: the least largest run cutting the first i layers into k
    // runs; from[k][i]: where the last of those runs starts.
    let mut best = vec![vec![u64::MAX; n + 1]; p + 1];
    let mut from = vec![vec![0usize; n + 1]; p + 1];
    best[0][0] = 0;
    for k in 1..=p {
        for i in k..=n {
            for j in (k - 1..i).rev() {
                if best[k - 1][j] == u64::MAX {
                    continue;
                }
                let cost = best[k - 1][j].max(sum(j, i));
                if cost < best[k][i] {
                    best[k][i] = cost;
                    from[k][i] = j;
                }
            }
        }
    }
    let mut cuts = Vec::with_capacity(p);
    let mut end = n;
    for k in (1..=p).rev() {
        let start = from[k][end];
        cuts.push((start as u32, end as u32));
        end = start;
    }
    cuts.reverse();
    cuts
}

/// The cut for `widths` under `balance`.
pub fn cut(widths: &[i64], p: usize, balance: Balance) -> Vec<(u32, u32)> {
    let layers = widths.len().saturating_sub(1);
    match balance {
        Balance::Layers => partition(layers, p),
        Balance::Params => balanced(&layer_params(widths), p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn largest(costs: &[u64], cuts: &[(u32, u32)]) -> u64 {
        cuts.iter()
            .map(|&(a, b)| costs[a as usize..b as usize].iter().sum::<u64>())
            .max()
            .unwrap_or(0)
    }

    /// Every way to cut n layers into p non-empty runs.
    fn all_cuts(n: usize, p: usize) -> Vec<Vec<(u32, u32)>> {
        fn go(
            start: usize,
            n: usize,
            p: usize,
            acc: &mut Vec<(u32, u32)>,
            out: &mut Vec<Vec<(u32, u32)>>,
        ) {
            if p == 1 {
                acc.push((start as u32, n as u32));
                out.push(acc.clone());
                acc.pop();
                return;
            }
            for end in start + 1..=n - (p - 1) {
                acc.push((start as u32, end as u32));
                go(end, n, p - 1, acc, out);
                acc.pop();
            }
        }
        let mut out = Vec::new();
        go(0, n, p, &mut Vec::new(), &mut out);
        out
    }

    #[test]
    fn partition_cuts_layers_into_contiguous_runs() {
        assert_eq!(partition(4, 2), vec![(0, 2), (2, 4)]);
        assert_eq!(partition(3, 3), vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(partition(5, 2), vec![(0, 2), (2, 5)]);
    }

    #[test]
    fn a_wide_first_layer_gets_a_stage_of_its_own() {
        // 784 → 2048 → 64 → 64 → 64 → 10 on 2 stages: by count the wide
        // first two layers share a stage (92% of the parameters); balanced,
        // the first layer stands alone and the rest follow.
        let widths = [784, 2048, 64, 64, 64, 10];
        let costs = layer_params(&widths);
        assert_eq!(costs, vec![1_607_680, 131_136, 4_160, 4_160, 650]);
        let by_count = cut(&widths, 2, Balance::Layers);
        let by_params = cut(&widths, 2, Balance::Params);
        assert_eq!(by_count, vec![(0, 2), (2, 5)]);
        assert_eq!(by_params, vec![(0, 1), (1, 5)]);
        assert_eq!(largest(&costs, &by_count), 1_738_816);
        assert_eq!(largest(&costs, &by_params), 1_607_680);
    }

    proptest! {
        /// The cut covers every layer once, in order, in non-empty runs,
        /// and no cut has a smaller largest run (checked against all).
        #[test]
        fn balanced_is_contiguous_and_optimal(
            costs in proptest::collection::vec(0u64..1000, 1..9),
            p in 1usize..6,
        ) {
            let cuts = balanced(&costs, p);
            let n = costs.len();
            prop_assert_eq!(cuts.len(), p.min(n));
            prop_assert_eq!(cuts[0].0, 0);
            prop_assert_eq!(cuts[cuts.len() - 1].1 as usize, n);
            for w in cuts.windows(2) {
                prop_assert_eq!(w[0].1, w[1].0);
            }
            prop_assert!(cuts.iter().all(|(a, b)| a < b));
            let best = all_cuts(n, p.min(n)).iter().map(|c| largest(&costs, c)).min().unwrap();
            prop_assert_eq!(largest(&costs, &cuts), best);
            prop_assert!(largest(&costs, &cuts) <= largest(&costs, &partition(n, p)));
        }
    }
}
