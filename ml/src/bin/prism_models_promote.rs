//! `prism-models-promote NAME VERSION --to ALIAS --gate GOLDEN.pdsf
//! [--metric accuracy]`: the promotion gate of `prism models promote`,
//! which runs this binary (it links libtorch; the `prism` CLI does not).
//! A driver of the cluster in `PRISM_ADDRESS` (set by `prism`): both
//! versions are scored on the golden set in tasks; the alias moves only
//! if the challenger is at least as good. Exit 0 promoted, 1 refused or
//! failed, 2 bad arguments.

use prism_ml::data::Dataset;
use prism_ml::registry::promote;
use prism_ml::MlError;

const USAGE: &str =
    "usage: prism-models-promote NAME VERSION --to ALIAS --gate GOLDEN.pdsf [--metric accuracy]";

fn main() {
    // Workers of this job re-enter here and never return.
    if std::env::var_os("PRISM_WORKER_SOCKET").is_some() {
        let _ = prism::init();
        return;
    }
    std::process::exit(match run() {
        Ok(()) => 0,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            code
        }
    });
}

fn run() -> Result<(), (i32, String)> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let positional: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || !args[i - 1].starts_with("--")))
        .map(|(_, a)| a)
        .collect();
    let bad = |m: String| (2, format!("{m}\n{USAGE}"));
    let [name, version] = positional[..] else {
        return Err(bad("give NAME and VERSION".into()));
    };
    let version: u32 = version
        .parse()
        .map_err(|_| bad(format!("VERSION {version:?} is not a number")))?;
    let alias = flag("--to").ok_or_else(|| bad("give --to ALIAS".into()))?;
    let gate = flag("--gate").ok_or_else(|| bad("give --gate GOLDEN.pdsf".into()))?;
    let metric = flag("--metric").unwrap_or_else(|| "accuracy".into());
    if metric != "accuracy" {
        return Err(bad(format!(
            "--metric {metric}: only accuracy is implemented (the MLP recipe's classifiers)"
        )));
    }
    let fail = |e: MlError| (1, e.to_string());
    let _c = prism::init().map_err(|e| (1, e.to_string()))?;
    let golden = Dataset::from_tensor_file(&gate, 256).map_err(fail)?;
    match promote(name, version, &alias, &golden) {
        Ok(p) => {
            match p.champion {
                Some((n, acc)) => println!(
                    "{name} v{version}: {:.2}% on the golden set, {alias} v{n}: {:.2}%",
                    p.challenger * 100.0,
                    acc * 100.0
                ),
                None => println!(
                    "{name} v{version}: {:.2}% on the golden set ({alias} was unset)",
                    p.challenger * 100.0
                ),
            }
            println!("{name}@{alias} is now v{version}");
            Ok(())
        }
        Err(e) => Err(fail(e)),
    }
}
