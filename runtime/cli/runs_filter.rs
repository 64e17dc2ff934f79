//! `prism runs list --filter` and `--sort`: a field of a run
//! (`metrics.loss`, `params.lr`, `tags.team`, `status`, `name`, `run_id`,
//! `step`), compared with a value. Numbers compare as numbers, anything
//! else as text. Pure.

use prism::proto::runs::RunInfo;
use std::cmp::Ordering;

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// `field op value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub field: String,
    pub op: Op,
    pub value: String,
}

/// A field's value in a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Num(f64),
    Text(String),
}

impl Val {
    fn of(s: &str) -> Val {
        s.trim()
            .parse()
            .map(Val::Num)
            .unwrap_or_else(|_| Val::Text(s.trim().to_string()))
    }

    /// Numbers by value, else text; a number sorts before text.
    pub fn cmp(&self, other: &Val) -> Ordering {
        match (self, other) {
            (Val::Num(a), Val::Num(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Val::Num(_), Val::Text(_)) => Ordering::Less,
            (Val::Text(_), Val::Num(_)) => Ordering::Greater,
            (Val::Text(a), Val::Text(b)) => a.cmp(b),
        }
    }
}

/// Parses `metrics.val_acc > 0.95` (spaces optional).
pub fn parse(expr: &str) -> Result<Filter, String> {
    for (sym, op) in [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("!=", Op::Ne),
        ("==", Op::Eq),
        ("<", Op::Lt),
        (">", Op::Gt),
        ("=", Op::Eq),
    ] {
        if let Some((f, v)) = expr.split_once(sym) {
            let field = f.trim().to_string();
            check_field(&field)?;
            let value = v.trim().trim_matches(['\'', '"']).to_string();
            if value.is_empty() {
                return Err(format!("filter {expr:?}: no value after {sym}"));
            }
            return Ok(Filter { field, op, value });
        }
    }
    Err(format!(
        "filter {expr:?}: expected FIELD OP VALUE, e.g. 'metrics.loss < 0.1' (OP: < <= > >= = !=)"
    ))
}

/// A field name that exists.
pub fn check_field(field: &str) -> Result<(), String> {
    let ok = matches!(
        field,
        "status" | "name" | "run_id" | "step" | "started" | "updated"
    ) || ["metrics.", "params.", "tags."]
        .iter()
        .any(|p| field.strip_prefix(p).is_some_and(|k| !k.is_empty()));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "unknown field {field:?}: use metrics.NAME, params.NAME, tags.NAME, status, name, run_id, step, started or updated"
        )),
    }
}

/// `field` of `run`, if it has it.
pub fn field(run: &RunInfo, field: &str) -> Option<Val> {
    let find = |kv: &[(String, String)], k: &str| {
        kv.iter().find(|(key, _)| key == k).map(|(_, v)| Val::of(v))
    };
    match field {
        "status" => Some(Val::Text(run.status.clone())),
        "name" => Some(Val::Text(run.name.clone())),
        "run_id" => Some(Val::Text(run.run_id.clone())),
        "step" => Some(Val::Num(run.last_step as f64)),
        "started" => Some(Val::Num(run.started_ms as f64)),
        "updated" => Some(Val::Num(run.updated_ms as f64)),
        f => {
            if let Some(m) = f.strip_prefix("metrics.") {
                run.last_values
                    .iter()
                    .find(|(k, _)| k == m)
                    .map(|(_, v)| Val::Num(*v))
            } else if let Some(p) = f.strip_prefix("params.") {
                find(&run.params, p)
            } else {
                f.strip_prefix("tags.").and_then(|t| find(&run.tags, t))
            }
        }
    }
}

impl Filter {
    /// Whether `run` passes (a run without the field does not).
    pub fn matches(&self, run: &RunInfo) -> bool {
        let Some(have) = field(run, &self.field) else {
            return false;
        };
        let o = have.cmp(&Val::of(&self.value));
        match self.op {
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(loss: f64, lr: &str, status: &str) -> RunInfo {
        RunInfo {
            run_id: format!("r-{lr}"),
            name: "mlp".into(),
            job_id: prism::JobId::random(),
            points: 3,
            last_step: 3,
            last_values: vec![("loss".into(), loss)],
            started_ms: 1,
            updated_ms: 2,
            params: vec![("lr".into(), lr.into())],
            tags: vec![("team".into(), "vision".into())],
            status: status.into(),
        }
    }

    #[test]
    fn filters_compare_numbers_as_numbers_and_text_as_text() {
        let a = run(0.05, "0.1", "finished");
        let b = run(0.5, "0.05", "running");
        let f = parse("metrics.loss < 0.1").unwrap();
        assert!(f.matches(&a) && !f.matches(&b));
        let f = parse("params.lr>=0.1").unwrap();
        assert!(f.matches(&a) && !f.matches(&b));
        let f = parse("status = 'finished'").unwrap();
        assert!(f.matches(&a) && !f.matches(&b));
        let f = parse("tags.team != vision").unwrap();
        assert!(!f.matches(&a));
        assert!(
            !parse("metrics.acc > 0.9").unwrap().matches(&a),
            "no such metric: no match"
        );
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        assert!(parse("loss < 0.1").unwrap_err().contains("unknown field"));
        assert!(parse("metrics.loss <").unwrap_err().contains("no value"));
        assert!(parse("metrics.loss")
            .unwrap_err()
            .contains("FIELD OP VALUE"));
    }
}
