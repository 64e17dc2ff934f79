//! `prism list nodes | jobs | actors | tasks | objects | placement-groups |
//! workers`: the state API's rows (the same the dashboard's `/api/v0/*`
//! serves), filtered, sorted and paged by one [`Query`].

use crate::job::ClusterArgs;
use anyhow::anyhow;
use prism::client::Table;
use prism::views::Query;
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// What to list: nodes, jobs, actors, tasks, objects, placement-groups or workers.
    #[arg(value_parser = ["nodes", "jobs", "actors", "tasks", "objects", "placement-groups", "workers"])]
    what: String,
    /// Only rows in this state (alive, dead, pending, running, queued,
    /// finished, failed; objects: creating, in_memory, spilled; ...).
    #[arg(long)]
    state: Option<String>,
    /// Only rows whose FIELD equals VALUE (repeatable; ids match by prefix),
    /// e.g. --filter job=j-1a2b --filter name=counter.
    #[arg(long = "filter", value_name = "FIELD=VALUE")]
    filters: Vec<String>,
    /// Sort by this field.
    #[arg(long)]
    sort: Option<String>,
    /// Largest first.
    #[arg(long)]
    desc: bool,
    /// At most this many rows.
    #[arg(long)]
    limit: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// An object's state for the filter: `creating`, `spilled` or `in_memory`.
fn object_state(o: &Value) -> &'static str {
    if o["sealed"] != true {
        "creating"
    } else if o["spilled"] == true {
        "spilled"
    } else {
        "in_memory"
    }
}

pub fn run(args: ListArgs) -> anyhow::Result<()> {
    let table = Table::parse(&args.what).ok_or_else(|| anyhow!("unknown table {}", args.what))?;
    let mut pairs: Vec<(String, String)> = Vec::new();
    for f in &args.filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("--filter {f:?}: use FIELD=VALUE"))?;
        pairs.push((k.trim().into(), v.trim().into()));
    }
    if let Some(s) = &args.sort {
        pairs.push(("sort".into(), s.clone()));
        if args.desc {
            pairs.push(("order".into(), "desc".into()));
        }
    }
    if let Some(l) = args.limit {
        pairs.push(("limit".into(), l.to_string()));
    }
    let mut rows = {
        let head = args.cluster.connect()?;
        head.rt.block_on(head.client.rows(table))?
    };
    if table == Table::Objects {
        // Objects have no state field; the filter reads one from the flags.
        for o in &mut rows {
            let s = object_state(o);
            o["state"] = Value::String(s.into());
        }
    }
    if let Some(s) = &args.state {
        pairs.push(("state".into(), s.clone()));
    }
    let page = Query::parse(pairs)?.apply_values(rows)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page.rows)?);
        return Ok(());
    }
    crate::list_table::print(table, &page.rows);
    if page.rows.len() < page.total {
        println!("({} of {} rows)", page.rows.len(), page.total);
    }
    Ok(())
}
