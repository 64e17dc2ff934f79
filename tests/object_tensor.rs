//! Tensor objects read in place: `prism::put_tensor` / `prism::get_tensor`
//! across real processes — the driver, its embedded raylet's workers, and
//! a worker on another node of a real `prism start` cluster (pulled first).
//! Each test runs a driver (this binary re-executed with PRISM_TEST_ROLE).

use prism::{DType, ObjectRef, Tensor};
use prism_test_support::*;
use std::time::Duration;

/// What a worker saw of a tensor: (dtype, shape, checksum of the f32 data,
/// data inside the view's segment range, data inside a memfd store mapping,
/// node id).
type Seen = (String, Vec<u64>, f64, bool, bool, String);

/// The name of the mapping of this process that contains `addr`.
fn mapping_name(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (lo, hi) = f.first()?.split_once('-')?;
            let lo = usize::from_str_radix(lo, 16).ok()?;
            let hi = usize::from_str_radix(hi, 16).ok()?;
            (lo <= addr && addr < hi).then(|| f.get(5..).map(|p| p.join(" ")).unwrap_or_default())
        })
        .unwrap_or_default()
}

fn inspect(view: &prism::TensorView) -> Seen {
    let addr = view.as_ptr() as usize;
    let range = view.segment_range();
    let sum: f64 = view
        .as_slice::<f32>()
        .map(|s| s.iter().map(|x| *x as f64).sum())
        .unwrap_or(f64::NAN);
    (
        format!("{:?}", view.dtype()),
        view.shape().to_vec(),
        sum,
        range.contains(&addr) && range.contains(&(addr + view.data().len() - 1)),
        mapping_name(addr).contains("memfd:prism-store"),
        prism::node_id().map(|n| n.to_string()).unwrap_or_default(),
    )
}

/// Reads a tensor through a ref nested in its argument, in place.
#[prism::remote]
fn read_in_place(t: ObjectRef<Tensor>) -> Seen {
    inspect(&prism::get_tensor(&t).expect("get_tensor in a worker"))
}

/// A top-level tensor argument resolves to an owned copy.
#[prism::remote]
fn owned_sum(t: Tensor) -> f64 {
    t.to_vec::<f32>().unwrap().iter().map(|x| *x as f64).sum()
}

/// Returns an `n`-element f32 tensor 0, 1, 2, ...
#[prism::remote]
fn make(n: u64) -> Tensor {
    let v: Vec<f32> = (0..n).map(|i| i as f32).collect();
    Tensor::from_slice(&[n], &v).unwrap()
}

fn f32_bytes(n: usize) -> (Vec<u8>, f64) {
    let v: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5).collect();
    let sum = v.iter().map(|x| *x as f64).sum();
    (v.iter().flat_map(|x| x.to_le_bytes()).collect(), sum)
}

fn role_local() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let (bytes, sum) = f32_bytes(3 * 100_000);
    let r = prism::put_tensor(DType::F32, &[3, 100_000], &bytes).unwrap();
    {
        let v = prism::get_tensor(&r).unwrap();
        let seen = inspect(&v);
        check(
            seen.3 && seen.4,
            "the driver's view is inside the store's memfd segment",
        );
        check(
            v.data() == &bytes[..],
            "the driver reads back the exact bytes",
        );
        check(
            (v.as_ptr() as usize).is_multiple_of(64),
            "tensor data is 64-byte aligned",
        );
        check(v.strides() == [100_000, 1], "row-major strides");
    }
    let seen = read_in_place::remote(r.clone()).unwrap().get().unwrap();
    check(
        seen.0 == "F32" && seen.1 == vec![3, 100_000] && seen.2 == sum,
        "a worker reads the driver's tensor with the right dtype, shape and bytes",
    );
    check(
        seen.3 && seen.4,
        "the worker's view is inside its mapping of the store segment",
    );
    check(
        owned_sum::remote(&r).unwrap().get().unwrap() == sum,
        "a tensor ref as a top-level argument",
    );
    check(
        matches!(
            prism::get_tensor(&r).unwrap().as_slice::<i64>(),
            Err(prism::Error::Object(_))
        ),
        "reading as the wrong dtype is an error",
    );
    check(
        prism::put_tensor(DType::F32, &[3, 3], &[0u8; 8]).is_err(),
        "a shape that does not fit the bytes is refused",
    );
    // Task results, small (inline: copied into the store for the view) and large.
    for n in [10u64, 200_000] {
        let made = make::remote(n).unwrap();
        let v = prism::get_tensor(&made).unwrap();
        let got = v.as_slice::<f32>().unwrap();
        check(
            v.shape() == [n] && got.len() == n as usize && got[n as usize - 1] == (n - 1) as f32,
            &format!("get_tensor of a {n}-element task result"),
        );
        check(inspect(&v).3, "a task result's view is in the segment");
    }
    // Every dtype and odd shapes, including empty and scalar.
    for (dtype, shape) in [
        (DType::F64, vec![2u64, 3, 4]),
        (DType::I64, vec![7]),
        (DType::I32, vec![1, 1, 1, 5]),
        (DType::U8, vec![13, 3]),
        (DType::Bool, vec![4]),
        (DType::F16, vec![2, 2]),
        (DType::BF16, vec![3]),
        (DType::F32, vec![0, 5]),
        (DType::F32, vec![]),
    ] {
        let n: u64 = shape.iter().product();
        let data: Vec<u8> = (0..n as usize * dtype.size())
            .map(|i| (i % 2) as u8)
            .collect();
        let r = prism::put_tensor(dtype, &shape, &data).unwrap();
        let v = prism::get_tensor(&r).unwrap();
        check(
            v.dtype() == dtype && v.shape() == shape && v.data() == &data[..],
            &format!("{dtype:?} {shape:?} round-trips"),
        );
        check(
            r.get().unwrap().data() == &data[..],
            "ObjectRef<Tensor>::get copies it out",
        );
    }
    println!("ALL OK");
}

fn role_remote() {
    let _c = prism::init().unwrap();
    let here = prism::node_id().unwrap().to_string();
    let (bytes, sum) = f32_bytes(2 * 300_000);
    let r = prism::put_tensor(DType::F32, &[2, 300_000], &bytes).unwrap();
    let seen = read_in_place::options()
        .num_cpus(0.0)
        .resource("far", 1.0)
        .remote(r.clone())
        .unwrap()
        .get()
        .unwrap();
    check(
        seen.5 != here && !seen.5.is_empty(),
        "the reader ran on the other node",
    );
    check(
        seen.1 == vec![2, 300_000] && seen.2 == sum,
        "a tensor put on one node is pulled and read with the right bytes on another",
    );
    check(
        seen.3 && seen.4,
        "the remote view is inside that node's store segment",
    );
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE")
        .expect("run by the tests in this file")
        .as_str()
    {
        "local" => role_local(),
        "remote" => role_remote(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn object_tensor_put_get_in_place_across_processes() {
    run_role("local", Duration::from_secs(120));
}

#[test]
fn object_tensor_pulled_from_another_node() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let a = sb.start_raylet("a", &head, &["--num-cpus", "1"]);
    let b = sb.start_raylet(
        "b",
        &head,
        &["--num-cpus", "1", "--resources", r#"{"far": 1}"#],
    );
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 2));
    let mut job = Job::spawn("remote", &sb.driver_envs(&head, &a));
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(
        ok && out.contains("ALL OK"),
        "{out}\n--- a:\n{}\n--- b:\n{}",
        a.log(),
        b.log()
    );
}
