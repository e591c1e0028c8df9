//! An OCI image layout from anywhere (a registry, a colleague, an attacker) as `kiln verify`,
//! `kiln sign`, `kiln check` and `kiln export` read it: the input is either index.json itself
//! or an image manifest that a generated index.json names by its true digest (so the fuzzer
//! reaches the manifest parser without forging SHA-256). Never a panic, never a hang, and
//! nothing written outside the layout.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, body)) = data.split_first() else {
        return;
    };
    let Ok(tmp) = tempfile::tempdir() else {
        return;
    };
    let layout = tmp.path().join("oci");
    let blobs = layout.join("blobs/sha256");
    if std::fs::create_dir_all(&blobs).is_err() {
        return;
    }
    let _ = std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = if mode & 1 == 0 {
        body.to_vec()
    } else {
        let hex = kiln::digest::sha256_hex(body);
        let _ = std::fs::write(blobs.join(&hex), body);
        serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{hex}"), "size": body.len(),
            "annotations": {"org.opencontainers.image.ref.name": "1.0"},
        }]})
        .to_string()
        .into_bytes()
    };
    let _ = std::fs::write(layout.join("index.json"), index);
    let v = kiln::signing::verify::verify_layout(&layout, &Default::default());
    assert!(!v.is_ok_and(|v| v.accepted), "an unsigned layout was accepted");
    let _ = kiln::image::ImageTree::from_oci_layout(&layout);
    let _ = kiln::signing::sign::referenced_blobs(&layout);
    // Signing writes inside the layout only.
    let _ = kiln::signing::sign::sign_layout(&layout, &FixedSigner);
    let outside: Vec<_> = std::fs::read_dir(tmp.path())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(outside, [std::ffi::OsString::from("oci")], "wrote beside the layout");
});

/// A signer that needs no key: what is fuzzed is the layout, not ECDSA.
struct FixedSigner;

impl kiln::signing::sign::Signer for FixedSigner {
    fn sign(&self, _payload: &[u8]) -> Result<Vec<u8>, kiln::signing::sign::SignError> {
        // DER of the ECDSA signature (r = 1, s = 1).
        Ok(vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01])
    }
}
