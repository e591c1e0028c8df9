//! A Packages index (after its digest matched the signed Release, but still the mirror's text).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(entries) = kiln::debian::archive::parse_packages(text) {
            let universe = kiln::debian::resolve::Universe::new(&entries, "arm64");
            let _ = kiln::debian::resolve::resolve(&universe, kiln::recipe::Variant::Minbase, &[]);
        }
    }
});
