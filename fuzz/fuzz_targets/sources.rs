//! A suite's Sources index and a source package's `.dsc`, as a mirror (or whoever stands in
//! for it) serves them, and a .deb's `Source:` field: parsing never panics, and every file name
//! and directory it accepts stays one plain path inside the mirror and the bundle.
#![no_main]
use kiln::debian::sources::{
    parse_dsc, parse_sources, source_of_binary, valid_directory, valid_file_name,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(dsc) = parse_dsc(data) {
        assert!(dsc.files.iter().all(|f| valid_file_name(&f.name)));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(entries) = parse_sources(text) {
        for e in entries {
            assert!(valid_directory(&e.directory) && !e.directory.contains(".."));
            for f in &e.files {
                assert!(!f.name.contains('/') && f.name != ".." && valid_file_name(&f.name));
            }
        }
    }
    if let Ok((name, version)) = source_of_binary("bin", "1.0", Some(text)) {
        assert!(!name.contains('/') && !version.contains('/'));
    }
});
