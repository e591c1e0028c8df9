//! The layer cache of a CI fleet in a registry repository: each finished layer is an OCI
//! artifact tagged with its layer-cache key (64 hex digits), its config the cache record (which
//! blob, diff_id, media type, the layer's SBOM entries) and its one layer the layer blob. A
//! fresh runner looks a key up before building; concurrent runners pushing the same key push
//! the same bytes (content addressing, and the record is deterministic), so the last tag write
//! wins with identical content.

use super::client::{Registry, RegistryError};
use serde_json::json;

/// artifactType of a cached layer, and the media type of its record.
pub const LAYER_CACHE_ARTIFACT_TYPE: &str = "application/vnd.dev.kiln.layer-cache.v1+json";

use crate::image::oci::MANIFEST_MEDIA_TYPE;

/// A cached layer as the registry holds it: the record's bytes and the layer blob's
/// descriptor.
pub struct RemoteLayer {
    /// The record (JSON) the local cache keeps for the key.
    pub record: Vec<u8>,
    /// `sha256:` digest of the layer blob.
    pub digest: String,
    /// Its size.
    pub size: u64,
}

/// The entry for `key`, None on a miss (no tag, or something that is not a cached layer).
pub fn lookup(registry: &Registry, key: &str) -> Result<Option<RemoteLayer>, RegistryError> {
    let Some((_, bytes)) = registry.get_manifest(key)? else {
        return Ok(None);
    };
    let Ok(manifest) = serde_json::from_slice::<oci_spec::image::ImageManifest>(&bytes) else {
        return Ok(None);
    };
    let is_cache = manifest
        .artifact_type()
        .as_ref()
        .is_some_and(|a| a.to_string() == LAYER_CACHE_ARTIFACT_TYPE);
    let [layer] = manifest.layers().as_slice() else {
        return Ok(None);
    };
    if !is_cache {
        return Ok(None);
    }
    let config = manifest.config();
    let record = registry.get_small_blob(config.digest().as_ref(), config.size())?;
    Ok(Some(RemoteLayer {
        record,
        digest: layer.digest().to_string(),
        size: layer.size(),
    }))
}

/// Stores a layer (its blob in `blob`) and its record under `key`, blobs first, tag last.
pub fn store(
    registry: &Registry,
    key: &str,
    record: &[u8],
    media_type: &str,
    digest: &str,
    blob: &std::fs::File,
) -> Result<(), RegistryError> {
    let size = blob
        .metadata()
        .map_err(|e| RegistryError::Failed {
            what: format!("{} layer {digest}", registry.name()),
            reason: e.to_string(),
        })?
        .len();
    registry.push_blob(digest, size, blob)?;
    let record_digest = registry.push_bytes(record)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": LAYER_CACHE_ARTIFACT_TYPE,
        "config": {"mediaType": LAYER_CACHE_ARTIFACT_TYPE, "digest": record_digest, "size": record.len()},
        "layers": [{"mediaType": media_type, "digest": digest, "size": size}],
    });
    registry.put_manifest(key, MANIFEST_MEDIA_TYPE, manifest.to_string().as_bytes())
}
