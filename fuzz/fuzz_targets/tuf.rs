//! TUF release metadata as an update server receives it (root, timestamp, snapshot, targets:
//! the input split at NUL bytes). Verification never panics, whatever the JSON, keys,
//! signatures (hex, DER), dates or versions hold.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == 0);
    let root = parts.next().unwrap_or(b"");
    let timestamp = parts.next().unwrap_or(b"");
    let snapshot = parts.next().unwrap_or(b"");
    let targets = parts.next().unwrap_or(b"");
    let docs = kiln::signing::tuf::Documents {
        root: (Path::new("root.json"), root),
        timestamp: (Path::new("timestamp.json"), timestamp),
        snapshot: (Path::new("snapshot.json"), snapshot),
        targets: (Path::new("targets.json"), targets),
    };
    let _ = kiln::signing::tuf::verify_documents(&docs, 1_800_000_000);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = kiln::signing::tuf::canonical(&v);
    }
});
