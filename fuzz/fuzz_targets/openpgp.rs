//! What a mirror (or whoever stands in for it) or a user hands the OpenPGP side: a clear-signed
//! InRelease or `.dsc`, a detached `Release.gpg`, a keyring file. Reading and checking never
//! panic, and nothing the fuzzer makes is taken as signed by Debian's archive keyring.
#![no_main]
use kiln::debian::trust::{verify_detached, verify_inrelease, Keyring, TimeAnchor};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

/// Debian's archive keyring (ci/setup installs debian-archive-keyring).
fn archive_keyring() -> &'static Keyring {
    static KEYRING: OnceLock<Keyring> = OnceLock::new();
    KEYRING.get_or_init(|| {
        Keyring::load(Path::new("/usr/share/keyrings/debian-archive-keyring.gpg"))
            .expect("Debian's archive keyring is installed")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = Keyring::from_bytes(Path::new("fuzzed.gpg"), data);
    let keyring = archive_keyring();
    let middle = data.len() / 2;
    for anchor in [TimeAnchor::Now, TimeAnchor::SignatureTime] {
        assert!(verify_inrelease("fuzzed InRelease", data, keyring, anchor).is_err());
        assert!(verify_detached(
            "fuzzed Release",
            &data[..middle],
            &data[middle..],
            keyring,
            anchor
        )
        .is_err());
    }
});
