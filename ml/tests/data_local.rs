//! Datasets on a real embedded cluster (`prism::init()`, worker processes
//! started by the in-process raylet): generation, map_batches, shuffle,
//! split, iter_batches, CSV and tensor files, and the digits data set.

use prism_ml::data::{Block, CsvOptions, Dataset};
use prism_test_support::*;
use std::collections::BTreeSet;
use std::time::Duration;
use tch::Kind;

/// Doubles every feature, keeps the labels (a map_batches function).
#[prism::remote]
fn double(b: Block) -> Result<Block, String> {
    let v = b.read().map_err(|e| e.to_string())?;
    let cols = v.row_shape().iter().product::<u64>();
    let f: Vec<f32> = v
        .features::<f32>()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|x| x * 2.0)
        .collect();
    let l = v
        .labels::<i64>()
        .map_err(|e| e.to_string())?
        .unwrap_or_default()
        .to_vec();
    let f = prism::Tensor::from_slice(&[v.rows(), cols], &f).map_err(|e| e.to_string())?;
    let l = prism::Tensor::from_slice(&[v.rows()], &l).map_err(|e| e.to_string())?;
    Block::put(&f, Some(&l)).map_err(|e| e.to_string())
}

/// Every label of a dataset, read in place, in dataset order.
fn labels(ds: &Dataset) -> Vec<i64> {
    ds.blocks()
        .iter()
        .flat_map(|b| b.read().unwrap().labels::<i64>().unwrap().unwrap().to_vec())
        .collect()
}

/// Every label seen by iter_batches, and the batch sizes.
fn streamed(ds: &Dataset, batch: usize) -> (Vec<i64>, Vec<i64>) {
    let (mut seen, mut sizes) = (Vec::new(), Vec::new());
    for b in ds.iter_batches(batch).prefetch(2) {
        let b = b.unwrap();
        let l = b.labels.unwrap();
        sizes.push(l.size()[0]);
        // Row i's feature is i (Dataset::range): features and labels stay aligned.
        let f = b.features.squeeze_dim(1).to_kind(Kind::Int64);
        assert!(
            f.equal(&l),
            "features and labels of a batch stay row-aligned"
        );
        seen.extend(Vec::<i64>::try_from(&l).unwrap());
    }
    (seen, sizes)
}

fn role_data() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let ds = Dataset::range(1000, 64).unwrap();
    check(
        ds.count() == 1000 && ds.blocks().len() == 16,
        "range: 1000 rows in 16 blocks",
    );
    check(
        labels(&ds) == (0..1000).collect::<Vec<_>>(),
        "range rows are 0..1000 in order",
    );

    // split: equal, disjoint, covering; the last count % n rows dropped.
    let shards = ds.split(3).unwrap();
    let mut all = BTreeSet::new();
    for s in &shards {
        let l = labels(s);
        check(
            s.count() == 333 && l.len() == 333,
            "each of 3 shards has 333 rows",
        );
        for x in l {
            check(all.insert(x), "shards are disjoint");
        }
    }
    check(
        all == (0..999).collect::<BTreeSet<_>>(),
        "shards cover all rows but the dropped last one",
    );
    let here = prism::node_id().unwrap();
    let local = ds.split_for(&[Some(here), None]).unwrap();
    check(
        local.iter().all(|s| s.count() == 500),
        "split_for: equal shards",
    );

    // iter_batches: every row exactly once per epoch, across block borders.
    for epoch in 0..2 {
        let (seen, sizes) = streamed(&ds, 100);
        check(
            seen == (0..1000).collect::<Vec<_>>(),
            &format!("epoch {epoch}: every row once, in order"),
        );
        check(
            sizes.iter().all(|s| *s == 100),
            "batches of 100 span blocks of 64",
        );
    }
    let (seen, sizes) = streamed(&shards[1], 48);
    check(
        seen == labels(&shards[1]),
        "a shard streams exactly its rows",
    );
    check(
        sizes.last() == Some(&(333 % 48)),
        "the last short batch is kept",
    );
    let kept: usize = ds
        .iter_batches(300)
        .drop_last(true)
        .map(|b| b.unwrap().features.size()[0] as usize)
        .sum();
    check(kept == 900, "drop_last drops the short last batch");

    // shuffle: a permutation, deterministic for a seed, different for another.
    let a = labels(&ds.shuffle(7).unwrap());
    let b = labels(&ds.shuffle(7).unwrap());
    let c = labels(&ds.shuffle(8).unwrap());
    let mut sorted = a.clone();
    sorted.sort_unstable();
    check(
        sorted == (0..1000).collect::<Vec<_>>(),
        "shuffle is a permutation of the rows",
    );
    check(a == b, "shuffle is deterministic for a seed");
    check(
        a != c && a != (0..1000).collect::<Vec<_>>(),
        "another seed gives another order",
    );
    let (seen, _) = streamed(&ds.shuffle(7).unwrap(), 64);
    check(
        seen == a,
        "a shuffled dataset streams in its shuffled order",
    );

    // map_batches: one task per block.
    let doubled = ds.map_batches(double::remote).unwrap();
    let f: Vec<f32> = doubled
        .blocks()
        .iter()
        .flat_map(|b| b.read().unwrap().features::<f32>().unwrap().to_vec())
        .collect();
    check(
        f == (0..1000).map(|i| 2.0 * i as f32).collect::<Vec<_>>(),
        "map_batches doubled every row",
    );

    // CSV and the tensor file format.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("x.csv");
    std::fs::write(&csv, "a,b,label\n1.5,2,0\n3,4.25,1\n\n5,6,2\n").unwrap();
    let opts = CsvOptions {
        has_header: true,
        label_column: Some(2),
        block_rows: 2,
    };
    let from_csv = Dataset::from_csv(&csv, &opts).unwrap();
    let rows: Vec<f32> = from_csv
        .blocks()
        .iter()
        .flat_map(|b| b.read().unwrap().features::<f32>().unwrap().to_vec())
        .collect();
    check(
        rows == [1.5, 2.0, 3.0, 4.25, 5.0, 6.0] && labels(&from_csv) == [0, 1, 2],
        "CSV with header and label column",
    );
    std::fs::write(&csv, "1,2\n3\n").unwrap();
    check(
        Dataset::from_csv(&csv, &CsvOptions::default()).is_err(),
        "a ragged CSV is an error",
    );
    let file = dir.path().join("x.pdsf");
    ds.shuffle(3).unwrap().write_tensor_file(&file).unwrap();
    let back = Dataset::from_tensor_file(&file, 100).unwrap();
    check(
        back.blocks().len() == 10 && labels(&back) == labels(&ds.shuffle(3).unwrap()),
        "tensor file round trip",
    );

    // digits.
    let digits = prism_ml::data::digits(256).unwrap();
    let first = digits.blocks()[0].read().unwrap();
    let row0: Vec<f32> = first.features::<f32>().unwrap()[..8].to_vec();
    check(
        digits.count() == 1797 && first.row_shape() == [64],
        "digits: 1797 rows of 64 features",
    );
    check(
        row0 == [
            0.0,
            0.0,
            5.0 / 16.0,
            13.0 / 16.0,
            9.0 / 16.0,
            1.0 / 16.0,
            0.0,
            0.0,
        ],
        "digits: first row scaled by 1/16",
    );
    let l = labels(&digits);
    check(
        l[..3] == [0, 1, 2] && l.iter().all(|x| (0..10).contains(x)),
        "digits: labels 0..9",
    );
    let (train, test) = digits.train_test_split(0.2, 42).unwrap();
    let (train2, test2) = digits.train_test_split(0.2, 42).unwrap();
    check(
        train.count() == 1438 && test.count() == 359,
        "train/test 80/20",
    );
    check(
        labels(&train) == labels(&train2) && labels(&test) == labels(&test2),
        "train/test split is deterministic",
    );
    println!("ALL OK");
}

/// A dataset kept in its region: the same rows as resident blocks (read
/// by tasks on this node), refused where this node is outside the rule.
fn role_residency() {
    let _c = prism::InitOptions::new()
        .num_cpus(2.0)
        .label("region", "in-south")
        .init()
        .unwrap();
    let ds = Dataset::range(100, 25).unwrap();
    let here = prism::Residency::new("region", &["in-south", "in-west"]);
    let kept = ds.resident(&here).unwrap();
    check(
        labels(&kept) == labels(&ds),
        "resident blocks hold the same rows",
    );
    let doubled = kept.map_batches(double::remote).unwrap();
    check(
        labels(&doubled) == labels(&ds),
        "tasks on a node inside the rule read resident blocks",
    );
    let away = prism::Residency::new("region", &["eu-west"]);
    let err = ds.resident(&away).unwrap_err().to_string();
    check(
        err.contains("residency rule region in [eu-west]") && err.contains("region=in-south"),
        &format!("a dataset cannot be kept where its own node is not: {err}"),
    );
    println!("ALL OK");
}

#[test]
#[ignore = "a driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE")
        .expect("run by the tests in this file")
        .as_str()
    {
        "data" => role_data(),
        "residency" => role_residency(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn data_split_shuffle_iter_map_files_digits() {
    run_role("data", Duration::from_secs(300));
}

#[test]
fn a_resident_dataset_stays_in_its_region() {
    run_role("residency", Duration::from_secs(300));
}
