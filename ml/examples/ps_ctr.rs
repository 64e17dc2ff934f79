//! Click-through-rate prediction on a sparse parameter server:
//! `cargo run --release -p prism-ml --example ps_ctr`. A click log is
//! generated from a known logistic model (3 categorical fields of 200 ids);
//! 2 worker tasks train one weight per id on 2 sparse server shards
//! (Adagrad, bounded staleness 4), pulling and pushing only the rows each
//! batch touches; the held-out log loss and accuracy are printed next to
//! the generating model's own.

use prism_ml::ps::ctr::{score, ClickLog, CtrRun};

fn main() -> anyhow::Result<()> {
    let _c = prism::init()?;
    let log = ClickLog {
        fields: 3,
        vocab: 200,
        seed: 42,
    };
    let run = CtrRun::new(log);
    let r = run.fit()?;
    let test = log.examples(1_000, 5_000);
    let (loss, acc) = score(&test, |ids| r.p(ids));
    let (best_loss, best_acc) = score(&test, |ids| log.true_p(ids));
    println!(
        "{} updates in {:.2} s; rows touched {}, held {}, pushed {}",
        r.updates, r.seconds, r.rows_touched, r.rows_held, r.rows_pushed
    );
    println!(
        "test log loss {loss:.4} (generating model {best_loss:.4}), accuracy {:.1}% (generating model {:.1}%)",
        acc * 100.0,
        best_acc * 100.0
    );
    Ok(())
}
