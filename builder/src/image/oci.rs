//! The pack stage, image half: writes the OCI image layout 1.1 (config, manifest, index.json,
//! oci-layout) around already written layer blobs.
//!
//! JSON is produced from oci-spec's types and re-serialised through `serde_json::Value`, whose
//! maps are sorted, because oci-spec keeps annotations in a `HashMap` whose order would change
//! the manifest digest from run to run.

use crate::arch::DebianArch;
use crate::digest::sha256_hex;
use crate::image::pack::Layer;
use crate::timefmt::rfc3339;
use oci_spec::image::{
    Arch, ConfigBuilder, DescriptorBuilder, Digest, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

/// An OCI image manifest's media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index's media type.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The SPDX document's media type (and the SBOM referrer's artifactType).
pub const SPDX_MEDIA_TYPE: &str = "application/spdx+json";
/// OCI 1.1's empty config for artifacts.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// Why the layout could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the OCI layout: {0}")]
pub struct OciError(pub String);

impl From<oci_spec::OciSpecError> for OciError {
    fn from(e: oci_spec::OciSpecError) -> Self {
        OciError(e.to_string())
    }
}

impl From<std::io::Error> for OciError {
    fn from(e: std::io::Error) -> Self {
        OciError(e.to_string())
    }
}

impl From<serde_json::Error> for OciError {
    fn from(e: serde_json::Error) -> Self {
        OciError(e.to_string())
    }
}

/// Annotation keys kiln adds next to the `org.opencontainers.image.*` ones.
pub mod annotation {
    /// The board name.
    pub const BOARD: &str = "dev.kiln.board";
    /// The hardware `compatible` strings as a JSON array of strings (a devicetree compatible
    /// such as "acme,robot-v2" holds a comma itself, so a separator would be ambiguous).
    pub const COMPATIBLE: &str = "dev.kiln.compatible";
    /// `sha256:` digest of the kiln.lock the image was built from.
    pub const LOCK_DIGEST: &str = "dev.kiln.lock.digest";
    /// Debian suite.
    pub const SUITE: &str = "dev.kiln.debian.suite";
}

/// What the image says about itself.
#[derive(Debug, Clone)]
pub struct ImageMeta {
    /// Image name (title).
    pub name: String,
    /// Image version; also the tag (`ref.name`) in index.json.
    pub version: String,
    /// Architecture.
    pub arch: DebianArch,
    /// SOURCE_DATE_EPOCH: the `created` time everywhere.
    pub created: u64,
    /// Board name.
    pub board: String,
    /// Debian suite.
    pub suite: String,
    /// Hardware compatible strings.
    pub compatible: Vec<String>,
    /// Lock digest.
    pub lock_digest: String,
    /// One history line per layer, in layer order.
    pub history: Vec<String>,
}

/// What a test image says about itself: `layers` layers, arm64, created at the epoch.
#[cfg(test)]
pub(crate) fn test_meta(layers: usize) -> ImageMeta {
    ImageMeta {
        name: "t".into(),
        version: "1".into(),
        arch: crate::arch::DebianArch::Arm64,
        created: 0,
        board: "b".into(),
        suite: "bookworm".into(),
        compatible: vec![],
        lock_digest: "sha256:00".into(),
        history: vec!["layer".into(); layers],
    }
}

/// The written image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `sha256:` digest of the manifest.
    pub manifest_digest: String,
    /// `sha256:` digest of the config.
    pub config_digest: String,
    /// The tag in index.json.
    pub tag: String,
}

fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, OciError> {
    let v = serde_json::to_value(value)?;
    Ok(serde_json::to_vec(&v)?)
}

fn write_blob(layout: &Path, bytes: &[u8]) -> Result<(String, u64), OciError> {
    let hex = sha256_hex(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes)?;
    Ok((hex, bytes.len() as u64))
}

fn digest(hex: &str) -> Result<Digest, OciError> {
    Ok(Digest::from_str(&format!("sha256:{hex}"))?)
}

/// Writes config, manifest, index.json and oci-layout into `layout`, whose `blobs/sha256`
/// already holds the layers.
pub fn write_layout(
    layout: &Path,
    layers: &[Layer],
    meta: &ImageMeta,
) -> Result<ImageRef, OciError> {
    let created = rfc3339(meta.created);
    let arch = Arch::from(meta.arch.oci_architecture());
    let mut config = ImageConfigurationBuilder::default()
        .architecture(arch.clone())
        .os(Os::Linux)
        .created(created.clone())
        .config(
            ConfigBuilder::default()
                .env(vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
                ])
                .build()?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(
                    layers
                        .iter()
                        .map(|l| format!("sha256:{}", l.diff_id))
                        .collect::<Vec<_>>(),
                )
                .build()?,
        )
        .history(
            meta.history
                .iter()
                .map(|h| {
                    HistoryBuilder::default()
                        .created(created.clone())
                        .created_by(h.clone())
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?,
        )
        .build()?;
    if let Some(v) = meta.arch.oci_variant() {
        config.set_variant(Some(v.to_string()));
    }
    let (config_hex, config_size) = write_blob(layout, &canonical_json(&config)?)?;

    let mut annotations: HashMap<String, String> = HashMap::new();
    annotations.insert("org.opencontainers.image.created".into(), created.clone());
    annotations.insert(
        "org.opencontainers.image.version".into(),
        meta.version.clone(),
    );
    annotations.insert("org.opencontainers.image.title".into(), meta.name.clone());
    annotations.insert(annotation::BOARD.into(), meta.board.clone());
    annotations.insert(annotation::SUITE.into(), meta.suite.clone());
    annotations.insert(
        annotation::COMPATIBLE.into(),
        serde_json::to_string(&meta.compatible)?,
    );
    annotations.insert(annotation::LOCK_DIGEST.into(), meta.lock_digest.clone());

    let layer_descriptors = layers
        .iter()
        .map(|l| {
            Ok(DescriptorBuilder::default()
                .media_type(MediaType::from(l.media_type))
                .digest(digest(&l.digest)?)
                .size(l.size)
                .build()?)
        })
        .collect::<Result<Vec<_>, OciError>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageConfig)
                .digest(digest(&config_hex)?)
                .size(config_size)
                .build()?,
        )
        .layers(layer_descriptors)
        .annotations(annotations.clone())
        .build()?;
    let (manifest_hex, manifest_size) = write_blob(layout, &canonical_json(&manifest)?)?;

    let mut platform = PlatformBuilder::default().architecture(arch).os(Os::Linux);
    if let Some(v) = meta.arch.oci_variant() {
        platform = platform.variant(v.to_string());
    }
    let mut index_annotations = annotations;
    index_annotations.insert(
        "org.opencontainers.image.ref.name".into(),
        meta.version.clone(),
    );
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(digest(&manifest_hex)?)
            .size(manifest_size)
            .platform(platform.build()?)
            .annotations(index_annotations)
            .build()?])
        .build()?;
    std::fs::write(layout.join("index.json"), canonical_json(&index)?)?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(ImageRef {
        manifest_digest: format!("sha256:{manifest_hex}"),
        config_digest: format!("sha256:{config_hex}"),
        tag: meta.version.clone(),
    })
}
