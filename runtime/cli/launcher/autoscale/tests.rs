use super::*;
use crate::launcher::config::ClusterConfig;
use proptest::prelude::*;

fn config(idle_s: u64) -> ClusterConfig {
    ClusterConfig::parse(
        "c.yaml",
        &format!(
            "cluster_name: t
provider: {{type: local}}
worker_groups:
  - {{name: cpu, min: 1, max: 3, resources: {{num_cpus: 2}}}}
  - {{name: accel, min: 0, max: 1, resources: {{num_cpus: 1, custom: {{accel: 1}}}}}}
autoscaler: {{idle_timeout_s: {idle_s}, upscaling_speed: 1.0}}
"
        ),
    )
    .unwrap()
}

fn shape(pairs: &[(&str, f64)]) -> Shape {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn node(key: &str, group: &str, free: &[(&str, f64)], idle: bool) -> NodeView {
    NodeView {
        key: key.into(),
        group: group.into(),
        available: shape(free),
        idle,
    }
}

#[test]
fn demand_only_a_group_can_hold_starts_one_node_of_it_as1() {
    let c = config(60);
    let mut s = Scaler::default();
    let t = Instant::now();
    let nodes = [
        node("head", "head", &[("CPU", 2.0)], false),
        node("cpu-0", "cpu", &[("CPU", 2.0)], true),
    ];
    let accel = [DemandView {
        shape: shape(&[("accel", 1.0)]),
        count: 1,
    }];
    assert_eq!(
        s.decide(&c, &nodes, &accel, t),
        vec![Decision::Launch {
            group: "accel".into(),
            count: 1
        }]
    );
    // Asked again before it arrives: nothing more (it is starting).
    assert_eq!(
        s.decide(&c, &nodes, &accel, t + Duration::from_secs(1)),
        vec![]
    );
}

#[test]
fn demand_a_node_can_take_starts_nothing_and_no_group_fits_starts_nothing() {
    let c = config(60);
    let mut s = Scaler::default();
    let nodes = [node("cpu-0", "cpu", &[("CPU", 2.0)], false)];
    let fits_now = [DemandView {
        shape: shape(&[("CPU", 1.0)]),
        count: 2,
    }];
    assert!(s.decide(&c, &nodes, &fits_now, Instant::now()).is_empty());
    let unicorn = [DemandView {
        shape: shape(&[("unicorn", 1.0)]),
        count: 5,
    }];
    assert!(s.decide(&c, &nodes, &unicorn, Instant::now()).is_empty());
}

#[test]
fn growth_stops_at_max_and_at_the_upscaling_step() {
    let c = config(60);
    let mut s = Scaler::default();
    let nodes = [node("cpu-0", "cpu", &[], false)];
    let lots = [DemandView {
        shape: shape(&[("CPU", 2.0)]),
        count: 10,
    }];
    // One node runs: a step of 1 (speed 1.0 x 1 node).
    assert_eq!(
        s.decide(&c, &nodes, &lots, Instant::now()),
        vec![Decision::Launch {
            group: "cpu".into(),
            count: 1
        }]
    );
    let two = [
        node("cpu-0", "cpu", &[], false),
        node("cpu-1", "cpu", &[], false),
    ];
    s.arrived("cpu");
    assert_eq!(
        s.decide(&c, &two, &lots, Instant::now()),
        vec![Decision::Launch {
            group: "cpu".into(),
            count: 1
        }],
        "max is 3"
    );
}

#[test]
fn idle_nodes_go_after_the_timeout_never_below_min_as2() {
    let c = config(10);
    let mut s = Scaler::default();
    let t = Instant::now();
    let nodes = [
        node("cpu-0", "cpu", &[("CPU", 2.0)], true),
        node("cpu-1", "cpu", &[("CPU", 2.0)], true),
        node("accel-0", "accel", &[("accel", 1.0)], true),
        node("head", "head", &[], true),
    ];
    assert!(
        s.decide(&c, &nodes, &[], t).is_empty(),
        "not idle long enough yet"
    );
    let d = s.decide(&c, &nodes, &[], t + Duration::from_secs(11));
    assert_eq!(
        d,
        vec![
            Decision::Terminate {
                key: "cpu-0".into()
            },
            Decision::Terminate {
                key: "accel-0".into()
            }
        ],
        "one cpu node stays (min 1); the head never goes"
    );
}

#[test]
fn a_busy_moment_restarts_the_idle_clock() {
    let c = config(10);
    let mut s = Scaler::default();
    let t = Instant::now();
    let idle = [
        node("cpu-1", "cpu", &[], true),
        node("cpu-0", "cpu", &[], false),
    ];
    let busy = [
        node("cpu-1", "cpu", &[], false),
        node("cpu-0", "cpu", &[], false),
    ];
    s.decide(&c, &idle, &[], t);
    s.decide(&c, &busy, &[], t + Duration::from_secs(8));
    assert!(s
        .decide(&c, &idle, &[], t + Duration::from_secs(12))
        .is_empty());
    assert_eq!(
        s.decide(&c, &idle, &[], t + Duration::from_secs(23)),
        vec![Decision::Terminate {
            key: "cpu-1".into()
        }]
    );
}

proptest! {
    /// AS-3: a square wave of demand whose half-period is shorter than the
    /// idle timeout starts the accel node once and never removes it.
    #[test]
    fn square_waves_faster_than_the_timeout_do_not_thrash(
        half_period in 1u64..10,
        cycles in 1usize..20,
    ) {
        let c = config(10);
        let mut s = Scaler::default();
        let t0 = Instant::now();
        let mut have_accel = false;
        let (mut launches, mut removals) = (0, 0);
        for second in 0..(cycles as u64 * 2 * half_period) {
            let on = (second / half_period) % 2 == 0;
            let mut nodes = vec![node("cpu-0", "cpu", &[("CPU", 2.0)], false)];
            if have_accel {
                nodes.push(node("accel-0", "accel", &[("accel", if on { 0.0 } else { 1.0 })], !on));
            }
            let demand = if on && !have_accel {
                vec![DemandView { shape: shape(&[("accel", 1.0)]), count: 1 }]
            } else {
                vec![]
            };
            for d in s.decide(&c, &nodes, &demand, t0 + Duration::from_secs(second)) {
                match d {
                    Decision::Launch { .. } => {
                        launches += 1;
                        have_accel = true;
                        s.arrived("accel");
                    }
                    Decision::Terminate { .. } => {
                        removals += 1;
                        have_accel = false;
                    }
                }
            }
        }
        prop_assert_eq!(launches, 1);
        prop_assert_eq!(removals, 0);
    }
}
