//! `kiln diff`: what changed between two releases, for the OTA reviewer, QA and the engineer
//! chasing a regression. Both sides are OCI layouts (a build's OUT or the layout itself); only
//! manifests, configs, the SBOMs and the layers that differ are read: layers are compared by
//! digest first, an unchanged layer is never opened, and what a device holding OLD must
//! download is the NEW layers it does not have.
//!
//! [`packages`] compares the SBOMs (Debian packages in dpkg's version order, wheels per env,
//! licences), [`findings`] the ELF findings each build recorded, [`files`] the paths and enabled
//! units of the differing layers; [`render`] prints the result as a table (summary first) or
//! JSON, [`html`] as one self-contained page.

pub mod files;
pub mod findings;
pub mod html;
pub mod packages;
pub mod render;

use crate::image::layout::{Layout, LayoutError};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Why a side could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct DiffError {
    /// The layout or file concerned.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl From<LayoutError> for DiffError {
    fn from(e: LayoutError) -> Self {
        DiffError {
            path: e.path,
            reason: e.reason,
        }
    }
}

/// The largest image config read.
const MAX_CONFIG: u64 = 4 << 20;

/// The largest SBOM read (tens of thousands of packages stay below).
const MAX_SBOM: u64 = 64 << 20;

/// One layer of an image: digest, compressed size, media type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerInfo {
    /// `sha256:` digest of the compressed layer.
    pub digest: String,
    /// Bytes a device downloads for it.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
}

/// What is read of one side: the image's identity, layers and SBOM packages.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// What was given on the command line.
    pub path: PathBuf,
    /// The OCI layout read.
    #[serde(skip)]
    pub layout: PathBuf,
    /// `sha256:` digest of the image manifest.
    pub image: String,
    /// `org.opencontainers.image.version`.
    pub version: Option<String>,
    /// The board annotation.
    pub board: Option<String>,
    /// The layers, bottom first.
    pub layers: Vec<LayerInfo>,
    /// Manifest plus config size (downloaded whenever the image changes).
    pub metadata_bytes: u64,
    /// The SBOM's packages (none when the layout has no SBOM).
    pub packages: Vec<packages::Package>,
    /// Whether the layout has an SBOM at all.
    pub has_sbom: bool,
    /// Its ELF findings, as the build recorded them (or as checked now).
    #[serde(skip)]
    pub findings: findings::SideFindings,
}

/// Reads one side: `out` is a build's output (OUT/oci) or an OCI layout.
pub fn read_side(out: &Path) -> Result<Side, DiffError> {
    let layout_dir = crate::image::layout::layout_of(out);
    let layout = Layout::open(&layout_dir)?;
    let index = layout.index()?;
    let image = layout.the_image(&index)?;
    let (manifest_bytes, manifest) = layout.manifest(image)?;
    let digest = image.digest().to_string();
    let annotation = |key: &str| {
        manifest
            .annotations()
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
    };
    let layers = manifest
        .layers()
        .iter()
        .map(|l| LayerInfo {
            digest: l.digest().to_string(),
            size: l.size(),
            media_type: l.media_type().to_string(),
        })
        .collect();
    let (packages, has_sbom) = match layout.sbom(&index, &digest, MAX_SBOM)? {
        None => (Vec::new(), false),
        Some(doc) => {
            let path = layout_dir.join("blobs/sha256");
            (
                packages::from_spdx(&doc).map_err(|reason| DiffError { path, reason })?,
                true,
            )
        }
    };
    let config = layout.blob(manifest.config(), MAX_CONFIG)?;
    let findings = findings::read(out, &layout_dir, &config).map_err(|reason| DiffError {
        path: out.to_path_buf(),
        reason,
    })?;
    Ok(Side {
        findings,
        path: out.to_path_buf(),
        layout: layout_dir.clone(),
        image: digest,
        version: annotation("org.opencontainers.image.version"),
        board: annotation(crate::image::oci::annotation::BOARD),
        layers,
        metadata_bytes: manifest_bytes.len() as u64 + manifest.config().size(),
        packages,
        has_sbom,
    })
}

/// How one layer of NEW relates to OLD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerChange {
    /// Position in NEW (0 = the base), or in OLD for a removed layer.
    pub index: usize,
    /// The layer.
    pub layer: LayerInfo,
    /// "same" (OLD has it), "new" (a device downloads it) or "removed" (only in OLD).
    pub status: &'static str,
}

/// Everything `kiln diff` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// OLD's image, version and board.
    pub old: Summary,
    /// NEW's.
    pub new: Summary,
    /// Per layer of NEW (then OLD's removed ones).
    pub layers: Vec<LayerChange>,
    /// Bytes a device holding OLD downloads for NEW: its new layers, manifest and config.
    pub download_bytes: u64,
    /// NEW's whole size, for comparison.
    pub full_bytes: u64,
    /// Package, wheel and licence changes (empty when a side has no SBOM).
    pub packages: packages::PackageDiff,
    /// Sides without an SBOM (package changes cannot be told).
    pub missing_sbom: Vec<String>,
    /// Paths and enabled units of the layers that differ.
    pub files: files::FileDiff,
    /// ELF findings new, resolved, waived or unwaived.
    pub findings: findings::FindingDiff,
}

/// One side, briefly.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// As given.
    pub path: PathBuf,
    /// Image manifest digest.
    pub image: String,
    /// Version annotation.
    pub version: Option<String>,
    /// Board annotation.
    pub board: Option<String>,
}

fn summary(s: &Side) -> Summary {
    Summary {
        path: s.path.clone(),
        image: s.image.clone(),
        version: s.version.clone(),
        board: s.board.clone(),
    }
}

/// Compares two sides: layers by digest, packages by SBOM, files of the differing layers.
pub fn compare(old: &Side, new: &Side) -> Result<Diff, DiffError> {
    let old_digests: BTreeSet<&str> = old.layers.iter().map(|l| l.digest.as_str()).collect();
    let new_digests: BTreeSet<&str> = new.layers.iter().map(|l| l.digest.as_str()).collect();
    let mut layers: Vec<LayerChange> = new
        .layers
        .iter()
        .enumerate()
        .map(|(index, l)| LayerChange {
            index,
            layer: l.clone(),
            status: if old_digests.contains(l.digest.as_str()) {
                "same"
            } else {
                "new"
            },
        })
        .collect();
    layers.extend(
        old.layers
            .iter()
            .enumerate()
            .filter(|(_, l)| !new_digests.contains(l.digest.as_str()))
            .map(|(index, l)| LayerChange {
                index,
                layer: l.clone(),
                status: "removed",
            }),
    );
    let same_image = old.image == new.image;
    let download_bytes = if same_image {
        0
    } else {
        new.metadata_bytes
            + layers
                .iter()
                .filter(|c| c.status == "new")
                .map(|c| c.layer.size)
                .sum::<u64>()
    };
    let full_bytes = new.metadata_bytes + new.layers.iter().map(|l| l.size).sum::<u64>();
    let mut missing_sbom = Vec::new();
    for s in [old, new] {
        if !s.has_sbom {
            missing_sbom.push(s.path.display().to_string());
        }
    }
    let packages = if missing_sbom.is_empty() {
        packages::compare(&old.packages, &new.packages)
    } else {
        packages::PackageDiff::default()
    };
    let digests = |s: &Side| -> Vec<String> { s.layers.iter().map(|l| l.digest.clone()).collect() };
    let files = files::compare(&old.layout, &new.layout, &digests(old), &digests(new))?;
    let mut finding_diff = findings::compare(&old.findings.findings, &new.findings.findings);
    for s in [old, new] {
        if s.findings.source == findings::FindingsSource::CheckedWithoutWaivers {
            finding_diff
                .checked_without_waivers
                .push(s.path.display().to_string());
        }
    }
    Ok(Diff {
        findings: finding_diff,
        old: summary(old),
        new: summary(new),
        layers,
        download_bytes,
        full_bytes,
        packages,
        missing_sbom,
        files,
    })
}
