//! Encryption at rest of spill files: a store with a key writes no
//! plaintext to disk, reads its files back identical, and refuses a file
//! that was changed or sealed under another key.

use crate::{ClientId, ObjectId, SpillError, Store, StoreError};

fn secret_rows(i: u8) -> Vec<u8> {
    b"PATIENT-RECORD-0123456789;"
        .iter()
        .cycle()
        .take(2500)
        .map(|b| b.wrapping_add(i % 2))
        .collect()
}

fn spilled_files(dir: &std::path::Path) -> Vec<Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn sealed_spill_files_hold_no_plaintext_and_come_back_identical() {
    let c = ClientId(1);
    for key in [None, Some([7u8; 32])] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::new("prism-unit-key", 8 << 10, Some(dir.path().to_path_buf())).unwrap();
        s.set_spill_key(key.as_ref());
        let ids: Vec<ObjectId> = (0..6u8).map(|i| ObjectId([i; 16])).collect();
        for (i, id) in ids.iter().enumerate() {
            s.put(*id, &secret_rows(i as u8), c, true).unwrap();
        }
        let files = spilled_files(dir.path());
        assert!(files.len() >= 3, "filling past capacity spills");
        let plain = files.iter().any(|f| contains(f, b"PATIENT-RECORD"));
        assert_eq!(plain, key.is_none(), "plaintext on disk iff no key");
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(s.get_bytes(*id, c).unwrap(), &secret_rows(i as u8)[..]);
            s.release(*id, c).unwrap();
        }
    }
}

#[test]
fn a_changed_or_foreign_sealed_file_is_refused() {
    let c = ClientId(1);
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::new("prism-unit-key2", 8 << 10, Some(dir.path().to_path_buf())).unwrap();
    s.set_spill_key(Some(&[9u8; 32]));
    let ids: Vec<ObjectId> = (0..6u8).map(|i| ObjectId([i + 40; 16])).collect();
    for (i, id) in ids.iter().enumerate() {
        s.put(*id, &secret_rows(i as u8), c, true).unwrap();
    }
    let spilled: Vec<ObjectId> = ids
        .iter()
        .copied()
        .filter(|id| s.info(*id).unwrap().spilled)
        .collect();
    let path = |id: ObjectId| dir.path().join(format!("{id}.spill"));
    let mut bytes = std::fs::read(path(spilled[0])).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(path(spilled[0]), bytes).unwrap();
    let StoreError::Spill {
        source: SpillError::Corrupt { why, .. },
        ..
    } = s.get(spilled[0], c).unwrap_err()
    else {
        panic!("a changed sealed file must read as corrupt")
    };
    assert!(
        why.contains("does not open with this cluster's key"),
        "{why}"
    );
    // Another key cannot open the others.
    s.set_spill_key(Some(&[8u8; 32]));
    let e = s.get(spilled[1], c).unwrap_err();
    assert!(e.to_string().contains("does not open"), "{e}");
    s.set_spill_key(None);
    let e = s.get(spilled[1], c).unwrap_err();
    assert!(
        e.to_string()
            .contains("encrypted and this store has no key"),
        "{e}"
    );
}

#[test]
fn sealed_bytes_open_only_with_their_key_and_associated_data() {
    let key = crate::SpillKey::new(&[7u8; 32]);
    let plain = secret_rows(1);
    let sealed = key.seal(b"model.safetensors", &plain);
    assert!(!contains(&sealed, b"PATIENT-RECORD"), "no plaintext");
    assert_eq!(key.open(b"model.safetensors", &sealed), Some(plain.clone()));
    assert_ne!(
        key.seal(b"model.safetensors", &plain),
        sealed,
        "a fresh nonce each time"
    );
    assert_eq!(
        key.open(b"optim.safetensors", &sealed),
        None,
        "another name"
    );
    let other = crate::SpillKey::new(&[8u8; 32]);
    assert_eq!(
        other.open(b"model.safetensors", &sealed),
        None,
        "another key"
    );
    let mut flipped = sealed.clone();
    flipped[40] ^= 1;
    assert_eq!(
        key.open(b"model.safetensors", &flipped),
        None,
        "a changed byte"
    );
    assert_eq!(
        key.open(b"model.safetensors", &sealed[..20]),
        None,
        "too short"
    );
    assert_eq!(key.open(b"x", &key.seal(b"x", b"")), Some(Vec::new()));
}
