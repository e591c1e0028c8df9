//! The inputs archive as a registry holds it: one OCI artifact (artifactType
//! [`INPUTS_ARTIFACT_TYPE`]) whose config is the kiln.lock it was made for and whose layers are
//! the input files, one blob each, named by `org.opencontainers.image.title` and typed by
//! media type (a .deb, or a Python wheel or sdist). Debian drops superseded .debs from its
//! mirrors and PyPI yanks files; a release's inputs stored by the team keep it rebuildable.
//!
//! The manifest is deterministic (files sorted by digest, no dates), so archiving the same lock
//! twice writes the same bytes. What the files mean is [`crate::pipeline::inputs`]'s business.

use super::client::{Registry, RegistryError};
use crate::image::oci::MANIFEST_MEDIA_TYPE;
use serde_json::json;

/// artifactType of an inputs archive.
pub const INPUTS_ARTIFACT_TYPE: &str = "application/vnd.dev.kiln.inputs.v1+json";
/// Media type of the config blob: the kiln.lock (TOML) the inputs are for.
pub const LOCK_MEDIA_TYPE: &str = "application/vnd.dev.kiln.lock.v1+toml";
/// Media type of a Debian binary package.
pub const DEB_MEDIA_TYPE: &str = "application/vnd.debian.binary-package";
/// Media type of a Python distribution file (a wheel or an sdist).
pub const PYTHON_MEDIA_TYPE: &str = "application/vnd.dev.kiln.python-distribution";

const TITLE: &str = "org.opencontainers.image.title";

/// One file of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedFile {
    /// Its media type ([`DEB_MEDIA_TYPE`] or [`PYTHON_MEDIA_TYPE`]).
    pub media_type: String,
    /// Its file name (as the registry says it: untrusted until checked by the caller).
    pub title: String,
    /// `sha256:` digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

/// An archive as found in the registry.
#[derive(Debug, Clone)]
pub struct Archive {
    /// `sha256:` digest of its manifest.
    pub manifest: String,
    /// The kiln.lock it was made for.
    pub lock: Vec<u8>,
    /// Its files.
    pub files: Vec<ArchivedFile>,
}

/// Stores the archive under `tag`: every file not already there (`open` gives each one's
/// bytes), the lock, then the manifest, tag last. Returns the manifest digest and the bytes
/// uploaded.
pub fn store(
    registry: &Registry,
    tag: &str,
    lock: &[u8],
    files: &[ArchivedFile],
    open: &dyn Fn(&ArchivedFile) -> std::io::Result<std::fs::File>,
) -> Result<(String, u64), RegistryError> {
    let mut files = files.to_vec();
    files.sort_by(|a, b| a.digest.cmp(&b.digest));
    files.dedup_by(|a, b| a.digest == b.digest);
    let mut uploaded = 0;
    for f in &files {
        let file = open(f).map_err(|e| RegistryError::Failed {
            what: f.title.clone(),
            reason: e.to_string(),
        })?;
        if registry.push_blob(&f.digest, f.size, &file)? {
            uploaded += f.size;
        }
    }
    let lock_digest = registry.push_bytes(lock)?;
    let layers: Vec<_> = files
        .iter()
        .map(|f| {
            json!({"mediaType": f.media_type, "digest": f.digest, "size": f.size,
                "annotations": {TITLE: f.title}})
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": INPUTS_ARTIFACT_TYPE,
        "config": {"mediaType": LOCK_MEDIA_TYPE, "digest": lock_digest, "size": lock.len()},
        "layers": layers,
    });
    let bytes = manifest.to_string().into_bytes();
    registry.put_manifest(tag, MANIFEST_MEDIA_TYPE, &bytes)?;
    Ok((
        format!("sha256:{}", crate::digest::sha256_hex(&bytes)),
        uploaded,
    ))
}

/// The archive at `tag`, with its lock read (and verified); an error when the tag is missing
/// or names something else.
pub fn lookup(registry: &Registry, tag: &str) -> Result<Archive, RegistryError> {
    let what = format!("{}:{tag}", registry.name());
    let not_archive = |reason: String| RegistryError::Corrupt {
        what: what.clone(),
        reason,
    };
    let Some((_, bytes)) = registry.get_manifest(tag)? else {
        return Err(RegistryError::Failed {
            what: what.clone(),
            reason: "no such tag".into(),
        });
    };
    let manifest = serde_json::from_slice::<oci_spec::image::ImageManifest>(&bytes)
        .map_err(|e| not_archive(format!("not an OCI image manifest: {e}")))?;
    let artifact = manifest.artifact_type().as_ref().map(ToString::to_string);
    if artifact.as_deref() != Some(INPUTS_ARTIFACT_TYPE)
        || manifest.config().media_type().to_string() != LOCK_MEDIA_TYPE
    {
        return Err(not_archive(format!(
            "is not a kiln inputs archive (artifactType {}); make one with `kiln vendor`",
            artifact.as_deref().unwrap_or("none")
        )));
    }
    let config = manifest.config();
    let lock = registry.get_small_blob(config.digest().as_ref(), config.size())?;
    let mut files = Vec::new();
    for layer in manifest.layers() {
        let title = layer
            .annotations()
            .as_ref()
            .and_then(|a| a.get(TITLE))
            .cloned()
            .ok_or_else(|| not_archive(format!("layer {} has no {TITLE}", layer.digest())))?;
        files.push(ArchivedFile {
            media_type: layer.media_type().to_string(),
            title,
            digest: layer.digest().to_string(),
            size: layer.size(),
        });
    }
    Ok(Archive {
        manifest: format!("sha256:{}", crate::digest::sha256_hex(&bytes)),
        lock,
        files,
    })
}
