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
use crate::inroot::ImageRoot;
use base64::Engine;
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
/// artifactType of the signature manifest as an OCI 1.1 referrer (cosign's).
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The tag annotation in index.json.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
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
}

fn layout_err(path: &Path, reason: impl std::fmt::Display) -> SignError {
    SignError::Layout {
        path: path.to_path_buf(),
        reason: reason.to_string(),
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

/// The largest index.json or manifest kiln reads from a layout (the OCI distribution spec's
/// registries take manifests of up to 4 MiB).
const MAX_JSON: u64 = 4 << 20;

/// A layout given to sign may come from anywhere: every read and write in it goes through
/// [`ImageRoot`], so a symlink planted at a blob's path (a payload's digest is predictable),
/// at `blobs/` or at the temporary index is never followed out of the layout, a FIFO never
/// blocks, and nothing bigger than [`MAX_JSON`] is read to see whether it is JSON.
struct LayoutFiles<'a> {
    path: &'a Path,
    root: ImageRoot,
}

impl<'a> LayoutFiles<'a> {
    fn open(path: &'a Path) -> Result<LayoutFiles<'a>, SignError> {
        let root = ImageRoot::open(path).map_err(|e| layout_err(path, e.reason))?;
        Ok(LayoutFiles { path, root })
    }

    /// The regular file `rel` (at most `max` bytes); an error naming it when missing.
    fn read(&self, rel: &str, max: u64) -> Result<Vec<u8>, SignError> {
        let path = self.path.join(rel);
        self.root
            .read(rel, max)
            .map_err(|e| layout_err(&path, e.reason))?
            .ok_or_else(|| layout_err(&path, "is missing"))
    }

    fn read_json(&self, rel: &str) -> Result<Value, SignError> {
        let bytes = self.read(rel, MAX_JSON)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| layout_err(&self.path.join(rel), format!("not JSON: {e}")))
    }

    /// Writes `bytes` as the blob of their digest (replacing whatever entry had that name).
    fn write_blob(&self, bytes: &[u8]) -> Result<(String, u64), SignError> {
        let hex = sha256_hex(bytes);
        let rel = format!("blobs/sha256/{hex}");
        self.root
            .write(&rel, bytes, 0o644)
            .map_err(|e| layout_err(&self.path.join(&rel), e.reason))?;
        Ok((format!("sha256:{hex}"), bytes.len() as u64))
    }

    /// Replaces `rel` by `bytes` in one step (a temporary file renamed over it).
    fn replace(&self, rel: &str, bytes: &[u8]) -> Result<(), SignError> {
        let tmp = format!(".{rel}.kiln-new");
        let fail = |e: crate::inroot::InRootError| layout_err(&self.path.join(rel), e.reason);
        self.root.write(&tmp, bytes, 0o644).map_err(fail)?;
        self.root
            .root_dir()
            .map_err(fail)?
            .rename(&tmp, rel)
            .map_err(fail)
    }
}

/// The blob file of a `sha256:` digest (64 lower-case hex digits), None for any other digest:
/// a digest from an untrusted layout never becomes a path outside `blobs/sha256`.
pub fn blob_file(layout: &Path, digest: &str) -> Option<PathBuf> {
    crate::digest::sha256_digest_hex(digest).map(|hex| layout.join("blobs/sha256").join(hex))
}

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, SignError> {
    blob_file(layout, digest)
        .ok_or_else(|| layout_err(&layout.join("index.json"), format!("bad digest {digest:?}")))
}

/// What an index.json entry lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// An image manifest (what is signed and verified).
    Image,
    /// A cosign signature manifest.
    Signature,
    /// kiln's SPDX SBOM referrer.
    Sbom,
    /// Another artifact, or not a manifest.
    Other,
}

/// Classifies an index.json descriptor: signatures by their `.sig` tag or artifactType, SBOMs
/// by artifactType, images are manifests that are no artifact.
pub fn entry_kind(d: &Value) -> EntryKind {
    let artifact = d.get("artifactType").and_then(Value::as_str);
    let tag = d
        .get("annotations")
        .and_then(|a| a.get(REF_NAME))
        .and_then(Value::as_str);
    if tag.is_some_and(|t| t.ends_with(".sig")) || artifact == Some(SIGNATURE_ARTIFACT_TYPE) {
        EntryKind::Signature
    } else if artifact == Some(crate::image::oci::SPDX_MEDIA_TYPE) {
        EntryKind::Sbom
    } else if artifact.is_none()
        && d.get("mediaType").and_then(Value::as_str) == Some(MANIFEST_MEDIA_TYPE)
    {
        EntryKind::Image
    } else {
        EntryKind::Other
    }
}

/// Signs every image manifest listed in the layout's index.json (not the signatures) and
/// stores the signatures; a previous signature of the same image is replaced. The payload's
/// `docker-reference` is the image's title annotation.
pub fn sign_layout(layout: &Path, signer: &dyn Signer) -> Result<Vec<Signed>, SignError> {
    let files = LayoutFiles::open(layout)?;
    let index_path = layout.join("index.json");
    let mut index = files.read_json("index.json")?;
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| layout_err(&index_path, "has no manifests list"))?;
    let images: Vec<&Value> = manifests
        .iter()
        .filter(|d| entry_kind(d) == EntryKind::Image)
        .collect();
    if images.is_empty() {
        return Err(layout_err(&index_path, "lists no image manifest to sign"));
    }
    let mut kept: Vec<Value> = manifests
        .iter()
        .filter(|d| entry_kind(d) != EntryKind::Signature)
        .cloned()
        .collect();
    let mut done = Vec::new();
    for image in images {
        let digest = image
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| layout_err(&index_path, "a manifest descriptor has no digest"))?;
        let size = image.get("size").and_then(Value::as_u64).unwrap_or(0);
        // Never sign what is not there: the manifest must hash to the digest being signed.
        let path = blob_path(layout, digest)?;
        let rel = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        let bytes = files.read(&rel, size.min(MAX_JSON))?;
        if format!("sha256:{}", sha256_hex(&bytes)) != digest || bytes.len() as u64 != size {
            return Err(layout_err(
                &path,
                format!("does not match its descriptor {digest} ({size} bytes); refusing to sign"),
            ));
        }
        // cosign ignores the identity; it names the image (its title) for people reading it.
        let manifest: Value = serde_json::from_slice(&bytes)
            .map_err(|e| layout_err(&path, format!("not JSON: {e}")))?;
        let reference = manifest
            .pointer("/annotations/org.opencontainers.image.title")
            .and_then(Value::as_str)
            .unwrap_or("kiln-image");
        // The image's SBOM (a referrer kiln build attached) is bound to the signature too.
        let sbom_tag = format!("{}.sbom", digest.replace(':', "-"));
        let sbom = manifests
            .iter()
            .find(|d| {
                d.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1")))
                    .and_then(Value::as_str)
                    == Some(sbom_tag.as_str())
            })
            .and_then(|d| d.get("digest").and_then(Value::as_str));
        let payload = payload(digest, reference, sbom);
        let signature = signer.sign(&payload)?;
        let (payload_digest, payload_size) = files.write_blob(&payload)?;
        let config = json!({
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [payload_digest]},
        });
        let (config_digest, config_size) = files.write_blob(config.to_string().as_bytes())?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": SIGNATURE_ARTIFACT_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
            "layers": [{
                "mediaType": PAYLOAD_MEDIA_TYPE,
                "digest": payload_digest,
                "size": payload_size,
                "annotations": {
                    SIGNATURE_ANNOTATION: base64::engine::general_purpose::STANDARD.encode(&signature),
                },
            }],
            "subject": {"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": size},
        });
        let (sig_digest, sig_size) = files.write_blob(manifest.to_string().as_bytes())?;
        let tag = signature_tag(digest);
        kept.push(json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": SIGNATURE_ARTIFACT_TYPE,
            "digest": sig_digest,
            "size": sig_size,
            "annotations": {REF_NAME: tag},
        }));
        done.push(Signed {
            image: digest.to_string(),
            signature_manifest: sig_digest,
            tag,
        });
    }
    // Signatures of images no longer in the layout are dropped with the replaced ones.
    index["manifests"] = Value::Array(kept);
    files.replace("index.json", index.to_string().as_bytes())?;
    remove_unreferenced(&files)?;
    Ok(done)
}

/// Every blob reachable from index.json (manifests, their configs, layers and subjects).
pub fn referenced_blobs(layout: &Path) -> Result<BTreeSet<String>, SignError> {
    referenced(&LayoutFiles::open(layout)?)
}

fn referenced(files: &LayoutFiles) -> Result<BTreeSet<String>, SignError> {
    let index = files.read_json("index.json")?;
    let mut seen = BTreeSet::new();
    let mut queue: Vec<String> = index
        .get("manifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("digest").and_then(Value::as_str).map(str::to_string))
        .collect();
    while let Some(digest) = queue.pop() {
        if !seen.insert(digest.clone()) {
            continue;
        }
        if blob_file(files.path, &digest).is_none() {
            continue;
        }
        // Only what can be a manifest is read (a layer is bigger, or not JSON).
        let rel = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
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
fn remove_unreferenced(files: &LayoutFiles) -> Result<(), SignError> {
    let referenced = referenced(files)?;
    let dir_path = files.path.join("blobs/sha256");
    let fail = |e: crate::inroot::InRootError| layout_err(&dir_path, e.reason);
    let Some(dir) = files.root.dir("blobs/sha256").map_err(fail)? else {
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
