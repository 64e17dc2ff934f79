//! A user's mistake on the command line is a message naming the cause and
//! a failing exit code, never a panic or a backtrace — even with
//! `RUST_BACKTRACE=1` set. One running head serves the mistakes that need a
//! cluster; the others need none.

use prism_test_support::*;

/// Runs `prism <args>`; asserts a clean failure whose stderr has `cause`.
fn fails_cleanly(sb: &Sandbox, args: &[&str], cause: &str) {
    let out = sb.run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "prism {args:?} succeeded:\n{err}");
    assert!(
        err.contains(cause),
        "prism {args:?}: the message does not name the cause ({cause}):\n{err}"
    );
    for sign in [
        "panicked",
        "stack backtrace",
        "rust_begin_unwind",
        "RUST_BACKTRACE",
    ] {
        assert!(
            !err.contains(sign),
            "prism {args:?}: a user error printed `{sign}`:\n{err}"
        );
    }
}

#[test]
fn cli_user_mistakes_are_messages_not_backtraces() {
    let sb = Sandbox::new().with_env("RUST_BACKTRACE", "1");
    // No cluster at all.
    fails_cleanly(&sb, &["status"], "no running Prism cluster found");
    fails_cleanly(&sb, &["list", "unicorns"], "unicorns");
    fails_cleanly(
        &sb,
        &["up", "/nonexistent/cluster.yaml"],
        "/nonexistent/cluster.yaml",
    );
    let yaml = sb.temp().join("broken.yaml");
    std::fs::write(&yaml, "cluster_name: [unclosed\n").unwrap();
    fails_cleanly(&sb, &["up", yaml.to_str().unwrap()], "broken.yaml");
    // With a cluster.
    let head = sb.start_head(&["--head-only"]);
    let (addr, _) = head.cluster();
    let at = ["--address", addr.as_str()];
    let with = |rest: &[&str]| -> Vec<String> {
        rest.iter()
            .map(|s| s.to_string())
            .chain(at.iter().map(|s| s.to_string()))
            .collect()
    };
    let run = |rest: &[&str], cause: &str| {
        let args = with(rest);
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        fails_cleanly(&sb, &args, cause);
    };
    run(
        &["submit", "--", "./nonexistent-binary"],
        "nonexistent-binary",
    );
    run(&["job", "stop", "j-0000"], "j-0000");
    run(&["logs", "--node", "n-ffff"], "n-ffff");
}
