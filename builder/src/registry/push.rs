//! `kiln push OUT REF`: the signed layout of a build into a registry. Blobs first (each skipped
//! when the repository already holds it), then the image manifest by digest, then its
//! referrers (signature, SBOM) with their tags and the referrers index, and the image's tag
//! last: a client that sees the tag finds everything it names.

use super::client::{ConnectOptions, Registry};
use super::reference::Reference;
use super::{layout_err, referrers_tag, sbom_tag, TransferError};
use crate::image::layout::{
    entry_kind, tag_of, EntryKind, Layout, ATTESTATION_ARTIFACT_TYPE, SIGNATURE_ARTIFACT_TYPE,
};
use crate::image::oci::{INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, SPDX_MEDIA_TYPE};
use crate::signing::sign::signature_tag;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use std::path::Path;

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:` digest of what is now at the reference's tag: the image manifest, or the
    /// image index of a release for several boards.
    pub image: String,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the registry already held, or linked by a cross-repository mount.
    pub skipped: usize,
    /// Of those, blobs linked from the mount repository.
    pub mounted: u32,
    /// Bytes uploaded.
    pub bytes: u64,
    /// The tags written, image tag last.
    pub tags: Vec<String>,
    /// Uploads that went on after a dropped connection.
    pub resumed: u32,
    /// Uploads started again after a dropped connection (the registry had dropped them).
    pub restarted: u32,
}

/// Pushes the layout at `layout` (an `OUT/oci` directory holding one image, signed or not) to
/// `reference`'s tag.
pub fn push(
    layout: &Path,
    reference: &Reference,
    opts: &ConnectOptions,
) -> Result<Pushed, TransferError> {
    push_boards(&[layout], reference, opts, None)
}

/// Pushes the layouts of one release built for several boards (one image each) to
/// `reference`'s tag: each image with its referrers by digest, then, last, the tag: the image
/// itself when there is one layout, else an OCI image index listing one manifest per board
/// (its platform, and the board's name in `dev.kiln.board`), which `kiln pull --board`,
/// `kiln verify --board` and any OCI client choosing by platform read.
///
/// With `mount_from` (a repository, `HOST/REPO`, such as the fleet's layer cache), blobs that
/// repository holds are linked instead of uploaded when it is on the same registry; on another
/// registry it is not used.
pub fn push_boards(
    layouts: &[&Path],
    reference: &Reference,
    opts: &ConnectOptions,
    mount_from: Option<&Reference>,
) -> Result<Pushed, TransferError> {
    let first = layouts
        .first()
        .ok_or_else(|| layout_err(Path::new("."), "no layout to push"))?;
    let tag = reference.tag.clone().ok_or_else(|| {
        layout_err(
            first,
            format!("push needs a tag to write ({reference} has none)"),
        )
    })?;
    let mut registry = Registry::connect(reference, opts)?;
    if let Some(from) = mount_from
        .filter(|m| m.registry == reference.registry && m.repository != reference.repository)
    {
        registry = registry.mounting_from(&from.repository);
    }
    let mut pushed = Pushed {
        image: String::new(),
        uploaded: 0,
        skipped: 0,
        bytes: 0,
        tags: Vec::new(),
        resumed: 0,
        restarted: 0,
        mounted: 0,
    };
    let mut entries: Vec<(String, Descriptor, Vec<u8>)> = Vec::new();
    for layout in layouts {
        let (board, entry, bytes) = push_image(layout, &registry, &mut pushed)?;
        if let Some((_, other, _)) = entries.iter().find(|(b, _, _)| *b == board) {
            return Err(layout_err(
                &layout.join("index.json"),
                format!(
                    "is for board {board:?}, as is {}; one image per board",
                    other.digest()
                ),
            ));
        }
        entries.push((board, entry, bytes));
    }
    // Last, the tag people and the OTA server ask for.
    if let [(_, entry, bytes)] = entries.as_slice() {
        registry.put_manifest(&tag, MANIFEST_MEDIA_TYPE, bytes)?;
        pushed.image = entry.digest().to_string();
    } else {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(_, d, _)| serde_json::to_value(d))
            .collect::<Result<_, _>>()
            .map_err(|e| layout_err(first, e))?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": manifests,
        });
        let bytes = index.to_string().into_bytes();
        registry.put_manifest(&tag, INDEX_MEDIA_TYPE, &bytes)?;
        pushed.image = format!("sha256:{}", crate::digest::sha256_hex(&bytes));
    }
    pushed.tags.push(tag);
    (pushed.resumed, pushed.restarted) = registry.interrupted_uploads();
    pushed.mounted = registry.mounted_blobs();
    Ok(pushed)
}

/// Pushes one layout's image and its referrers by digest (no tag of its own); returns its
/// board and its entry for an image index (platform from the layout's index.json, the board's
/// name as an annotation) with the manifest's bytes.
fn push_image(
    layout: &Path,
    registry: &Registry,
    pushed: &mut Pushed,
) -> Result<(String, Descriptor, Vec<u8>), TransferError> {
    let local = Layout::open(layout)?;
    let index = local.index()?;
    let images: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| entry_kind(d) == EntryKind::Image)
        .collect();
    let [image] = images.as_slice() else {
        return Err(layout_err(
            &layout.join("index.json"),
            format!(
                "lists {} image manifests; push one image at a time",
                images.len()
            ),
        ));
    };
    let image_digest = image.digest().to_string();

    // The image: blobs, then the manifest by digest (untagged until the end).
    let (image_bytes, image_manifest) = local.manifest(image)?;
    push_blobs(&local, registry, &image_manifest, pushed)?;
    registry.put_manifest(&image_digest, MANIFEST_MEDIA_TYPE, &image_bytes)?;

    // Its referrers: the signature at cosign's tag, the SBOM at `cosign attach sbom`'s, the
    // provenance attestation at `cosign attest`'s, and all in the referrers index (the referrers API where the registry has one, the tag
    // schema where it has not).
    let sig_tag = signature_tag(&image_digest);
    let sbom_name = sbom_tag(&image_digest);
    let att_tag = crate::signing::attest::attestation_tag(&image_digest);
    let mut referrers: Vec<Descriptor> = Vec::new();
    for d in index.manifests() {
        let names = |t: &str| tag_of(d) == Some(t);
        let (tag_for, artifact) = match entry_kind(d) {
            EntryKind::Signature if names(&sig_tag) => (sig_tag.clone(), SIGNATURE_ARTIFACT_TYPE),
            EntryKind::Sbom if names(&sbom_name) => (sbom_name.clone(), SPDX_MEDIA_TYPE),
            EntryKind::Attestation if names(&att_tag) => {
                (att_tag.clone(), ATTESTATION_ARTIFACT_TYPE)
            }
            _ => continue,
        };
        let (bytes, manifest) = local.manifest(d)?;
        if manifest.subject().as_ref().map(|s| s.digest().to_string()) != Some(image_digest.clone())
        {
            return Err(layout_err(
                &layout.join("index.json"),
                format!("{tag_for} does not name {image_digest} as its subject"),
            ));
        }
        push_blobs(&local, registry, &manifest, pushed)?;
        registry.put_manifest(d.digest().as_ref(), MANIFEST_MEDIA_TYPE, &bytes)?;
        registry.put_manifest(&tag_for, MANIFEST_MEDIA_TYPE, &bytes)?;
        pushed.tags.push(tag_for);
        let mut referrer = Descriptor::new(
            oci_spec::image::MediaType::ImageManifest,
            bytes.len() as u64,
            d.digest().clone(),
        );
        referrer.set_artifact_type(Some(artifact.into()));
        referrers.push(referrer);
    }
    if !referrers.is_empty() && !registry.has_referrers_api(&image_digest)? {
        let schema_tag = referrers_tag(&image_digest);
        // Keep what others listed (a second signature, an attestation), add ours once.
        let mut listed: Vec<Descriptor> = match registry.get_manifest(&schema_tag)? {
            Some((_, bytes)) => serde_json::from_slice::<ImageIndex>(&bytes)
                .map(|i| i.manifests().clone())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        for r in referrers {
            if !listed.iter().any(|l| l.digest() == r.digest()) {
                listed.push(r);
            }
        }
        listed.sort_by_key(|d| d.digest().to_string());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": listed,
        });
        registry.put_manifest(&schema_tag, INDEX_MEDIA_TYPE, index.to_string().as_bytes())?;
        pushed.tags.push(schema_tag);
    }

    let board = crate::image::layout::annotation_of(
        image_manifest.annotations(),
        crate::image::oci::annotation::BOARD,
    )
    .unwrap_or("")
    .to_string();
    let mut entry = Descriptor::new(
        oci_spec::image::MediaType::ImageManifest,
        image_bytes.len() as u64,
        image.digest().clone(),
    );
    entry.set_platform(image.platform().clone());
    entry.set_annotations(Some(
        [(
            crate::image::oci::annotation::BOARD.to_string(),
            board.clone(),
        )]
        .into(),
    ));
    Ok((board, entry, image_bytes))
}

fn push_blobs(
    local: &Layout,
    registry: &Registry,
    manifest: &ImageManifest,
    pushed: &mut Pushed,
) -> Result<(), TransferError> {
    for d in std::iter::once(manifest.config()).chain(manifest.layers().iter()) {
        let digest = d.digest().to_string();
        let file = local.blob_file(&digest, d.size())?;
        if registry.push_blob(&digest, d.size(), &file)? {
            pushed.uploaded += 1;
            pushed.bytes += d.size();
        } else {
            pushed.skipped += 1;
        }
    }
    Ok(())
}
