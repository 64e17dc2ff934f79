//! `prism list`'s tables: the state API's JSON rows as columns.

use prism::client::Table;
use serde_json::Value;

/// A field as text (`-` for nothing).
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An id shortened to 12 characters, as `prism status` prints them.
fn short(v: &Value) -> String {
    let s = text(v);
    s.chars().take(12).collect()
}

/// The last path segment of a type name.
fn class(v: &Value) -> String {
    let s = text(v);
    s.rsplit("::").next().unwrap_or(&s).to_string()
}

fn resources(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Prints `rows` of `table` as a table.
pub fn print(table: Table, rows: &[Value]) {
    match table {
        Table::Nodes => {
            println!("{:<12} {:<8} {:<22} NAME", "NODE", "STATE", "ADDRESS");
            for n in rows {
                println!(
                    "{:<12} {:<8} {:<22} {}",
                    short(&n["node_id"]),
                    text(&n["state"]),
                    text(&n["address"]),
                    text(&n["name"])
                );
            }
        }
        Table::Jobs => {
            println!("{:<38} {:<10} ENTRYPOINT", "JOB", "STATE");
            for j in rows {
                println!(
                    "{:<38} {:<10} {}",
                    text(&j["job_id"]),
                    text(&j["state"]),
                    text(&j["entrypoint"])
                );
            }
        }
        Table::Actors => {
            println!(
                "{:<12} {:<11} {:<24} {:<16} {:<12} {:>8}  REASON",
                "ACTOR", "STATE", "CLASS", "NAME", "NODE", "RESTARTS"
            );
            for a in rows {
                println!(
                    "{:<12} {:<11} {:<24} {:<16} {:<12} {:>8}  {}",
                    short(&a["actor_id"]),
                    text(&a["state"]),
                    class(&a["class"]),
                    text(&a["name"]),
                    short(&a["node_id"]),
                    text(&a["restarts"]),
                    text(&a["death_reason"])
                );
            }
        }
        Table::PlacementGroups => {
            println!(
                "{:<13} {:<12} {:<14} {:<16} {:>7}  NODES / REASON",
                "GROUP", "STATE", "STRATEGY", "NAME", "BUNDLES"
            );
            for g in rows {
                let nodes: Vec<String> = g["nodes"]
                    .as_array()
                    .map(|ns| {
                        ns.iter()
                            .map(|n| if n.is_null() { "-".into() } else { short(n) })
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{:<13} {:<12} {:<14} {:<16} {:>7}  {} {}",
                    short(&g["pg"]),
                    text(&g["state"]),
                    text(&g["strategy"]),
                    text(&g["name"]),
                    g["bundles"].as_array().map_or(0, |b| b.len()),
                    nodes.join(","),
                    text(&g["reason"])
                );
            }
        }
        Table::Tasks => {
            println!(
                "{:<12} {:<10} {:<14} {:<28} {:<12} {:>8}  RESOURCES",
                "TASK", "STATE", "KIND", "NAME", "NODE", "PID"
            );
            for t in rows {
                println!(
                    "{:<12} {:<10} {:<14} {:<28} {:<12} {:>8}  {}",
                    short(&t["task_id"]),
                    text(&t["state"]),
                    text(&t["kind"]),
                    text(&t["name"]),
                    short(&t["node_id"]),
                    text(&t["worker_pid"]),
                    resources(&t["resources"])
                );
            }
        }
        Table::Objects => {
            println!(
                "{:<12} {:<10} {:>12} {:<7} {:>5}  {:<12} NODE",
                "OBJECT", "STATE", "BYTES", "PINNED", "REFS", "JOB"
            );
            for o in rows {
                println!(
                    "{:<12} {:<10} {:>12} {:<7} {:>5}  {:<12} {}",
                    short(&o["object_id"]),
                    text(&o["state"]),
                    text(&o["size"]),
                    text(&o["pinned"]),
                    text(&o["refs"]),
                    short(&o["job_id"]),
                    short(&o["node_id"])
                );
            }
        }
        Table::Workers => {
            println!(
                "{:<12} {:>6} {:>8} {:<9} {:<12} {:<12} LOG",
                "NODE", "WORKER", "PID", "STATE", "JOB", "ACTOR"
            );
            for w in rows {
                println!(
                    "{:<12} {:>6} {:>8} {:<9} {:<12} {:<12} {}",
                    short(&w["node_id"]),
                    text(&w["worker_id"]),
                    text(&w["pid"]),
                    text(&w["state"]),
                    short(&w["job_id"]),
                    short(&w["actor_id"]),
                    text(&w["log_file"])
                );
            }
        }
    }
}
