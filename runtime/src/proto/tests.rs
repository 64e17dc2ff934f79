//! Codec properties: round trips, truncation, garbage never panics.

use super::codec::*;
use super::common::{ResourceEntry, Resources};
use super::head::{HeadRequest, HeadResponse, PeerRole, RegisterNode};
use crate::ids::NodeId;
use proptest::prelude::*;

const MAX: usize = 1 << 20;

fn request() -> impl Strategy<Value = HeadRequest> {
    prop_oneof![
        (any::<Option<String>>()).prop_map(|token| HeadRequest::Hello {
            version: PROTOCOL_VERSION,
            role: PeerRole::Raylet,
            token
        }),
        any::<String>().prop_map(|node_name| HeadRequest::Join { node_name }),
        (
            any::<[u8; 16]>(),
            proptest::collection::vec((any::<String>(), any::<i64>()), 0..5)
        )
            .prop_map(|(id, r)| HeadRequest::Heartbeat {
                node_id: NodeId(id),
                available: Resources(
                    r.into_iter()
                        .map(|(name, raw)| ResourceEntry { name, raw })
                        .collect()
                ),
                leased: Resources::default(),
                demand: vec![crate::proto::common::Demand {
                    node_id: NodeId(id),
                    shape: Resources::default(),
                    count: 1,
                    infeasible: Some("no node has 1 unicorn".into()),
                }],
            }),
        (
            any::<String>(),
            any::<String>(),
            proptest::collection::vec((any::<String>(), any::<String>()), 0..4),
            any::<u32>()
        )
            .prop_map(|(n, a, labels, pid)| {
                HeadRequest::Register(RegisterNode {
                    node_name: n,
                    address: a,
                    resources: Resources::default(),
                    labels,
                    gpus: vec![],
                    is_head: false,
                    pid,
                })
            }),
        Just(HeadRequest::GetStatus),
        (any::<[u8; 16]>(), any::<String>(), any::<String>()).prop_map(|(j, namespace, name)| {
            HeadRequest::Relayed {
                job: Some(crate::ids::JobId(j)),
                request: crate::proto::head::RelayedRequest::NamedActor { namespace, name },
            }
        }),
    ]
}

proptest! {
    #[test]
    fn p_round_trip(msg in request()) {
        let frame = encode(&msg).unwrap();
        let back: HeadRequest = decode_frame(&frame, MAX).unwrap();
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn p_1_truncated_frames_are_typed_errors(msg in request(), cut in 0usize..200) {
        let frame = encode(&msg).unwrap();
        let cut = cut % frame.len();
        let r = decode_frame::<HeadRequest>(&frame[..cut], MAX);
        prop_assert!(matches!(r, Err(CodecError::Truncated { .. })), "{:?}", r);
    }

    #[test]
    fn p_1_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame::<HeadRequest>(&bytes, MAX);
        let _ = decode_payload::<HeadResponse>(&bytes);
    }

    #[test]
    fn p_1_random_payload_behind_a_valid_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut frame = header(bytes.len() as u32).to_vec();
        frame.extend_from_slice(&bytes);
        let _ = decode_frame::<HeadRequest>(&frame, MAX);
    }

    #[test]
    fn p_1_flipped_bits_never_panic(msg in request(), pos in any::<usize>(), bit in 0u8..8) {
        let mut frame = encode(&msg).unwrap();
        let i = HEADER_LEN + pos % (frame.len() - HEADER_LEN).max(1);
        if i < frame.len() {
            frame[i] ^= 1 << bit;
        }
        let _ = decode_frame::<HeadRequest>(&frame, MAX);
    }
}

#[test]
fn p_1_header_errors_are_typed() {
    let frame = encode(&HeadRequest::GetStatus).unwrap();
    let mut bad = frame.clone();
    bad[0] = b'X';
    assert!(matches!(
        decode_frame::<HeadRequest>(&bad, MAX),
        Err(CodecError::BadMagic(_))
    ));
    let mut v2 = frame.clone();
    v2[2] = 99;
    assert_eq!(
        decode_frame::<HeadRequest>(&v2, MAX),
        Err(CodecError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: 99
        })
    );
    let mut big = frame.clone();
    big[4..8].copy_from_slice(&(MAX as u32 + 1).to_le_bytes());
    assert!(matches!(
        decode_frame::<HeadRequest>(&big, MAX),
        Err(CodecError::FrameTooLarge { .. })
    ));
    let garbage = b"GET / HTTP/1.1\r\n\r\n";
    assert!(decode_frame::<HeadRequest>(garbage, MAX).is_err());
}

#[test]
fn p_2_a_malformed_archive_says_what_failed_to_validate() {
    let mut frame = encode(&HeadRequest::Join {
        node_name: "n".into(),
    })
    .unwrap();
    // An enum tag no variant has.
    let last = frame.len() - 1;
    for b in &mut frame[HEADER_LEN..] {
        *b = 0xff;
    }
    frame[last] = 0xff;
    let e = decode_frame::<HeadRequest>(&frame, MAX).unwrap_err();
    let text = e.to_string();
    println!("{text}");
    assert!(matches!(e, CodecError::Malformed(_)), "{e:?}");
    assert!(
        !text.contains("without error information"),
        "the error names the check that failed: {text}"
    );
    assert!(text.contains("HeadRequest"), "and the message type: {text}");
}

/// Every request enum that crosses a socket, under the same properties as
/// the head's: round trip, truncation is a typed error, random bytes and
/// flipped bits never panic.
mod every_request {
    use super::super::codec::*;
    use super::super::common::Resources;
    use super::super::placement::{BundleOp, BundleSpec, PgRequest};
    use super::super::raylet::PeerRequest;
    use super::super::state::StateQuery;
    use super::super::store::StoreRequest;
    use super::super::task::{
        ActorCall, ArgSpec, JobSpec, LocalRequest, Outcome, PeerSubmit, ReplyTo, TaskKind,
        TaskSpec, WireStrategy,
    };
    use crate::ids::{ActorId, HandleId, JobId, NodeId, PlacementGroupId, TaskId};
    use prism_objectstore::ObjectId;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    fn job() -> impl Strategy<Value = JobSpec> {
        (
            any::<[u8; 16]>(),
            ".{0,20}",
            any::<[u8; 32]>(),
            any::<u64>(),
        )
            .prop_map(|(id, binary, hash, len)| JobSpec {
                job_id: JobId(id),
                binary,
                binary_hash: hash,
                binary_len: len,
                cwd: "/tmp".into(),
                env: vec![("PRISM_X".into(), "1".into())],
                driver_node: None,
            })
    }

    fn spec() -> impl Strategy<Value = TaskSpec> {
        (
            any::<[u8; 16]>(),
            ".{0,12}",
            proptest::collection::vec(any::<u8>(), 0..40),
            any::<[u8; 16]>(),
            0u8..3,
            any::<u32>(),
            any::<bool>(),
        )
            .prop_map(|(id, name, inline, obj, kind, retries, spilled)| {
                let kind = match kind {
                    0 => TaskKind::Task,
                    _ => TaskKind::ActorCall(ActorCall {
                        actor_id: ActorId(id),
                        caller: HandleId(obj),
                        seq: u64::from(retries),
                    }),
                };
                let mut t = TaskSpec::new(TaskId(id), JobId(obj), &name, &name, kind);
                t.args = vec![ArgSpec::Inline(inline), ArgSpec::Object(ObjectId(obj))];
                t.max_retries = retries;
                t.spilled = spilled;
                t.strategy = if spilled {
                    WireStrategy::NodeAffinity {
                        node: NodeId(obj),
                        soft: true,
                    }
                } else {
                    WireStrategy::Labels(name)
                };
                t
            })
    }

    fn local() -> impl Strategy<Value = LocalRequest> {
        prop_oneof![
            job().prop_map(|job| LocalRequest::HelloDriver {
                version: PROTOCOL_VERSION,
                job
            }),
            any::<u64>().prop_map(|worker_id| LocalRequest::HelloWorker {
                version: PROTOCOL_VERSION,
                worker_id
            }),
            spec().prop_map(LocalRequest::Submit),
            (any::<[u8; 16]>(), any::<bool>()).prop_map(|(t, force)| LocalRequest::Cancel {
                task_id: TaskId(t),
                force
            }),
            (
                any::<[u8; 16]>(),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(t, b)| LocalRequest::Done {
                    task_id: TaskId(t),
                    outcome: Outcome::Inline(b)
                }),
            (any::<[u8; 16]>(), ".{0,10}").prop_map(|(t, name)| LocalRequest::LookupActor {
                request_id: TaskId(t),
                name,
                namespace: "default".into()
            }),
            (any::<[u8; 16]>(), any::<u64>()).prop_map(|(t, ms)| LocalRequest::PlacementGroup {
                request_id: TaskId(t),
                request: PgRequest::Wait {
                    pg: PlacementGroupId(t),
                    timeout_ms: ms
                }
            }),
            Just(LocalRequest::Blocked),
            (any::<[u8; 16]>(), any::<u64>(), any::<[u8; 16]>()).prop_map(|(n, conn, o)| {
                LocalRequest::HeldFor {
                    owner: ReplyTo {
                        node: NodeId(n),
                        conn,
                    },
                    results: vec![ObjectId(o)],
                }
            }),
        ]
    }

    fn peer() -> impl Strategy<Value = PeerRequest> {
        prop_oneof![
            (any::<[u8; 16]>(), any::<u64>(), any::<u64>()).prop_map(|(o, offset, len)| {
                PeerRequest::Pull {
                    object: ObjectId(o),
                    offset,
                    len,
                }
            }),
            (job(), spec(), any::<[u8; 16]>()).prop_map(|(job, task, to)| PeerRequest::Submit {
                to: NodeId(to),
                task: Box::new(PeerSubmit { job, task }),
            }),
            any::<[u8; 16]>().prop_map(|a| PeerRequest::ActorStream {
                actor_id: ActorId(a)
            }),
            (any::<[u8; 16]>(), any::<u32>(), ".{0,10}").prop_map(|(pg, i, reason)| {
                PeerRequest::Bundles {
                    to: NodeId(pg),
                    ops: vec![
                        BundleOp::Prepare {
                            pg: PlacementGroupId(pg),
                            bundles: vec![BundleSpec {
                                index: i,
                                resources: Resources::default(),
                            }],
                            commit: i % 2 == 0,
                        },
                        BundleOp::Return {
                            pg: PlacementGroupId(pg),
                            reason,
                            only: vec![i],
                        },
                    ],
                }
            }),
            Just(PeerRequest::State(StateQuery::Tasks)),
            (any::<[u8; 16]>(), any::<u64>(), any::<[u8; 16]>()).prop_map(|(n, conn, o)| {
                PeerRequest::HeldFor {
                    holder: ReplyTo {
                        node: NodeId(n),
                        conn,
                    },
                    owner_conn: conn ^ 1,
                    results: vec![ObjectId(o)],
                }
            }),
            (any::<[u8; 16]>(), any::<u64>(), any::<[u8; 16]>()).prop_map(|(n, conn, o)| {
                PeerRequest::ReleaseHeld {
                    from: NodeId(n),
                    conn,
                    results: vec![ObjectId(o)],
                }
            }),
        ]
    }

    fn store() -> impl Strategy<Value = StoreRequest> {
        prop_oneof![
            any::<u32>().prop_map(|pid| StoreRequest::Hello { pid }),
            (
                any::<[u8; 16]>(),
                any::<u64>(),
                any::<bool>(),
                any::<bool>(),
                any::<u64>()
            )
                .prop_map(|(id, size, pinned, owned, timeout_ms)| {
                    StoreRequest::Create {
                        id: ObjectId(id),
                        size,
                        pinned,
                        owned,
                        timeout_ms,
                    }
                }),
            (any::<[u8; 16]>(), any::<u64>()).prop_map(|(id, timeout_ms)| StoreRequest::Get {
                id: ObjectId(id),
                timeout_ms
            }),
            any::<[u8; 16]>().prop_map(|id| StoreRequest::Seal { id: ObjectId(id) }),
            Just(StoreRequest::Stats),
            (
                any::<[u8; 16]>(),
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(id, pinned, data)| StoreRequest::PutSmall {
                    id: ObjectId(id),
                    pinned,
                    owned: !pinned,
                    timeout_ms: 7,
                    data,
                }),
        ]
    }

    macro_rules! codec_properties {
        ($module:ident, $ty:ty, $gen:expr) => {
            mod $module {
                use super::*;

                proptest! {
                    #[test]
                    fn round_trip(msg in $gen) {
                        let frame = encode(&msg).unwrap();
                        let back: $ty = decode_frame(&frame, MAX).unwrap();
                        prop_assert_eq!(back, msg);
                    }

                    #[test]
                    fn truncated_frames_are_typed_errors(msg in $gen, cut in 0usize..400) {
                        let frame = encode(&msg).unwrap();
                        let cut = cut % frame.len();
                        let r = decode_frame::<$ty>(&frame[..cut], MAX);
                        prop_assert!(matches!(r, Err(CodecError::Truncated { .. })), "{:?}", r);
                        let mut reader = &frame[..cut];
                        let r = read_frame::<$ty>(&mut reader, MAX);
                        prop_assert!(
                            cut == 0 && matches!(r, Ok(None))
                                || matches!(&r, Err(ReadError::Codec(CodecError::Truncated { got, .. })) if *got == cut as u64),
                            "{:?}", r
                        );
                    }

                    #[test]
                    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                        let _ = decode_payload::<$ty>(&bytes);
                        let mut frame = header(bytes.len() as u32).to_vec();
                        frame.extend_from_slice(&bytes);
                        let _ = decode_frame::<$ty>(&frame, MAX);
                    }

                    #[test]
                    fn flipped_bits_never_panic(msg in $gen, pos in any::<usize>(), bit in 0u8..8) {
                        let mut frame = encode(&msg).unwrap();
                        let i = HEADER_LEN + pos % (frame.len() - HEADER_LEN).max(1);
                        if i < frame.len() {
                            frame[i] ^= 1 << bit;
                        }
                        let _ = decode_frame::<$ty>(&frame, MAX);
                    }
                }
            }
        };
    }

    codec_properties!(local_request, LocalRequest, local());
    codec_properties!(peer_request, PeerRequest, peer());
    codec_properties!(store_request, StoreRequest, store());
}
