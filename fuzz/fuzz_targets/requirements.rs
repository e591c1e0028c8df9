//! A python-venv overlay's requirements lock and the wheel file names of a wheelhouse, as a
//! firmware team (or a compromised index) hands them to kiln: parsing and wheel selection never
//! panic, and every accepted requirement is pinned and hashed.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(reqs) = kiln::recipe::requirements::parse(&text, "fuzz.lock") {
        for r in &reqs {
            assert!(!r.hashes.is_empty() && !r.version.is_empty());
        }
    }
    let files: Vec<String> = text.lines().map(str::to_string).collect();
    let target = kiln::pipeline::overlay::wheeltags::PythonTarget {
        version: (3, 5),
        machine: "armv7l".into(),
        glibc: (2, 24),
    };
    for f in &files {
        if let Some(w) = kiln::pipeline::overlay::wheeltags::WheelName::parse(f) {
            let _ = kiln::pipeline::overlay::wheeltags::select(&target, &w.name, &w.version, &files);
        }
    }
});
