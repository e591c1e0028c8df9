//! ELF files as `kiln check` reads them (headers, PT_DYNAMIC through PT_LOAD, symbol versions,
//! ARM attributes): reading never panics, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln::check::elf::parse(data);
    // Also as the start of a real ELF file, so the fuzzer gets past the magic cheaply.
    let mut with_magic = b"\x7fELF\x01\x01\x01\x00".to_vec();
    with_magic.extend_from_slice(data);
    let _ = kiln::check::elf::parse(&with_magic);
    with_magic[4] = 2;
    let _ = kiln::check::elf::parse(&with_magic);
});
