//! Unit and property tests of the policies (SC-1…SC-6).

use crate::*;
use proptest::prelude::{prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as PropStrategy;
use std::collections::BTreeMap;

fn node(cpu: u32, gpu: u32) -> NodeResources {
    NodeResources::new(
        ResourceSet::new()
            .with(CPU, Quantity::whole(cpu))
            .with(GPU, Quantity::whole(gpu)),
    )
}

fn cpu(n: f64) -> ResourceSet {
    ResourceSet::new().with(CPU, Quantity::from_f64(n).unwrap())
}

fn gpu(n: f64) -> ResourceSet {
    ResourceSet::new().with(GPU, Quantity::from_f64(n).unwrap())
}

#[test]
fn sc_4_whole_gpus_get_distinct_indices_fractions_share_one() {
    let mut view = ClusterView::new();
    view.upsert(0u8, node(8, 4));
    let a = view.allocate(0, &gpu(2.0)).unwrap();
    assert_eq!(a.gpu_indices(), vec![0, 1]);
    let b = view.allocate(0, &gpu(0.5)).unwrap();
    let c = view.allocate(0, &gpu(0.5)).unwrap();
    assert_eq!(
        b.gpu_indices(),
        c.gpu_indices(),
        "fractions pack onto one index"
    );
    let d = view.allocate(0, &gpu(1.0)).unwrap();
    assert_eq!(d.gpu_indices(), vec![3]);
    for x in [&a, &b, &c, &d] {
        view.release(x).unwrap();
    }
    assert_eq!(view.node(0).unwrap().gpu_free(), &[Quantity::ONE; 4]);
    // 0.6 on each of three GPUs leaves 1.2 in total but no whole GPU.
    let mut view = ClusterView::new();
    view.upsert(0u8, node(8, 3));
    let parts: Vec<_> = (0..3)
        .map(|_| view.allocate(0, &gpu(0.6)).unwrap())
        .collect();
    let idx: Vec<_> = parts.iter().flat_map(|p| p.gpu_indices()).collect();
    assert_eq!(idx, vec![0, 1, 2]);
    assert_eq!(
        view.allocate(0, &gpu(1.0)),
        Err(AllocError::GpuFragmented(Quantity::ONE))
    );
}

#[test]
fn a_ledger_over_gpu_slices_serves_fractions_and_refuses_more_than_it_holds() {
    // A bundle of 0.5 GPU: one instance with half of it.
    let half = Quantity::from_f64(0.5).unwrap();
    let mut b = NodeResources::with_gpu_slices(cpu(1.0).with(GPU, half), vec![half]);
    assert!(b.feasible(&gpu(0.5)) && b.fits_now(&gpu(0.5)));
    let q = b.allocate(&gpu(0.25)).unwrap();
    assert_eq!(q, vec![(0, Quantity::from_f64(0.25).unwrap())]);
    assert!(b.fits_now(&gpu(0.25)) && !b.fits_now(&gpu(0.5)));
    assert!(!b.feasible(&gpu(1.0)), "more than the bundle holds");
    b.release(&gpu(0.25), &q).unwrap();
    // Two whole instances: a 2-GPU task takes both.
    let one = Quantity::ONE;
    let mut w = NodeResources::with_gpu_slices(gpu(2.0), vec![one, one]);
    assert_eq!(w.allocate(&gpu(2.0)).unwrap().len(), 2);
}

#[test]
fn sc_1_ten_tenths_of_a_gpu_fill_it_exactly() {
    let mut view = ClusterView::new();
    view.upsert(0u8, node(1, 1));
    let allocs: Vec<_> = (0..10)
        .map(|_| view.allocate(0, &gpu(0.1)).unwrap())
        .collect();
    assert_eq!(view.node(0).unwrap().available().get(GPU), Quantity::ZERO);
    assert!(view.allocate(0, &gpu(0.1)).is_err());
    allocs.iter().for_each(|a| view.release(a).unwrap());
    assert_eq!(view.node(0).unwrap().available().get(GPU), Quantity::ONE);
}

#[test]
fn sc_3_double_release_on_an_idle_node_is_refused() {
    let mut view = ClusterView::new();
    view.upsert(0u8, node(2, 1));
    let a = view
        .allocate(0, &cpu(1.0).with(GPU, Quantity::ONE))
        .unwrap();
    view.release(&a).unwrap();
    assert!(matches!(view.release(&a), Err(AllocError::OverRelease(_))));
}

#[test]
fn hybrid_packs_then_spreads() {
    let mut view = ClusterView::new();
    for id in 0u8..3 {
        view.upsert(id, node(4, 0));
    }
    let mut s = Scheduler::new();
    let mut placed = Vec::new();
    for _ in 0..6 {
        let Decision::Place(n) = s.decide(&view, &cpu(1.0), &Strategy::Hybrid, Some(1)) else {
            panic!("should place")
        };
        view.allocate(n, &cpu(1.0)).unwrap();
        placed.push(n);
    }
    // Node 1 takes work until it is half busy, then the least-utilised nodes.
    assert_eq!(&placed[..2], &[1, 1]);
    assert!(placed[2..].contains(&0) && placed[2..].contains(&2));
}

#[test]
fn sc_9_a_saturated_cluster_queues_where_the_scan_would() {
    let mut view = ClusterView::new();
    view.upsert(0u8, node(4, 0));
    view.upsert(1, node(4, 1));
    view.upsert(2, node(8, 1));
    for id in 0u8..3 {
        let free = view.node(id).unwrap().available().get(CPU);
        view.allocate(id, &ResourceSet::new().with(CPU, free))
            .unwrap();
    }
    let gpu_task = cpu(1.0).with(GPU, Quantity::ONE);
    let mut s = Scheduler::new();
    for (req, pref, want) in [
        (&gpu_task, None, Decision::Queue(1)),
        (&gpu_task, Some(2), Decision::Queue(2)),
        (&gpu_task, Some(0), Decision::Queue(1)),
        (&cpu(6.0), None, Decision::Queue(2)),
    ] {
        let got = s.decide(&view, req, &Strategy::Hybrid, pref);
        assert_eq!(got, want, "{req:?} from {pref:?}");
        assert_eq!(got, s.scan(&view, req, pref, |_| true));
    }
    let too_big = s.decide(&view, &cpu(9.0), &Strategy::Hybrid, None);
    assert!(matches!(too_big, Decision::Infeasible(_)), "{too_big:?}");
    assert_eq!(view.max_free_cpus(), Some(Quantity::from_raw(0)));
}

#[test]
fn spread_round_robins() {
    let mut view = ClusterView::new();
    for id in 0u8..3 {
        view.upsert(id, node(4, 0));
    }
    let mut s = Scheduler::new();
    let got: Vec<_> = (0..6)
        .map(|_| s.decide(&view, &cpu(1.0), &Strategy::Spread, None))
        .collect();
    let want: Vec<_> = [0, 1, 2, 0, 1, 2]
        .into_iter()
        .map(Decision::Place)
        .collect();
    assert_eq!(got, want);
}

#[test]
fn spread_and_soft_affinity_narrowed_by_labels_stay_inside_them() {
    let mut view = ClusterView::new();
    let zone = |z: &str| BTreeMap::from([("zone".to_string(), z.to_string())]);
    for (id, z) in [(0u8, "a"), (1, "b"), (2, "a"), (3, "b")] {
        view.upsert(id, node(2, 0).with_labels(zone(z)));
    }
    let in_a = LabelSelector::parse("zone=a").unwrap();
    let mut s = Scheduler::new();
    let spread = Strategy::SpreadLabels(in_a.clone());
    let got: Vec<_> = (0..4)
        .map(|_| s.decide(&view, &cpu(1.0), &spread, None))
        .collect();
    let want: Vec<_> = [0, 2, 0, 2].into_iter().map(Decision::Place).collect();
    assert_eq!(got, want, "round-robin over zone a only");
    // Zone a full: the request waits inside it though zone b is idle.
    for id in [0u8, 2] {
        view.allocate(id, &cpu(2.0)).unwrap();
    }
    assert!(matches!(
        s.decide(&view, &cpu(1.0), &spread, None),
        Decision::Queue(0 | 2)
    ));
    let nowhere = Strategy::SpreadLabels(LabelSelector::parse("zone=c").unwrap());
    assert!(matches!(
        s.decide(&view, &cpu(1.0), &nowhere, None),
        Decision::Infeasible(Infeasible::NoMatchingLabels(_))
    ));

    let mut view = ClusterView::new();
    for (id, z) in [(0u8, "a"), (1, "b"), (2, "a")] {
        view.upsert(id, node(2, 0).with_labels(zone(z)));
    }
    let prefer = |node| Strategy::PreferNode {
        node,
        within: in_a.clone(),
    };
    let d = |s: &mut Scheduler, v: &ClusterView<u8>, n| s.decide(v, &cpu(1.0), &prefer(n), None);
    assert_eq!(d(&mut s, &view, 2), Decision::Place(2), "its node, inside");
    assert_eq!(d(&mut s, &view, 1), Decision::Place(0), "outside: zone a");
    assert_eq!(d(&mut s, &view, 9), Decision::Place(0), "unknown: zone a");
    view.set_alive(2, false);
    assert_eq!(d(&mut s, &view, 2), Decision::Place(0), "dead: zone a");
    assert_eq!(
        s.decide(&view, &cpu(3.0), &prefer(0), None),
        Decision::Infeasible(Infeasible::MissingResource {
            resource: CPU.to_string(),
            requested: Quantity::whole(3),
            largest_total: Quantity::whole(2),
        }),
        "too big for every node inside"
    );
}

#[test]
fn busy_but_feasible_queues_and_infeasible_names_the_resource() {
    let mut view = ClusterView::new();
    view.upsert(0u8, node(2, 0));
    view.allocate(0, &cpu(2.0)).unwrap();
    let mut s = Scheduler::new();
    assert_eq!(
        s.decide(&view, &cpu(1.0), &Strategy::Hybrid, None),
        Decision::Queue(0)
    );
    let d = s.decide(&view, &cpu(3.0), &Strategy::Hybrid, None);
    assert_eq!(
        d,
        Decision::Infeasible(Infeasible::MissingResource {
            resource: CPU.into(),
            requested: Quantity::whole(3),
            largest_total: Quantity::whole(2),
        })
    );
    let custom = ResourceSet::new().with("accel", Quantity::ONE);
    let Decision::Infeasible(Infeasible::MissingResource { resource, .. }) =
        s.decide(&view, &custom, &Strategy::Hybrid, None)
    else {
        panic!()
    };
    assert_eq!(resource, "accel");
}

#[test]
fn node_affinity_hard_and_soft() {
    let mut view = ClusterView::new();
    view.upsert(0u8, node(2, 0));
    view.upsert(1u8, node(2, 0));
    view.set_alive(1, false);
    let mut s = Scheduler::new();
    let hard = Strategy::NodeAffinity {
        node: 1,
        soft: false,
    };
    let soft = Strategy::NodeAffinity {
        node: 1,
        soft: true,
    };
    assert_eq!(
        s.decide(&view, &cpu(1.0), &hard, None),
        Decision::Infeasible(Infeasible::NodeUnavailable(1))
    );
    assert_eq!(s.decide(&view, &cpu(1.0), &soft, None), Decision::Place(0));
    let on0 = Strategy::NodeAffinity {
        node: 0,
        soft: false,
    };
    assert_eq!(
        s.decide(&view, &cpu(1.0), &on0, Some(1)),
        Decision::Place(0)
    );
}

#[test]
fn label_selector_restricts_nodes() {
    let mut view = ClusterView::new();
    let zone = |z: &str| BTreeMap::from([("zone".to_string(), z.to_string())]);
    view.upsert(0u8, node(2, 0).with_labels(zone("a")));
    view.upsert(1u8, node(2, 0).with_labels(zone("b")));
    let mut s = Scheduler::new();
    let sel = Strategy::Labels(LabelSelector::parse("zone=b").unwrap());
    assert_eq!(
        s.decide(&view, &cpu(1.0), &sel, Some(0)),
        Decision::Place(1)
    );
    let none = Strategy::Labels(LabelSelector::parse("zone=c").unwrap());
    assert!(matches!(
        s.decide(&view, &cpu(1.0), &none, None),
        Decision::Infeasible(Infeasible::NoMatchingLabels(_))
    ));
}

#[test]
fn placement_group_strategies() {
    let mut view = ClusterView::new();
    for id in 0u8..3 {
        view.upsert(id, node(4, 0));
    }
    let two = vec![cpu(2.0), cpu(2.0)];
    assert_eq!(
        place_bundles(&view, &two, PgStrategy::StrictPack),
        PgDecision::Place(vec![0, 0])
    );
    assert_eq!(
        place_bundles(&view, &two, PgStrategy::Pack),
        PgDecision::Place(vec![0, 0])
    );
    let PgDecision::Place(s) = place_bundles(&view, &two, PgStrategy::StrictSpread) else {
        panic!()
    };
    assert_ne!(s[0], s[1]);
    let PgDecision::Place(s) = place_bundles(&view, &two, PgStrategy::Spread) else {
        panic!()
    };
    assert_ne!(s[0], s[1]);
    let four = vec![cpu(1.0); 4];
    assert!(matches!(
        place_bundles(&view, &four, PgStrategy::StrictSpread),
        PgDecision::Infeasible(Infeasible::NotEnoughNodes {
            needed: 4,
            usable: 3
        })
    ));
    assert!(matches!(
        place_bundles(&view, &[cpu(3.0), cpu(3.0)], PgStrategy::StrictPack),
        PgDecision::Infeasible(Infeasible::NoSingleNode(_))
    ));
    // Busy now but feasible on the idle cluster: wait.
    view.allocate(0, &cpu(4.0)).unwrap();
    view.allocate(1, &cpu(4.0)).unwrap();
    assert_eq!(
        place_bundles(&view, &two, PgStrategy::StrictSpread),
        PgDecision::Wait
    );
}

#[derive(Debug, Clone)]
enum Op {
    Alloc { node: u8, cpu: u16, gpu: u16 },
    Release(usize),
}

fn op() -> impl PropStrategy<Value = Op> {
    prop_oneof![
        (0u8..4, 0u16..40, 0u16..25).prop_map(|(node, cpu, gpu)| Op::Alloc { node, cpu, gpu }),
        (0usize..64).prop_map(Op::Release),
    ]
}

fn amount(tenths: u16) -> Quantity {
    Quantity::from_raw(tenths as i64 * 1000)
}

proptest! {
    /// SC-2, SC-3, SC-4 under random allocate/release sequences.
    #[test]
    fn sc_2_3_4_never_over_allocate_and_release_restores(ops in proptest::collection::vec(op(), 1..120)) {
        let mut view = ClusterView::new();
        for id in 0u8..4 {
            view.upsert(id, node(id as u32 + 1, id as u32));
        }
        let initial: Vec<_> = view.nodes().map(|(_, n)| (n.available().clone(), n.gpu_free().to_vec())).collect();
        let mut live: Vec<Allocation<u8>> = Vec::new();
        for o in ops {
            match o {
                Op::Alloc { node, cpu, gpu } => {
                    let ask = ResourceSet::new().with(CPU, amount(cpu)).with(GPU, amount(gpu));
                    let fits = view.node(node).unwrap().fits_now(&ask);
                    match view.allocate(node, &ask) {
                        Ok(a) => { prop_assert!(fits); live.push(a) }
                        Err(_) => prop_assert!(!fits || validate(&ask).is_err()),
                    }
                }
                Op::Release(i) if !live.is_empty() => {
                    let a = live.swap_remove(i % live.len());
                    view.release(&a).unwrap();
                }
                Op::Release(_) => {}
            }
            for (_, n) in view.nodes() {
                prop_assert!(n.available().fits_in(n.total()));
                for f in n.gpu_free() {
                    prop_assert!(*f <= Quantity::ONE);
                }
                let whole_free = n.gpu_free().iter().fold(Quantity::ZERO, |a, b| a + *b);
                prop_assert_eq!(whole_free, n.available().get(GPU));
            }
        }
        for a in live.drain(..) {
            view.release(&a).unwrap();
        }
        let after: Vec<_> = view.nodes().map(|(_, n)| (n.available().clone(), n.gpu_free().to_vec())).collect();
        prop_assert_eq!(initial, after);
    }

    /// SC-5 and SC-6: a placement fits simultaneously; STRICT_SPREAD never shares.
    #[test]
    fn sc_5_6_bundles_fit_together_and_strict_spread_never_shares(
        caps in proptest::collection::vec((1u32..6, 0u32..3), 1..6),
        bundles in proptest::collection::vec((0u16..30, 0u16..12), 1..6),
        which in 0usize..4,
    ) {
        let mut view = ClusterView::new();
        for (i, (c, g)) in caps.iter().enumerate() {
            view.upsert(i as u8, node(*c, *g));
        }
        let bundles: Vec<ResourceSet> = bundles
            .iter()
            .map(|(c, g)| ResourceSet::new().with(CPU, amount(*c)).with(GPU, amount(*g)))
            .collect();
        let strategy = [PgStrategy::Pack, PgStrategy::Spread, PgStrategy::StrictPack, PgStrategy::StrictSpread][which];
        if let PgDecision::Place(nodes) = place_bundles(&view, &bundles, strategy) {
            prop_assert_eq!(nodes.len(), bundles.len());
            for (b, n) in bundles.iter().zip(&nodes) {
                prop_assert!(view.allocate(*n, b).is_ok(), "bundle {} on {:?} must fit", b, n);
            }
            match strategy {
                PgStrategy::StrictSpread => {
                    let mut d = nodes.clone();
                    d.sort();
                    d.dedup();
                    prop_assert_eq!(d.len(), nodes.len());
                }
                PgStrategy::StrictPack => prop_assert!(nodes.iter().all(|n| *n == nodes[0])),
                _ => {}
            }
        }
    }

    /// SC-8: spread's cursor by node id chooses as the walk by position
    /// over a list of the live nodes did, decision after decision, as
    /// nodes fill up.
    #[test]
    fn sc_8_spread_by_id_chooses_as_by_position(
        caps in proptest::collection::vec(1u32..6, 1..30),
        dead in proptest::collection::vec(0usize..30, 0..5),
        asks in proptest::collection::vec(1u16..30, 1..60),
    ) {
        let mut view = ClusterView::new();
        for (i, c) in caps.iter().enumerate() {
            view.upsert(i as u16 * 3, node(*c, 0));
        }
        for d in &dead {
            view.set_alive((*d % caps.len()) as u16 * 3, false);
        }
        let (mut by_id, mut by_pos, mut cursor) = (Scheduler::new(), Scheduler::new(), 0usize);
        for a in &asks {
            let req = ResourceSet::new().with(CPU, amount(*a));
            let fast = by_id.decide(&view, &req, &Strategy::Spread, None);
            let reference = by_pos.spread_by_position(&mut cursor, &view, &req);
            prop_assert_eq!(&fast, &reference);
            if let Decision::Place(n) = fast {
                let _ = view.allocate(n, &req);
            }
        }
    }

    /// SC-7: the utilisation index is exactly the live nodes in
    /// (utilisation, id) order, and hybrid through it decides exactly as the
    /// scan over every node does; SC-9: so is the free-CPU index, and a
    /// request no node has the CPUs for (often, here) queues where the
    /// scan would queue it.
    #[test]
    fn sc_7_indexed_hybrid_decides_as_the_full_scan(
        caps in proptest::collection::vec((1u32..9, 0u32..3), 1..40),
        takes in proptest::collection::vec((0usize..40, 0u16..80, 0u16..20), 0..80),
        dead in proptest::collection::vec(0usize..40, 0..5),
        ask in (0u16..40, 0u16..20),
        preferred in proptest::option::of(0usize..40),
        threshold in 0u8..=10,
    ) {
        let mut view = ClusterView::new();
        for (i, (c, g)) in caps.iter().enumerate() {
            view.upsert(i as u16, node(*c, *g));
        }
        let n = caps.len();
        for (i, c, g) in &takes {
            let req = ResourceSet::new().with(CPU, amount(*c)).with(GPU, amount(*g));
            let _ = view.allocate((*i % n) as u16, &req);
        }
        for d in &dead {
            view.set_alive((*d % n) as u16, false);
        }
        let live: Vec<(u64, u16)> = view
            .alive_nodes()
            .map(|(id, nd)| (nd.utilization().to_bits(), id))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let indexed: Vec<(u64, u16)> = view.by_utilization().map(|(id, nd)| (nd.utilization().to_bits(), id)).collect();
        prop_assert_eq!(live, indexed);
        // SC-9: the free-CPU index too.
        let free: Vec<(i64, u16)> = view
            .alive_nodes()
            .map(|(id, nd)| (nd.available().get(CPU).raw(), id))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let by_free: Vec<(i64, u16)> = view.by_free_cpus().map(|(id, nd)| (nd.available().get(CPU).raw(), id)).collect();
        prop_assert_eq!(free, by_free);
        let mut s = Scheduler::new();
        s.spread_threshold = f64::from(threshold) / 10.0;
        let req = ResourceSet::new().with(CPU, amount(ask.0)).with(GPU, amount(ask.1));
        let pref = preferred.map(|p| (p % n) as u16);
        let fast = s.decide(&view, &req, &Strategy::Hybrid, pref);
        let reference = if validate(&req).is_err() { fast.clone() } else { s.scan(&view, &req, pref, |_| true) };
        prop_assert_eq!(fast, reference);
    }
}
