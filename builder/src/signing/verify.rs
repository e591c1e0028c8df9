//! The verify stage, for the OTA update server (and as a library it can call): decides offline,
//! trusting nothing but the given public keys, whether an OCI layout holds exactly the image
//! firmware CI signed, for this device, and not an older release replayed.
//!
//! Every blob reachable from index.json is hashed and sized against its descriptor; the
//! cosign signature (see [`crate::signing::sign`]) must verify under one of the keys and name the image
//! manifest's digest; the board's `compatible` strings and the version are read from the signed
//! manifest's annotations only after the signature holds. Each check is reported, so the server
//! logs why an image was refused; blobs nothing references are reported but do not fail.

use crate::debian::version::Version;
use crate::digest::sha256_digest_hex;
use crate::digest::sha256_reader;
use crate::image::layout::{
    annotation_of, entry_kind, tag_of, EntryKind, Layout, ATTESTATION_ARTIFACT_TYPE, MAX_JSON,
};
use crate::image::oci::annotation;
use crate::inroot::Dir;
use crate::signing::sign::{signature_tag, PAYLOAD_MEDIA_TYPE, PAYLOAD_TYPE, SIGNATURE_ANNOTATION};
use base64::Engine;
use oci_spec::image::{Descriptor, ImageManifest};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What the verifier trusts and expects.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Public keys whose signature is accepted (any one suffices).
    pub keys: Vec<VerifyingKey>,
    /// The device's `compatible` string, which the image must list.
    pub compatible: Option<String>,
    /// The version installed on the device; the image must be newer.
    pub installed_version: Option<String>,
    /// The board (its name) the image must be built for.
    pub board: Option<String>,
    /// Require a signed build provenance naming the image (see [`crate::signing::attest`]).
    pub provenance: bool,
    /// With `provenance`: the builder ids trusted (any, when empty).
    pub builder_ids: Vec<String>,
}

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Stable name: `layout`, `blob`, `unreferenced-blob`, `signature`, `sbom`, `board`,
    /// `compatible`, `version`.
    pub check: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// A failed check that is not fatal (an extra blob).
    pub fatal: bool,
    /// What was checked, or what is wrong, naming the thing.
    pub detail: String,
}

/// The outcome: accepted or not, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// True when every fatal check holds.
    pub accepted: bool,
    /// `sha256:` digest of the image manifest, when one was found.
    pub image: Option<String>,
    /// Board and version from the signed manifest.
    pub board: Option<String>,
    /// Image version.
    pub version: Option<String>,
    /// Every check in the order made.
    pub checks: Vec<CheckResult>,
}

impl Verification {
    /// The one-line verdict.
    pub fn verdict(&self) -> String {
        if self.accepted {
            let blobs = self.checks.iter().filter(|c| c.check == "blob").count();
            let extra = self
                .checks
                .iter()
                .filter(|c| c.check == "unreferenced-blob")
                .count();
            let provenance = self.checks.iter().any(|c| c.check == "provenance" && c.ok);
            format!(
                "accepted {} (board {}, version {}): {blobs} blobs verified, signature valid{}{}",
                self.image.as_deref().unwrap_or("?"),
                self.board.as_deref().unwrap_or("?"),
                self.version.as_deref().unwrap_or("?"),
                if provenance {
                    ", signed provenance holds"
                } else {
                    ""
                },
                if extra > 0 {
                    format!(", {extra} unreferenced blob(s) ignored")
                } else {
                    String::new()
                }
            )
        } else {
            let first = self
                .checks
                .iter()
                .find(|c| !c.ok && c.fatal)
                .map(|c| c.detail.as_str())
                .unwrap_or("no image");
            format!("REJECTED: {first}")
        }
    }

    fn push(&mut self, check: &'static str, ok: bool, detail: String) {
        self.checks.push(CheckResult {
            check,
            ok,
            fatal: true,
            detail,
        });
    }
}

/// The verifier could not run at all (as opposed to: the image is wrong).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct VerifyError {
    /// What could not be read.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// Largest blob verify keeps in memory to parse (a manifest or a signature payload; registries
/// refuse manifests over 4 MiB).
const MAX_PARSED_BLOB: u64 = MAX_JSON;

/// Reads a JSON blob only after it matched its descriptor.
///
/// Each blob is opened once, inside the layout (a symlink is refused, not followed; FIFOs and
/// devices are refused without being opened for reading), its size is compared with the
/// descriptor's before any byte is hashed, at most that many bytes are read, and the bytes
/// parsed are exactly the bytes hashed.
struct Blobs {
    dir: Option<Dir>,
    verified: BTreeSet<String>,
}

impl Blobs {
    /// Hashes the blob behind `descriptor` (`role` names it in messages); returns its bytes
    /// when `want_bytes` and it matches.
    fn check(
        &mut self,
        v: &mut Verification,
        descriptor: &Descriptor,
        role: &str,
        want_bytes: bool,
    ) -> Option<Vec<u8>> {
        let digest = descriptor.digest().to_string();
        let digest = digest.as_str();
        let size = descriptor.size();
        let Some(hex) = sha256_digest_hex(digest) else {
            v.push(
                "blob",
                false,
                format!("{role}: unsupported digest {digest:?}"),
            );
            return None;
        };
        let opened = match &self.dir {
            Some(dir) => dir.open_read(hex),
            None => Ok(None),
        };
        let (file, len) = match opened {
            Ok(Some(f)) => f,
            Ok(None) => {
                v.push("blob", false, format!("{role} {digest}: blob is missing"));
                return None;
            }
            Err(e) => {
                v.push("blob", false, format!("{role} {digest}: blob {}", e.reason));
                return None;
            }
        };
        if len != size {
            v.push(
                "blob",
                false,
                format!("{role} {digest}: {len} bytes, the descriptor says {size}"),
            );
            return None;
        }
        if want_bytes && size > MAX_PARSED_BLOB {
            v.push(
                "blob",
                false,
                format!("{role} {digest}: {size} bytes, more than a manifest may be"),
            );
            return None;
        }
        let mut hasher = Sha256::new();
        let mut kept = Vec::new();
        let mut read = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let mut reader = file.take(size + 1);
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    v.push(
                        "blob",
                        false,
                        format!("{role} {digest}: blob is unreadable"),
                    );
                    return None;
                }
            };
            hasher.update(&buf[..n]);
            if want_bytes {
                kept.extend_from_slice(&buf[..n]);
            }
            read += n as u64;
        }
        if read != size {
            v.push(
                "blob",
                false,
                format!("{role} {digest}: changed size while being read ({read} bytes, the descriptor says {size})"),
            );
            return None;
        }
        let got = hex::encode(hasher.finalize());
        if got != hex {
            v.push(
                "blob",
                false,
                format!("{role} {digest}: content hashes to sha256:{got}"),
            );
            return None;
        }
        if self.verified.insert(digest.to_string()) {
            v.push("blob", true, format!("{role} {digest}"));
        }
        Some(kept)
    }
}

/// Verifies the layout at `layout` (an `OUT/oci` directory).
pub fn verify_layout(layout: &Path, opts: &VerifyOptions) -> Result<Verification, VerifyError> {
    if !layout.is_dir() {
        return Err(VerifyError {
            path: layout.to_path_buf(),
            reason: "is not a directory (expected an OCI image layout)".into(),
        });
    }
    let mut v = Verification {
        accepted: false,
        image: None,
        board: None,
        version: None,
        checks: Vec::new(),
    };
    let root = Layout::open(layout).map_err(|e| VerifyError {
        path: e.path,
        reason: e.reason,
    })?;
    let marker = root.read_optional("oci-layout", MAX_JSON).ok().flatten();
    let marker_ok = marker
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|m| {
            m.get("imageLayoutVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .is_some();
    v.push(
        "layout",
        marker_ok,
        "oci-layout names the layout version".into(),
    );
    let index = match root.index() {
        Ok(i) => i,
        Err(e) => {
            v.push("layout", false, format!("index.json: {}", e.reason));
            return Ok(v);
        }
    };
    let descriptors = index.manifests();
    let mut blobs = Blobs {
        dir: root.blobs_dir().ok().flatten(),
        verified: BTreeSet::new(),
    };
    let is_sig = |d: &Descriptor| entry_kind(d) == EntryKind::Signature;
    let is_sbom = |d: &Descriptor| entry_kind(d) == EntryKind::Sbom;
    let is_att = |d: &Descriptor| entry_kind(d) == EntryKind::Attestation;
    let mut images = Vec::new();
    let mut signatures = Vec::new();
    let mut sboms = Vec::new();
    let mut attestations = Vec::new();
    for d in descriptors {
        let role = if is_sig(d) {
            "signature manifest"
        } else if is_sbom(d) {
            "SBOM manifest"
        } else if is_att(d) {
            "attestation manifest"
        } else {
            "image manifest"
        };
        let Some(bytes) = blobs.check(&mut v, d, role, true) else {
            continue;
        };
        let digest = d.digest().to_string();
        let Ok(manifest) = serde_json::from_slice::<ImageManifest>(&bytes) else {
            v.push(
                "blob",
                false,
                format!("{role} {digest}: not an OCI image manifest"),
            );
            continue;
        };
        blobs.check(
            &mut v,
            manifest.config(),
            &format!("config of {digest}"),
            false,
        );
        let mut payload = None;
        for (i, layer) in manifest.layers().iter().enumerate() {
            let want = (is_sig(d) && layer.media_type().to_string() == PAYLOAD_MEDIA_TYPE)
                || (is_att(d) && layer.media_type().to_string() == ATTESTATION_ARTIFACT_TYPE);
            let role = if want {
                format!("signature payload (layer {} of {digest})", i + 1)
            } else {
                format!("layer {} of {digest}", i + 1)
            };
            if let Some(bytes) = blobs.check(&mut v, layer, &role, want) {
                if want && payload.is_none() {
                    payload = Some((bytes, layer.clone()));
                }
            }
        }
        if is_sbom(d) {
            sboms.push(digest);
        } else if is_att(d) {
            let subject = manifest.subject().as_ref().map(|s| s.digest().to_string());
            attestations.push((digest, subject, payload.map(|p| p.0)));
        } else if is_sig(d) {
            signatures.push((digest, manifest, payload, tag_of(d).map(str::to_string)));
        } else {
            images.push((digest, manifest));
        }
    }

    // Blobs nothing references: reported, not fatal (an interrupted copy, an old layer).
    if let Some(Ok(entries)) = blobs.dir.as_ref().map(Dir::entries) {
        let mut extra: Vec<String> = entries
            .iter()
            .map(|e| format!("sha256:{}", e.to_string_lossy()))
            .filter(|d| !blobs.verified.contains(d))
            .collect();
        extra.sort();
        for d in extra {
            v.checks.push(CheckResult {
                check: "unreferenced-blob",
                ok: false,
                fatal: false,
                detail: format!("{d} is in blobs/ but nothing references it"),
            });
        }
    }

    let [(image_digest, manifest)] = images.as_slice() else {
        v.push(
            "layout",
            false,
            format!(
                "index.json lists {} image manifests; expected exactly one",
                images.len()
            ),
        );
        return Ok(finish(v));
    };
    v.image = Some(image_digest.clone());

    // The signature: a payload naming this manifest, signed by one of the keys.
    let tag = signature_tag(image_digest);
    let sig = signatures.iter().find(|(_, m, _, t)| {
        t.as_deref() == Some(tag.as_str())
            || m.subject()
                .as_ref()
                .map(|s| s.digest().to_string())
                .as_ref()
                == Some(image_digest)
    });
    let signed = match sig {
        None => {
            v.push(
                "signature",
                false,
                format!("no signature for {image_digest} (expected tag {tag})"),
            );
            false
        }
        Some((_, _, None, _)) => {
            v.push(
                "signature",
                false,
                format!("signature manifest {tag} has no intact {PAYLOAD_MEDIA_TYPE} layer"),
            );
            false
        }
        Some((sig_digest, _, Some((payload, layer)), _)) => {
            check_signature(&mut v, opts, image_digest, sig_digest, payload, layer)
        }
    };
    if !signed {
        return Ok(finish(v));
    }
    // An SBOM the signature names must be the one in the layout.
    if let Some((_, _, Some((payload, _)), _)) = sig {
        let named = serde_json::from_slice::<Value>(payload).ok().and_then(|p| {
            p.pointer("/optional/sbom")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        if let Some(named) = named {
            let ok = sboms.contains(&named);
            v.push(
                "sbom",
                ok,
                if ok {
                    format!("SBOM {named} is the one the signature names")
                } else {
                    format!(
                        "the signature names SBOM {named}, which the layout does not hold intact"
                    )
                },
            );
        }
    }

    if opts.provenance {
        check_provenance(&mut v, opts, image_digest, &attestations);
    }

    // Trusted from here on: the annotations are part of the signed manifest.
    let annotations = manifest.annotations();
    v.board = annotation_of(annotations, annotation::BOARD).map(str::to_string);
    v.version = annotation_of(annotations, "org.opencontainers.image.version").map(str::to_string);
    if let Some(want) = &opts.board {
        let ok = v.board.as_deref() == Some(want.as_str());
        v.push(
            "board",
            ok,
            if ok {
                format!("the image is for board {want:?}")
            } else {
                format!(
                    "the image is for board {:?}, not {want:?}",
                    v.board.as_deref().unwrap_or("")
                )
            },
        );
    }
    if let Some(device) = &opts.compatible {
        let listed: Vec<String> = annotation_of(annotations, annotation::COMPATIBLE)
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        let ok = listed.contains(device);
        v.push(
            "compatible",
            ok,
            if ok {
                format!("the image lists the device's compatible {device:?}")
            } else {
                format!("the device's compatible {device:?} is not among the image's {listed:?}")
            },
        );
    }
    if let Some(installed) = &opts.installed_version {
        let image_version = v.version.clone().unwrap_or_default();
        let (ok, detail) = match (Version::parse(&image_version), Version::parse(installed)) {
            (Ok(new), Ok(old)) if new > old => (true, format!("version {image_version} is newer than the installed {installed}")),
            (Ok(_), Ok(_)) => (false, format!("version {image_version} is not newer than the installed {installed} (rollback refused)")),
            _ => (false, format!("cannot compare version {image_version:?} with the installed {installed:?}")),
        };
        v.push("version", ok, detail);
    }
    Ok(finish(v))
}

/// An attestation manifest of the layout: its digest, its subject, and its intact envelope.
type Attestation = (String, Option<String>, Option<Vec<u8>>);

/// The signed provenance of `image`: an attestation whose subject is the image, its DSSE
/// envelope signed by one of the keys, naming the image, from a trusted builder.
fn check_provenance(
    v: &mut Verification,
    opts: &VerifyOptions,
    image: &str,
    attestations: &[Attestation],
) {
    let mine: Vec<_> = attestations
        .iter()
        .filter(|(_, subject, _)| subject.as_deref() == Some(image))
        .collect();
    if mine.is_empty() {
        v.push(
            "provenance",
            false,
            format!(
                "no provenance attestation for {image} (expected tag {})",
                crate::signing::attest::attestation_tag(image)
            ),
        );
        return;
    }
    let mut reasons = Vec::new();
    for (digest, _, envelope) in mine {
        let Some(bytes) = envelope else {
            reasons.push(format!(
                "{digest} has no intact {ATTESTATION_ARTIFACT_TYPE} layer"
            ));
            continue;
        };
        match crate::signing::attest::check_envelope(bytes, &opts.keys, image, &opts.builder_ids) {
            Ok(p) => {
                v.push(
                    "provenance",
                    true,
                    format!(
                        "signed SLSA provenance for {image} from builder {:?}, {} inputs by digest",
                        p.builder_id, p.dependencies
                    ),
                );
                return;
            }
            Err(reason) => reasons.push(format!("{digest}: {reason}")),
        }
    }
    v.push("provenance", false, reasons.join("; "));
}

fn check_signature(
    v: &mut Verification,
    opts: &VerifyOptions,
    image_digest: &str,
    sig_digest: &str,
    payload: &[u8],
    layer: &Descriptor,
) -> bool {
    let Ok(p) = serde_json::from_slice::<Value>(payload) else {
        v.push(
            "signature",
            false,
            format!("payload of {sig_digest} is not JSON"),
        );
        return false;
    };
    if p.pointer("/critical/type").and_then(Value::as_str) != Some(PAYLOAD_TYPE) {
        v.push(
            "signature",
            false,
            format!("payload of {sig_digest} is not a {PAYLOAD_TYPE:?}"),
        );
        return false;
    }
    let named = p
        .pointer("/critical/image/docker-manifest-digest")
        .and_then(Value::as_str)
        .unwrap_or("");
    if named != image_digest {
        v.push(
            "signature",
            false,
            format!("the signed payload names {named:?}, not the image {image_digest}"),
        );
        return false;
    }
    let Some(b64) = annotation_of(layer.annotations(), SIGNATURE_ANNOTATION) else {
        v.push(
            "signature",
            false,
            format!("{sig_digest} has no {SIGNATURE_ANNOTATION} annotation"),
        );
        return false;
    };
    let Some(signature) = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .and_then(|der| Signature::from_der(&der).ok())
    else {
        v.push(
            "signature",
            false,
            format!("{SIGNATURE_ANNOTATION} of {sig_digest} is not a base64 DER ECDSA signature"),
        );
        return false;
    };
    if opts.keys.is_empty() {
        v.push(
            "signature",
            false,
            "no public key given to verify the signature with".into(),
        );
        return false;
    }
    match opts
        .keys
        .iter()
        .find(|k| k.verify(payload, &signature).is_ok())
    {
        Some(k) => {
            v.push(
                "signature",
                true,
                format!(
                    "payload for {image_digest} signed by key {}",
                    crate::signing::keys::fingerprint(k)
                ),
            );
            true
        }
        None => {
            v.push(
                "signature",
                false,
                format!("the signature on {image_digest} does not verify with any of the {} given key(s)", opts.keys.len()),
            );
            false
        }
    }
}

fn finish(mut v: Verification) -> Verification {
    v.accepted = v.checks.iter().all(|c| c.ok || !c.fatal) && v.image.is_some();
    v
}

/// Where a release check starts from: the pinned root, the state kept since the last check
/// (rollback protection; updated when the metadata verifies), the release to check and the
/// time.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseQuery<'a> {
    /// The pinned root.json.
    pub trusted_root: &'a Path,
    /// The directory keeping the last trusted root, timestamp and snapshot.
    pub state: Option<&'a Path>,
    /// The TUF target name; by default the newest release (of `VerifyOptions::board`).
    pub target: Option<&'a str>,
    /// Seconds since the epoch.
    pub now: u64,
}

/// Verifies a release from an OTA repository (`dir/metadata`, `dir/targets`, as
/// `kiln release` writes it) from the pinned root: the TUF root chain, the top-level roles and
/// any delegation, expiry and (with a state directory) rollback; the archive's length and
/// SHA-256, that it is not below the repository's `min_version`, then the image inside as
/// [`verify_layout`] does, and that the signed image is the one the metadata names.
pub fn verify_release(
    dir: &Path,
    query: &ReleaseQuery,
    opts: &VerifyOptions,
) -> Result<Verification, VerifyError> {
    use crate::signing::tuf::{client, DirSource, TrustedState};
    let mut tuf_checks = Verification {
        accepted: false,
        image: None,
        board: None,
        version: None,
        checks: Vec::new(),
    };
    let now = query.now;
    let source = DirSource(dir.join("metadata"));
    let previous = match query.state.map(TrustedState::load).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            return Err(VerifyError {
                path: e.file,
                reason: e.reason,
            })
        }
    };
    let anchor = crate::signing::tuf::metadata::read_metadata(query.trusted_root)
        .and_then(|b| {
            b.ok_or_else(|| crate::signing::tuf::metadata::err(query.trusted_root, "is missing"))
        })
        .map_err(|e| VerifyError {
            path: e.file,
            reason: e.reason,
        })?;
    let trusted = match client::update(&source, (query.trusted_root, &anchor), &previous, now) {
        Ok(t) => t,
        Err(e) => {
            tuf_checks.push("metadata", false, e.to_string());
            return Ok(finish(tuf_checks));
        }
    };
    if let Some(state) = query.state {
        trusted.state().save(state).map_err(|e| VerifyError {
            path: e.file,
            reason: e.reason,
        })?;
    }
    tuf_checks.push(
        "metadata",
        true,
        format!(
            "TUF root (version {}), timestamp, snapshot and targets (version {}) verify and are current",
            trusted.root_version(),
            trusted.targets_version()
        ),
    );
    let version_of = |e: &Value| {
        e.pointer("/custom/version")
            .and_then(Value::as_str)
            .and_then(|v| Version::parse(v).ok())
    };
    let board = opts.board.as_deref();
    let releases = match trusted.releases(&source, board, now) {
        Ok(r) => r,
        Err(e) => {
            tuf_checks.push("metadata", false, e.to_string());
            return Ok(finish(tuf_checks));
        }
    };
    let chosen = match query.target {
        Some(name) => match trusted.find(&source, name, now) {
            Ok(found) => found,
            Err(e) => {
                tuf_checks.push("metadata", false, e.to_string());
                return Ok(finish(tuf_checks));
            }
        },
        None => releases
            .iter()
            .filter(|f| version_of(&f.entry).is_some())
            .max_by(|a, b| version_of(&a.entry).cmp(&version_of(&b.entry)))
            .cloned(),
    };
    let Some(found) = chosen else {
        let what = match (query.target, board) {
            (Some(t), _) => t.to_string(),
            (None, Some(b)) => format!("release of board {b}"),
            (None, None) => "release".to_string(),
        };
        tuf_checks.push(
            "target",
            false,
            format!("targets.json and the roles it delegates list no {what}"),
        );
        return Ok(finish(tuf_checks));
    };
    if found.role != "targets" {
        tuf_checks.push(
            "delegation",
            true,
            format!(
                "{} is listed by role {}, delegated by targets.json",
                found.name, found.role
            ),
        );
    }
    let (name, entry) = (found.name.clone(), found.entry.clone());
    // The archive: exactly the length and hash the signed targets state. Opened once (a
    // regular file inside targets/, no symlink, FIFO or device), its size compared before
    // hashing, and the same descriptor rewound for unpacking: the bytes unpacked are the bytes
    // hashed.
    let want_len = entry.get("length").and_then(Value::as_u64);
    let want_hash = entry.pointer("/hashes/sha256").and_then(Value::as_str);
    let opened = crate::inroot::ImageRoot::open(&dir.join("targets"))
        .and_then(|targets| targets.parent(&name, false))
        .and_then(|found| match found {
            Some((d, leaf)) => d.open_read(leaf),
            None => Ok(None),
        });
    let mut archive = match opened {
        Ok(Some((_, len))) if Some(len) != want_len => {
            tuf_checks.push(
                "target",
                false,
                format!("{name}: {len} bytes, targets.json states {want_len:?}"),
            );
            return Ok(finish(tuf_checks));
        }
        Ok(Some((file, _))) => file,
        Ok(None) => {
            tuf_checks.push("target", false, format!("{name}: the archive is missing"));
            return Ok(finish(tuf_checks));
        }
        Err(e) => {
            tuf_checks.push("target", false, format!("{name}: {}", e.reason));
            return Ok(finish(tuf_checks));
        }
    };
    let len = want_len.unwrap_or(0);
    match sha256_reader(std::io::Read::by_ref(&mut archive).take(len.saturating_add(1))) {
        Ok((hash, read)) if read == len && Some(hash.as_str()) == want_hash => {
            tuf_checks.push(
                "target",
                true,
                format!("{name}: {len} bytes, sha256 as targets.json states"),
            );
        }
        Ok((_, read)) => {
            tuf_checks.push(
                "target",
                false,
                format!("{name}: {read} bytes whose sha256 or length differs from targets.json"),
            );
            return Ok(finish(tuf_checks));
        }
        Err(e) => {
            tuf_checks.push(
                "target",
                false,
                format!("{name}: the archive is unreadable: {e}"),
            );
            return Ok(finish(tuf_checks));
        }
    }
    // Revocation: nothing below the highest min_version any release (of this board) states.
    let board_of = |e: &Value| {
        e.pointer("/custom/board")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let floor = releases
        .iter()
        .map(|f| &f.entry)
        .filter(|e| board_of(e) == board_of(&entry))
        .filter_map(|e| e.pointer("/custom/min_version").and_then(Value::as_str))
        .filter_map(|v| Version::parse(v).ok().map(|p| (p, v.to_string())))
        .max_by(|a, b| a.0.cmp(&b.0));
    let this_version = entry
        .pointer("/custom/version")
        .and_then(Value::as_str)
        .unwrap_or("");
    if let Some((floor, floor_text)) = floor {
        let ok = Version::parse(this_version).is_ok_and(|v| v >= floor);
        tuf_checks.push(
            "min-version",
            ok,
            if ok {
                format!("version {this_version} is not below min_version {floor_text}")
            } else {
                format!("version {this_version} is below min_version {floor_text} (revoked)")
            },
        );
        if !ok {
            return Ok(finish(tuf_checks));
        }
    }
    // The image inside, unpacked into a private directory.
    let work = tempfile::tempdir().map_err(|e| VerifyError {
        path: std::env::temp_dir(),
        reason: e.to_string(),
    })?;
    let unpacked = std::io::Seek::rewind(&mut archive).and_then(|()| {
        let mut t = tar::Archive::new(std::io::Read::take(&mut archive, len));
        t.set_preserve_permissions(false);
        t.set_unpack_xattrs(false);
        for entry in t.entries()? {
            let mut entry = entry?;
            // Only files and directories: a link could make the verifier read outside.
            let kind = entry.header().entry_type();
            if !(kind.is_file() || kind.is_dir()) {
                return Err(std::io::Error::other(format!(
                    "entry {} is a {kind:?}, not a file or directory",
                    entry.path()?.display()
                )));
            }
            // unpack_in refuses names that leave the directory ("..", absolute).
            if !entry.unpack_in(work.path())? {
                return Err(std::io::Error::other("an entry's name leaves the archive"));
            }
        }
        Ok(())
    });
    if let Err(e) = unpacked {
        tuf_checks.push(
            "target",
            false,
            format!("{name}: not a readable OCI archive: {e}"),
        );
        return Ok(finish(tuf_checks));
    }
    let mut v = verify_layout(work.path(), opts)?;
    let named = entry
        .pointer("/custom/manifest_digest")
        .and_then(Value::as_str);
    if v.image.as_deref() != named {
        v.push(
            "target",
            false,
            format!(
                "{name}: holds image {:?}, targets.json names {named:?}",
                v.image
            ),
        );
    }
    if v.version.is_some() && v.version.as_deref() != Some(this_version) {
        v.push(
            "target",
            false,
            format!(
                "{name}: the signed image is version {:?}, targets.json says {this_version:?}",
                v.version
            ),
        );
    }
    tuf_checks.checks.append(&mut v.checks);
    v.checks = tuf_checks.checks;
    Ok(finish(v))
}
