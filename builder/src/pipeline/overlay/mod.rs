//! The overlay stage and its inputs: each daemon's environment recipe
//! (`overlays/NAME/overlay.toml`), its hash-pinned requirements lock and markers, the choice of
//! wheels for the image's interpreter and where they come from, their installation into a
//! Python env (`venv`), and the stage that builds each overlay as a layer of its own (`stage`,
//! with `capture` reading what a build changed).

pub mod capture;
pub mod error;
pub mod files;
pub mod markers;
pub mod sdist;
pub mod stage;
pub mod venv;
pub mod wheelinstall;
pub mod wheels;
pub mod wheeltags;

pub use error::OverlayError;

use crate::image::pack::LayerCompression;
use crate::pipeline::fetch::Cache;
use crate::recipe::overlay::Overlay;
use crate::recipe::Recipe;
use std::path::Path;

/// What the stage needs.
pub struct StageInput<'a> {
    /// The recipe (board, waivers) and its overlays.
    pub recipe: &'a Recipe,
    /// The overlays, loaded.
    pub overlays: &'a [Overlay],
    /// The base layer blob (compressed) and its diff_id.
    pub base_blob: &'a Path,
    /// The base layer's diff_id.
    pub base_diff_id: &'a str,
    /// The layout's blobs directory (new layers go there).
    pub blobs: &'a Path,
    /// A private working directory on the output's filesystem.
    pub work: &'a Path,
    /// The cache (layer records).
    pub cache: &'a Cache,
    /// SOURCE_DATE_EPOCH.
    pub sde: u64,
    /// Layer compression.
    pub compression: LayerCompression,
    /// `--offline`: wheels only from the wheelhouse, pip's find-links and the cache.
    pub offline: bool,
}
