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
