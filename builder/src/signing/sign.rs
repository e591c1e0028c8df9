//! The sign stage: a cosign-compatible signature over the image manifest digest, stored in the
//! OCI layout the way `cosign save` stores it, and attached as an OCI 1.1 referrer.
//!
//! What is signed is cosign's "simple signing" payload (containers-signature(5) JSON naming the
//! manifest digest). The payload is a blob; a signature manifest lists it as its one layer with
//! the base64 ASN.1 DER ECDSA P-256/SHA-256 signature in the `dev.cosignproject.cosign/signature`
//! annotation, is tagged `sha256-<hex>.sig` in index.json (cosign's tag-based discovery), and
//! carries `subject` = the image manifest (OCI 1.1 referrers). Any tool that reads JSON and runs
//! `openssl dgst -sha256 -verify` can check it (ci/verify-openssl does, with jq and openssl).
//!
//! ECDSA signatures here are deterministic (RFC 6979), so signing the same image with the same
//! key gives the same bytes. index.json is replaced by rename after every new blob is written:
//! an interrupted `kiln sign` leaves the layout as it was.

use crate::digest::sha256_hex;
use crate::image::layout::{annotation_of, blob_rel, tag_of, Layout, LayoutError, MAX_JSON};
use base64::Engine;
use oci_spec::image::Descriptor;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Media type of cosign's simple signing payload.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign image signature.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
pub use crate::image::layout::{entry_kind, EntryKind, REF_NAME, SIGNATURE_ARTIFACT_TYPE};
use crate::image::oci::MANIFEST_MEDIA_TYPE;
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The layout is missing, unreadable or inconsistent.
    #[error("{path}: {reason}")]
    Layout {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The external signing command failed or answered nonsense.
    #[error("sign command `{command}`: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// What went wrong.
        reason: String,
    },
    /// A signature made does not verify with the public key it was to be made with.
    #[error("the signature made does not verify with {key}: the signer holds another key")]
    WrongKey {
        /// The public key expected (its file).
        key: String,
    },
}

impl From<LayoutError> for SignError {
    fn from(e: LayoutError) -> Self {
        SignError::Layout {
            path: e.path,
            reason: e.reason,
        }
    }
}

/// Something that turns a payload into an ASN.1 DER ECDSA P-256/SHA-256 signature.
pub trait Signer {
    /// Signs `payload` (the signer hashes it with SHA-256).
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// Signs with a private key held in memory (read by [`crate::signing::keys::load_signing_key`]).
pub struct KeySigner(pub SigningKey);

impl Signer for KeySigner {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignError> {
        let signature: Signature = self.0.sign(payload);
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

/// A signer whose every signature is verified with the public key it is to be made with
/// before it is used: an HSM slot or KMS alias holding another key is caught when signing,
/// not by the fleet's verifiers.
pub struct CheckedSigner {
    /// What signs.
    pub inner: Box<dyn Signer>,
    /// The public key its signatures must verify with.
    pub key: p256::ecdsa::VerifyingKey,
    /// That key's name in messages (its file).
    pub key_name: String,
}

impl Signer for CheckedSigner {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignError> {
        use p256::ecdsa::signature::Verifier;
        let der = self.inner.sign(payload)?;
        let verifies = Signature::from_der(&der)
            .map(|sig| self.key.verify(payload, &sig).is_ok())
            .unwrap_or(false);
        if !verifies {
            return Err(SignError::WrongKey {
                key: self.key_name.clone(),
            });
        }
        Ok(der)
    }
}

/// Signs through an external command, for keys kept in an HSM or a KMS: the command runs with
/// `sh -c`, gets the payload on standard input and its SHA-256 in `KILN_SIGN_DIGEST`
/// (`sha256:<hex>`, for signers that take a digest), and prints the DER signature, raw or
/// base64 (`openssl dgst -sha256 -sign key.pem` is such a command).
pub struct CommandSigner(pub String);

impl Signer for CommandSigner {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignError> {
        let fail = |reason: String| SignError::Command {
            command: self.0.clone(),
            reason,
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&self.0)
            .env(
                "KILN_SIGN_DIGEST",
                format!("sha256:{}", sha256_hex(payload)),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that signs the digest may not read its input; that is not an error.
            let _ = stdin.write_all(payload);
        }
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(fail(format!("{}: {last}", out.status)));
        }
        let raw = out.stdout;
        let trimmed: Vec<u8> = raw
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let der = if Signature::from_der(&raw).is_ok() {
            raw
        } else if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(&trimmed) {
            decoded
        } else {
            raw
        };
        Signature::from_der(&der).map_err(|_| {
            fail("did not print an ASN.1 DER ECDSA P-256 signature (raw or base64)".into())
        })?;
        Ok(der)
    }
}

/// What `sign_layout` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `sha256:` digest of the signed image manifest.
    pub image: String,
    /// `sha256:` digest of the signature manifest.
    pub signature_manifest: String,
    /// The tag it is listed under.
    pub tag: String,
}

/// The simple signing payload for an image manifest, byte for byte as cosign writes it; with
/// an SBOM, its referrer manifest's digest is a claim in `optional.sbom` (cosign passes
/// optional claims through untouched).
pub fn payload(manifest_digest: &str, reference: &str, sbom: Option<&str>) -> Vec<u8> {
    let optional = match sbom {
        Some(d) => json!({ "sbom": d }),
        None => Value::Null,
    };
    let v = json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": optional,
    });
    v.to_string().into_bytes()
}

/// The tag cosign looks for: `sha256:abc` -> `sha256-abc.sig`.
pub fn signature_tag(manifest_digest: &str) -> String {
    format!("{}.sig", manifest_digest.replace(':', "-"))
}

/// The blob file of a `sha256:` digest (64 lower-case hex digits), None for any other digest:
/// a digest from an untrusted layout never becomes a path outside `blobs/sha256`.
pub fn blob_file(layout: &Path, digest: &str) -> Option<PathBuf> {
    blob_rel(digest).map(|rel| layout.join(rel))
}

/// Signs every image manifest listed in the layout's index.json (not the signatures) and
/// stores the signatures; a previous signature of the same image is replaced. The payload's
/// `docker-reference` is the image's title annotation.
pub fn sign_layout(layout: &Path, signer: &dyn Signer) -> Result<Vec<Signed>, SignError> {
    let files = Layout::open(layout)?;
    let mut index = files.index()?;
    let manifests = index.manifests().clone();
    let images: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| entry_kind(d) == EntryKind::Image)
        .collect();
    if images.is_empty() {
        return Err(files
            .err("index.json", "lists no image manifest to sign")
            .into());
    }
    let mut kept: Vec<Descriptor> = manifests
        .iter()
        .filter(|d| entry_kind(d) != EntryKind::Signature)
        .cloned()
        .collect();
    let mut done = Vec::new();
    for image in images {
        let digest = image.digest().to_string();
        let size = image.size();
        // Never sign what is not there: the manifest must hash to the digest being signed.
        let (_, manifest) = files.manifest(image).map_err(|e| SignError::Layout {
            reason: format!("{}; refusing to sign", e.reason),
            path: e.path,
        })?;
        // cosign ignores the identity; it names the image (its title) for people reading it.
        let reference = annotation_of(manifest.annotations(), "org.opencontainers.image.title")
            .unwrap_or("kiln-image");
        // The image's SBOM (a referrer kiln build attached) is bound to the signature too.
        let sbom_tag = format!("{}.sbom", digest.replace(':', "-"));
        let sbom = manifests
            .iter()
            .find(|d| tag_of(d) == Some(sbom_tag.as_str()))
            .map(|d| d.digest().to_string());
        let payload = payload(&digest, reference, sbom.as_deref());
        let signature = signer.sign(&payload)?;
        let annotations = json!({
            SIGNATURE_ANNOTATION: base64::engine::general_purpose::STANDARD.encode(&signature),
        });
        let tag = signature_tag(&digest);
        let (entry, sig_digest) = write_referrer(
            &files,
            &Referrer {
                artifact_type: SIGNATURE_ARTIFACT_TYPE,
                layer_media_type: PAYLOAD_MEDIA_TYPE,
                layer: &payload,
                layer_annotations: annotations,
                subject: (&digest, size),
                tag: &tag,
            },
        )?;
        kept.push(entry);
        done.push(Signed {
            image: digest,
            signature_manifest: sig_digest,
            tag,
        });
    }
    // Signatures of images no longer in the layout are dropped with the replaced ones.
    index.set_manifests(kept);
    files.write_index(&index)?;
    remove_unreferenced(&files)?;
    Ok(done)
}

/// A one-layer artifact about an image, stored as cosign stores signatures and attestations:
/// the layer blob, a config naming it, and a manifest with `subject` = the image, listed in
/// index.json under `tag`.
pub(crate) struct Referrer<'a> {
    /// The manifest's (and index entry's) artifactType.
    pub artifact_type: &'a str,
    /// The layer's media type.
    pub layer_media_type: &'a str,
    /// The layer's bytes.
    pub layer: &'a [u8],
    /// The layer descriptor's annotations.
    pub layer_annotations: Value,
    /// The image: manifest digest and size.
    pub subject: (&'a str, u64),
    /// The tag in index.json.
    pub tag: &'a str,
}

/// Writes a [`Referrer`]'s blobs; returns its index.json entry and manifest digest.
pub(crate) fn write_referrer(
    files: &Layout,
    r: &Referrer,
) -> Result<(Descriptor, String), SignError> {
    let (layer_digest, layer_size) = files.write_blob(r.layer)?;
    let config = json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = files.write_blob(config.to_string().as_bytes())?;
    let (subject, subject_size) = r.subject;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": r.artifact_type,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": [{
            "mediaType": r.layer_media_type,
            "digest": layer_digest,
            "size": layer_size,
            "annotations": r.layer_annotations,
        }],
        "subject": {"mediaType": MANIFEST_MEDIA_TYPE, "digest": subject, "size": subject_size},
    });
    let (digest, size) = files.write_blob(manifest.to_string().as_bytes())?;
    let entry = serde_json::from_value(json!({
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": r.artifact_type,
        "digest": digest,
        "size": size,
        "annotations": {REF_NAME: r.tag},
    }))
    .map_err(|e| files.err("index.json", e))?;
    Ok((entry, digest))
}

/// Every blob reachable from index.json (manifests, their configs, layers and subjects).
pub fn referenced_blobs(layout: &Path) -> Result<BTreeSet<String>, SignError> {
    referenced(&Layout::open(layout)?)
}

fn referenced(files: &Layout) -> Result<BTreeSet<String>, SignError> {
    let index = files.index()?;
    let mut seen = BTreeSet::new();
    let mut queue: Vec<String> = index
        .manifests()
        .iter()
        .map(|d| d.digest().to_string())
        .collect();
    while let Some(digest) = queue.pop() {
        if !seen.insert(digest.clone()) {
            continue;
        }
        let Some(rel) = blob_rel(&digest) else {
            continue;
        };
        // Only what can be a manifest is read (a layer is bigger, or not JSON); whatever kind
        // of manifest or index it is, its children are the `digest`s of its descriptors.
        let Ok(bytes) = files.read(&rel, MAX_JSON) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        let mut children: Vec<&Value> = Vec::new();
        children.extend(v.get("config"));
        children.extend(
            v.get("layers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
        children.extend(
            v.get("manifests")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
        for c in children {
            if let Some(d) = c.get("digest").and_then(Value::as_str) {
                queue.push(d.to_string());
            }
        }
    }
    Ok(seen)
}

/// Removes blobs of earlier signatures that nothing references any more. Only small JSON blobs
/// (manifests, configs, payloads) are candidates: a layer is never deleted here.
pub(crate) fn remove_unreferenced(files: &Layout) -> Result<(), SignError> {
    let referenced = referenced(files)?;
    let fail = |e: crate::inroot::InRootError| SignError::from(files.err("blobs/sha256", e.reason));
    let Some(dir) = files.blobs_dir()? else {
        return Ok(());
    };
    for name in dir.entries().map_err(fail)? {
        let name_text = name.to_string_lossy().to_string();
        if referenced.contains(&format!("sha256:{name_text}")) {
            continue;
        }
        // A symlink, FIFO, device or big file is no signature part of kiln's: left alone.
        let Ok(Some(bytes)) = dir.read(&name, 64 * 1024) else {
            continue;
        };
        let is_signature_part = serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| {
            v.get("artifactType").and_then(Value::as_str) == Some(SIGNATURE_ARTIFACT_TYPE)
                || v.get("artifactType").and_then(Value::as_str)
                    == Some(crate::image::layout::ATTESTATION_ARTIFACT_TYPE)
                || v.get("payloadType").and_then(Value::as_str)
                    == Some(crate::image::layout::IN_TOTO_PAYLOAD_TYPE)
                || v.pointer("/critical/type").and_then(Value::as_str) == Some(PAYLOAD_TYPE)
                || v.get("created").and_then(Value::as_str) == Some("0001-01-01T00:00:00Z")
        });
        if is_signature_part {
            dir.remove_file(&name).map_err(fail)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    /// A layout someone else made, with traps: the blob path of the payload kiln will write
    /// (its digest is predictable) and the temporary index name are symlinks to host files,
    /// an unreferenced blob is a FIFO, another is 5 MiB. Sign writes only inside the layout,
    /// never blocks, and leaves the host files as they were.
    #[test]
    fn a_hostile_layout_cannot_make_sign_write_outside_it_or_hang() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = tmp.path().join("oci");
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":0},"layers":[]}"#;
        let hex = sha256_hex(manifest);
        std::fs::write(blobs.join(&hex), manifest).unwrap();
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE, "digest": format!("sha256:{hex}"), "size": manifest.len()
        }]});
        std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
        std::fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let canary = tmp.path().join("canary");
        std::fs::write(&canary, "host file").unwrap();
        let payload_hex = sha256_hex(&payload(&format!("sha256:{hex}"), "kiln-image", None));
        std::os::unix::fs::symlink(&canary, blobs.join(&payload_hex)).unwrap();
        std::os::unix::fs::symlink(&canary, layout.join(".index.json.kiln-new")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            blobs.join("f".repeat(64)),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_bits_truncate(0o644),
            0,
        )
        .unwrap();
        std::fs::write(blobs.join("e".repeat(64)), vec![b' '; 5 << 20]).unwrap();

        let key = SigningKey::random(&mut rand_core::OsRng);
        let signed = sign_layout(&layout, &KeySigner(key)).unwrap();
        assert_eq!(signed.len(), 1);
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "host file");
        let payload_file = blobs.join(&payload_hex);
        assert!(std::fs::symlink_metadata(&payload_file).unwrap().is_file());
        assert!(referenced_blobs(&layout)
            .unwrap()
            .contains(&signed[0].signature_manifest));
        // The traps that were not in the way are left as they were.
        assert!(std::fs::symlink_metadata(blobs.join("f".repeat(64)))
            .unwrap()
            .file_type()
            .is_fifo());
    }

    #[test]
    fn payload_is_cosigns_simple_signing_json() {
        let p = payload("sha256:abc", "robot/base", None);
        assert_eq!(
            String::from_utf8(p).unwrap(),
            r#"{"critical":{"identity":{"docker-reference":"robot/base"},"image":{"docker-manifest-digest":"sha256:abc"},"type":"cosign container image signature"},"optional":null}"#
        );
        assert_eq!(signature_tag("sha256:abc"), "sha256-abc.sig");
        let p = payload("sha256:abc", "robot/base", Some("sha256:def"));
        assert!(String::from_utf8(p)
            .unwrap()
            .ends_with(r#""optional":{"sbom":"sha256:def"}}"#));
    }
}
