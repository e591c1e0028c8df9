//! `kiln push OUT REF`: the signed layout of a build into a registry. Blobs first (each skipped
//! when the repository already holds it), then the image manifest by digest, then its
//! referrers (signature, SBOM) with their tags and the referrers index, and the image's tag
//! last: a client that sees the tag finds everything it names.

use super::client::{ConnectOptions, Registry};
use super::reference::Reference;
use super::{layout_err, referrers_tag, sbom_tag, TransferError};
use crate::image::layout::{entry_kind, tag_of, EntryKind, Layout, SIGNATURE_ARTIFACT_TYPE};
use crate::image::oci::{INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, SPDX_MEDIA_TYPE};
use crate::signing::sign::signature_tag;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use std::path::Path;

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:` digest of the image manifest, now at the reference's tag.
    pub image: String,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the registry already held.
    pub skipped: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// The tags written, image tag last.
    pub tags: Vec<String>,
}

/// Pushes the layout at `layout` (an `OUT/oci` directory holding one image, signed or not) to
/// `reference`'s tag.
pub fn push(
    layout: &Path,
    reference: &Reference,
    opts: &ConnectOptions,
) -> Result<Pushed, TransferError> {
    let tag = reference.tag.clone().ok_or_else(|| {
        layout_err(
            layout,
            format!("push needs a tag to write ({reference} has none)"),
        )
    })?;
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
    let registry = Registry::connect(reference, opts)?;
    let mut pushed = Pushed {
        image: image_digest.clone(),
        uploaded: 0,
        skipped: 0,
        bytes: 0,
        tags: Vec::new(),
    };

    // The image: blobs, then the manifest by digest (untagged until the end).
    let (image_bytes, image_manifest) = local.manifest(image)?;
    push_blobs(&local, &registry, &image_manifest, &mut pushed)?;
    registry.put_manifest(&image_digest, MANIFEST_MEDIA_TYPE, &image_bytes)?;

    // Its referrers: the signature at cosign's tag, the SBOM at `cosign attach sbom`'s, and
    // both in the referrers index (the referrers API where the registry has one, the tag
    // schema where it has not).
    let sig_tag = signature_tag(&image_digest);
    let sbom_name = sbom_tag(&image_digest);
    let mut referrers: Vec<Descriptor> = Vec::new();
    for d in index.manifests() {
        let names = |t: &str| tag_of(d) == Some(t);
        let (tag_for, artifact) = match entry_kind(d) {
            EntryKind::Signature if names(&sig_tag) => (sig_tag.clone(), SIGNATURE_ARTIFACT_TYPE),
            EntryKind::Sbom if names(&sbom_name) => (sbom_name.clone(), SPDX_MEDIA_TYPE),
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
        push_blobs(&local, &registry, &manifest, &mut pushed)?;
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

    // Last, the tag people and the OTA server ask for.
    registry.put_manifest(&tag, MANIFEST_MEDIA_TYPE, &image_bytes)?;
    pushed.tags.push(tag);
    Ok(pushed)
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
