//! The overlay stage's inputs: each daemon's environment recipe (`overlays/NAME/overlay.toml`),
//! its hash-pinned requirements lock, and the choice of wheels for the image's interpreter.
//!
//! The stage that builds overlays as layers of their own (on a copy-on-write view of the
//! configured base, under qemu-user) comes next; until then `kiln build` refuses a recipe that
//! lists overlays rather than ship an image without its daemons.

pub mod recipe;
pub mod requirements;
pub mod wheeltags;
