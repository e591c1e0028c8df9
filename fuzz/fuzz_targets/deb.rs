//! .deb files (ar, control.tar, data.tar in every compression): reading never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Read;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut file, data).expect("write");
    let _ = kiln::debian::deb::read_deb(
        file.path(),
        "fuzz",
        |_control, tar| -> Result<(), kiln::debian::deb::DebError> {
            let mut archive = tar::Archive::new(tar);
            if let Ok(entries) = archive.entries() {
                for entry in entries.take(1000) {
                    let Ok(mut entry) = entry else { break };
                    let _ = kiln::pipeline::compose::unpack::member_components(&entry.path_bytes());
                    let mut sink = Vec::new();
                    let _ = entry.by_ref().take(1 << 20).read_to_end(&mut sink);
                }
            }
            Ok(())
        },
    );
});
