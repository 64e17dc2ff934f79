//! Actors on the embedded cluster: order, concurrency, handles in tasks,
//! names, kills, restarts, GPU isolation. Each test runs a driver (this
//! binary re-executed with PRISM_TEST_ROLE); actors get their own workers.

use prism::{ActorHandle, TaskError};
use prism_test_support::*;
use std::cell::Cell;
use std::time::Duration;

#[prism::actor]
struct Counter {
    n: u64,
    inflight: Cell<u32>,
    max_inflight: Cell<u32>,
}

#[prism::actor]
impl Counter {
    fn new(start: u64) -> Self {
        Counter {
            n: start,
            inflight: Cell::new(0),
            max_inflight: Cell::new(0),
        }
    }
    fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
    fn gpus(&self) -> (String, Vec<u32>) {
        (
            std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default(),
            prism::gpu_ids(),
        )
    }
    fn sleep(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
    /// Counts how many of these run at once.
    async fn overlap(&self, ms: u64) -> u32 {
        self.inflight.set(self.inflight.get() + 1);
        self.max_inflight
            .set(self.max_inflight.get().max(self.inflight.get()));
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.inflight.set(self.inflight.get() - 1);
        self.max_inflight.get()
    }
    fn max_overlap(&mut self) -> u32 {
        self.max_inflight.get()
    }
}

#[prism::remote]
fn square(x: u64) -> u64 {
    x * x
}

#[prism::remote]
fn bump_through(c: ActorHandle<Counter>, times: u64) -> u64 {
    let mut last = 0;
    for _ in 0..times {
        last = c.add(1u64).unwrap().get().unwrap();
    }
    last
}

fn role_order() {
    let _c = prism::init().unwrap();
    let c = Counter::options().name("counter").spawn(0u64).unwrap();
    let refs: Vec<_> = (0..10_000).map(|_| c.add(1u64).unwrap()).collect();
    let got = prism::get_all(&refs).unwrap();
    if let Some(i) = got.iter().enumerate().position(|(i, v)| *v != i as u64 + 1) {
        println!(
            "first mismatch at {i}: {:?}",
            &got[i.saturating_sub(2)..(i + 3).min(got.len())]
        );
    }
    check(
        got == (1..=10_000).collect::<Vec<u64>>(),
        "10,000 calls from one caller run in order",
    );
    // Two callers, each with its own handle, each see increasing values.
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(|| {
                let h: ActorHandle<Counter> = prism::get_actor("counter").unwrap();
                let refs: Vec<_> = (0..500).map(|_| h.add(1u64).unwrap()).collect();
                prism::get_all(&refs).unwrap()
            })
        })
        .collect();
    for t in threads {
        let v = t.join().unwrap();
        check(
            v.windows(2).all(|w| w[0] < w[1]),
            "each caller sees its own order",
        );
    }
    check(
        bump_through::remote(c.clone(), 10u64)
            .unwrap()
            .get()
            .unwrap()
            == 11_010,
        "a handle passed to a task calls the actor",
    );
    match Counter::options()
        .name("counter")
        .spawn(0u64)
        .unwrap()
        .ready()
    {
        Err(prism::Error::Task(TaskError::NameTaken { detail, .. })) => check(
            detail.contains("already exists"),
            "a duplicate name is refused",
        ),
        other => panic!("duplicate name: {other:?}"),
    }
    // max_concurrency = 4: four async calls overlap.
    let a = Counter::options().max_concurrency(4).spawn(0u64).unwrap();
    let refs: Vec<_> = (0..8).map(|_| a.overlap(300u64).unwrap()).collect();
    prism::get_all(&refs).unwrap();
    check(
        a.max_overlap().unwrap().get().unwrap() == 4,
        "an async actor with max_concurrency 4 runs 4 calls at once",
    );
    // `.await` on refs from a runtime of the caller's own: the ref must
    // stay owned until its value is read (it once was released first, and
    // the await hung).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let awaited = rt.block_on(async {
        let limit = Duration::from_secs(30);
        let call = tokio::time::timeout(limit, c.add(1u64).unwrap()).await;
        let task = tokio::time::timeout(limit, square::remote(7u64).unwrap()).await;
        (
            call.ok().and_then(|r| r.ok()),
            task.ok().and_then(|r| r.ok()),
        )
    });
    check(
        awaited.0.is_some() && awaited.1 == Some(49),
        &format!("actor calls and tasks can be awaited ({awaited:?})"),
    );
    let s = Counter::spawn_default();
    let refs: Vec<_> = (0..3).map(|_| s.overlap(100u64).unwrap()).collect();
    prism::get_all(&refs).unwrap();
    check(
        s.max_overlap().unwrap().get().unwrap() == 1,
        "a default actor runs one call at a time",
    );
    println!("ALL OK");
}

impl Counter {
    fn spawn_default() -> ActorHandle<Counter> {
        Counter::options().spawn(0u64).unwrap()
    }
}

fn role_restart() {
    let _c = prism::init().unwrap();
    // max_restarts = 0: a pending call fails with the signal.
    let c = Counter::options().spawn(5u64).unwrap();
    let pid = c.pid().unwrap().get().unwrap();
    let pending = c.sleep(5_000u64).unwrap();
    // SAFETY: kill(2) on the actor's worker, a process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    match pending.get() {
        Err(prism::Error::Task(TaskError::ActorDied { detail, .. })) => {
            check(detail.contains("signal 9"), "ActorDied carries the signal")
        }
        other => panic!("pending call: {other:?}"),
    }
    check(
        matches!(
            c.add(1u64).unwrap().get(),
            Err(prism::Error::Task(TaskError::ActorDied { .. }))
        ),
        "later calls fail too",
    );
    // max_restarts = 1: it comes back with its constructor re-run.
    // max_task_retries(1): a call sent while the death is not yet noticed is re-sent.
    let r = Counter::options()
        .max_restarts(1)
        .max_task_retries(1)
        .spawn(100u64)
        .unwrap();
    r.add(5u64).unwrap().get().unwrap();
    let pid = r.pid().unwrap().get().unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let after = r.add(1u64).unwrap().get().unwrap();
    check(
        after == 101,
        "restarted: the constructor ran again and calls succeed",
    );
    check(r.pid().unwrap().get().unwrap() != pid, "on a new worker");
    // kill(no_restart) ends it for good.
    prism::kill(&r, true).unwrap();
    match r.add(1u64).unwrap().get() {
        Err(prism::Error::Task(TaskError::ActorDied { detail, .. })) => {
            check(detail.contains("killed"), "a killed actor says so")
        }
        other => panic!("after kill: {other:?}"),
    }
    // Killed while their workers are still being spawned (more than the
    // idle workers there are): none of them runs.
    let early: Vec<_> = (0..6)
        .map(|_| {
            Counter::options()
                .num_cpus(0.0)
                .max_restarts(2)
                .spawn(7u64)
                .unwrap()
        })
        .collect();
    for a in &early {
        prism::kill(a, true).unwrap();
    }
    for a in &early {
        match a.add(1u64).unwrap().get() {
            Err(prism::Error::Task(TaskError::ActorDied { detail, .. })) => check(
                detail.contains("killed"),
                "an actor killed as its worker starts says so",
            ),
            other => panic!("an actor killed as its worker started still ran: {other:?}"),
        }
    }
    println!("ALL OK");
}

fn role_gpus() {
    let _c = prism::InitOptions::new().num_gpus(2).init().unwrap();
    let a = Counter::options().num_gpus(1.0).spawn(0u64).unwrap();
    let b = Counter::options().num_gpus(1.0).spawn(0u64).unwrap();
    let (ga, gb) = (
        a.gpus().unwrap().get().unwrap(),
        b.gpus().unwrap().get().unwrap(),
    );
    check(
        ga.0 != gb.0 && ga.1.len() == 1 && gb.1.len() == 1,
        "two GPU actors get different GPU indices",
    );
    let c = Counter::options().num_gpus(1.0).spawn(0u64).unwrap();
    let waiting = c.gpus().unwrap();
    check(
        matches!(
            waiting.get_timeout(Duration::from_millis(1_500)),
            Err(prism::Error::Timeout { .. })
        ),
        "a third GPU actor waits",
    );
    prism::kill(&a, true).unwrap();
    let gc = waiting.get_timeout(Duration::from_secs(30)).unwrap();
    check(
        gc.0 == ga.0,
        "it runs on the freed GPU once the first is killed",
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
        "order" => role_order(),
        "restart" => role_restart(),
        "gpus" => role_gpus(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn actor_calls_keep_order_names_handles_and_concurrency() {
    run_role("order", Duration::from_secs(180));
}

#[test]
fn actor_killed_worker_restarts_or_fails_with_its_signal() {
    run_role("restart", Duration::from_secs(180));
}

#[test]
fn actor_gpus_are_distinct_and_a_third_waits_for_a_free_one() {
    run_role("gpus", Duration::from_secs(180));
}
