use super::*;
use proptest::prelude::*;

fn keys(b: u8) -> MaskKeys {
    MaskKeys::new(&[b; 32])
}

fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn back_i64(b: &[u8]) -> Vec<i64> {
    b.chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

proptest! {
    #[test]
    fn ma_1_only_the_named_columns_change(
        rows in proptest::collection::vec(proptest::collection::vec(any::<i64>(), 4), 1..20),
        method in prop_oneof![Just(Mask::Redact), Just(Mask::Hash), Just(Mask::Tokenize)],
    ) {
        let flat: Vec<i64> = rows.concat();
        let mut bytes = i64s(&flat);
        mask(&mut bytes, DType::I64, 4, &[1, 3], method, Some(&keys(1))).unwrap();
        let out = back_i64(&bytes);
        for (i, (a, b)) in flat.iter().zip(&out).enumerate() {
            if i % 4 == 0 || i % 4 == 2 {
                prop_assert_eq!(a, b);
            }
        }
        if method == Mask::Redact {
            prop_assert!(out.iter().skip(1).step_by(2).all(|x| *x == 0));
        }
    }

    #[test]
    fn ma_2_tokens_decode_and_never_collide(v in proptest::collection::hash_set(any::<i64>(), 1..50)) {
        let v: Vec<i64> = v.into_iter().collect();
        let mut bytes = i64s(&v);
        mask(&mut bytes, DType::I64, 1, &[0], Mask::Tokenize, Some(&keys(2))).unwrap();
        let tokens = back_i64(&bytes);
        let distinct: std::collections::HashSet<_> = tokens.iter().collect();
        prop_assert_eq!(distinct.len(), v.len());
        unmask(&mut bytes, DType::I64, 1, &[0], &keys(2)).unwrap();
        prop_assert_eq!(back_i64(&bytes), v);
    }
}

#[test]
fn ma_2_every_width_is_a_permutation() {
    // u8: all 256 values map onto all 256 tokens.
    let mut all: Vec<u8> = (0..=255).collect();
    mask(&mut all, DType::U8, 1, &[0], Mask::Tokenize, Some(&keys(3))).unwrap();
    let mut sorted = all.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..=255).collect::<Vec<u8>>());
    assert_ne!(all, sorted, "a permutation that moves values");
    unmask(&mut all, DType::U8, 1, &[0], &keys(3)).unwrap();
    assert_eq!(all, (0..=255).collect::<Vec<u8>>());
    // i32, negative values included.
    let v: Vec<i32> = vec![-7, 0, 1, i32::MIN, i32::MAX, 123_456];
    let mut b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    mask(
        &mut b,
        DType::I32,
        2,
        &[0, 1],
        Mask::Tokenize,
        Some(&keys(3)),
    )
    .unwrap();
    unmask(&mut b, DType::I32, 2, &[0, 1], &keys(3)).unwrap();
    let back: Vec<i32> = b
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(back, v);
}

#[test]
fn ma_3_hashes_are_stable_per_key_and_differ_across_keys() {
    let v = i64s(&[42, 42, 7]);
    let run = |k: u8, m: Mask| {
        let mut b = v.clone();
        mask(&mut b, DType::I64, 1, &[0], m, Some(&keys(k))).unwrap();
        back_i64(&b)
    };
    let h = run(1, Mask::Hash);
    assert_eq!(h[0], h[1], "equal values, equal hashes (tables join)");
    assert_ne!(h[0], h[2]);
    assert!(h.iter().all(|x| *x >= 0), "{h:?}");
    assert_ne!(h, run(2, Mask::Hash), "another namespace, other hashes");
    assert_ne!(run(1, Mask::Tokenize), run(2, Mask::Tokenize));
    assert_ne!(run(1, Mask::Tokenize), h, "a hash reveals no token");
}

#[test]
fn float_hashes_fall_in_unit_interval_and_treat_zeros_as_one() {
    let v: Vec<f32> = vec![0.0, -0.0, 3.5, f32::NAN, -f32::NAN];
    let mut b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    mask(&mut b, DType::F32, 1, &[0], Mask::Hash, Some(&keys(1))).unwrap();
    let h: Vec<f32> = b
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(h.iter().all(|x| (0.0..1.0).contains(x)), "{h:?}");
    assert_eq!(h[0], h[1]);
    assert_eq!(h[3], h[4]);
    assert_ne!(h[0], h[2]);
}

#[test]
fn bad_requests_are_named() {
    let mut b = vec![0u8; 16];
    let e = mask(&mut b, DType::F32, 2, &[0], Mask::Tokenize, Some(&keys(1))).unwrap_err();
    assert_eq!(
        e,
        "tokenize works on integer columns (i64, i32, u8); these are F32"
    );
    let e = mask(&mut b, DType::I64, 2, &[2], Mask::Redact, None).unwrap_err();
    assert_eq!(e, "column 2 of 2");
    let e = mask(&mut b, DType::I64, 2, &[0], Mask::Hash, None).unwrap_err();
    assert_eq!(e, "hash needs the namespace's masking key");
    let e = mask(&mut b, DType::Bool, 2, &[0], Mask::Hash, Some(&keys(1))).unwrap_err();
    assert!(
        e.starts_with("hash works on integer and float columns"),
        "{e}"
    );
    let e = mask(&mut b, DType::I64, 3, &[0], Mask::Redact, None).unwrap_err();
    assert_eq!(e, "16 bytes are not rows of 3 I64 columns");
    assert!(mask(&mut b, DType::Bool, 2, &[1], Mask::Redact, None).is_ok());
}
