//! OTA release metadata in The Update Framework's format (spec 1.0): root.json (which keys are
//! trusted for which role), targets.json (the image archives with length, SHA-256 and kiln's
//! `custom` fields), snapshot.json and timestamp.json, each signed over its canonical JSON.
//! python-tuf's client and tuftool read what this writes (ci/verify-tuf runs python-tuf).
//!
//! Written and checked here rather than with a TUF crate: `tough` (the maintained Rust one)
//! needs tokio, ring and an async transport for what are four small JSON documents, which does
//! not fit a 2-core CI build; its canonical JSON crate, `olpc-cjson`, is used for the bytes
//! that are signed. Keys are ECDSA P-256 (`keytype` "ecdsa", scheme "ecdsa-sha2-nistp256",
//! PEM public key), signatures hex-encoded ASN.1 DER, as securesystemslib makes them.

use crate::signing::sign::Signer;
use crate::timefmt::{parse_rfc3339_utc, rfc3339};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The TUF specification version written into every role.
pub const SPEC_VERSION: &str = "1.0.31";
/// The four top-level roles.
pub const ROLES: [&str; 4] = ["root", "targets", "snapshot", "timestamp"];

/// Why metadata could not be written or does not verify. Each names the file and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct TufError {
    /// The metadata file (or other file) concerned.
    pub file: PathBuf,
    /// What is wrong.
    pub reason: String,
}

fn err(file: &Path, reason: impl std::fmt::Display) -> TufError {
    TufError {
        file: file.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The canonical JSON (OLPC) bytes of a value: what TUF signatures are over.
pub fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, olpc_cjson::CanonicalFormatter::new());
    // Serialising a Value into a Vec cannot fail except on floats, which TUF metadata has none of.
    if value.serialize(&mut ser).is_err() {
        out.clear();
    }
    out
}

/// TUF's description of a P-256 public key.
pub fn key_object(key: &VerifyingKey) -> Value {
    let pem = key.to_public_key_pem(LineEnding::LF).unwrap_or_default();
    json!({
        "keytype": "ecdsa",
        "scheme": "ecdsa-sha2-nistp256",
        "keyval": {"public": pem},
    })
}

/// A key's TUF id: SHA-256 of the canonical JSON of its key object, hex.
pub fn key_id(key: &VerifyingKey) -> String {
    crate::digest::sha256_hex(&canonical(&key_object(key)))
}

/// Wraps a role's `signed` part with one signature by `signer` (whose public key is `key`).
pub fn sign_role(
    signed: Value,
    signer: &dyn Signer,
    key: &VerifyingKey,
) -> Result<Value, crate::signing::sign::SignError> {
    let der = signer.sign(&canonical(&signed))?;
    Ok(json!({
        "signatures": [{"keyid": key_id(key), "sig": hex::encode(der)}],
        "signed": signed,
    }))
}

/// What kiln records about a release in its targets entry (`custom`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseInfo {
    /// Board name.
    pub board: String,
    /// Hardware compatible strings.
    pub compatible: Vec<String>,
    /// Image version.
    pub version: String,
    /// The lowest version devices may still be given (older releases are revoked).
    pub min_version: Option<String>,
    /// `sha256:` digest of the image manifest inside the archive.
    pub manifest_digest: String,
}

/// The newest release of the repository and every target's custom data.
#[derive(Debug, Clone)]
pub struct TrustedTargets {
    /// targets.json's `signed.targets` map.
    pub targets: serde_json::Map<String, Value>,
    /// targets.json version.
    pub version: u64,
}

fn read_json(path: &Path) -> Result<Value, TufError> {
    let bytes = fs::read(path).map_err(|e| err(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| err(path, format!("not JSON: {e}")))
}

/// Replaces `path` by `value` in one step: a new file of a random name beside it (created with
/// `O_EXCL`, so nothing planted under a predictable name is followed), renamed over it.
fn write_atomic(path: &Path, value: &Value) -> Result<(), TufError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| err(path, e))?;
    bytes.push(b'\n');
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(dir, e))?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| err(tmp.path(), e))?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .map_err(|e| err(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| err(path, e.error))?;
    Ok(())
}

/// A release to add: its TUF target name, the archive file to hash, and kiln's custom data.
#[derive(Debug, Clone, Copy)]
pub struct NewTarget<'a> {
    /// Target name (a relative path under targets/).
    pub name: &'a str,
    /// The archive as it will be served.
    pub archive: &'a Path,
    /// Board, compatible strings, versions, manifest digest.
    pub info: &'a ReleaseInfo,
}

/// Days from now until a role expires.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    /// root.json.
    pub root_days: u64,
    /// targets, snapshot and timestamp.
    pub release_days: u64,
}

/// Adds the archive `name` (at `archive`, already in `dir/targets/`) to the TUF repository in
/// `dir/metadata`, signing every changed role with `signer`. root.json is created on the first
/// release (every role trusting `key`) and never changed afterwards; the targets version goes
/// up by one at every release, and a release whose version is not newer than every earlier
/// one is refused. Returns the new targets version.
pub fn add_release(
    dir: &Path,
    target: &NewTarget,
    signer: &dyn Signer,
    key: &VerifyingKey,
    now: u64,
    expiry: Expiry,
) -> Result<u64, TufError> {
    let (name, archive, info) = (target.name, target.archive, target.info);
    let meta = dir.join("metadata");
    fs::create_dir_all(&meta).map_err(|e| err(&meta, e))?;
    let sign =
        |signed: Value, file: &Path| sign_role(signed, signer, key).map_err(|e| err(file, e));
    let root_path = meta.join("root.json");
    let kid = key_id(key);
    if root_path.exists() {
        let root = read_json(&root_path)?;
        if !role_keyids(&root, "targets").contains(kid.as_str()) {
            return Err(err(
                &root_path,
                format!("does not trust key {kid} for targets; sign with a key it lists"),
            ));
        }
    } else {
        let roles: serde_json::Map<String, Value> = ROLES
            .iter()
            .map(|r| (r.to_string(), json!({"keyids": [kid], "threshold": 1})))
            .collect();
        let signed = json!({
            "_type": "root",
            "spec_version": SPEC_VERSION,
            "version": 1,
            "expires": rfc3339(now + expiry.root_days * 86_400),
            "consistent_snapshot": false,
            "keys": {kid.clone(): key_object(key)},
            "roles": roles,
        });
        write_atomic(&root_path, &sign(signed, &root_path)?)?;
    }

    let targets_path = meta.join("targets.json");
    let (mut entries, old_version) = if targets_path.exists() {
        let old = read_json(&targets_path)?;
        let entries = old
            .pointer("/signed/targets")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let version = old
            .pointer("/signed/version")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        (entries, version)
    } else {
        (serde_json::Map::new(), 0)
    };
    let new_version = crate::debian::version::Version::parse(&info.version).map_err(|e| {
        err(
            &targets_path,
            format!("image version {:?}: {e}", info.version),
        )
    })?;
    for (other, entry) in &entries {
        let board = entry
            .pointer("/custom/board")
            .and_then(Value::as_str)
            .unwrap_or("");
        if board != info.board {
            return Err(err(
                &targets_path,
                format!("holds releases of board {board:?} ({other}); one repository per board, this image is for {:?}", info.board),
            ));
        }
        let v = entry
            .pointer("/custom/version")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Ok(existing) = crate::debian::version::Version::parse(v) {
            if existing >= new_version {
                return Err(err(
                    &targets_path,
                    format!(
                        "already releases version {v} ({other}); version {} is not newer",
                        info.version
                    ),
                ));
            }
        }
    }
    let (sha256, length) = fs::File::open(archive)
        .and_then(crate::digest::sha256_reader)
        .map_err(|e| err(archive, e))?;
    entries.insert(
        name.to_string(),
        json!({
            "length": length,
            "hashes": {"sha256": sha256},
            "custom": info,
        }),
    );
    let expires = rfc3339(now + expiry.release_days * 86_400);
    let version = old_version + 1;
    let targets = sign(
        json!({
            "_type": "targets",
            "spec_version": SPEC_VERSION,
            "version": version,
            "expires": expires,
            "targets": entries,
        }),
        &targets_path,
    )?;
    let snapshot_path = meta.join("snapshot.json");
    let snapshot = sign(
        json!({
            "_type": "snapshot",
            "spec_version": SPEC_VERSION,
            "version": version,
            "expires": expires,
            "meta": {"targets.json": {"version": version}},
        }),
        &snapshot_path,
    )?;
    let snapshot_bytes = {
        let mut b = serde_json::to_vec_pretty(&snapshot).map_err(|e| err(&snapshot_path, e))?;
        b.push(b'\n');
        b
    };
    let timestamp_path = meta.join("timestamp.json");
    let timestamp = sign(
        json!({
            "_type": "timestamp",
            "spec_version": SPEC_VERSION,
            "version": version,
            "expires": expires,
            "meta": {"snapshot.json": {
                "version": version,
                "length": snapshot_bytes.len(),
                "hashes": {"sha256": crate::digest::sha256_hex(&snapshot_bytes)},
            }},
        }),
        &timestamp_path,
    )?;
    // Clients start from timestamp.json: write it last.
    write_atomic(&targets_path, &targets)?;
    write_atomic(&snapshot_path, &snapshot)?;
    write_atomic(&timestamp_path, &timestamp)?;
    Ok(version)
}

/// The key ids root.json assigns to `role`.
fn role_keyids<'a>(root: &'a Value, role: &str) -> BTreeSet<&'a str> {
    root.pointer(&format!("/signed/roles/{role}/keyids"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Checks `role`'s signatures in `doc` against the keys and threshold `root` assigns it.
fn check_signatures(root: &Value, role: &str, doc: &Value, file: &Path) -> Result<(), TufError> {
    let role_def = root
        .pointer(&format!("/signed/roles/{role}"))
        .ok_or_else(|| err(file, format!("the trusted root defines no {role} role")))?;
    let threshold = role_def
        .get("threshold")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    let keyids = role_keyids(root, role);
    let signed = doc
        .get("signed")
        .ok_or_else(|| err(file, "has no \"signed\" part"))?;
    let bytes = canonical(signed);
    let mut good = BTreeSet::new();
    for s in doc
        .get("signatures")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(kid), Some(sig)) = (
            s.get("keyid").and_then(Value::as_str),
            s.get("sig").and_then(Value::as_str),
        ) else {
            continue;
        };
        if !keyids.contains(kid) {
            continue;
        }
        let Some(key) = root.pointer(&format!("/signed/keys/{kid}")) else {
            continue;
        };
        if key.get("keytype").and_then(Value::as_str) != Some("ecdsa")
            || key.get("scheme").and_then(Value::as_str) != Some("ecdsa-sha2-nistp256")
        {
            continue;
        }
        let Some(public) = key
            .pointer("/keyval/public")
            .and_then(Value::as_str)
            .and_then(|pem| VerifyingKey::from_public_key_pem(pem).ok())
        else {
            continue;
        };
        let Some(signature) = hex::decode(sig)
            .ok()
            .and_then(|d| Signature::from_der(&d).ok())
        else {
            continue;
        };
        if public.verify(&bytes, &signature).is_ok() {
            good.insert(kid.to_string());
        }
    }
    if (good.len() as u64) < threshold {
        return Err(err(
            file,
            format!(
                "{} valid signature(s) by {role} keys, the root requires {threshold}",
                good.len()
            ),
        ));
    }
    Ok(())
}

fn check_role(
    root: &Value,
    role: &str,
    doc: &Value,
    file: &Path,
    now: u64,
) -> Result<(), TufError> {
    check_signatures(root, role, doc, file)?;
    let signed = &doc["signed"];
    if signed.get("_type").and_then(Value::as_str) != Some(role) {
        return Err(err(file, format!("is not {role} metadata")));
    }
    let expires = signed.get("expires").and_then(Value::as_str).unwrap_or("");
    match parse_rfc3339_utc(expires) {
        Some(t) if t > now => Ok(()),
        Some(_) => Err(err(file, format!("expired at {expires}"))),
        None => Err(err(file, format!("has no valid expiry ({expires:?})"))),
    }
}

/// Verifies the repository in `metadata` from the pinned `trusted_root` at time `now`:
/// root self-signed, then timestamp -> snapshot -> targets, each signed by its role's keys,
/// unexpired, and matching the version (and for snapshot, length and hash) its parent states.
pub fn verify_repository(
    metadata: &Path,
    trusted_root: &Path,
    now: u64,
) -> Result<TrustedTargets, TufError> {
    let read = |p: &Path| fs::read(p).map_err(|e| err(p, e));
    let root = read(trusted_root)?;
    let ts_path = metadata.join("timestamp.json");
    let snap_path = metadata.join("snapshot.json");
    let targets_path = metadata.join("targets.json");
    verify_documents(
        &Documents {
            root: (trusted_root, &root),
            timestamp: (&ts_path, &read(&ts_path)?),
            snapshot: (&snap_path, &read(&snap_path)?),
            targets: (&targets_path, &read(&targets_path)?),
        },
        now,
    )
}

/// The four metadata files, each with the path its messages name.
#[derive(Debug, Clone, Copy)]
pub struct Documents<'a> {
    /// The pinned root.json.
    pub root: (&'a Path, &'a [u8]),
    /// timestamp.json.
    pub timestamp: (&'a Path, &'a [u8]),
    /// snapshot.json.
    pub snapshot: (&'a Path, &'a [u8]),
    /// targets.json.
    pub targets: (&'a Path, &'a [u8]),
}

fn parse(file: &Path, bytes: &[u8]) -> Result<Value, TufError> {
    serde_json::from_slice(bytes).map_err(|e| err(file, format!("not JSON: {e}")))
}

/// [`verify_repository`] on metadata already in memory (what the fuzz target drives).
pub fn verify_documents(docs: &Documents, now: u64) -> Result<TrustedTargets, TufError> {
    let (root_path, root_bytes) = docs.root;
    let root = parse(root_path, root_bytes)?;
    check_role(&root, "root", &root, root_path, now)?;
    let (ts_path, ts_bytes) = docs.timestamp;
    let timestamp = parse(ts_path, ts_bytes)?;
    check_role(&root, "timestamp", &timestamp, ts_path, now)?;
    let snap_meta = timestamp
        .pointer("/signed/meta/snapshot.json")
        .ok_or_else(|| err(ts_path, "names no snapshot.json"))?;
    let (snap_path, snap_bytes) = docs.snapshot;
    if let Some(len) = snap_meta.get("length").and_then(Value::as_u64) {
        if snap_bytes.len() as u64 != len {
            return Err(err(
                snap_path,
                format!("is {} bytes, timestamp.json says {len}", snap_bytes.len()),
            ));
        }
    }
    if let Some(h) = snap_meta.pointer("/hashes/sha256").and_then(Value::as_str) {
        if crate::digest::sha256_hex(snap_bytes) != h {
            return Err(err(snap_path, "does not hash to what timestamp.json says"));
        }
    }
    let snapshot = parse(snap_path, snap_bytes)?;
    check_role(&root, "snapshot", &snapshot, snap_path, now)?;
    let want_snap = snap_meta.get("version").and_then(Value::as_u64);
    if snapshot.pointer("/signed/version").and_then(Value::as_u64) != want_snap {
        return Err(err(
            snap_path,
            format!("is not version {want_snap:?} that timestamp.json names"),
        ));
    }
    let (targets_path, targets_bytes) = docs.targets;
    let targets = parse(targets_path, targets_bytes)?;
    check_role(&root, "targets", &targets, targets_path, now)?;
    let want_targets = snapshot
        .pointer("/signed/meta/targets.json/version")
        .and_then(Value::as_u64);
    let version = targets.pointer("/signed/version").and_then(Value::as_u64);
    if version != want_targets {
        return Err(err(
            targets_path,
            format!("is version {version:?}, snapshot.json names {want_targets:?}"),
        ));
    }
    Ok(TrustedTargets {
        targets: targets
            .pointer("/signed/targets")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        version: version.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        let v = json!({"b": 1, "a": {"d": "x\"y", "c": [true, null]}});
        assert_eq!(
            String::from_utf8(canonical(&v)).unwrap(),
            r#"{"a":{"c":[true,null],"d":"x\"y"},"b":1}"#
        );
    }
}
