//! What the native update-ca-certificates reads from an image (kiln's configure/cacerts.rs):
//! certificate files (PEM, then the DER inside, whose subject is hashed as OpenSSL does) and
//! /etc/ca-certificates.conf. Never panics; a configuration naming anything never makes it
//! write outside the image's /etc/ssl/certs.
#![no_main]
use kiln::pipeline::configure::cacerts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(der)) = cacerts::certificate_of(data) {
        let _ = cacerts::subject_hash(&der);
    }
    let _ = cacerts::subject_hash(data);
    let Ok(tmp) = tempfile::tempdir() else {
        return;
    };
    let root = tmp.path().join("root");
    for dir in ["etc/ssl/certs", "usr/share/ca-certificates/mozilla"] {
        let _ = std::fs::create_dir_all(root.join(dir));
    }
    let _ = std::fs::write(root.join("usr/share/ca-certificates/mozilla/a.crt"), data);
    let _ = std::fs::write(root.join("etc/ca-certificates.conf"), data);
    let Ok(image) = kiln::inroot::ImageRoot::open(&root) else {
        return;
    };
    let tools = cacerts::Tools {
        variant: cacerts::Variant::BundleWhenAnyEnabled,
        rehash_sorts_names: true,
    };
    let request = cacerts::Request {
        fresh: false,
        hooks: true,
    };
    let _ = cacerts::update(&image, tools, request);
    // Nothing appeared beside the root.
    let beside: Vec<_> = std::fs::read_dir(tmp.path())
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(beside, vec![std::ffi::OsString::from("root")]);
});
