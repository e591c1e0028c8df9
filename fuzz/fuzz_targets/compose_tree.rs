//! Random package sets (dirs, files, symlinks absolute, relative, climbing, looping and aimed at
//! a canary directory on the host, hard links, colliding names) composed into a staging root:
//! nothing outside the root may change (the containment property; tests/it/fixture/hostile_tree.rs).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/it/fixture/hostile_tree.rs"]
#[allow(dead_code)]
mod hostile_tree;

fuzz_target!(|data: &[u8]| {
    hostile_tree::compose_hostile_tree(data);
});
