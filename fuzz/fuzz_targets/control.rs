//! deb822 paragraphs and relation fields from untrusted indices and control files.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(paragraphs) = kiln::debian::control::parse(text) {
            for p in paragraphs {
                let printed = p.to_string();
                let again = kiln::debian::control::parse(&printed).expect("a printed paragraph parses");
                assert_eq!(again.len(), 1);
                for (_, v) in &p.fields {
                    let _ = kiln::debian::control::parse_relations(v);
                }
            }
        }
    }
});
