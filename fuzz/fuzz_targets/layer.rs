//! An image layer or root-filesystem tar as `kiln check` and `kiln export` read it (whatever the
//! names, links, types and compression), flattened and written out again as the tar export:
//! never a panic, and a tree that reads must either export or be refused with a reason.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = kiln::image::ImageTree::from_tar_bytes(data, "fuzz.tar") {
        let _ = kiln::export::rootfs::write_tar(&tree, 1_700_000_000, &mut std::io::sink());
        let _ = tree.resolve("/usr/bin/env");
    }
});
