//! kiln beyond one machine: an OCI distribution registry as the hand-off between firmware CI,
//! the OTA update server and the engineer's laptop. `push` copies a signed layout (the image,
//! its cosign signature at the `sha256-<hex>.sig` tag, its SBOM as an OCI 1.1 referrer) to a
//! registry, tag last; `pull` copies one back into a layout that `kiln verify`, `export` and
//! `flash` take like a local build, every byte hashed on the way in.

pub mod auth;
pub mod client;
pub mod inputs;
pub mod layercache;
pub mod pull;
pub mod push;
pub mod reference;

pub use client::{ConnectOptions, Registry, RegistryError};
pub use reference::{Reference, ReferenceError};

/// The referrers tag schema's tag for a subject (OCI distribution spec 1.1, "Referrers Tag
/// Schema", for registries without the referrers API): `sha256:abc` -> `sha256-abc`.
pub fn referrers_tag(digest: &str) -> String {
    digest.replace(':', "-")
}

/// The tag `cosign attach sbom` gives an image's SBOM: `sha256-<hex>.sbom`.
pub fn sbom_tag(digest: &str) -> String {
    format!("{}.sbom", digest.replace(':', "-"))
}

/// Why a push or pull failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The reference is malformed.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The registry failed, refused or lied.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The release has no image for the board asked for, or is for another board.
    #[error("{reference}: {reason}")]
    Board {
        /// The reference.
        reference: String,
        /// Which boards it has.
        reason: String,
    },
    /// The local layout is missing, unreadable or inconsistent.
    #[error("{path}: {reason}")]
    Layout {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl From<crate::image::layout::LayoutError> for TransferError {
    fn from(e: crate::image::layout::LayoutError) -> Self {
        TransferError::Layout {
            path: e.path,
            reason: e.reason,
        }
    }
}

pub(crate) fn layout_err(path: &std::path::Path, reason: impl std::fmt::Display) -> TransferError {
    TransferError::Layout {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}
