//! Jobs: their end takes their groups; a stop signals the driver.

use super::*;

#[test]
fn a_job_that_ends_takes_its_groups_and_a_stop_signals_its_driver() {
    let mut sim = Sim::new();
    let _a = sim.node("a", 2);
    let job = JobId::random();
    let create = one_cpu_group(job);
    let pg = create.pg;
    let _ = sim
        .core
        .handle(sim.now, Caller::Client, pg_req(PgRequest::Create(create)));
    sim.run();
    let driver = HeadRequest::RegisterDriver {
        job_id: job,
        entrypoint: "./job".into(),
        pid: 42,
    };
    let _ = sim.core.handle(sim.now, Caller::Client, driver);
    sim.core.driver_gone(sim.now, job);
    sim.run();
    assert_eq!(sim.group(pg).state, PgState::Removed);
    assert!(sim.core.status(sim.now).ended_jobs.contains(&job));

    let sub = JobSubmission {
        hash: [1; 32],
        name: "job".into(),
        args: vec![],
        env: vec![],
        namespace: String::new(),
        demand: Default::default(),
        priority: 0,
        spot: false,
    };
    let id = JobId::random();
    assert_eq!(
        sim.core.submit_job(sim.now, Caller::Client, id, sub),
        HeadResponse::JobSubmitted { job_id: id }
    );
    assert!(matches!(sim.core.poll_effect(), Some(Effect::StartJob { job, .. }) if job == id));
    sim.core.job_started(id, 77);
    let stop = HeadRequest::StopJob { job_id: id };
    assert_eq!(
        sim.core.handle(sim.now, Caller::Client, stop),
        Reply::Now(HeadResponse::Ok)
    );
    assert!(matches!(
        sim.core.poll_effect(),
        Some(Effect::SignalJob { pid: 77, .. })
    ));
}
