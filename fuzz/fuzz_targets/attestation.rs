//! A DSSE attestation envelope as a verifier receives it from a layout or a registry: the
//! check never panics, whatever the JSON, base64, signatures or statement hold, and accepts
//! nothing that is not signed by the trusted key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::SigningKey;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_slice(&[7u8; 32]).expect("a fixed valid scalar");
    let image = format!("sha256:{}", "ab".repeat(32));
    let accepted = kiln::signing::attest::check_envelope(
        data,
        &[*key.verifying_key()],
        &image,
        &["https://ci.example/runner".to_string()],
    );
    // Forging an ECDSA signature by fuzzing is not expected: anything accepted would be a bug.
    assert!(accepted.is_err());
});
