//! RFC 2822 dates of Release files.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(secs) = kiln::timefmt::parse_rfc2822(text) {
            let _ = kiln::timefmt::rfc3339(secs);
        }
    }
});
