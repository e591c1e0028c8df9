//! Build provenance end to end: `kiln build` writes an in-toto Statement (SLSA Provenance v1)
//! beside the layout without changing the image digest, `kiln sign` attaches it as a signed
//! DSSE attestation (cosign's `.att` tag, an OCI 1.1 referrer), `kiln verify --provenance`
//! checks it names this image and, with `--builder-id`, who built it; securesystemslib's
//! DSSE and in-toto's attestation library with the SLSA v1 schema (ci/validate-provenance)
//! accept it. A statement of another image is refused when signing and when verifying.

use crate::fixture::{self, kiln, text};
use crate::sign::{built, built_v11, pub_of, sign_copy};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(out: &Path, digest: &str) -> PathBuf {
    out.join("oci/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The image manifest digest of a build's layout.
fn image_digest(out: &Path) -> String {
    json(&out.join("oci/index.json"))["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d.get("artifactType").is_none())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The attestation's index entry and its envelope blob.
fn attestation(out: &Path) -> (Value, PathBuf) {
    let index = json(&out.join("oci/index.json"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .is_some_and(|t| t.ends_with(".att"))
        })
        .expect("an attestation entry")
        .clone();
    let manifest = json(&blob(out, entry["digest"].as_str().unwrap()));
    let envelope = blob(out, manifest["layers"][0]["digest"].as_str().unwrap());
    (entry, envelope)
}

fn verify(out: &Path, key: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("verify")
        .arg(out)
        .arg("--key")
        .arg(pub_of(key))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn the_build_states_its_inputs_without_changing_the_image_digest() {
    let out = &built().1;
    let statement = json(&out.join("provenance.json"));
    let digest = image_digest(out);
    assert_eq!(
        format!(
            "sha256:{}",
            statement["subject"][0]["digest"]["sha256"]
                .as_str()
                .unwrap()
        ),
        digest
    );
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    let run = &statement["predicate"]["runDetails"];
    assert_eq!(run["builder"]["id"], "https://kiln.invalid/builders/local");
    assert!(
        run["metadata"]["startedOn"].as_str().unwrap()
            <= run["metadata"]["finishedOn"].as_str().unwrap()
    );
    // Every locked .deb, by its sha256; the recipe, board and lock files by theirs.
    let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let lock = std::fs::read_to_string(out.parent().unwrap().join("kiln.lock")).unwrap();
    let locked: Vec<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("sha256 = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert!(!locked.is_empty());
    for sha in &locked {
        assert!(
            deps.iter().any(|d| d["digest"]["sha256"] == *sha
                && d["uri"].as_str().unwrap().starts_with("pkg:deb/debian/")),
            "{sha} not among the resolved dependencies"
        );
    }
    let params = &statement["predicate"]["buildDefinition"]["externalParameters"];
    assert_eq!(
        params["lock"]["digest"]["sha256"],
        fixture::sha256(lock.as_bytes())
    );

    // Another build of the same lock, at another time, by a named CI builder: the same image.
    let work = built().0.path();
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--locked", "-o", "out-ci"])
        .current_dir(work.join("recipe"))
        .env("KILN_CACHE_DIR", work.join("cache"))
        .env("KILN_BUILDER_ID", "https://ci.example/runners/firmware")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let again = work.join("recipe/out-ci");
    assert_eq!(image_digest(&again), digest);
    let statement = json(&again.join("provenance.json"));
    assert_eq!(
        statement["predicate"]["runDetails"]["builder"]["id"],
        "https://ci.example/runners/firmware"
    );
}

#[test]
fn signed_provenance_verifies_for_its_image_and_builder_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.key");
    let v10 = sign_copy(&built().1, dir.path(), "v10", &key);
    let digest = image_digest(&v10);
    let (entry, envelope) = attestation(&v10);
    assert_eq!(
        entry["artifactType"],
        "application/vnd.dsse.envelope.v1+json"
    );
    let o = verify(&v10, &key, &["--provenance"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("signature valid, signed provenance holds"),
        "{}",
        text(&o)
    );
    let o = verify(&v10, &key, &["--provenance", "--format", "json"]);
    assert!(
        text(&o).contains("signed SLSA provenance for")
            && text(&o).contains("kiln.invalid/builders/local"),
        "{}",
        text(&o)
    );
    let o = verify(
        &v10,
        &key,
        &["--builder-id", "https://ci.example/runners/firmware"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not a trusted builder"), "{}", text(&o));

    // Tools kiln did not write accept the envelope, the statement and the SLSA predicate.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/validate-provenance");
    let o = Command::new("bash")
        .arg(&script)
        .arg(&envelope)
        .arg(pub_of(&key))
        .arg(&digest)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("SLSA Provenance v1 hold"), "{}", text(&o));

    // Signing a build whose provenance.json describes another image is refused.
    let v11 = built_v11();
    let unsigned = dir.path().join("mixed");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&built().1)
        .arg(&unsigned)
        .status()
        .unwrap()
        .success());
    std::fs::copy(
        v11.join("provenance.json"),
        unsigned.join("provenance.json"),
    )
    .unwrap();
    let o = kiln(
        dir.path(),
        &dir.path().join("cache"),
        &[
            "sign",
            unsigned.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("which provenance.json describes"),
        "{}",
        text(&o)
    );

    // A signed provenance of another image (1.1's, same key) put in place of 1.0's: refused.
    let v11s = sign_copy(v11, dir.path(), "v11", &key);
    let (_, other_envelope) = attestation(&v11s);
    let other = std::fs::read(&other_envelope).unwrap();
    let other_digest = format!("sha256:{}", fixture::sha256(&other));
    std::fs::write(blob(&v10, &other_digest), &other).unwrap();
    let att_manifest_path = blob(&v10, entry["digest"].as_str().unwrap());
    let mut att_manifest = json(&att_manifest_path);
    att_manifest["layers"][0]["digest"] = Value::String(other_digest);
    att_manifest["layers"][0]["size"] = Value::from(other.len());
    let bytes = serde_json::to_vec(&att_manifest).unwrap();
    let new_digest = format!("sha256:{}", fixture::sha256(&bytes));
    std::fs::write(blob(&v10, &new_digest), &bytes).unwrap();
    let index_path = v10.join("oci/index.json");
    let mut index = json(&index_path);
    for d in index["manifests"].as_array_mut().unwrap() {
        if d["digest"] == entry["digest"] {
            d["digest"] = Value::String(new_digest.clone());
            d["size"] = Value::from(bytes.len());
        }
    }
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let o = verify(&v10, &key, &["--provenance"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("not this image {digest}")),
        "{}",
        text(&o)
    );
    // Without --provenance the image itself still verifies (the attestation is optional).
    let o = verify(&v10, &key, &[]);
    assert!(o.status.success(), "{}", text(&o));
}
