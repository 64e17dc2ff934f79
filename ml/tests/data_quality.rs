//! Data set versions and expectations on an embedded cluster (one task
//! per block): the same rows have the same version and any change makes
//! another; a NaN and an out-of-range value are named with their column
//! and row; a trainer given expectations refuses bad data before any
//! worker starts.

mod common;

use prism::Tensor;
use prism_ml::data::{Dataset, Expectations};
use prism_ml::train::{DdpTrainer, ScalingConfig};
use prism_ml::MlError;
use prism_test_support::*;
use std::time::Duration;

/// 300 rows of 4 features in [0, 10) and labels 0..3, in blocks of 64;
/// `spoil` puts a NaN at (137, 2) and 99 at (200, 1).
fn table(spoil: bool) -> Dataset {
    let mut f: Vec<f32> = (0..300 * 4).map(|i| (i % 10) as f32).collect();
    if spoil {
        f[137 * 4 + 2] = f32::NAN;
        f[200 * 4 + 1] = 99.0;
    }
    let l: Vec<i64> = (0..300).map(|i| i % 3).collect();
    let features = Tensor::from_slice(&[300, 4], &f).unwrap();
    let labels = Tensor::from_slice(&[300], &l).unwrap();
    Dataset::from_tensors(&features, Some(&labels), 64).unwrap()
}

fn rules() -> Expectations {
    Expectations::new()
        .no_nan()
        .feature_range(0..4, 0.0, 10.0)
        .labels_in(0..3)
        .rows_between(100, 10_000)
        .row_width(4)
}

fn role_quality() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let (a, b) = (table(false), table(false));
    let va = a.version().unwrap();
    check(
        va.starts_with("sha256:") && va.len() == 7 + 64,
        &format!("a version is a SHA-256 ({va})"),
    );
    check(
        va == b.version().unwrap(),
        "the same rows made twice have the same version",
    );
    check(
        va != a.shuffle(1).unwrap().version().unwrap(),
        "shuffled rows have another version",
    );
    check(
        va != table(true).version().unwrap(),
        "a changed value changes the version",
    );
    let (train, _) = common::digits();
    let digits = Expectations::new()
        .no_nan()
        .feature_range(0..64, 0.0, 16.0)
        .labels_in(0..10)
        .row_width(64);
    check(
        train.expect(&digits).is_ok(),
        "the digits meet their expectations",
    );
    check(a.expect(&rules()).is_ok(), "clean data passes");
    let e = table(true).expect(&rules()).unwrap_err().to_string();
    println!("{e}");
    check(
        e.contains("no_nan broken in feature 2: 1 rows, e.g. rows [137]"),
        "the NaN is named with its column and row",
    );
    check(
        e.contains("feature_range [0, 10] broken in feature 1: 1 rows, e.g. rows [200]"),
        "the out-of-range value too",
    );
    let e = a
        .expect(&Expectations::new().rows_between(1, 10).labels_in([0]))
        .unwrap_err()
        .to_string();
    check(
        e.contains("rows_between 1 and 10 broken in rows: 300 rows"),
        &e,
    );
    check(
        e.contains("labels_in broken in label: 200 rows, e.g. rows [1, 2, 4, 5, 7]"),
        &e,
    );
    let cfg = common::digits_mlp(vec![4, 8, 3], 1, 0.05);
    let r = DdpTrainer::new("mlp_classifier", ScalingConfig::new(2))
        .unwrap()
        .config(cfg.to_bytes())
        .dataset(table(true))
        .expect(rules())
        .fit();
    check(
        matches!(&r, Err(MlError::Validation(m)) if m.contains("feature 2")),
        "the trainer refuses bad data before training",
    );
    println!("ALL OK");
}

#[test]
#[ignore = "a driver role, run by the tests in this file"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "quality" => role_quality(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn dataset_versions_and_expectations_name_what_is_wrong() {
    println!("{}", run_role("quality", Duration::from_secs(180)));
}
