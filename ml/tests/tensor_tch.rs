//! tch tensors through the object store: zero-copy reads over the shared
//! segment, exact dtype/shape round trips, and a worker reading a driver's
//! tensor. Runs a driver role on a real embedded cluster.

use prism::{ObjectRef, Tensor};
use prism_test_support::*;
use std::time::Duration;
use tch::{Device, Kind};

/// A worker's view of a stored tensor: (sum as f64, shape, data inside the segment).
#[prism::remote]
fn worker_sum(r: ObjectRef<Tensor>) -> (f64, Vec<i64>, bool) {
    let t = prism_ml::tensor::get(&r).expect("get in a worker");
    let addr = t.data_ptr() as usize;
    (
        t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]),
        t.size(),
        t.view().segment_range().contains(&addr),
    )
}

fn role_tensor() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    tch::manual_seed(1);
    let cases: Vec<(&str, tch::Tensor)> = vec![
        (
            "f32 [4, 5]",
            tch::Tensor::randn([4, 5], (Kind::Float, Device::Cpu)),
        ),
        (
            "f64 [2, 3, 4]",
            tch::Tensor::randn([2, 3, 4], (Kind::Double, Device::Cpu)),
        ),
        (
            "i64 [10]",
            tch::Tensor::arange(10, (Kind::Int64, Device::Cpu)) - 3,
        ),
        (
            "i32 [3, 1]",
            tch::Tensor::from_slice(&[7i32, -8, 9]).view([3, 1]),
        ),
        (
            "u8 [2, 2, 2]",
            tch::Tensor::arange(8, (Kind::Uint8, Device::Cpu)).view([2, 2, 2]),
        ),
        (
            "bool [5]",
            tch::Tensor::from_slice(&[true, false, true, true, false]),
        ),
        (
            "f16 [6]",
            tch::Tensor::randn([6], (Kind::Half, Device::Cpu)),
        ),
        (
            "bf16 [2, 3]",
            tch::Tensor::randn([2, 3], (Kind::BFloat16, Device::Cpu)),
        ),
        ("f32 scalar", tch::Tensor::from(2.5f32)),
        (
            "f32 [0, 3]",
            tch::Tensor::zeros([0, 3], (Kind::Float, Device::Cpu)),
        ),
        (
            "f32 [300, 1000]",
            tch::Tensor::randn([300, 1000], (Kind::Float, Device::Cpu)),
        ),
    ];
    for (name, t) in &cases {
        let r = prism_ml::tensor::put(t).unwrap();
        let got = prism_ml::tensor::get(&r).unwrap();
        check(
            got.kind() == t.kind() && got.size() == t.size() && got.equal(t),
            &format!("{name}: kind, shape and values round-trip"),
        );
        if t.numel() > 0 {
            let addr = got.data_ptr() as usize;
            let range = got.view().segment_range();
            let end = addr + t.numel() * t.kind().elt_size_in_bytes() - 1;
            check(
                range.contains(&addr)
                    && range.contains(&end)
                    && addr == got.view().as_ptr() as usize,
                &format!(
                    "{name}: the tch tensor's data lies inside the shared segment (zero copy)"
                ),
            );
        }
    }
    // Non-contiguous input is stored contiguous, values intact.
    let base = tch::Tensor::arange(12, (Kind::Float, Device::Cpu)).view([3, 4]);
    let transposed = base.transpose(0, 1);
    check(
        !transposed.is_contiguous(),
        "a transposed tensor is not contiguous",
    );
    let r = prism_ml::tensor::put(&transposed).unwrap();
    let got = prism_ml::tensor::get(&r).unwrap();
    check(
        got.equal(&transposed) && got.is_contiguous() && got.size() == [4, 3],
        "a non-contiguous tensor round-trips as a contiguous one",
    );
    // to_device copies out of the segment.
    let owned = prism_ml::tensor::get_to_device(&r, Device::Cpu).unwrap();
    let addr = owned.data_ptr() as usize;
    check(
        owned.equal(&transposed) && !got.view().segment_range().contains(&addr),
        "get_to_device(Cpu) returns a copy that owns its memory",
    );
    // A worker reads the driver's tensor in place.
    let big = &cases.last().unwrap().1;
    let r = prism_ml::tensor::put(big).unwrap();
    let (sum, size, in_place) = worker_sum::remote(r.clone()).unwrap().get().unwrap();
    let want = big
        .to_kind(Kind::Double)
        .sum(Kind::Double)
        .double_value(&[]);
    check(
        (sum - want).abs() < 1e-6 * want.abs().max(1.0) && size == [300, 1000] && in_place,
        "a worker reads the driver's tch tensor in place with the right values",
    );
    println!("ALL OK");
}

#[test]
#[ignore = "a driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE")
        .expect("run by the tests in this file")
        .as_str()
    {
        "tensor" => role_tensor(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn tensor_tch_zero_copy_and_round_trips() {
    run_role("tensor", Duration::from_secs(120));
}
