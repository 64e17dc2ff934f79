//! The store against a simple model (OS-1…OS-7), on a real memfd segment,
//! with an allocator that fails on the Nth allocation.

use crate::*;
use proptest::prelude::*;
use std::collections::HashMap;

const CAP: usize = 16 << 10;

#[derive(Debug, Clone)]
enum Op {
    Create {
        obj: u8,
        size: u16,
        client: u8,
        pinned: bool,
    },
    Seal {
        obj: u8,
        client: u8,
    },
    Get {
        obj: u8,
        client: u8,
    },
    Release {
        obj: u8,
        client: u8,
    },
    Unpin {
        obj: u8,
    },
    Spill {
        obj: u8,
    },
    Kill {
        client: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..12, 0u16..5000, 0u8..3, any::<bool>()).prop_map(|(obj, size, client, pinned)| Op::Create { obj, size, client, pinned }),
        3 => (0u8..12, 0u8..3).prop_map(|(obj, client)| Op::Seal { obj, client }),
        3 => (0u8..12, 0u8..3).prop_map(|(obj, client)| Op::Get { obj, client }),
        3 => (0u8..12, 0u8..3).prop_map(|(obj, client)| Op::Release { obj, client }),
        1 => (0u8..12).prop_map(|obj| Op::Unpin { obj }),
        1 => (0u8..12).prop_map(|obj| Op::Spill { obj }),
        1 => (0u8..3).prop_map(|client| Op::Kill { client }),
    ]
}

#[derive(Debug)]
struct Model {
    data: Vec<u8>,
    sealed: bool,
    writer: u8,
    pinned: bool,
    refs: HashMap<u8, u32>,
}

impl Model {
    fn unreferenced(&self) -> bool {
        self.sealed && self.refs.is_empty()
    }
}

fn oid(obj: u8) -> ObjectId {
    ObjectId([obj; 16])
}

fn pattern(obj: u8, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(obj))
        .collect()
}

fn run(ops: Vec<Op>, fail_on: u64, every: u64) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let seg = Segment::create("prism-model", CAP).unwrap();
    let alloc = FailingAlloc::new(OffsetAlloc::new(CAP), fail_on, every);
    let mut store = Store::with_allocator(seg, alloc, Some(dir.path().to_path_buf()));
    let mut model: HashMap<u8, Model> = HashMap::new();

    for op in ops {
        match op {
            Op::Create {
                obj,
                size,
                client,
                pinned,
            } => {
                let size = size as usize;
                match store.create(oid(obj), size, ClientId(client as u64), pinned) {
                    Ok(b) => {
                        prop_assert!(
                            !model.contains_key(&obj),
                            "create succeeded over a live object"
                        );
                        prop_assert_eq!(b.offset % ALIGN, 0); // OS-7
                        let data = pattern(obj, size);
                        store
                            .write(oid(obj), ClientId(client as u64), 0, &data)
                            .unwrap();
                        model.insert(
                            obj,
                            Model {
                                data,
                                sealed: false,
                                writer: client,
                                pinned,
                                refs: HashMap::new(),
                            },
                        );
                    }
                    Err(StoreError::AlreadyExists(_)) => prop_assert!(model.contains_key(&obj)),
                    Err(StoreError::StoreFull { requested, .. }) => {
                        prop_assert_eq!(requested, size)
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("create: {e}"))),
                }
            }
            Op::Seal { obj, client } => {
                let r = store.seal(oid(obj), ClientId(client as u64));
                match model.get_mut(&obj) {
                    None => prop_assert!(matches!(r, Err(StoreError::NotFound(_)))),
                    Some(m) if m.sealed => {
                        prop_assert!(matches!(r, Err(StoreError::AlreadySealed(_))))
                    }
                    Some(m) if m.writer != client => {
                        prop_assert!(matches!(r, Err(StoreError::NotWriter { .. })), "{:?}", r)
                    }
                    Some(m) => {
                        prop_assert!(r.is_ok());
                        m.sealed = true;
                    }
                }
            }
            Op::Get { obj, client } => {
                let spilled = store.info(oid(obj)).is_some_and(|i| i.spilled);
                let r = store.get(oid(obj), ClientId(client as u64));
                match (model.get_mut(&obj), r) {
                    (None, r) => prop_assert!(matches!(r, Err(StoreError::NotFound(_)))),
                    (Some(m), r) if !m.sealed => {
                        prop_assert!(matches!(r, Err(StoreError::NotSealed(_))))
                    }
                    (Some(m), Ok(b)) => {
                        prop_assert_eq!(store.bytes(b).unwrap(), &m.data[..]); // OS-1, OS-5
                        *m.refs.entry(client).or_insert(0) += 1;
                    }
                    (Some(_), Err(StoreError::StoreFull { .. })) => {
                        prop_assert!(spilled, "only a restore may find the store full")
                    }
                    (Some(_), Err(e)) => return Err(TestCaseError::fail(format!("get: {e}"))),
                }
            }
            Op::Release { obj, client } => {
                let r = store.release(oid(obj), ClientId(client as u64));
                match model.get_mut(&obj) {
                    Some(m) if m.refs.contains_key(&client) => {
                        prop_assert!(r.is_ok());
                        let n = m.refs.get_mut(&client).unwrap();
                        *n -= 1;
                        if *n == 0 {
                            m.refs.remove(&client);
                        }
                        if !m.pinned && m.unreferenced() {
                            model.remove(&obj); // OS-4
                        }
                    }
                    Some(_) => prop_assert!(
                        matches!(r, Err(StoreError::NotReferenced { .. })),
                        "{:?}",
                        r
                    ),
                    None => prop_assert!(matches!(r, Err(StoreError::NotFound(_)))),
                }
            }
            Op::Unpin { obj } => {
                let r = store.unpin(oid(obj));
                prop_assert_eq!(r.is_ok(), model.contains_key(&obj));
                if let Some(m) = model.get_mut(&obj) {
                    m.pinned = false;
                    if m.unreferenced() {
                        model.remove(&obj); // OS-4
                    }
                }
            }
            Op::Spill { obj } => {
                let r = store.spill(oid(obj));
                match model.get(&obj) {
                    None => prop_assert!(matches!(r, Err(StoreError::NotFound(_)))),
                    Some(m) if !m.sealed => {
                        prop_assert!(matches!(r, Err(StoreError::NotSealed(_))))
                    }
                    Some(m) if !m.refs.is_empty() => {
                        prop_assert!(matches!(r, Err(StoreError::InUse(_))))
                    } // OS-3
                    Some(_) => prop_assert!(r.is_ok(), "spill: {:?}", r),
                }
            }
            Op::Kill { client } => {
                let cleanup = store.release_client(ClientId(client as u64));
                let mut released = 0;
                model.retain(|obj, m| {
                    released += m.refs.remove(&client).unwrap_or(0);
                    if !m.sealed && m.writer == client {
                        assert!(
                            cleanup.reclaimed.contains(&oid(*obj)),
                            "OS-6: unsealed object not reclaimed"
                        );
                        return false;
                    }
                    m.pinned || !m.unreferenced()
                });
                prop_assert_eq!(cleanup.released, released); // OS-6
            }
        }
        // Objects the store evicted on its own must have been evictable (OS-2, OS-3).
        let gone: Vec<u8> = model
            .keys()
            .copied()
            .filter(|o| store.info(oid(*o)).is_none())
            .collect();
        for o in gone {
            let m = &model[&o];
            prop_assert!(
                !m.pinned && m.unreferenced(),
                "object {} vanished while pinned ({}) or in use ({:?})",
                o,
                m.pinned,
                m.refs
            );
            model.remove(&o);
        }
        prop_assert_eq!(
            store.stats().objects,
            model.len(),
            "store holds objects the model freed"
        );
        for (o, m) in &model {
            let info = store.info(oid(*o)).unwrap();
            prop_assert_eq!(info.sealed, m.sealed);
            prop_assert_eq!(info.pinned, m.pinned);
            prop_assert_eq!(info.refs, m.refs.values().sum::<u32>());
            if !m.unreferenced() {
                prop_assert!(!info.spilled, "OS-3: object {} in use but spilled", o);
            }
        }
    }
    // Everyone lets go: the store is empty and all memory is free again.
    for c in 0..3 {
        store.release_client(ClientId(c));
    }
    for o in model.keys() {
        if store.info(oid(*o)).is_some() {
            store.unpin(oid(*o)).unwrap();
        }
    }
    prop_assert_eq!(store.stats().objects, 0);
    prop_assert_eq!(store.stats().free, CAP);
    prop_assert_eq!(
        std::fs::read_dir(dir.path())
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "spill files left behind"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn model_random_operations_match_a_hashmap(ops in proptest::collection::vec(op(), 1..150), fail_on in 1u64..40, every in 0u64..9) {
        run(ops, fail_on, every)?;
    }
}

fn small_store(spill: Option<&std::path::Path>) -> Store {
    Store::new("prism-unit", 8 << 10, spill.map(|p| p.to_path_buf())).unwrap()
}

#[test]
fn os_2_pinned_object_survives_eviction() {
    let mut s = small_store(None);
    let c = ClientId(1);
    let pinned = ObjectId::random();
    s.put(pinned, &[1u8; 3000], c, true).unwrap();
    let cached = ObjectId::random();
    s.put(cached, &[2u8; 3000], c, false).unwrap();
    // Needs room: the unpinned copy goes, the pinned one stays.
    s.put(ObjectId::random(), &[3u8; 3000], c, true).unwrap();
    assert!(s.info(cached).is_none());
    assert_eq!(s.get_bytes(pinned, c).unwrap(), &[1u8; 3000][..]);
    // With no spill directory, everything pinned: a typed error naming the sizes.
    match s.put(ObjectId::random(), &[4u8; 4000], c, true) {
        Err(StoreError::StoreFull {
            requested,
            available,
            ..
        }) => {
            assert_eq!(requested, 4000);
            assert!(available < 4000);
        }
        other => panic!("expected StoreFull, got {other:?}"),
    }
    assert!(matches!(
        s.put(ObjectId::random(), &[0u8; 9000], c, true),
        Err(StoreError::ObjectTooLarge { .. })
    ));
}

#[test]
fn os_5_spilled_objects_come_back_identical_or_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = small_store(Some(dir.path()));
    let c = ClientId(1);
    let ids: Vec<ObjectId> = (0..6u8).map(|i| ObjectId([i; 16])).collect();
    for (i, id) in ids.iter().enumerate() {
        s.put(*id, &pattern(i as u8, 2500), c, true).unwrap();
    }
    assert!(
        s.stats().spilled >= 3,
        "filling past capacity spills older objects"
    );
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(s.get_bytes(*id, c).unwrap(), &pattern(i as u8, 2500)[..]);
        s.release(*id, c).unwrap();
    }
    // Corrupt one spill file and remove another.
    let spilled: Vec<ObjectId> = ids
        .iter()
        .copied()
        .filter(|id| s.info(*id).unwrap().spilled)
        .collect();
    assert!(spilled.len() >= 2);
    let path = |id: ObjectId| dir.path().join(format!("{id}.spill"));
    let mut bytes = std::fs::read(path(spilled[0])).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(path(spilled[0]), bytes).unwrap();
    std::fs::remove_file(path(spilled[1])).unwrap();
    let e = s.get(spilled[0], c).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Spill {
                source: SpillError::Corrupt { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("checksum"), "{e}");
    let e = s.get(spilled[1], c).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Spill {
                source: SpillError::Missing(_),
                ..
            }
        ),
        "{e}"
    );
    // The store keeps serving.
    assert_eq!(s.get_bytes(ids[5], c).unwrap(), &pattern(5, 2500)[..]);
}

#[test]
fn os_6_dead_client_references_are_released() {
    let mut s = small_store(None);
    let (owner, reader, writer) = (ClientId(1), ClientId(2), ClientId(3));
    let id = ObjectId::random();
    s.put(id, b"shared", owner, false).unwrap();
    s.get(id, reader).unwrap();
    s.get(id, reader).unwrap();
    let half = ObjectId::random();
    s.create(half, 100, writer, true).unwrap();
    assert_eq!(
        s.release_client(reader),
        ClientCleanup {
            released: 2,
            reclaimed: vec![],
            freed: vec![]
        }
    );
    assert!(s.info(id).is_none(), "unpinned and now unreferenced: freed");
    assert_eq!(s.release_client(writer).reclaimed, vec![half]);
    assert!(s.info(half).is_none());
    assert_eq!(s.stats().free, 8 << 10);
}

#[test]
fn os_4_cached_copies_outlive_their_readers_until_evicted() {
    let mut s = small_store(None);
    let (puller, reader) = (ClientId(0), ClientId(1));
    let id = ObjectId::random();
    s.create_cached(id, 3000, puller).unwrap();
    s.seal(id, puller).unwrap();
    s.get(id, reader).unwrap();
    s.release(id, reader).unwrap();
    assert!(
        s.info(id).is_some(),
        "a cached copy stays after its last reader"
    );
    // Room is needed: the cached copy is evictable.
    s.put(ObjectId::random(), &[1u8; 6000], reader, true)
        .unwrap();
    assert!(s.info(id).is_none());
    assert_eq!(s.stats().evictions, 1);
}

#[test]
fn a_pinned_pulled_copy_is_primary_and_never_evicted() {
    // A draining node hands its primary copies over: the peer pulls them
    // (cached) and pins them.
    let mut s = small_store(None);
    let (puller, writer) = (ClientId(0), ClientId(1));
    let id = ObjectId::random();
    s.create_cached(id, 3000, puller).unwrap();
    s.seal(id, puller).unwrap();
    s.pin(id).unwrap();
    assert!(s.info(id).unwrap().pinned);
    // Room is needed and there is no spill directory: it is not evicted.
    assert!(s
        .put(ObjectId::random(), &[1u8; 6000], writer, true)
        .is_err());
    assert!(s.info(id).is_some());
    assert!(s.pin(ObjectId::random()).is_err(), "an unknown object");
}

#[test]
fn os_1_sealed_objects_refuse_writes() {
    let mut s = small_store(None);
    let c = ClientId(1);
    let id = ObjectId::random();
    s.put(id, b"abc", c, true).unwrap();
    assert!(matches!(
        s.write(id, c, 0, b"x"),
        Err(StoreError::AlreadySealed(_))
    ));
    let other = ObjectId::random();
    s.create(other, 4, c, true).unwrap();
    assert!(matches!(
        s.write(other, ClientId(9), 0, b"x"),
        Err(StoreError::NotWriter { .. })
    ));
    assert!(matches!(
        s.write(other, c, 2, b"xyz"),
        Err(StoreError::OutOfBounds { .. })
    ));
    assert!(matches!(s.get(other, c), Err(StoreError::NotSealed(_))));
}

#[test]
fn get_is_a_view_into_the_segment_whatever_the_size() {
    let mut s = Store::new("prism-view", 64 << 20, None).unwrap();
    let c = ClientId(1);
    for size in [0usize, 1, 1 << 10, 48 << 20] {
        let id = ObjectId::random();
        s.put(id, &vec![7u8; size], c, true).unwrap();
        let base = s.segment().base_addr();
        let view = s.get_bytes(id, c).unwrap();
        let addr = view.as_ptr() as usize;
        assert!(
            addr >= base && addr + size <= base + (64 << 20),
            "view is inside the mapping"
        );
        assert_eq!(addr % ALIGN, 0);
        assert_eq!(view.len(), size);
    }
}
