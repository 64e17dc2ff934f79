//! A raylet with a wrong or missing token is refused with a clear message
//! on both sides and never gets a node id.

use prism_test_support::*;

#[test]
fn cluster_wrong_token_is_refused_and_never_listed() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let (addr, token) = head.cluster();
    let (secret, fingerprint) = token.split_once('.').unwrap();

    // Right cluster, wrong secret: the head refuses.
    let bad = format!("{}.{fingerprint}", "0".repeat(secret.len()));
    let out = sb.run(&[
        "start",
        "--address",
        &addr,
        "--token",
        &bad,
        "--num-cpus",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid join token"), "{err}");

    // A token for another cluster: the raylet refuses the head.
    let other = format!("{secret}.{}", "0".repeat(fingerprint.len()));
    let out = sb.run(&[
        "start",
        "--address",
        &addr,
        "--token",
        &other,
        "--num-cpus",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the join token"), "{err}");

    // Malformed and missing tokens fail before dialing.
    let out = sb.run(&["start", "--address", &addr, "--token", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed join token"));
    let out = sb.run(&["start", "--address", &addr]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));

    let head_log = head.log();
    assert!(
        head_log.contains("refused connection: invalid join token"),
        "{head_log}"
    );
    let status = sb.status();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 0, "{status:#}");
    assert!(daemon_pids(sb.temp()).iter().all(|p| *p == head.pid()));

    // The cluster still admits a raylet with the right token.
    let _ok = sb.start_raylet("ok", &head, &["--num-cpus", "1"]);
    assert_eq!(sb.nodes_in_state("alive").len(), 1);
}

#[test]
fn cluster_status_with_a_wrong_token_is_refused() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let (addr, token) = head.cluster();
    let (secret, fingerprint) = token.split_once('.').unwrap();
    let bad = format!("{}.{fingerprint}", "f".repeat(secret.len()));
    let out = sb.run(&["status", "--address", &addr, "--token", &bad]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid join token"));
}

#[test]
fn cluster_failed_join_names_its_cause_even_with_backtraces_on_and_leaves_no_session() {
    let sb = Sandbox::new().with_env("RUST_BACKTRACE", "1");
    let head = sb.start_head(&["--head-only"]);
    let (addr, token) = head.cluster();
    let (secret, fingerprint) = token.split_once('.').unwrap();
    let bad = format!("{}.{fingerprint}", "0".repeat(secret.len()));
    let before = std::fs::read_dir(sb.temp()).unwrap().count();
    let out = sb.run(&["start", "--address", &addr, "--token", &bad]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid join token"), "{err}");
    assert!(
        !err.contains("stack backtrace") && !err.contains("rust_begin_unwind"),
        "a user error is a message, not a backtrace:\n{err}"
    );
    assert_eq!(
        std::fs::read_dir(sb.temp()).unwrap().count(),
        before,
        "a failed start leaves no session directory behind"
    );
}
