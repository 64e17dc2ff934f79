//! Pure planning for dataset operations: which rows go where. No I/O, so
//! the rules are tested without a cluster.

/// A piece of a block: `(block index, first row within the block, rows)`.
pub type Piece = (usize, u64, u64);

/// Plans `consumers.len()` shards of equal size over blocks of `rows[i]`
/// rows held on `nodes[i]`.
///
/// Rules:
/// - D-1: every shard gets `total / n` rows; the remainder — the *last*
///   `total % n` rows in dataset order — is dropped, whatever the locality.
/// - D-2: shards are disjoint and, with the dropped rows, cover the dataset.
/// - D-3: a shard whose consumer node is given first takes rows held on
///   that node (in dataset order), then fills up from what is left (in
///   dataset order); with no node given, shard `i` is the `i`-th run of
///   `total / n` rows.
pub fn plan_split<N: PartialEq>(
    rows: &[u64],
    nodes: &[N],
    consumers: &[Option<N>],
) -> Vec<Vec<Piece>> {
    let n = consumers.len() as u64;
    let total: u64 = rows.iter().sum();
    let per = total.checked_div(n).unwrap_or(0);
    // D-1: keep the first per * n rows.
    let mut keep = per * n;
    let mut pool: Vec<Piece> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let take = (*r).min(keep);
        if take > 0 {
            pool.push((i, 0, take));
        }
        keep -= take;
    }
    let mut shards = vec![Vec::new(); consumers.len()];
    let mut need = vec![per; consumers.len()];
    let mut take_from = |shard: usize, need: &mut u64, pool: &mut [Piece], local: Option<&N>| {
        for p in pool.iter_mut() {
            if *need == 0 {
                break;
            }
            if p.2 == 0 || local.is_some_and(|node| nodes[p.0] != *node) {
                continue;
            }
            let take = p.2.min(*need);
            shards[shard].push((p.0, p.1, take));
            p.1 += take;
            p.2 -= take;
            *need -= take;
        }
    };
    // D-3: local rows first, then anything left.
    for ((i, c), need) in consumers.iter().enumerate().zip(need.iter_mut()) {
        if let Some(node) = c {
            take_from(i, need, &mut pool, Some(node));
        }
    }
    for (i, need) in need.iter_mut().enumerate() {
        take_from(i, need, &mut pool, None);
    }
    shards
}

/// A deterministic permutation of `0..n` for `seed` (Fisher–Yates over
/// SplitMix64: the same seed gives the same order on every machine and
/// every version, unlike `rand`'s `StdRng`).
pub fn permutation(n: u64, seed: u64) -> Vec<u64> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut p: Vec<u64> = (0..n).collect();
    for i in (1..p.len()).rev() {
        // Multiply-shift: unbiased enough for shuffling, and exact for a seed.
        let j = ((next() as u128 * (i as u128 + 1)) >> 64) as usize;
        p.swap(i, j);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(shard: &[Piece], offsets: &[u64]) -> Vec<u64> {
        shard
            .iter()
            .flat_map(|(b, s, r)| (offsets[*b] + s)..(offsets[*b] + s + r))
            .collect()
    }

    #[test]
    fn d_1_d_2_equal_disjoint_covering_with_the_tail_dropped() {
        let rows = [5u64, 7, 3, 9, 1];
        let offsets = [0u64, 5, 12, 15, 24];
        let nodes = ["a", "b", "a", "b", "a"];
        for consumers in [
            vec![None, None, None],
            vec![Some("a"), Some("b"), None],
            vec![Some("b"), Some("b"), Some("a"), Some("c")],
        ] {
            let plan = plan_split(&rows, &nodes, &consumers);
            let per = 25 / consumers.len() as u64;
            let mut all: Vec<u64> = Vec::new();
            for shard in &plan {
                let r = rows_of(shard, &offsets);
                assert_eq!(r.len() as u64, per, "{consumers:?}");
                all.extend(r);
            }
            all.sort_unstable();
            assert_eq!(all, (0..per * consumers.len() as u64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn d_3_local_rows_first_and_plain_runs_without_nodes() {
        let plan = plan_split(&[4, 4], &["a", "b"], &[Some("b"), Some("a")]);
        assert_eq!(plan, vec![vec![(1, 0, 4)], vec![(0, 0, 4)]]);
        let plan = plan_split(&[4, 4], &["a", "b"], &[None, None, None]);
        assert_eq!(
            plan,
            vec![vec![(0, 0, 2)], vec![(0, 2, 2)], vec![(1, 0, 2)]]
        );
    }

    #[test]
    fn permutation_is_a_deterministic_permutation() {
        let a = permutation(1000, 42);
        assert_eq!(a, permutation(1000, 42));
        assert_ne!(a, permutation(1000, 43));
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, s);
    }
}
