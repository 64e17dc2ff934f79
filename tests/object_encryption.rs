//! Encryption at rest against a real raylet: with `prism start --head
//! --encrypt-at-rest`, objects spilled from a full store leave no
//! plaintext in the spill directory and come back byte-identical; the same
//! run without the flag finds the plaintext there (so the check can fail).

use prism::object_store::StoreClient;
use prism_objectstore::ObjectId;
use prism_test_support::*;
use std::path::PathBuf;
use std::time::Duration;

const MB: usize = 1 << 20;
const MARKER: &[u8] = b"PATIENT-RECORD-4711;";

fn record(i: u8) -> Vec<u8> {
    let mut v: Vec<u8> = MARKER.iter().cycle().take(16 * MB).copied().collect();
    v[0] = i;
    v
}

/// Spill files under `dir`, and whether any holds the marker.
fn spill_files(dir: &std::path::Path) -> (usize, bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, false);
    };
    let mut n = 0;
    let mut plain = false;
    for e in entries {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        n += 1;
        plain |= bytes.windows(MARKER.len()).any(|w| w == MARKER);
    }
    (n, plain)
}

fn spill_run(encrypt: bool) -> (usize, bool) {
    let sb = Sandbox::new();
    let mut args = vec!["--num-cpus", "1", "--object-store-memory", "64M"];
    if encrypt {
        args.push("--encrypt-at-rest");
    }
    let head = sb.start_head(&args);
    let socket = PathBuf::from(head.ready()["store_socket"].as_str().unwrap());
    let client = StoreClient::connect(&socket).unwrap();
    let short = Duration::from_millis(300);
    let ids: Vec<ObjectId> = (0..8u8)
        .map(|i| {
            client
                .put_parts(ObjectId::random(), &[&record(i)], true, short)
                .unwrap()
        })
        .collect();
    let found = spill_files(&head.session.join("spill"));
    for (i, id) in ids.iter().enumerate() {
        let got = client.get(*id, short).unwrap();
        assert!(
            got[..] == record(i as u8)[..],
            "object {i} changed across spill/restore"
        );
    }
    found
}

#[test]
fn spilled_objects_leave_no_plaintext_on_disk_when_the_cluster_encrypts_at_rest() {
    let (files, plain) = spill_run(true);
    assert!(files >= 4, "8 x 16 MB in 64 MB must spill ({files} files)");
    assert!(!plain, "an encrypted spill file holds the plaintext");
    let (files, plain) = spill_run(false);
    assert!(
        files >= 4 && plain,
        "without the flag the spill files are plain ({files} files)"
    );
}
