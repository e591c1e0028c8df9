//! The overlay stage and its inputs: each daemon's environment recipe
//! (`overlays/NAME/overlay.toml`), its hash-pinned requirements lock and markers, the choice of
//! wheels for the image's interpreter and where they come from, their installation into a
//! Python env (`venv`), and the stage that builds each overlay as a layer of its own (`stage`,
//! with `capture` reading what a build changed).

pub mod capture;
pub mod markers;
pub mod recipe;
pub mod requirements;
pub mod sdist;
pub mod stage;
pub mod venv;
pub mod wheelinstall;
pub mod wheels;
pub mod wheeltags;
