//! `prism list tasks | objects`: the head merges what every live raylet
//! reports (its queued and running tasks; what its object store holds).

use crate::status::HeadSession;
use anyhow::bail;
use prism::proto::head::{HeadRequest, HeadResponse};
use prism::proto::state::{ObjectInfo, TaskState};

/// Whether a row in state `s` passes the `--state` filter.
pub(crate) fn keep(state: &Option<String>, s: &str) -> bool {
    state
        .as_deref()
        .is_none_or(|want| want.eq_ignore_ascii_case(s))
}

/// Tasks, filtered by `queued` / `running`.
pub fn tasks(head: &HeadSession, state: &Option<String>, json: bool) -> anyhow::Result<()> {
    let HeadResponse::Tasks(mut tasks) = head.request(&HeadRequest::ListTasks)? else {
        bail!("unexpected answer to ListTasks");
    };
    tasks.retain(|t| {
        let s = match t.state {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Infeasible => "infeasible",
        };
        keep(state, s)
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    println!(
        "{:<12} {:<8} {:<14} {:<28} {:<12} {:>8}  RESOURCES",
        "TASK", "STATE", "KIND", "NAME", "NODE", "PID"
    );
    for t in &tasks {
        let res: Vec<String> = t
            .resources
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{:<12} {:<8} {:<14} {:<28} {:<12} {:>8}  {}",
            &t.task_id[..t.task_id.len().min(12)],
            format!("{:?}", t.state).to_lowercase(),
            t.kind,
            t.name,
            t.node_id.short(),
            t.worker_pid.map(|p| p.to_string()).unwrap_or_default(),
            res.join(",")
        );
    }
    Ok(())
}

/// An object's state for the filter: `creating`, `spilled` or `in_memory`.
fn object_state(o: &ObjectInfo) -> &'static str {
    if !o.sealed {
        "creating"
    } else if o.spilled {
        "spilled"
    } else {
        "in_memory"
    }
}

/// Objects, filtered by `creating` / `in_memory` / `spilled`.
pub fn objects(head: &HeadSession, state: &Option<String>, json: bool) -> anyhow::Result<()> {
    let HeadResponse::Objects(mut objects) = head.request(&HeadRequest::ListObjects)? else {
        bail!("unexpected answer to ListObjects");
    };
    objects.retain(|o| keep(state, object_state(o)));
    if json {
        println!("{}", serde_json::to_string_pretty(&objects)?);
        return Ok(());
    }
    println!(
        "{:<12} {:<10} {:>12} {:<7} {:>5}  NODE",
        "OBJECT", "STATE", "BYTES", "PINNED", "REFS"
    );
    for o in &objects {
        println!(
            "{:<12} {:<10} {:>12} {:<7} {:>5}  {}",
            &o.object_id[..o.object_id.len().min(12)],
            object_state(o),
            o.size,
            o.pinned,
            o.refs,
            o.node_id.short()
        );
    }
    Ok(())
}
