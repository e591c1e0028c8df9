//! The layer cache: a finished layer is a pure function of its inputs (the lock, the recipe's
//! choices, SOURCE_DATE_EPOCH, the compression and this kiln's layer format), so it is stored
//! under a key derived from them and reused instead of being fetched, composed, configured and
//! packed again. Blobs live in the fetch cache's content-addressed store; a small JSON record per
//! key says which blob is the layer. A record whose blob is missing or corrupt is a miss.

use crate::digest::sha256_hex;
use crate::image::pack::Layer;
use crate::pipeline::fetch::Cache;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Bump when anything changes how a layer's bytes come out of the same inputs.
/// 2: per-device identity moved to first boot; the system Python's bytecode compiled once.
/// 3: unpack-time triggers run at the end of configure; postinsts ordered by a finer reading of
///    what they share (dpkg-statoverride, dpkg-trigger, dpkg-divert, ucf).
pub const LAYER_FORMAT: &str = "kiln-layer-format-3";

/// Why the layer cache failed (a miss is not an error).
#[derive(Debug, thiserror::Error)]
#[error("layer cache {path}: {reason}")]
pub struct LayerCacheError {
    /// Path.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
struct Record {
    digest: String,
    size: u64,
    diff_id: String,
    media_type: String,
    entries: u64,
    /// The layer's .debs as the SBOM lists them (a record without them is a miss).
    #[serde(default)]
    sbom: Option<Vec<crate::pipeline::sbom::SbomPackage>>,
}

/// The cache key of a layer: SHA-256 over its inputs, one per line.
pub fn key(inputs: &[&str]) -> String {
    let mut text = format!("{LAYER_FORMAT}\n{}\n", env!("CARGO_PKG_VERSION"));
    for i in inputs {
        text.push_str(i);
        text.push('\n');
    }
    sha256_hex(text.as_bytes())
}

fn record_path(cache: &Cache, key: &str) -> PathBuf {
    cache.root().join("layers").join(format!("{key}.json"))
}

/// Writes a cache record whole or not at all: into a temporary file beside `path`, renamed
/// over it last, so a reader sees the old record, the new one or none, never half of one.
fn write_record(path: &Path, bytes: &[u8]) -> Result<(), LayerCacheError> {
    let err = |reason: String| LayerCacheError {
        path: path.to_path_buf(),
        reason,
    };
    let dir = path
        .parent()
        .ok_or_else(|| err("no parent directory".to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(e.to_string()))?;
    std::io::Write::write_all(tmp.as_file_mut(), bytes).map_err(|e| err(e.to_string()))?;
    tmp.persist(path).map_err(|e| err(e.to_string()))?;
    Ok(())
}

fn media_type(name: &str) -> Option<&'static str> {
    [
        crate::image::pack::LayerCompression::Zstd.media_type(),
        crate::image::pack::LayerCompression::Gzip.media_type(),
    ]
    .into_iter()
    .find(|m| *m == name)
}

/// Brings the registry's entry for `key` into the local cache (blob verified by digest as it
/// streams, record written last); false on a miss. A registry that fails is reported and
/// treated as a miss: the layer is built instead.
fn fetch_remote(cache: &Cache, key: &str) -> Result<bool, LayerCacheError> {
    let Some(registry) = cache.remote() else {
        return Ok(false);
    };
    let path = record_path(cache, key);
    let err = |reason: String| LayerCacheError {
        path: path.clone(),
        reason,
    };
    let found = match crate::registry::layercache::lookup(registry, key) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("kiln: warning: layer cache {key}: {e}; building the layer");
            return Ok(false);
        }
    };
    let Some(remote) = found else {
        return Ok(false);
    };
    let Ok(record) = serde_json::from_slice::<Record>(&remote.record) else {
        return Ok(false);
    };
    let hex = remote.digest.trim_start_matches("sha256:");
    if record.digest != hex || record.size != remote.size {
        return Ok(false);
    }
    if cache
        .verified(hex, remote.size)
        .map_err(|e| err(e.to_string()))?
        .is_none()
    {
        let mut tmp = tempfile::NamedTempFile::new_in(cache.root().join("tmp"))
            .map_err(|e| err(e.to_string()))?;
        if let Err(e) = registry.get_blob(&remote.digest, remote.size, tmp.as_file_mut()) {
            eprintln!("kiln: warning: layer cache {key}: {e}; building the layer");
            return Ok(false);
        }
        tmp.persist(cache.blob_path(hex))
            .map_err(|e| err(e.to_string()))?;
    }
    write_record(&path, &remote.record)?;
    Ok(true)
}

/// Copies a cached layer into `blobs_dir` and returns it, or None on a miss (locally and in
/// the registry behind the cache, if any).
pub fn restore(
    cache: &Cache,
    key: &str,
    blobs_dir: &Path,
) -> Result<Option<(Layer, Vec<crate::pipeline::sbom::SbomPackage>)>, LayerCacheError> {
    if let Some(found) = restore_local(cache, key, blobs_dir)? {
        return Ok(Some(found));
    }
    if fetch_remote(cache, key)? {
        return restore_local(cache, key, blobs_dir);
    }
    Ok(None)
}

fn restore_local(
    cache: &Cache,
    key: &str,
    blobs_dir: &Path,
) -> Result<Option<(Layer, Vec<crate::pipeline::sbom::SbomPackage>)>, LayerCacheError> {
    let path = record_path(cache, key);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let Ok(record) = serde_json::from_str::<Record>(&text) else {
        return Ok(None);
    };
    let Some(media_type) = media_type(&record.media_type) else {
        return Ok(None);
    };
    let Some(debs) = record.sbom else {
        return Ok(None);
    };
    let err = |reason: String| LayerCacheError {
        path: path.clone(),
        reason,
    };
    let Some(blob) = cache
        .verified(&record.digest, record.size)
        .map_err(|e| err(e.to_string()))?
    else {
        return Ok(None);
    };
    std::fs::copy(&blob, blobs_dir.join(&record.digest)).map_err(|e| err(e.to_string()))?;
    Ok(Some((
        Layer {
            digest: record.digest,
            size: record.size,
            diff_id: record.diff_id,
            media_type,
            entries: record.entries,
        },
        debs,
    )))
}

/// Stores a freshly packed layer (its blob in `blobs_dir`) under `key`.
pub fn store(
    cache: &Cache,
    key: &str,
    layer: &Layer,
    debs: &[crate::pipeline::sbom::SbomPackage],
    blobs_dir: &Path,
) -> Result<(), LayerCacheError> {
    let path = record_path(cache, key);
    let err = |reason: String| LayerCacheError {
        path: path.clone(),
        reason,
    };
    let dest = cache.blob_path(&layer.digest);
    if !dest.exists() {
        let tmp = tempfile::NamedTempFile::new_in(cache.root().join("tmp"))
            .map_err(|e| err(e.to_string()))?;
        std::fs::copy(blobs_dir.join(&layer.digest), tmp.path()).map_err(|e| err(e.to_string()))?;
        tmp.persist(&dest).map_err(|e| err(e.to_string()))?;
    }
    let record = Record {
        digest: layer.digest.clone(),
        size: layer.size,
        diff_id: layer.diff_id.clone(),
        media_type: layer.media_type.to_string(),
        entries: layer.entries,
        sbom: Some(debs.to_vec()),
    };
    let record_bytes = serde_json::to_vec(&record).map_err(|e| err(e.to_string()))?;
    write_record(&path, &record_bytes)?;
    // The fleet's copy: a registry that fails costs the next runner a rebuild, not this build.
    if let Some(registry) = cache.remote() {
        let pushed = std::fs::File::open(&dest)
            .map_err(|e| e.to_string())
            .and_then(|blob| {
                crate::registry::layercache::store(
                    registry,
                    key,
                    &record_bytes,
                    layer.media_type,
                    &format!("sha256:{}", layer.digest),
                    &blob,
                )
                .map_err(|e| e.to_string())
            });
        if let Err(e) = pushed {
            eprintln!("kiln: warning: layer cache {key} not stored in the registry: {e}");
        }
    }
    Ok(())
}

/// Where the record of a cached image check lives (its bytes sit in the blob store).
fn check_record_path(cache: &Cache, key: &str) -> PathBuf {
    cache.root().join("checks").join(format!("{key}.json"))
}

/// The pointer from a check key to the findings' blob.
#[derive(Serialize, Deserialize)]
struct CheckRecord {
    digest: String,
    size: u64,
}

/// The findings (`check.json`) recorded for `key`, or None on a miss: no record, a record
/// that is not JSON, or findings whose bytes no longer hash to the digest recorded.
pub fn restore_check(cache: &Cache, key: &str) -> Result<Option<Vec<u8>>, LayerCacheError> {
    let path = check_record_path(cache, key);
    let err = |reason: String| LayerCacheError {
        path: path.clone(),
        reason,
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let Ok(record) = serde_json::from_str::<CheckRecord>(&text) else {
        return Ok(None);
    };
    let Some(blob) = cache
        .verified(&record.digest, record.size)
        .map_err(|e| err(e.to_string()))?
    else {
        return Ok(None);
    };
    std::fs::read(&blob)
        .map(Some)
        .map_err(|e| err(e.to_string()))
}

/// Records the findings of the image check keyed by `key` (blob first, record last, each
/// renamed into place, so an interrupted store leaves a miss, never a wrong answer).
pub fn store_check(cache: &Cache, key: &str, findings: &[u8]) -> Result<(), LayerCacheError> {
    let path = check_record_path(cache, key);
    let err = |reason: String| LayerCacheError {
        path: path.clone(),
        reason,
    };
    let digest = sha256_hex(findings);
    let size = findings.len() as u64;
    cache.insert_verified(
        &digest,
        size,
        |f| std::io::Write::write_all(f, findings).map_err(|e| err(e.to_string())),
        err,
    )?;
    let record =
        serde_json::to_vec(&CheckRecord { digest, size }).map_err(|e| err(e.to_string()))?;
    write_record(&path, &record)
}
