//! What a caller who sees some namespaces only may see in a listing
//! (AC-4). Pure: the head core builds a [`Visibility`] from the caller's
//! principal and the job table; the shell applies it to the rows the
//! raylets send back, and asks it before reading a worker's log.
//!
//! - **AC-4** a user or viewer granted some namespaces (not `*`) sees the
//!   jobs, actors, tasks, workers, objects, placement groups, training
//!   runs, models, users' metrics and queued jobs of those namespaces
//!   only, and reads the logs of
//!   their workers only. A row whose job the head does not know (or no
//!   longer keeps) is not theirs to see. Actors go by their own
//!   namespace, objects by the job of the process that created the copy,
//!   noted when it did (a copy the raylet made itself, pulled from a peer,
//!   has none, and is seen by those who see everything only), the rest by
//!   their job's.
//!
//! Users' metrics go by the job of the processes that recorded them (a
//! task worker's job is that of the task it ran last). Cluster-wide
//! still, for want of a job in their rows: the node table with its demand
//! and the nodes' own metrics (store, tasks, leases).

use super::{Denied, Principal};
use crate::ids::JobId;
use crate::proto::head::HeadResponse;
use std::collections::HashMap;

/// The rows a restricted caller may see.
#[derive(Debug, Clone, PartialEq)]
pub struct Visibility {
    who: Principal,
    /// Each known job's namespace.
    namespace_of: HashMap<JobId, String>,
}

impl Visibility {
    /// What `who` sees among jobs with these namespaces; `None` when it
    /// sees everything (granted `*`).
    pub fn new(
        who: Principal,
        jobs: impl IntoIterator<Item = (JobId, String)>,
    ) -> Option<Visibility> {
        if who.namespaces.iter().any(|n| n == "*") {
            return None;
        }
        Some(Visibility {
            who,
            namespace_of: jobs.into_iter().collect(),
        })
    }

    /// Whether `job`'s rows are the caller's to see.
    pub fn sees(&self, job: JobId) -> bool {
        self.namespace_of
            .get(&job)
            .is_some_and(|ns| self.who.in_namespace(ns))
    }

    /// The jobs the caller sees (for a filter pushed down to raylets).
    pub fn jobs(&self) -> Vec<JobId> {
        let mut v: Vec<JobId> = self
            .namespace_of
            .iter()
            .filter(|(_, ns)| self.who.in_namespace(ns))
            .map(|(id, _)| *id)
            .collect();
        v.sort();
        v
    }

    /// AC-2 for a row of `job`: the refusal to `what`, if it is not theirs.
    pub fn refusal(&self, what: &str, job: JobId) -> Option<Denied> {
        if self.sees(job) {
            return None;
        }
        let ns = self.namespace_of.get(&job);
        let why = match ns {
            Some(ns) => format!("namespace {ns} was not granted to {}", self.who.name),
            None => format!("job {job} is not one the head knows"),
        };
        Some(Denied {
            message: format!(
                "{}: {why}",
                super::refusal(&self.who, what, ns.map(String::as_str))
            ),
        })
    }

    /// AC-4 for a worker's log: the refusal to `what`, unless every job
    /// the worker served (`jobs`, as its raylet remembers them) is the
    /// caller's to see. A worker nobody remembers is refused too: whose
    /// log it is cannot be told.
    pub fn refusal_for_log(&self, what: &str, jobs: &[JobId]) -> Option<Denied> {
        if jobs.is_empty() {
            return Some(Denied {
                message: format!(
                    "{}: its node knows no worker or task of that pid any more, so whose log it \
                     is cannot be told",
                    super::refusal(&self.who, what, None)
                ),
            });
        }
        jobs.iter().find_map(|j| self.refusal(what, *j))
    }

    /// Whether [`Visibility::scope`] may change `resp` (else nobody need
    /// build a visibility for it).
    pub fn concerns(resp: &HeadResponse) -> bool {
        matches!(
            resp,
            HeadResponse::Jobs(_)
                | HeadResponse::Actors(_)
                | HeadResponse::Tasks(_)
                | HeadResponse::TaskPage { .. }
                | HeadResponse::Workers(_)
                | HeadResponse::Objects(_)
                | HeadResponse::PlacementGroups(_)
                | HeadResponse::Runs(_)
                | HeadResponse::Serve(_)
                | HeadResponse::Queue(_)
                | HeadResponse::Actor(_)
                | HeadResponse::PlacementGroup(_)
                | HeadResponse::Run(_)
                | HeadResponse::Models(_)
                | HeadResponse::Metrics { .. }
        )
    }

    /// Keeps the rows of `resp` the caller may see (AC-4).
    pub fn scope(&self, resp: &mut HeadResponse) {
        let p = &self.who;
        match resp {
            HeadResponse::Jobs(v) => v.retain(|j| p.in_namespace(&j.namespace)),
            HeadResponse::Actors(v) => v.retain(|a| p.in_namespace(&a.namespace)),
            HeadResponse::Tasks(v) => v.retain(|t| self.sees(t.job_id)),
            HeadResponse::TaskPage { rows, .. } => rows.retain(|t| self.sees(t.job_id)),
            HeadResponse::Workers(v) => v.retain(|w| self.sees(w.job_id)),
            HeadResponse::Objects(v) => v.retain(|o| o.job_id.is_some_and(|j| self.sees(j))),
            HeadResponse::PlacementGroups(v) => v.retain(|g| self.sees(g.job)),
            HeadResponse::Runs(v) => v.retain(|r| self.sees(r.job_id)),
            HeadResponse::Models(v) => v.retain(|m| p.in_namespace(&m.namespace)),
            HeadResponse::Serve(v) => v.retain(|s| p.in_namespace(&s.namespace)),
            HeadResponse::Metrics { nodes, .. } => {
                for n in nodes {
                    n.user.retain(|m| m.job_id.is_some_and(|j| self.sees(j)));
                }
            }
            HeadResponse::Queue(q) => {
                q.waiting.retain(|w| p.in_namespace(&w.namespace));
                q.namespaces.retain(|n| p.in_namespace(&n.policy.namespace));
                q.sealed.retain(|n| p.in_namespace(n));
            }
            // One row, asked by id (the gate judged it in its namespace
            // already; this keeps it so if the row moved meanwhile).
            HeadResponse::Actor(a) => {
                a.take_if(|a| !p.in_namespace(&a.namespace));
            }
            HeadResponse::PlacementGroup(g) => {
                g.take_if(|g| !self.sees(g.job));
            }
            HeadResponse::Run(r) => {
                r.take_if(|(r, _)| !self.sees(r.job_id));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::access::builtin_role;
    use crate::proto::state::{TaskInfo, TaskState, WorkerInfo};

    fn who(ns: &[&str]) -> Principal {
        Principal {
            name: "vera".into(),
            role: "viewer".into(),
            permissions: builtin_role("viewer").unwrap(),
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn task(job: JobId) -> TaskInfo {
        TaskInfo {
            task_id: "t".into(),
            job_id: job,
            name: "f".into(),
            function: "f".into(),
            kind: "task".into(),
            state: TaskState::Running,
            node_id: crate::ids::NodeId([0; 16]),
            worker_pid: None,
            resources: Default::default(),
            attempt: 0,
            submitted_us: 0,
            started_us: None,
            ended_us: None,
            error: None,
        }
    }

    fn worker(job: JobId) -> WorkerInfo {
        WorkerInfo {
            worker_id: 1,
            node_id: crate::ids::NodeId([0; 16]),
            pid: Some(7),
            job_id: job,
            state: "idle".into(),
            task_id: None,
            actor_id: None,
            gpus: vec![],
            log_file: None,
        }
    }

    const VISION: JobId = JobId([1; 16]);
    const ADS: JobId = JobId([2; 16]);
    const UNKNOWN: JobId = JobId([3; 16]);

    fn jobs() -> Vec<(JobId, String)> {
        vec![(VISION, "vision".into()), (ADS, "ads".into())]
    }

    #[test]
    fn ac_4_rows_of_other_namespaces_and_unknown_jobs_are_left_out() {
        let v = Visibility::new(who(&["vision"]), jobs()).unwrap();
        let mut tasks = HeadResponse::Tasks(vec![task(VISION), task(ADS), task(UNKNOWN)]);
        v.scope(&mut tasks);
        let HeadResponse::Tasks(tasks) = tasks else {
            unreachable!()
        };
        assert_eq!(tasks.iter().map(|t| t.job_id).collect::<Vec<_>>(), [VISION]);
        let mut page = HeadResponse::TaskPage {
            rows: vec![task(ADS), task(VISION)],
            total: 2,
        };
        v.scope(&mut page);
        assert!(matches!(&page, HeadResponse::TaskPage { rows, .. } if rows.len() == 1));
        let mut workers = HeadResponse::Workers(vec![worker(ADS), worker(VISION)]);
        v.scope(&mut workers);
        assert!(
            matches!(&workers, HeadResponse::Workers(w) if w.len() == 1 && w[0].job_id == VISION)
        );
        // Objects go by their creator's job; a copy with none is left out.
        let object = |job: Option<JobId>| crate::proto::state::ObjectInfo {
            object_id: "o".into(),
            node_id: crate::ids::NodeId([0; 16]),
            size: 1,
            sealed: true,
            pinned: true,
            spilled: false,
            refs: 1,
            job_id: job,
        };
        let mut objects =
            HeadResponse::Objects(vec![object(Some(ADS)), object(None), object(Some(VISION))]);
        v.scope(&mut objects);
        assert!(
            matches!(&objects, HeadResponse::Objects(o) if o.len() == 1 && o[0].job_id == Some(VISION))
        );
        assert!(Visibility::concerns(&HeadResponse::Objects(vec![])));
        assert_eq!(v.jobs(), vec![VISION]);
        assert!(Visibility::concerns(&HeadResponse::Workers(vec![])));
        assert!(!Visibility::concerns(&HeadResponse::Ok));
    }

    #[test]
    fn ac_4_everything_for_star_and_a_precise_refusal_otherwise() {
        assert_eq!(Visibility::new(who(&["*"]), jobs()), None);
        assert_eq!(Visibility::new(Principal::cluster_admin(), jobs()), None);
        let v = Visibility::new(who(&["vision", "ml"]), jobs()).unwrap();
        assert_eq!(v.refusal("read the log of worker 7", VISION), None);
        assert_eq!(
            v.refusal("read the log of worker 7", ADS).unwrap().message,
            "vera (viewer in vision, ml) may not read the log of worker 7 in namespace ads: \
             namespace ads was not granted to vera"
        );
        assert!(v
            .refusal("read the log of worker 7", UNKNOWN)
            .unwrap()
            .message
            .ends_with("is not one the head knows"));
        let nobody = Visibility::new(who(&[]), jobs()).unwrap();
        assert!(nobody.jobs().is_empty());
        // A log: every job its worker served must be seen.
        let what = "read the log of worker 7";
        assert_eq!(v.refusal_for_log(what, &[VISION]), None);
        assert!(v
            .refusal_for_log(what, &[VISION, ADS])
            .unwrap()
            .message
            .ends_with("namespace ads was not granted to vera"));
        assert!(v
            .refusal_for_log(what, &[])
            .unwrap()
            .message
            .starts_with("vera (viewer in vision, ml) may not read the log of worker 7: its node"));
    }
}
