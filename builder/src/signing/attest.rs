//! Signed build provenance: the in-toto Statement `kiln build` wrote (`pipeline::provenance`)
//! wrapped in a DSSE envelope (<https://github.com/secure-systems-lab/dsse>,
//! payload type `application/vnd.in-toto+json`, the signature over DSSE's pre-authentication
//! encoding), stored as `cosign attest` stores one: an OCI manifest whose one layer is the
//! envelope (`application/vnd.dsse.envelope.v1+json`, annotated with the predicate type),
//! under the tag `sha256-<hex>.att`, and with the image as its `subject` (an OCI 1.1 referrer).
//!
//! Verifying it ([`check_envelope`]) means: a signature by one of the trusted keys over the
//! encoding, an in-toto Statement inside, SLSA Provenance v1 as its predicate, this image as
//! its subject, and, when asked, a builder id the verifier trusts.

pub use crate::image::layout::IN_TOTO_PAYLOAD_TYPE;
use crate::image::layout::{entry_kind, tag_of, EntryKind, Layout, ATTESTATION_ARTIFACT_TYPE};
use crate::image::provenance::{PREDICATE_TYPE, STATEMENT_TYPE};
use crate::signing::sign::{write_referrer, Referrer, SignError, Signer};
use base64::Engine;
use oci_spec::image::Descriptor;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use serde_json::{json, Value};
use std::path::Path;

/// The layer annotation naming the statement's predicate type (as cosign writes it).
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
/// The largest envelope read (a statement naming thousands of inputs is well below).
pub const MAX_ENVELOPE: u64 = 16 << 20;

/// DSSE's pre-authentication encoding: what the signature is over (DSSE v1 "PAE").
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope over `statement`, signed by `signer`; `keyid` names the key (its TUF /
/// securesystemslib key id), or is empty when the signer's key is not known here.
pub fn envelope(statement: &[u8], signer: &dyn Signer, keyid: &str) -> Result<Value, SignError> {
    let der = signer.sign(&pae(IN_TOTO_PAYLOAD_TYPE, statement))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(json!({
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": b64.encode(statement),
        "signatures": [{"keyid": keyid, "sig": b64.encode(der)}],
    }))
}

/// The tag `cosign attest` gives an image's attestations: `sha256-<hex>.att`.
pub fn attestation_tag(manifest_digest: &str) -> String {
    format!("{}.att", manifest_digest.replace(':', "-"))
}

/// What [`attest_layout`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// The image the statement names.
    pub image: String,
    /// `sha256:` digest of the attestation manifest.
    pub manifest: String,
    /// Its tag.
    pub tag: String,
}

/// The `sha256:` image digest a statement's first subject names.
pub fn subject_digest(statement: &Value) -> Option<String> {
    statement
        .pointer("/subject/0/digest/sha256")
        .and_then(Value::as_str)
        .map(|h| format!("sha256:{h}"))
}

/// Signs `statement` (an in-toto Statement naming an image of the layout) as a DSSE envelope
/// and stores it as that image's attestation, replacing an earlier one. A statement naming an
/// image the layout does not hold is refused: it describes another build.
pub fn attest_layout(
    layout: &Path,
    statement: &[u8],
    signer: &dyn Signer,
    keyid: &str,
) -> Result<Attested, SignError> {
    let files = Layout::open(layout)?;
    let parsed: Value = serde_json::from_slice(statement)
        .map_err(|e| files.err("provenance.json", format!("not JSON: {e}")))?;
    let named = subject_digest(&parsed)
        .ok_or_else(|| files.err("provenance.json", "names no subject digest"))?;
    let predicate_type = parsed
        .get("predicateType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut index = files.index()?;
    let manifests = index.manifests().clone();
    let Some(image) = manifests
        .iter()
        .find(|d| entry_kind(d) == EntryKind::Image && d.digest().to_string() == named)
    else {
        return Err(files
            .err(
                "index.json",
                format!("holds no image {named}, which provenance.json describes; it belongs to another build"),
            )
            .into());
    };
    let env = envelope(statement, signer, keyid)?;
    let env_bytes = serde_json::to_vec(&env).map_err(|e| files.err("provenance.json", e))?;
    let tag = attestation_tag(&named);
    let (entry, digest) = write_referrer(
        &files,
        &Referrer {
            artifact_type: ATTESTATION_ARTIFACT_TYPE,
            layer_media_type: ATTESTATION_ARTIFACT_TYPE,
            layer: &env_bytes,
            layer_annotations: json!({PREDICATE_TYPE_ANNOTATION: predicate_type}),
            subject: (&named, image.size()),
            tag: &tag,
        },
    )?;
    let mut kept: Vec<Descriptor> = manifests
        .into_iter()
        .filter(|d| tag_of(d) != Some(tag.as_str()))
        .collect();
    kept.push(entry);
    index.set_manifests(kept);
    files.write_index(&index)?;
    crate::signing::sign::remove_unreferenced(&files)?;
    Ok(Attested {
        image: named,
        manifest: digest,
        tag,
    })
}

/// The statement a build wrote beside its layout (`OUT/provenance.json`), if any: a regular
/// file (no symlink, FIFO or device) of at most [`MAX_ENVELOPE`] bytes.
pub fn read_statement(out: &Path) -> Result<Option<Vec<u8>>, SignError> {
    let path = out.join(crate::image::provenance::FILE_NAME);
    let fail = |reason: String| SignError::Layout {
        path: path.clone(),
        reason,
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    if !meta.is_file() {
        return Err(fail("is not a regular file".into()));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open(&path).map_err(|e| fail(e.to_string()))?,
            MAX_ENVELOPE + 1,
        ),
        &mut bytes,
    )
    .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_ENVELOPE {
        return Err(fail(format!("is larger than {MAX_ENVELOPE} bytes")));
    }
    Ok(Some(bytes))
}

/// What a verified provenance says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The image it names.
    pub subject: String,
    /// SLSA `runDetails.builder.id`.
    pub builder_id: String,
    /// How many inputs it names by digest.
    pub dependencies: usize,
}

/// Checks a DSSE envelope: signed by one of `keys` over its encoding, holding an in-toto
/// Statement with a SLSA Provenance v1 predicate that names `image`, from one of
/// `builder_ids` when any are given. The reason names what is wrong.
pub fn check_envelope(
    bytes: &[u8],
    keys: &[VerifyingKey],
    image: &str,
    builder_ids: &[String],
) -> Result<Provenance, String> {
    let env: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the envelope is not JSON: {e}"))?;
    let payload_type = env.get("payloadType").and_then(Value::as_str).unwrap_or("");
    if payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(format!(
            "the envelope's payloadType is {payload_type:?}, not {IN_TOTO_PAYLOAD_TYPE:?}"
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = env
        .get("payload")
        .and_then(Value::as_str)
        .and_then(|p| b64.decode(p).ok())
        .ok_or("the envelope's payload is not base64")?;
    let encoded = pae(payload_type, &payload);
    let signed = env
        .get("signatures")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("sig").and_then(Value::as_str))
        .filter_map(|s| b64.decode(s).ok())
        .filter_map(|der| Signature::from_der(&der).ok())
        .any(|sig| keys.iter().any(|k| k.verify(&encoded, &sig).is_ok()));
    if !signed {
        return Err(format!(
            "the envelope is not signed by any of the {} given key(s)",
            keys.len()
        ));
    }
    // Trusted from here: the statement is what the key holder signed.
    let statement: Value =
        serde_json::from_slice(&payload).map_err(|e| format!("the statement is not JSON: {e}"))?;
    let field = |p: &str| statement.pointer(p).and_then(Value::as_str).unwrap_or("");
    if field("/_type") != STATEMENT_TYPE {
        return Err(format!(
            "the payload is not an in-toto Statement v1 ({:?})",
            field("/_type")
        ));
    }
    if field("/predicateType") != PREDICATE_TYPE {
        return Err(format!(
            "the predicate is {:?}, not SLSA Provenance v1",
            field("/predicateType")
        ));
    }
    let subjects: Vec<String> = statement
        .get("subject")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.pointer("/digest/sha256").and_then(Value::as_str))
        .map(|h| format!("sha256:{h}"))
        .collect();
    if !subjects.iter().any(|s| s == image) {
        return Err(format!(
            "the provenance names {}, not this image {image}",
            if subjects.is_empty() {
                "no image".to_string()
            } else {
                subjects.join(", ")
            }
        ));
    }
    let builder_id = field("/predicate/runDetails/builder/id").to_string();
    if !builder_ids.is_empty() && !builder_ids.contains(&builder_id) {
        return Err(format!(
            "built by {builder_id:?}, which is not a trusted builder ({})",
            builder_ids.join(", ")
        ));
    }
    Ok(Provenance {
        subject: image.to_string(),
        builder_id,
        dependencies: statement
            .pointer("/predicate/buildDefinition/resolvedDependencies")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::sign::KeySigner;
    use p256::ecdsa::SigningKey;

    fn statement_for(image_hex: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "_type": STATEMENT_TYPE,
            "subject": [{"name": "x", "digest": {"sha256": image_hex}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {"runDetails": {"builder": {"id": "https://ci.example/runner"}},
                          "buildDefinition": {"resolvedDependencies": [{"name": "a", "digest": {"sha256": "00"}}]}},
        }))
        .unwrap()
    }

    #[test]
    fn the_encoding_is_dsse_v1s() {
        // The example of the DSSE specification's protocol.md.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn an_envelope_verifies_only_for_its_image_key_and_builder() {
        let key = SigningKey::random(&mut rand_core::OsRng);
        let public = *key.verifying_key();
        let image = format!("sha256:{}", "ab".repeat(32));
        let env = envelope(&statement_for(&"ab".repeat(32)), &KeySigner(key), "").unwrap();
        let bytes = serde_json::to_vec(&env).unwrap();
        let p = check_envelope(&bytes, &[public], &image, &[]).unwrap();
        assert_eq!(
            (p.builder_id.as_str(), p.dependencies),
            ("https://ci.example/runner", 1)
        );
        check_envelope(
            &bytes,
            &[public],
            &image,
            &["https://ci.example/runner".into()],
        )
        .unwrap();
        let e = check_envelope(&bytes, &[public], &image, &["https://other".into()]).unwrap_err();
        assert!(e.contains("not a trusted builder"), "{e}");
        let other = format!("sha256:{}", "cd".repeat(32));
        let e = check_envelope(&bytes, &[public], &other, &[]).unwrap_err();
        assert!(
            e.contains("names sha256:abab") && e.contains("not this image"),
            "{e}"
        );
        let stranger = *SigningKey::random(&mut rand_core::OsRng).verifying_key();
        let e = check_envelope(&bytes, &[stranger], &image, &[]).unwrap_err();
        assert!(e.contains("not signed by any"), "{e}");
        // The payload swapped for another statement: the signature no longer holds.
        let mut forged = env.clone();
        forged["payload"] = json!(
            base64::engine::general_purpose::STANDARD.encode(statement_for(&"cd".repeat(32)))
        );
        let bytes = serde_json::to_vec(&forged).unwrap();
        assert!(check_envelope(&bytes, &[public], &other, &[]).is_err());
    }
}
