//! The head core's durable side: which rows changed since the last batch
//! ([`HeadCore::take_changes`], for the shell to write before it replies,
//! DH-1), and a core rebuilt from the rows of a head that died
//! ([`HeadCore::restore`], DH-2).

use super::{Clock, HeadCore};
use crate::head::actor_table::ActorTable;
use crate::head::durable::{run_key, ActorRow, Change, NodeRow, ObjectRow, Row, Snapshot, Table};
use crate::head::job_table::JobTable;
use crate::head::node_table::{FailureDetector, NodeEntry, NodeTable};
use crate::head::object_directory::ObjectDirectory;
use crate::head::pg_table::PgTable;
use crate::ids::ClusterId;
use crate::proto::common::NodeState;
use crate::proto::head::JobInfo;
use crate::proto::placement::{BundleOp, PgState};
use tracing::info;

impl HeadCore {
    /// Every durable row that changed since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let mut out = Vec::new();
        for id in self.nodes.take_dirty() {
            out.push(match self.nodes.node(id) {
                Some(n) => Change::Put(Row::Node(NodeRow {
                    id,
                    reg: n.reg.clone(),
                    incarnation: n.incarnation,
                    dead: (n.state == NodeState::Dead)
                        .then(|| n.death_reason.clone().unwrap_or_else(|| "dead".into())),
                    cert: n.cert,
                })),
                None => Change::node_gone(id),
            });
        }
        for id in self.actors.take_dirty() {
            if let Some(info) = self.actors.get(id) {
                let create = self.actors.creation(id).cloned();
                out.push(Change::Put(Row::Actor(ActorRow {
                    info: info.clone(),
                    create,
                })));
            }
        }
        for pg in self.groups.take_dirty() {
            out.push(match self.groups.get(pg) {
                Some(g) => Change::Put(Row::Group(g.clone())),
                None => Change::group_gone(pg),
            });
        }
        for id in self.jobs.take_dirty() {
            out.push(match self.jobs.get(id) {
                Some(j) => Change::Put(Row::Job(j.clone())),
                None => Change::job_gone(id),
            });
        }
        for id in self.objects.take_dirty() {
            let residency = self.objects.rule(&id).cloned();
            out.push(match (self.objects.locations(&id), residency) {
                (Some((size, nodes)), residency) => Change::Put(Row::Object(ObjectRow {
                    id,
                    size,
                    nodes,
                    residency,
                })),
                (None, Some(rule)) => Change::Put(Row::Object(ObjectRow {
                    id,
                    size: 0,
                    nodes: Vec::new(),
                    residency: Some(rule),
                })),
                (None, None) => Change::object_gone(id),
            });
        }
        let runs = self.runs.take_changes();
        for id in runs.gone {
            out.push(Change::Delete(Table::Run, run_key(&id)));
        }
        out.extend(runs.rows.into_iter().map(|r| Change::Put(Row::Run(r))));
        out.extend(
            runs.points
                .into_iter()
                .map(|(id, p)| Change::RunPoints(id, p)),
        );
        for name in self.models.take_legacy() {
            out.push(Change::Delete(
                Table::Model,
                crate::head::durable::legacy_model_key(&name),
            ));
        }
        out.extend(
            self.models
                .take_dirty()
                .into_iter()
                .map(|m| Change::Put(Row::Model(m))),
        );
        let (users, roles) = self.users.take_dirty();
        out.extend(users.into_iter().map(|u| Change::Put(Row::User(u))));
        out.extend(roles.into_iter().map(|r| Change::Put(Row::Role(r))));
        out.extend(
            std::mem::take(&mut self.quota_changes)
                .into_iter()
                .map(|q| Change::Put(Row::Quota(q))),
        );
        for (ns, seal) in std::mem::take(&mut self.sealed_changes) {
            out.push(match seal {
                true => Change::Put(Row::SealedNamespace(ns)),
                false => Change::Delete(
                    Table::SealedNamespace,
                    crate::head::durable::sealed_key(&ns),
                ),
            });
        }
        for (id, sub) in self.submissions.take_dirty() {
            out.push(match sub {
                Some(sub) => Change::Put(Row::Submission(id, sub)),
                None => Change::Delete(Table::Submission, id.0),
            });
        }
        out.extend(self.audit.take_fresh().into_iter().map(Change::Audit));
        out
    }

    /// A core rebuilt from the rows of a head that died. Nodes that were
    /// live have a dead timeout to heartbeat again (NT-4). A placement group
    /// that was not created starts over: every live node is first told to
    /// give back whatever it holds for it (a reservation the dead head did
    /// not live to record), then it is placed again.
    pub fn restore(
        cluster_id: ClusterId,
        head_address: String,
        detector: FailureDetector,
        grace: std::time::Duration,
        now: Clock,
        snapshot: Snapshot,
    ) -> HeadCore {
        let summary = snapshot.summary();
        let mut core = HeadCore::new(cluster_id, head_address, detector);
        let nodes: Vec<NodeEntry> = snapshot
            .nodes
            .into_iter()
            .map(|r| {
                let total = r.reg.resources.to_set();
                NodeEntry {
                    id: r.id,
                    // Unknown until it heartbeats: nothing is planned on it
                    // before its own report says what is free.
                    available: prism_scheduler::ResourceSet::new(),
                    leased: prism_scheduler::ResourceSet::new(),
                    total,
                    reg: r.reg,
                    incarnation: r.incarnation,
                    state: if r.dead.is_some() {
                        NodeState::Dead
                    } else {
                        NodeState::Alive
                    },
                    death_reason: r.dead,
                    last_heartbeat: now.at,
                    cert: r.cert,
                    recovered: false,
                    drain: None,
                }
            })
            .collect();
        core.nodes = NodeTable::restore(detector, now.at, grace, nodes);
        core.runs = crate::head::run_table::RunTable::restore(snapshot.runs, snapshot.run_points);
        core.models = crate::head::model_table::ModelTable::restore(snapshot.models);
        core.users = crate::head::access::users::UserTable::restore(snapshot.users, snapshot.roles);
        core.actors = ActorTable::restore(
            snapshot
                .actors
                .into_iter()
                .map(|a| (a.info, a.create))
                .collect(),
        );
        core.actors.recovered_mid_restart(now.at);
        let unfinished: Vec<_> = snapshot
            .groups
            .iter()
            .filter(|g| g.state != PgState::Created)
            .map(|g| g.pg)
            .collect();
        core.groups = PgTable::restore(snapshot.groups);
        core.jobs = JobTable::restore(snapshot.jobs);
        core.restore_queue(now, snapshot.quotas, snapshot.submissions);
        core.sealed = snapshot.sealed.into_iter().collect();
        core.objects = ObjectDirectory::restore(
            snapshot
                .objects
                .into_iter()
                .map(|o| (o.id, o.size, o.nodes, o.residency))
                .collect(),
        );
        let live: Vec<(crate::ids::NodeId, String)> = core
            .nodes
            .nodes()
            .filter(|n| n.state != NodeState::Dead)
            .map(|n| (n.id, n.reg.address.clone()))
            .collect();
        for pg in &unfinished {
            for (node, addr) in &live {
                let op = BundleOp::Return {
                    pg: *pg,
                    reason: "the head restarted during its reservation".into(),
                    only: Vec::new(),
                };
                core.placing.returns.push((*node, addr.clone(), op));
            }
        }
        core.placing.nudge();
        // Drivers have three dead timeouts (at least 30 s) to reconnect.
        let window = (detector.dead_timeout() * 3).max(std::time::Duration::from_secs(30));
        core.await_drivers(now, window);
        info!(cluster = %cluster_id, "recovered cluster ({summary})");
        core
    }

    /// Jobs that were running when the head died (the shell watches their
    /// drivers again).
    pub fn live_jobs(&self) -> Vec<JobInfo> {
        self.jobs.live()
    }
}
