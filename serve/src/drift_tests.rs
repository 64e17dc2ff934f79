use super::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn rows(rng: &mut StdRng, n: usize, shift: [f64; 3]) -> Vec<Vec<f64>> {
    (0..n)
        .map(|_| shift.iter().map(|s| normal(rng) + s).collect())
        .collect()
}

fn reference(rng: &mut StdRng) -> Reference {
    Reference::from_rows(&["x0", "x1", "x2"], &rows(rng, 5_000, [0.0; 3]), 10).unwrap()
}

#[test]
fn quantile_bins_hold_equal_shares() {
    let mut rng = StdRng::seed_from_u64(1);
    let r = reference(&mut rng);
    for f in &r.features {
        assert_eq!(f.shares.len(), 10);
        assert!(f.shares.iter().all(|&s| (s - 0.1).abs() < 0.01), "{f:?}");
    }
}

#[test]
fn unshifted_inputs_raise_no_alarm_over_ten_windows() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut m = Monitor::new(reference(&mut rng), 500);
    let mut reports = Vec::new();
    for row in rows(&mut rng, 5_000, [0.0; 3]) {
        reports.extend(m.observe(&row));
    }
    assert_eq!(reports.len(), 10);
    for r in &reports {
        assert!(r.score < 0.15 && r.psi < 0.1, "false alarm: {r:?}");
    }
}

#[test]
fn a_known_shift_is_caught_in_one_window_and_named() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut m = Monitor::new(reference(&mut rng), 500);
    let mut first = None;
    for row in rows(&mut rng, 500, [0.0, 1.0, 0.0]) {
        first = first.or(m.observe(&row));
    }
    let r = first.expect("one window closed");
    assert!(r.score > 0.15, "{r:?}");
    assert!(
        r.psi > 0.25,
        "PSI above the usual 'significant' mark: {r:?}"
    );
    assert_eq!(r.feature, "x1");
    assert_eq!(m.last(), Some(&r));
}

#[test]
fn identical_distributions_score_zero() {
    let shares = [0.25, 0.25, 0.5];
    assert!(kl(&shares, &[25, 25, 50]).abs() < 1e-9);
    assert!(psi(&shares, &[25, 25, 50]).abs() < 1e-9);
    assert_eq!(kl(&shares, &[0, 0, 0]), 0.0);
}

#[test]
fn a_reference_round_trips_through_a_file_and_bad_rows_are_named() {
    let mut rng = StdRng::seed_from_u64(4);
    let r = reference(&mut rng);
    let dir = std::env::temp_dir().join(format!("prism-drift-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("ref.json");
    r.save(&p).unwrap();
    // JSON keeps floats to within the last bit.
    let back = Reference::load(&p).unwrap();
    for (a, b) in back.features.iter().zip(&r.features) {
        assert_eq!(
            (&a.name, a.edges.len(), &a.shares),
            (&b.name, b.edges.len(), &b.shares)
        );
        assert!(a
            .edges
            .iter()
            .zip(&b.edges)
            .all(|(x, y)| (x - y).abs() < 1e-12));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let e = Reference::from_rows(&["a", "b"], &[vec![1.0]], 4).unwrap_err();
    assert!(e.contains("feature b"), "{e}");
    assert!(Reference::load(Path::new("/nonexistent/ref.json"))
        .unwrap_err()
        .contains("/nonexistent/ref.json"));
}

#[test]
fn a_registry_reference_is_read_as_the_deployer_resolved_it() {
    let mut rng = StdRng::seed_from_u64(5);
    let dir = std::env::temp_dir().join(format!("prism-drift-reg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ck.drift.json");
    reference(&mut rng).save(&file).unwrap();
    // A replica reads the deployer's file and resolves nothing itself.
    let got = load_reference("calc@champion", Some(file.to_str().unwrap())).unwrap();
    assert_eq!(got.features.len(), 3);
    let e = load_reference("calc@champion", None).unwrap_err();
    assert!(e.contains("not resolved by the deploying process"), "{e}");
    // A file is read where it is; it needs no resolving.
    assert_eq!(resolve(file.to_str().unwrap()).unwrap(), None);
    assert!(load_reference(file.to_str().unwrap(), None).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
    // What the deployer resolved is no part of what the deployment is.
    let spec = |resolved: Option<&str>| crate::DriftSpec {
        reference: "calc@champion".into(),
        window: 50,
        resolved: resolved.map(String::from),
        unresolved: None,
    };
    assert_eq!(
        spec(Some("/a/v1.drift.json")),
        spec(Some("/a/v2.drift.json"))
    );
    assert_ne!(
        spec(None),
        crate::DriftSpec {
            window: 60,
            ..spec(None)
        }
    );
}

use std::path::Path;

proptest! {
    /// Scores are finite and never negative, whatever the counts.
    #[test]
    fn scores_are_finite_and_non_negative(
        counts in prop::collection::vec(0u64..1000, 4),
        raw in prop::collection::vec(0.0f64..1.0, 4),
    ) {
        let total: f64 = raw.iter().sum::<f64>().max(1e-9);
        let shares: Vec<f64> = raw.iter().map(|x| x / total).collect();
        let (k, p) = (kl(&shares, &counts), psi(&shares, &counts));
        prop_assert!(k.is_finite() && k >= 0.0);
        prop_assert!(p.is_finite() && p >= -1e-12);
    }
}
