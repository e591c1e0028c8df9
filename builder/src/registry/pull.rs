//! `kiln pull REF -o OUT`: an image from a registry into `OUT/oci`, the layout a build writes:
//! the image manifest, its config and layers, its cosign signature and SBOM when the registry
//! has them, and an index.json listing them as `kiln sign` does. Every blob is hashed while it
//! streams and refused, by name, when it is not what the manifest says; the layout appears
//! only when all of it arrived (a staging directory renamed into place).

use super::client::{ConnectOptions, Registry, RegistryError};
use super::reference::Reference;
use super::{layout_err, referrers_tag, sbom_tag, TransferError};
use crate::digest::sha256_hex;
use crate::image::oci::{INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, SPDX_MEDIA_TYPE};
use crate::output::StagedDir;
use crate::signing::sign::{signature_tag, REF_NAME, SIGNATURE_ARTIFACT_TYPE};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde_json::{json, Value};
use std::path::Path;

/// What a pull brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// `sha256:` digest of the image manifest.
    pub image: String,
    /// Whether a signature came with it.
    pub signed: bool,
    /// Whether an SBOM came with it.
    pub sbom: bool,
    /// Bytes of blobs downloaded.
    pub bytes: u64,
}

struct Staging<'a> {
    registry: &'a Registry,
    blobs: std::path::PathBuf,
    bytes: u64,
}

impl Staging<'_> {
    fn write_manifest(&self, bytes: &[u8]) -> Result<String, TransferError> {
        let hex = sha256_hex(bytes);
        let path = self.blobs.join(&hex);
        std::fs::write(&path, bytes).map_err(|e| layout_err(&path, e))?;
        Ok(format!("sha256:{hex}"))
    }

    /// Fetches every blob of `manifest` not already here.
    fn fetch_blobs(&mut self, manifest: &ImageManifest) -> Result<(), TransferError> {
        for d in std::iter::once(manifest.config()).chain(manifest.layers().iter()) {
            let digest = d.digest().to_string();
            if !super::reference::valid_digest(&digest) {
                return Err(RegistryError::Corrupt {
                    what: format!("{} manifest", self.registry.name()),
                    reason: format!("names an unsupported digest {digest:?}"),
                }
                .into());
            }
            let path = self.blobs.join(digest.trim_start_matches("sha256:"));
            if path.exists() {
                continue;
            }
            let tmp = self
                .blobs
                .join(format!(".{}.part", digest.trim_start_matches("sha256:")));
            let mut file = std::fs::File::create(&tmp).map_err(|e| layout_err(&tmp, e))?;
            let fetched = self.registry.get_blob(&digest, d.size(), &mut file);
            if let Err(e) = fetched {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            file.sync_all().map_err(|e| layout_err(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| layout_err(&path, e))?;
            self.bytes += d.size();
        }
        Ok(())
    }

    /// The manifest at `reference`, parsed, with its bytes (None when absent).
    fn manifest(&self, reference: &str) -> Result<Option<(Vec<u8>, ImageManifest)>, TransferError> {
        let Some((_, bytes)) = self.registry.get_manifest(reference)? else {
            return Ok(None);
        };
        let manifest = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
            what: format!("{} manifest {reference}", self.registry.name()),
            reason: format!("not an OCI image manifest: {e}"),
        })?;
        Ok(Some((bytes, manifest)))
    }
}

/// index.json's entry for a referrer, as `kiln sign` and `kiln build` list them.
fn referrer_entry(artifact_type: &str, digest: &str, size: usize, tag: &str) -> Value {
    json!({
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": artifact_type,
        "digest": digest,
        "size": size,
        "annotations": {REF_NAME: tag},
    })
}

/// Pulls `reference` into `out/oci` (replacing a previous pull there only once complete). A
/// release for several boards (an image index) gives the image of `board`; with `board`
/// given, the image must be that board's.
pub fn pull(
    reference: &Reference,
    out: &Path,
    opts: &ConnectOptions,
    board: Option<&str>,
) -> Result<Pulled, TransferError> {
    let registry = Registry::connect(reference, opts)?;
    let wanted = reference.manifest_reference().to_string();
    let (media_type, bytes) =
        registry
            .get_manifest(&wanted)?
            .ok_or_else(|| RegistryError::Failed {
                what: reference.to_string(),
                reason: "the registry has no such image".into(),
            })?;
    let image_bytes = if is_index(&media_type) {
        board_image(&registry, reference, &bytes, board)?
    } else {
        bytes
    };
    let image_manifest: ImageManifest =
        serde_json::from_slice(&image_bytes).map_err(|e| RegistryError::Corrupt {
            what: reference.to_string(),
            reason: format!("not an OCI image manifest: {e}"),
        })?;
    let image_board = crate::image::layout::annotation_of(
        image_manifest.annotations(),
        crate::image::oci::annotation::BOARD,
    );
    if let Some(board) = board.filter(|b| image_board != Some(*b)) {
        return Err(TransferError::Board {
            reference: reference.to_string(),
            reason: format!(
                "is the image for board {:?}, not {board:?}",
                image_board.unwrap_or("")
            ),
        });
    }
    let image_digest = format!("sha256:{}", sha256_hex(&image_bytes));
    crate::output::removing_created_on_failure(out, || {
        write_pulled(
            &registry,
            reference,
            out,
            &image_bytes,
            &image_manifest,
            &image_digest,
        )
    })
}

/// Writes the pulled image (and its referrers) into `out/oci`, staged and swapped in whole.
fn write_pulled(
    registry: &Registry,
    reference: &Reference,
    out: &Path,
    image_bytes: &[u8],
    image_manifest: &ImageManifest,
    image_digest: &str,
) -> Result<Pulled, TransferError> {
    std::fs::create_dir_all(out).map_err(|e| layout_err(out, e))?;
    let _claim = crate::output::claim(out).map_err(|e| layout_err(out, e))?;
    let layout = out.join("oci");
    let staged = StagedDir::new(&layout).map_err(|e| layout_err(&layout, e))?;
    let blobs = staged.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| layout_err(&blobs, e))?;
    let mut staging = Staging {
        registry,
        blobs,
        bytes: 0,
    };

    staging.write_manifest(image_bytes)?;
    staging.fetch_blobs(image_manifest)?;
    let config_path = staging.blobs.join(
        image_manifest
            .config()
            .digest()
            .to_string()
            .trim_start_matches("sha256:"),
    );
    let config: Option<ImageConfiguration> = std::fs::read(&config_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());

    // The index entry `kiln build` writes: platform from the config, the manifest's
    // annotations, and the version as the reference name.
    let mut annotations: serde_json::Map<String, Value> = image_manifest
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let ref_name = annotations
        .get("org.opencontainers.image.version")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| reference.tag.clone())
        .unwrap_or_else(|| "latest".into());
    annotations.insert(REF_NAME.into(), Value::String(ref_name));
    let mut image_entry = json!({
        "mediaType": MANIFEST_MEDIA_TYPE,
        "digest": image_digest,
        "size": image_bytes.len(),
        "annotations": annotations,
    });
    if let Some(c) = &config {
        let mut platform = json!({
            "architecture": serde_json::to_value(c.architecture()).unwrap_or(Value::Null),
            "os": serde_json::to_value(c.os()).unwrap_or(Value::Null),
        });
        if let Some(v) = c.variant() {
            platform["variant"] = Value::String(v.clone());
        }
        image_entry["platform"] = platform;
    }
    let mut entries = vec![image_entry];

    // The SBOM: through the referrers index (API or tag schema), else cosign's tag.
    let mut sbom = None;
    let listed: Vec<String> = {
        let from_index = |bytes: Vec<u8>| -> Vec<String> {
            serde_json::from_slice::<ImageIndex>(&bytes)
                .map(|i| {
                    i.manifests()
                        .iter()
                        .filter(|d| {
                            d.artifact_type().as_ref().map(|a| a.to_string()).as_deref()
                                == Some(SPDX_MEDIA_TYPE)
                        })
                        .map(|d| d.digest().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        match registry.get_manifest(&referrers_tag(image_digest))? {
            Some((_, bytes)) => from_index(bytes),
            None => Vec::new(),
        }
    };
    let sbom_name = sbom_tag(image_digest);
    let candidates: Vec<String> = listed
        .into_iter()
        .chain(std::iter::once(sbom_name.clone()))
        .collect();
    for candidate in candidates {
        if let Some((bytes, manifest)) = staging.manifest(&candidate)? {
            if manifest.subject().as_ref().map(|s| s.digest().to_string())
                != Some(image_digest.to_string())
            {
                continue;
            }
            let digest = staging.write_manifest(&bytes)?;
            staging.fetch_blobs(&manifest)?;
            entries.push(referrer_entry(
                SPDX_MEDIA_TYPE,
                &digest,
                bytes.len(),
                &sbom_name,
            ));
            sbom = Some(digest);
            break;
        }
    }

    // The signature, at cosign's tag.
    let sig_tag = signature_tag(image_digest);
    let mut signed = false;
    if let Some((bytes, manifest)) = staging.manifest(&sig_tag)? {
        let digest = staging.write_manifest(&bytes)?;
        staging.fetch_blobs(&manifest)?;
        entries.push(referrer_entry(
            SIGNATURE_ARTIFACT_TYPE,
            &digest,
            bytes.len(),
            &sig_tag,
        ));
        signed = true;
    }

    // The signed provenance, at cosign's attestation tag, when there is one.
    let att_tag = crate::signing::attest::attestation_tag(image_digest);
    if let Some((bytes, manifest)) = staging.manifest(&att_tag)? {
        if manifest.subject().as_ref().map(|s| s.digest().to_string())
            == Some(image_digest.to_string())
        {
            let digest = staging.write_manifest(&bytes)?;
            staging.fetch_blobs(&manifest)?;
            entries.push(referrer_entry(
                crate::image::layout::ATTESTATION_ARTIFACT_TYPE,
                &digest,
                bytes.len(),
                &att_tag,
            ));
        }
    }

    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": entries,
    });
    let index_path = staged.path().join("index.json");
    std::fs::write(&index_path, index.to_string()).map_err(|e| layout_err(&index_path, e))?;
    let marker = staged.path().join("oci-layout");
    std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(|e| layout_err(&marker, e))?;
    let bytes = staging.bytes;
    staged.commit().map_err(|e| layout_err(&layout, e))?;
    Ok(Pulled {
        image: image_digest.to_string(),
        signed,
        sbom: sbom.is_some(),
        bytes,
    })
}

fn is_index(media_type: &str) -> bool {
    media_type.starts_with(INDEX_MEDIA_TYPE)
        || media_type.starts_with("application/vnd.docker.distribution.manifest.list")
}

/// The image manifest of `board` in the image index `bytes` (`kiln push` of several boards
/// names each entry's board in `dev.kiln.board`), fetched by digest and proven to be it.
fn board_image(
    registry: &Registry,
    reference: &Reference,
    bytes: &[u8],
    board: Option<&str>,
) -> Result<Vec<u8>, TransferError> {
    let index: ImageIndex = serde_json::from_slice(bytes).map_err(|e| RegistryError::Corrupt {
        what: reference.to_string(),
        reason: format!("not an OCI image index: {e}"),
    })?;
    let boards: Vec<(&str, &oci_spec::image::Descriptor)> = index
        .manifests()
        .iter()
        .filter(|d| d.media_type().to_string() == MANIFEST_MEDIA_TYPE)
        .filter_map(|d| {
            crate::image::layout::annotation_of(
                d.annotations(),
                crate::image::oci::annotation::BOARD,
            )
            .map(|b| (b, d))
        })
        .collect();
    let names = boards
        .iter()
        .map(|(b, _)| *b)
        .collect::<Vec<_>>()
        .join(", ");
    let Some(board) = board else {
        return Err(TransferError::Board {
            reference: reference.to_string(),
            reason: format!("is a release for several boards ({names}); choose one with --board"),
        });
    };
    let Some((_, d)) = boards.iter().find(|(b, _)| *b == board) else {
        return Err(TransferError::Board {
            reference: reference.to_string(),
            reason: format!("has no image for board {board:?} (it has: {names})"),
        });
    };
    let digest = d.digest().to_string();
    let (media_type, bytes) =
        registry
            .get_manifest(&digest)?
            .ok_or_else(|| RegistryError::Failed {
                what: format!("{reference} board {board}"),
                reason: format!("the index names {digest}, which the registry does not have"),
            })?;
    if is_index(&media_type) {
        return Err(RegistryError::Corrupt {
            what: format!("{reference} board {board}"),
            reason: format!("{digest} is another index, not an image manifest"),
        }
        .into());
    }
    Ok(bytes)
}

/// Verifies an image straight from a registry, for an OTA ingestion service: pulls it into a
/// temporary directory (every blob hashed while it streams; the registry's own digests are
/// never taken as proof), then runs the same checks as for a local layout.
pub fn verify_reference(
    reference: &Reference,
    connect: &ConnectOptions,
    board: Option<&str>,
    opts: &crate::signing::verify::VerifyOptions,
) -> Result<crate::signing::verify::Verification, TransferError> {
    let scratch = tempfile::Builder::new()
        .prefix(".kiln-verify-")
        .tempdir()
        .map_err(|e| layout_err(&std::env::temp_dir(), e))?;
    pull(reference, scratch.path(), connect, board)?;
    let layout = scratch.path().join("oci");
    crate::signing::verify::verify_layout(&layout, opts).map_err(|e| layout_err(&e.path, e.reason))
}
