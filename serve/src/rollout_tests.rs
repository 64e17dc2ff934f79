use super::Strategy;
use super::*;
use proptest::prelude::*;

fn canary() -> Rollout {
    Rollout::new(
        Strategy::Canary {
            steps: vec![5, 25, 50, 100],
            step_s: 10,
        },
        Thresholds::default(),
    )
}

fn good(requests: u64) -> Window {
    Window {
        requests,
        p99_us: 2_000,
        settled: true,
        ..Window::default()
    }
}

#[test]
fn a_good_canary_walks_every_step_then_promotes() {
    let mut r = canary();
    assert!(r.tick(0, &good(100)).is_empty(), "nothing before ready");
    assert_eq!(r.ready(0)[0], Effect::Weight(5));
    assert!(
        r.tick(9_999, &good(100)).is_empty(),
        "a step is held step_s"
    );
    let mut weights = vec![5];
    let mut now = 0;
    loop {
        now += 10_000;
        let fx = r.tick(now, &good(100));
        if fx.contains(&Effect::Promote) {
            break;
        }
        match fx.first() {
            Some(Effect::Weight(w)) => weights.push(*w),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(weights, vec![5, 25, 50, 100]);
    assert_eq!(r.phase(), &Phase::Done);
    assert!(r.tick(now + 99_000, &good(100)).is_empty(), "done is done");
}

#[test]
fn a_failing_canary_rolls_back_and_says_why() {
    let mut r = canary();
    r.ready(0);
    let bad = Window {
        requests: 200,
        errors: 20,
        ..good(0)
    };
    let fx = r.tick(500, &bad);
    match &fx[..] {
        [Effect::Rollback(why)] => {
            assert!(why.contains("error rate 10.0% > 1%"), "{why}");
            assert!(why.contains("20 of 200"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.weight(), 0);
}

#[test]
fn a_breach_must_last_for_s_and_holds_the_step_meanwhile() {
    let mut r = Rollout::new(
        Strategy::Canary {
            steps: vec![10, 100],
            step_s: 1,
        },
        Thresholds {
            for_s: 60,
            ..Thresholds::default()
        },
    );
    r.ready(0);
    let slow = Window {
        p99_us: 900_000,
        ..good(100)
    };
    assert!(r.tick(1_000, &slow).is_empty());
    assert_eq!(r.weight(), 10, "no step while breached");
    assert!(r.tick(60_999, &slow).is_empty());
    match &r.tick(61_000, &slow)[..] {
        [Effect::Rollback(why)] => assert!(
            why.contains("p99 latency 900.0 ms > 500 ms for 60 s"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_recovered_breach_restarts_its_clock() {
    let mut r = Rollout::new(
        Strategy::BlueGreen { keep_warm_s: 600 },
        Thresholds {
            for_s: 10,
            ..Thresholds::default()
        },
    );
    assert_eq!(r.ready(0)[0], Effect::Weight(100));
    let bad = Window {
        errors: 50,
        ..good(100)
    };
    assert!(r.tick(0, &bad).is_empty());
    assert!(r.tick(9_000, &good(100)).is_empty());
    assert!(r.tick(10_000, &bad).is_empty(), "the clock restarted");
    assert!(matches!(r.tick(20_000, &bad)[..], [Effect::Rollback(_)]));
}

#[test]
fn too_few_requests_are_not_judged_and_hold_the_rollout() {
    let mut r = canary();
    r.ready(0);
    let w = Window {
        requests: 19,
        errors: 19,
        ..Window::default()
    };
    assert!(r.tick(100, &w).is_empty());
    // Time is up for the step, but an empty window proves nothing.
    assert!(r.tick(60_000, &Window::default()).is_empty());
    assert_eq!(r.weight(), 5);
    assert_eq!(r.tick(60_001, &good(20))[0], Effect::Weight(25));
    let mut s = Rollout::new(
        Strategy::Shadow {
            percent: 10,
            duration_s: 1,
            promote: true,
        },
        Thresholds {
            min_agreement: 0.9,
            ..Thresholds::default()
        },
    );
    s.ready(0);
    assert!(s.tick(5_000, &good(100)).is_empty(), "no comparisons yet");
}

#[test]
fn blue_green_promotes_after_keep_warm() {
    let mut r = Rollout::new(
        Strategy::BlueGreen { keep_warm_s: 30 },
        Thresholds::default(),
    );
    r.ready(5_000);
    assert_eq!(r.weight(), 100);
    assert!(r.tick(34_999, &good(100)).is_empty());
    assert_eq!(r.tick(35_000, &good(100)), vec![Effect::Promote]);
}

#[test]
fn shadow_mirrors_and_judges_agreement() {
    let limits = Thresholds {
        min_agreement: 0.99,
        ..Thresholds::default()
    };
    let shadow = Strategy::Shadow {
        percent: 50,
        duration_s: 60,
        promote: false,
    };
    let mut r = Rollout::new(shadow.clone(), limits.clone());
    assert_eq!(r.ready(0)[0], Effect::Mirror(50));
    assert_eq!(r.weight(), 0, "clients are answered by the live version");
    let agree = Window {
        compared: 100,
        agreed: 100,
        ..good(100)
    };
    assert_eq!(r.tick(60_000, &agree), vec![Effect::End]);
    let mut r = Rollout::new(shadow, limits);
    r.ready(0);
    let disagree = Window {
        compared: 100,
        agreed: 90,
        ..good(100)
    };
    match &r.tick(1_000, &disagree)[..] {
        [Effect::Rollback(why)] => assert!(why.contains("agreement"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn abort_ends_it_once() {
    let mut r = canary();
    r.ready(0);
    assert_eq!(r.abort("by user"), vec![Effect::Rollback("by user".into())]);
    assert!(r.abort("again").is_empty());
}

#[test]
fn strategies_are_validated() {
    let c = |steps: Vec<u32>| Strategy::Canary { steps, step_s: 1 }.validate();
    assert!(c(vec![5, 25, 100]).is_ok());
    assert!(c(vec![]).is_err());
    assert!(c(vec![50, 25, 100]).unwrap_err().contains("rise"));
    assert!(c(vec![5, 50]).unwrap_err().contains("end at 100"));
    let s = Strategy::Shadow {
        percent: 0,
        duration_s: 1,
        promote: true,
    };
    assert!(s.validate().is_err());
}

proptest! {
    /// Whatever the windows, weights only follow the steps, a rollback
    /// comes only from a breached window, and a rollout ends at most once.
    #[test]
    fn canary_weights_follow_the_steps_and_end_once(
        windows in prop::collection::vec((0u64..200, 0u64..20, 0u64..1_000_000), 1..60),
    ) {
        let steps = vec![5, 25, 50, 100];
        let mut r = Rollout::new(
            Strategy::Canary { steps: steps.clone(), step_s: 5 },
            Thresholds::default(),
        );
        r.ready(0);
        let mut ends = 0;
        for (i, (req, err, p99)) in windows.into_iter().enumerate() {
            let w = Window { requests: req, errors: err.min(req), p99_us: p99, ..Window::default() };
            for fx in r.tick(i as u64 * 2_000, &w) {
                match fx {
                    Effect::Weight(x) => prop_assert!(steps.contains(&x)),
                    Effect::Rollback(_) => {
                        ends += 1;
                        prop_assert!(req >= 20 && (err.min(req) * 100 > req || p99 > 500_000));
                    }
                    Effect::Promote => ends += 1,
                    _ => {}
                }
            }
        }
        prop_assert!(ends <= 1);
    }
}

#[test]
fn the_challenger_is_sized_by_its_share_and_a_step_waits_for_its_replicas() {
    let mut r = canary();
    assert_eq!(r.replicas(8), 1, "5% of 8, at least 1");
    r.ready(0);
    assert_eq!(r.tick(10_000, &good(100))[0], Effect::Weight(25));
    assert_eq!(r.replicas(8), 2);
    let starting = Window {
        settled: false,
        ..good(100)
    };
    assert!(
        r.tick(30_000, &starting).is_empty(),
        "replicas still starting"
    );
    let bad = Window {
        errors: 50,
        ..starting
    };
    assert!(
        matches!(r.tick(31_000, &bad)[..], [Effect::Rollback(_)]),
        "but a breach is a breach"
    );
    let bg = Rollout::new(
        Strategy::BlueGreen { keep_warm_s: 1 },
        Thresholds::default(),
    );
    assert_eq!(bg.replicas(3), 3);
    let sh = Rollout::new(
        Strategy::Shadow {
            percent: 10,
            duration_s: 1,
            promote: false,
        },
        Thresholds::default(),
    );
    assert_eq!(sh.replicas(4), 1);
}
