//! The loader configuration `kiln check` reads from an image: ld.so.conf text and the binary
//! ld.so.cache. Parsing never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln::check::ldso::parse_ld_so_conf(&String::from_utf8_lossy(data));
    let _ = kiln::check::ldso::parse_ld_so_cache(data);
    let mut new = b"glibc-ld.so.cache1.1".to_vec();
    new.extend_from_slice(data);
    let _ = kiln::check::ldso::parse_ld_so_cache(&new);
});
