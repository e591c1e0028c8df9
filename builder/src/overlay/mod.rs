//! The overlay stage and its inputs: each daemon's environment recipe
//! (`overlays/NAME/overlay.toml`), its hash-pinned requirements lock, the choice of wheels for
//! the image's interpreter, and the stage that builds each overlay as a layer of its own
//! (`stage`, with `capture` reading what a build changed).

pub mod capture;
pub mod recipe;
pub mod requirements;
pub mod stage;
pub mod wheeltags;
