//! An existing OCI image layout, read and amended with oci-spec's types: `index.json` as an
//! [`ImageIndex`], manifests as [`ImageManifest`], each proven to be the bytes its descriptor
//! names. The one reader behind loading an image for check/export, signing, attaching the
//! SBOM, verifying and pushing ([`super::oci`] writes a new layout).
//!
//! A layout may come from anywhere (a registry, a colleague, an attacker), so every file is
//! read and written through [`ImageRoot`]: a symlink at `index.json`, at `blobs/` or at a blob's
//! predictable path is refused, never followed out of the layout; a FIFO or device is refused
//! without being opened; nothing bigger than its descriptor (or [`MAX_JSON`] for JSON) is read.
//!
//! `index.json` is written back through `serde_json::Value`, whose maps are sorted, for the
//! reason [`super::oci`] gives: oci-spec keeps annotations in a `HashMap`.

use crate::digest::{sha256_digest_hex, sha256_hex};
use crate::image::oci::{MANIFEST_MEDIA_TYPE, SPDX_MEDIA_TYPE};
use crate::inroot::{Dir, ImageRoot, InRootError};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use std::path::{Path, PathBuf};

/// The largest index.json or manifest kiln reads from a layout (the OCI distribution spec's
/// registries take manifests of up to 4 MiB).
pub const MAX_JSON: u64 = 4 << 20;

/// The tag annotation of an index.json entry.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// artifactType of a cosign signature manifest as an OCI 1.1 referrer.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The artifactType (and layer media type) of a DSSE attestation: the signed provenance.
pub const ATTESTATION_ARTIFACT_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// DSSE's payload type for in-toto statements (what an attestation's envelope carries).
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// A file of the layout is missing, unreadable, of the wrong shape or not what its descriptor
/// says.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct LayoutError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// What an index.json entry lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// An image manifest (what is signed, verified, pushed and exported).
    Image,
    /// A cosign signature manifest.
    Signature,
    /// kiln's SPDX SBOM referrer.
    Sbom,
    /// A DSSE attestation (the signed provenance), at cosign's `.att` tag.
    Attestation,
    /// Another artifact, or not a manifest.
    Other,
}

/// Classifies an index.json entry: signatures by their `.sig` tag or artifactType, SBOMs by
/// artifactType, images are manifests that are no artifact.
pub fn entry_kind(d: &Descriptor) -> EntryKind {
    let artifact = d.artifact_type().as_ref().map(ToString::to_string);
    if tag_of(d).is_some_and(|t| t.ends_with(".sig"))
        || artifact.as_deref() == Some(SIGNATURE_ARTIFACT_TYPE)
    {
        EntryKind::Signature
    } else if artifact.as_deref() == Some(SPDX_MEDIA_TYPE) {
        EntryKind::Sbom
    } else if tag_of(d).is_some_and(|t| t.ends_with(".att"))
        || artifact.as_deref() == Some(ATTESTATION_ARTIFACT_TYPE)
    {
        EntryKind::Attestation
    } else if artifact.is_none() && d.media_type().to_string() == MANIFEST_MEDIA_TYPE {
        EntryKind::Image
    } else {
        EntryKind::Other
    }
}

/// An entry's tag (`org.opencontainers.image.ref.name`).
pub fn tag_of(d: &Descriptor) -> Option<&str> {
    annotation_of(d.annotations(), REF_NAME)
}

/// One annotation's value.
pub fn annotation_of<'a>(
    annotations: &'a Option<std::collections::HashMap<String, String>>,
    key: &str,
) -> Option<&'a str> {
    annotations.as_ref()?.get(key).map(String::as_str)
}

/// The path of a `sha256:` digest's blob inside a layout (`blobs/sha256/<hex>`), None for any
/// other digest: a digest from an untrusted layout never becomes a path outside `blobs/sha256`.
pub fn blob_rel(digest: &str) -> Option<String> {
    sha256_digest_hex(digest).map(|hex| format!("blobs/sha256/{hex}"))
}

/// An OCI image layout directory, opened for reading (and amending) inside it only.
pub struct Layout<'a> {
    path: &'a Path,
    root: ImageRoot,
}

/// The OCI layout of a build's output directory (OUT/oci), or the path itself when it is a
/// layout.
pub fn layout_of(out: &Path) -> PathBuf {
    if out.join("oci-layout").exists() {
        out.to_path_buf()
    } else {
        out.join("oci")
    }
}

/// The layout of `out` for `board`: as [`layout_of`], or, for the output of a build for several
/// boards (`OUT/BOARD/oci`), the board's.
pub fn layout_for_board(out: &Path, board: Option<&str>) -> PathBuf {
    let layout = layout_of(out);
    match board {
        Some(name) if !layout.exists() && out.join(name).join("oci").is_dir() => {
            out.join(name).join("oci")
        }
        _ => layout,
    }
}

/// `out` itself when it is a build's output or a layout; else the boards' outputs in it (what
/// `kiln build` writes for a recipe listing several boards: `OUT/BOARD/oci`), by name.
pub fn board_outputs(out: &Path) -> Vec<PathBuf> {
    if layout_of(out).exists() {
        return vec![out.to_path_buf()];
    }
    let mut boards: Vec<PathBuf> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("oci/index.json").is_file())
        .collect();
    boards.sort();
    if boards.is_empty() {
        vec![out.to_path_buf()]
    } else {
        boards
    }
}

impl<'a> Layout<'a> {
    /// Opens the layout at `path` (a directory, not a symlink to one).
    pub fn open(path: &'a Path) -> Result<Layout<'a>, LayoutError> {
        let root = ImageRoot::open(path).map_err(|e| LayoutError {
            path: path.to_path_buf(),
            reason: e.reason,
        })?;
        Ok(Layout { path, root })
    }

    /// The layout's directory.
    pub fn path(&self) -> &Path {
        self.path
    }

    /// An error about the file `rel` of the layout.
    pub fn err(&self, rel: &str, reason: impl std::fmt::Display) -> LayoutError {
        LayoutError {
            path: self.path.join(rel),
            reason: reason.to_string(),
        }
    }

    /// The regular file `rel`, at most `max` bytes; None when it is missing.
    pub fn read_optional(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, LayoutError> {
        self.root
            .read(rel, max)
            .map_err(|e| self.err(rel, e.reason))
    }

    /// The regular file `rel`, at most `max` bytes; an error naming it when missing.
    pub fn read(&self, rel: &str, max: u64) -> Result<Vec<u8>, LayoutError> {
        self.read_optional(rel, max)?
            .ok_or_else(|| self.err(rel, "is missing"))
    }

    /// `index.json`.
    pub fn index(&self) -> Result<ImageIndex, LayoutError> {
        let bytes = self.read("index.json", MAX_JSON)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.err("index.json", format!("not an OCI image index: {e}")))
    }

    /// The blob a descriptor names, proven to be its bytes; refused when the descriptor says it
    /// is bigger than `max`.
    pub fn blob(&self, d: &Descriptor, max: u64) -> Result<Vec<u8>, LayoutError> {
        let digest = d.digest().to_string();
        let rel = self.blob_path(&digest)?;
        if d.size() > max {
            return Err(self.err(
                &rel,
                format!(
                    "its descriptor says {} bytes, more than the {max} expected",
                    d.size()
                ),
            ));
        }
        let bytes = self.read(&rel, d.size())?;
        if bytes.len() as u64 != d.size() {
            return Err(self.err(
                &rel,
                format!("is {} bytes, its descriptor says {}", bytes.len(), d.size()),
            ));
        }
        if format!("sha256:{}", sha256_hex(&bytes)) != digest {
            return Err(self.err(&rel, "content does not match its digest"));
        }
        Ok(bytes)
    }

    /// The image manifest a descriptor names, proven to be its bytes.
    pub fn manifest(&self, d: &Descriptor) -> Result<(Vec<u8>, ImageManifest), LayoutError> {
        let bytes = self.blob(d, MAX_JSON)?;
        let manifest = serde_json::from_slice(&bytes).map_err(|e| {
            self.err(
                &self.blob_path(d.digest().as_ref()).unwrap_or_default(),
                format!("not an OCI image manifest: {e}"),
            )
        })?;
        Ok((bytes, manifest))
    }

    /// `blobs/sha256/<hex>` for a `sha256:` digest; an error naming index.json for any other.
    pub fn blob_path(&self, digest: &str) -> Result<String, LayoutError> {
        blob_rel(digest)
            .ok_or_else(|| self.err("index.json", format!("unsupported digest {digest:?}")))
    }

    /// `blobs/sha256`, None when the layout has none.
    pub fn blobs_dir(&self) -> Result<Option<Dir>, LayoutError> {
        self.root
            .dir("blobs/sha256")
            .map_err(|e| self.err("blobs/sha256", e.reason))
    }

    /// The one image manifest of the layout (a build's output for one board): refused, naming
    /// the count, when there are none or several.
    pub fn the_image<'i>(&self, index: &'i ImageIndex) -> Result<&'i Descriptor, LayoutError> {
        let images: Vec<&Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| entry_kind(d) == EntryKind::Image)
            .collect();
        match images.as_slice() {
            [one] => Ok(one),
            _ => Err(self.err(
                "index.json",
                format!(
                    "lists {} image manifests; give the output of one board (OUT/BOARD)",
                    images.len()
                ),
            )),
        }
    }

    /// The SPDX document `kiln build` attached to the image `image_digest` (the one layer of the
    /// referrer tagged `sha256-HEX.sbom`), at most `max` bytes; None when the layout has none.
    pub fn sbom(
        &self,
        index: &ImageIndex,
        image_digest: &str,
        max: u64,
    ) -> Result<Option<Vec<u8>>, LayoutError> {
        let tag = format!("{}.sbom", image_digest.replace(':', "-"));
        let Some(d) = index
            .manifests()
            .iter()
            .find(|d| tag_of(d) == Some(tag.as_str()))
        else {
            return Ok(None);
        };
        let (_, m) = self.manifest(d)?;
        let layer = m.layers().first().ok_or_else(|| {
            self.err(
                "index.json",
                format!("the SBOM manifest {} has no layer", d.digest()),
            )
        })?;
        Ok(Some(self.blob(layer, max)?))
    }

    /// The blob of `digest` opened for streaming, when it is a regular file of `size` bytes.
    pub fn blob_file(&self, digest: &str, size: u64) -> Result<std::fs::File, LayoutError> {
        let rel = self.blob_path(digest)?;
        let dir = self
            .blobs_dir()?
            .ok_or_else(|| self.err(&rel, "blobs/sha256 is missing"))?;
        let (file, len) = dir
            .open_read(digest.trim_start_matches("sha256:"))
            .map_err(|e| self.err(&rel, e.reason))?
            .ok_or_else(|| self.err(&rel, "is missing"))?;
        if len != size {
            return Err(self.err(&rel, format!("is {len} bytes, its descriptor says {size}")));
        }
        Ok(file)
    }

    /// Writes `bytes` as the blob of their digest (replacing whatever entry had that name);
    /// returns the digest and size.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<(String, u64), LayoutError> {
        let hex = sha256_hex(bytes);
        let rel = format!("blobs/sha256/{hex}");
        self.root
            .write(&rel, bytes, 0o644)
            .map_err(|e| self.err(&rel, e.reason))?;
        Ok((format!("sha256:{hex}"), bytes.len() as u64))
    }

    /// Replaces `index.json` in one step (a temporary file renamed over it), keys sorted.
    pub fn write_index(&self, index: &ImageIndex) -> Result<(), LayoutError> {
        let value = serde_json::to_value(index).map_err(|e| self.err("index.json", e))?;
        self.replace("index.json", value.to_string().as_bytes())
    }

    /// Replaces `rel` by `bytes` in one step (a temporary file renamed over it).
    pub fn replace(&self, rel: &str, bytes: &[u8]) -> Result<(), LayoutError> {
        let tmp = format!(".{rel}.kiln-new");
        let fail = |e: InRootError| self.err(rel, e.reason);
        self.root.write(&tmp, bytes, 0o644).map_err(fail)?;
        self.root
            .root_dir()
            .map_err(fail)?
            .rename(&tmp, rel)
            .map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn board_outputs_are_the_boards_in_name_order_or_the_output_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        for board in ["zeta", "alpha"] {
            std::fs::create_dir_all(out.join(board).join("oci")).unwrap();
            std::fs::write(out.join(board).join("oci/index.json"), "{}").unwrap();
        }
        // A directory without a layout in it is not a board's output.
        std::fs::create_dir_all(out.join("notes")).unwrap();
        assert_eq!(
            board_outputs(out),
            vec![out.join("alpha"), out.join("zeta")]
        );
        // A single board's output, and a layout named directly, are themselves.
        let alpha = out.join("alpha");
        assert_eq!(board_outputs(&alpha), vec![alpha.clone()]);
        std::fs::write(alpha.join("oci/oci-layout"), "{}").unwrap();
        assert_eq!(board_outputs(&alpha.join("oci")), vec![alpha.join("oci")]);
        // Nothing there: the path itself, for the caller to name in its error.
        let empty = out.join("notes");
        assert_eq!(board_outputs(&empty), vec![empty.clone()]);
    }

    fn layout_with(index: &serde_json::Value, blobs: &[&[u8]]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("blobs/sha256");
        std::fs::create_dir_all(&dir).unwrap();
        for b in blobs {
            std::fs::write(dir.join(sha256_hex(b)), b).unwrap();
        }
        std::fs::write(tmp.path().join("index.json"), index.to_string()).unwrap();
        tmp
    }

    #[test]
    fn a_manifest_is_read_only_when_it_is_its_descriptors_bytes() {
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
        let digest = format!("sha256:{}", sha256_hex(manifest));
        let entry = |size: usize| json!({"schemaVersion": 2, "manifests": [{"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": size}]});
        let good = layout_with(&entry(manifest.len()), &[manifest]);
        let layout = Layout::open(good.path()).unwrap();
        let index = layout.index().unwrap();
        assert_eq!(entry_kind(&index.manifests()[0]), EntryKind::Image);
        let (bytes, m) = layout.manifest(&index.manifests()[0]).unwrap();
        assert_eq!(bytes, manifest);
        assert!(m.layers().is_empty());

        // A descriptor lying about the size, a blob that is not a manifest, a hostile digest.
        let short = layout_with(&entry(manifest.len() - 1), &[manifest]);
        let layout = Layout::open(short.path()).unwrap();
        let e = layout
            .manifest(&layout.index().unwrap().manifests()[0])
            .unwrap_err();
        assert!(
            e.reason
                .contains(&format!("more than the {} allowed", manifest.len() - 1)),
            "{e}"
        );
        let not_json = b"not a manifest";
        let wrong = layout_with(
            &json!({"schemaVersion": 2, "manifests": [{"mediaType": MANIFEST_MEDIA_TYPE, "digest": format!("sha256:{}", sha256_hex(not_json)), "size": not_json.len()}]}),
            &[not_json],
        );
        let layout = Layout::open(wrong.path()).unwrap();
        let e = layout
            .manifest(&layout.index().unwrap().manifests()[0])
            .unwrap_err();
        assert!(e.reason.starts_with("not an OCI image manifest"), "{e}");
        assert!(blob_rel("sha256:../../etc/passwd").is_none());
        assert!(blob_rel(&format!("sha512:{}", "a".repeat(128))).is_none());
        let not_index = layout_with(&json!({"manifests": "no"}), &[]);
        let e = Layout::open(not_index.path()).unwrap().index().unwrap_err();
        assert!(
            e.to_string().contains("index.json: not an OCI image index"),
            "{e}"
        );
    }

    #[test]
    fn entries_are_told_apart_by_tag_and_artifact_type() {
        let d = |v: serde_json::Value| serde_json::from_value::<Descriptor>(v).unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            entry_kind(&d(
                json!({"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": 1,
                "annotations": {REF_NAME: "sha256-x.sig"}})
            )),
            EntryKind::Signature
        );
        assert_eq!(
            entry_kind(&d(
                json!({"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": 1,
                "artifactType": SPDX_MEDIA_TYPE})
            )),
            EntryKind::Sbom
        );
        assert_eq!(
            entry_kind(&d(
                json!({"mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": digest, "size": 1})
            )),
            EntryKind::Other
        );
    }
}
