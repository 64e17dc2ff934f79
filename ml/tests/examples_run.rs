//! The ML examples run to their end, each on an embedded cluster in a temp
//! dir of its own: the README's ML and masking blocks
//! (`ml/examples/readme_ml.rs`, whose regions `tests/readme_tour.rs`
//! compares with the README), and the digits
//! MLP served over HTTP, then its int8 version rolled out as a canary
//! (`ml/examples/serve_digits.rs`).

use prism_test_support::run_example;

#[test]
fn the_readme_ml_block_trains_and_scores_on_an_embedded_cluster() {
    let out = run_example("readme_ml", "MASK OK");
    assert!(out.contains("ML OK"), "{out}");
}

#[test]
fn the_digits_mlp_is_trained_then_served_over_http_with_batching() {
    let out = run_example("serve_digits", "SERVE DIGITS OK");
    println!("{out}");
    // The int8 version (at most 1 point below fp32, checked by the
    // example) went out as a canary and was promoted.
    assert!(out.contains("int8 vs fp32:"), "{out}");
    assert!(out.contains("rollout of int8: promoted"), "{out}");
}
