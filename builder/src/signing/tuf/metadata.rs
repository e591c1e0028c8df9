//! The pieces every TUF document shares: canonical JSON (what signatures are over), key
//! objects and ids, signing a role with several keys, and checking a role's signatures
//! against the keys and threshold its delegator (root, or a delegating targets role) assigns.

use crate::signing::sign::Signer;
use crate::timefmt::parse_rfc3339_utc;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The TUF specification version written into every role.
pub const SPEC_VERSION: &str = "1.0.31";

/// The largest metadata file read (a targets.json with thousands of releases is far below).
pub const MAX_METADATA: u64 = 16 << 20;

/// The four top-level roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Says which keys sign which role; kept offline.
    Root,
    /// Lists the releases, or delegates boards to their teams' keys.
    Targets,
    /// Pins the version of every targets metadata file (no mix-and-match).
    Snapshot,
    /// Short-lived, re-signed often: pins snapshot.json (no freeze).
    Timestamp,
}

impl Role {
    /// Every top-level role, root first.
    pub const ALL: [Role; 4] = [Role::Root, Role::Targets, Role::Snapshot, Role::Timestamp];

    /// The role's name in metadata ("root", ...).
    pub fn name(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Targets => "targets",
            Role::Snapshot => "snapshot",
            Role::Timestamp => "timestamp",
        }
    }

    /// The role of a name, for command-line options.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why metadata could not be written or does not verify. Each names the file (and so the
/// role) and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct TufError {
    /// The metadata file (or other file) concerned.
    pub file: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// A [`TufError`] about `file`.
pub fn err(file: &Path, reason: impl std::fmt::Display) -> TufError {
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

/// One key that can sign a role: its public half (for the key id) and what signs with it (a
/// key file, or a command reaching an HSM or KMS).
pub struct RoleSigner {
    /// The public key, as the role's delegator lists it.
    pub public: VerifyingKey,
    /// What makes the signature.
    pub signer: Box<dyn Signer>,
}

impl std::fmt::Debug for RoleSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RoleSigner({})", key_id(&self.public))
    }
}

/// Wraps a role's `signed` part with one signature by each of `signers` (each key once).
pub fn sign_role(signed: Value, signers: &[&RoleSigner], file: &Path) -> Result<Value, TufError> {
    let bytes = canonical(&signed);
    let mut seen = BTreeSet::new();
    let mut signatures = Vec::new();
    for s in signers {
        let kid = key_id(&s.public);
        if !seen.insert(kid.clone()) {
            continue;
        }
        let der = s.signer.sign(&bytes).map_err(|e| err(file, e))?;
        signatures.push(json!({"keyid": kid, "sig": hex::encode(der)}));
    }
    Ok(json!({"signatures": signatures, "signed": signed}))
}

/// The keys and threshold a delegator assigns to one role: `keys` is the delegator's key map
/// (root's `keys`, or a targets role's `delegations.keys`).
#[derive(Debug, Clone, Copy)]
pub struct RoleDefinition<'a> {
    /// The role's name, for messages.
    pub name: &'a str,
    /// Who assigned it ("root version 3", "targets.json"), for messages.
    pub by: &'a str,
    /// The delegator's key objects by key id.
    pub keys: &'a serde_json::Map<String, Value>,
    /// The key ids allowed to sign.
    pub keyids: &'a [Value],
    /// How many distinct keys must sign.
    pub threshold: u64,
}

impl<'a> RoleDefinition<'a> {
    /// Root's definition of top-level `role`.
    pub fn from_root(root: &'a Value, role: Role, by: &'a str) -> Result<Self, String> {
        let keys = root
            .pointer("/signed/keys")
            .and_then(Value::as_object)
            .ok_or("the root lists no keys")?;
        let def = root
            .pointer(&format!("/signed/roles/{}", role.name()))
            .ok_or_else(|| format!("the root defines no {role} role"))?;
        Self::from_object(role.name(), by, keys, def)
    }

    /// A definition object (`keyids`, `threshold`) with the delegator's keys.
    pub fn from_object(
        name: &'a str,
        by: &'a str,
        keys: &'a serde_json::Map<String, Value>,
        def: &'a Value,
    ) -> Result<Self, String> {
        let keyids = def
            .get("keyids")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("the {name} role lists no keyids"))?;
        // A threshold below one would accept unsigned metadata (TUF spec 4.3: at least 1).
        let threshold = def
            .get("threshold")
            .and_then(Value::as_u64)
            .filter(|t| *t >= 1)
            .ok_or_else(|| format!("the {name} role has no threshold of at least 1"))?;
        Ok(RoleDefinition {
            name,
            by,
            keys,
            keyids: keyids.as_slice(),
            threshold,
        })
    }

    /// The key ids as strings.
    pub fn keyid_set(&self) -> BTreeSet<&'a str> {
        self.keyids.iter().filter_map(Value::as_str).collect()
    }
}

/// Counts the distinct keys of `def` whose signatures in `doc` verify over its `signed` part,
/// and refuses fewer than the threshold, naming the role and who defines it.
pub fn check_signatures(def: &RoleDefinition, doc: &Value, file: &Path) -> Result<(), TufError> {
    let signed = doc
        .get("signed")
        .ok_or_else(|| err(file, "has no \"signed\" part"))?;
    let bytes = canonical(signed);
    let allowed = def.keyid_set();
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
        if !allowed.contains(kid) || good.contains(kid) {
            continue;
        }
        let Some(key) = def.keys.get(kid) else {
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
        // The key id must be the key's (TUF spec 4.2): else one key could count twice.
        if key_id(&public) != kid {
            continue;
        }
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
    if (good.len() as u64) < def.threshold {
        return Err(err(
            file,
            format!(
                "{} valid signature(s) by {} keys, {} requires {} (threshold)",
                good.len(),
                def.name,
                def.by,
                def.threshold
            ),
        ));
    }
    Ok(())
}

/// Checks that `doc` is `_type` metadata, and returns its version.
pub fn check_type(doc: &Value, kind: &str, file: &Path) -> Result<u64, TufError> {
    if doc.pointer("/signed/_type").and_then(Value::as_str) != Some(kind) {
        return Err(err(file, format!("is not {kind} metadata")));
    }
    doc.pointer("/signed/version")
        .and_then(Value::as_u64)
        .filter(|v| *v >= 1)
        .ok_or_else(|| err(file, "has no version of at least 1"))
}

/// Refuses metadata whose `expires` is not after `now`, naming the role's file.
pub fn check_expiry(doc: &Value, file: &Path, now: u64) -> Result<(), TufError> {
    let expires = doc
        .pointer("/signed/expires")
        .and_then(Value::as_str)
        .unwrap_or("");
    match parse_rfc3339_utc(expires) {
        Some(t) if t > now => Ok(()),
        Some(_) => Err(err(file, format!("expired at {expires}"))),
        None => Err(err(file, format!("has no valid expiry ({expires:?})"))),
    }
}

/// The version of `doc`'s `signed` part (0 when absent).
pub fn version_of(doc: &Value) -> u64 {
    doc.pointer("/signed/version")
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

/// Parses metadata bytes, naming the file when they are not JSON.
pub fn parse(file: &Path, bytes: &[u8]) -> Result<Value, TufError> {
    serde_json::from_slice(bytes).map_err(|e| err(file, format!("not JSON: {e}")))
}

/// Reads a metadata file: a regular file (no symlink, FIFO or device) of at most
/// [`MAX_METADATA`] bytes, or `None` when there is none.
pub fn read_metadata(path: &Path) -> Result<Option<Vec<u8>>, TufError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(path, e)),
    };
    if !meta.is_file() {
        return Err(err(path, "is not a regular file"));
    }
    let file = fs::File::open(path).map_err(|e| err(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_METADATA + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(path, e))?;
    if bytes.len() as u64 > MAX_METADATA {
        return Err(err(path, format!("is larger than {MAX_METADATA} bytes")));
    }
    Ok(Some(bytes))
}

/// Reads and parses a metadata file that must exist.
pub fn read_json(path: &Path) -> Result<Value, TufError> {
    let bytes = read_metadata(path)?.ok_or_else(|| err(path, "is missing"))?;
    parse(path, &bytes)
}

/// The bytes a metadata document is stored as (pretty JSON and a newline).
pub fn file_bytes(value: &Value, file: &Path) -> Result<Vec<u8>, TufError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| err(file, e))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Replaces `path` by `bytes` atomically (see [`crate::output::replace_file`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TufError> {
    crate::output::replace_file(path, bytes).map_err(|e| err(path, e))
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

/// Whether `name` is usable as a delegated role's name and so as a file name in metadata/:
/// letters, digits and `._+~-`, not starting with a dot, and not a top-level role's name.
pub fn is_role_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c))
        && Role::parse(name).is_none()
}

/// TUF's path pattern match (spec 5.6.7.1 as python-tuf implements it): the pattern and the
/// target name have the same number of `/`-separated parts and each part matches its
/// shell-style pattern (`*` and `?` within one part).
pub fn path_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), name.split('/').collect());
    p.len() == n.len()
        && p.iter()
            .zip(&n)
            .all(|(p, n)| glob(p.as_bytes(), n.as_bytes()))
}

fn glob(p: &[u8], n: &[u8]) -> bool {
    // Iterative wildcard match with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
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

    #[test]
    fn delegation_paths_match_per_part() {
        assert!(path_matches("dev-board/*", "dev-board/fixture-1.0.oci.tar"));
        assert!(!path_matches("dev-board/*", "other/fixture-1.0.oci.tar"));
        assert!(!path_matches("dev-board/*", "dev-board/sub/x.tar"));
        assert!(!path_matches("dev-board/*", "dev-board-2/x.tar"));
        assert!(path_matches("a?c/*.tar", "abc/x.tar"));
        assert!(!path_matches("a?c/*.tar", "abc/x.tgz"));
    }

    #[test]
    fn role_names_are_file_names_and_never_top_level() {
        assert!(is_role_name("test-board"));
        for bad in ["", "..", ".hidden", "a/b", "root", "timestamp", "x y", "é"] {
            assert!(!is_role_name(bad), "{bad}");
        }
    }
}
