//! Certificate files given to `kiln export --cert` and `kiln cert issue --ca` (PEM with any
//! number of certificates, or DER): parsing and key extraction never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(certs) = kiln::signing::certs::parse_certificates(data.to_vec(), std::path::Path::new("f")) {
        for c in certs {
            let _ = kiln::signing::certs::certificate_key(&c);
            let _ = kiln::signing::certs::to_pem(&c);
        }
    }
});
