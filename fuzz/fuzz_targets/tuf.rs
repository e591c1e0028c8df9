//! TUF release metadata as an update server receives it: the pinned root, a rotated
//! 2.root.json, timestamp, snapshot, targets and a delegated board role (the input split at
//! NUL bytes). The client walk never panics, whatever the JSON, keys, signatures (hex, DER),
//! dates, versions, delegations or paths hold.
#![no_main]
use libfuzzer_sys::fuzz_target;
use kiln::signing::tuf::{client, MemorySource, TrustedState};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(6, |b| *b == 0);
    let mut next = || parts.next().unwrap_or(b"").to_vec();
    let root = next();
    let mut files = std::collections::BTreeMap::new();
    for name in ["2.root.json", "timestamp.json", "snapshot.json", "targets.json", "board.json"] {
        files.insert(name.to_string(), next());
    }
    let source = MemorySource(files);
    let now = 1_800_000_000;
    if let Ok(trusted) =
        client::update(&source, (Path::new("root.json"), &root), &TrustedState::default(), now)
    {
        let _ = trusted.releases(&source, None, now);
        let _ = trusted.find(&source, "board/x.oci.tar", now);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = kiln::signing::tuf::canonical(&v);
    }
});
