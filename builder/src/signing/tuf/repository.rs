//! Writing an OTA repository's TUF metadata (`DIR/metadata`): the root (created once by the
//! root keys, then only ever rotated by them), releases (targets, or a board's delegated
//! role), per-board delegations, and the timestamp an online key re-signs on a schedule.
//!
//! Every document is checked against the role definition that will judge it before anything
//! is written, so a key that is not the role's, or fewer keys than its threshold, is refused
//! with the role named and the repository left as it was. Files are replaced one by one
//! atomically, timestamp.json last (clients start there). Roots are kept as `N.root.json`
//! beside `root.json`: a client pinned at an older root walks them (spec 5.3.4).

use super::metadata::{
    check_signatures, check_type, err, file_bytes, is_role_name, key_id, key_object, read_json,
    read_metadata, sign_role, version_of, write_atomic, ReleaseInfo, Role, RoleDefinition,
    RoleSigner, TufError, SPEC_VERSION,
};
use crate::timefmt::rfc3339;
use p256::ecdsa::VerifyingKey;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The keys of one role and how many of them must sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleKeys {
    /// The public keys.
    pub keys: Vec<VerifyingKey>,
    /// How many distinct keys must sign (at least 1, at most the number of keys).
    pub threshold: u64,
}

/// What a root rotation changes about one role: new keys (replacing all its keys) and/or a
/// new threshold. A role not mentioned keeps its keys and threshold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleChange {
    /// The role's new keys.
    pub keys: Option<Vec<VerifyingKey>>,
    /// The role's new threshold.
    pub threshold: Option<u64>,
}

/// Days from now until a role expires.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    /// root.json.
    pub root_days: u64,
    /// targets (and delegated roles), snapshot and timestamp.
    pub release_days: u64,
}

/// The online keys a release (or a delegation) is signed with: the targets role's (or, for a
/// delegated board, the board team's), snapshot's and timestamp's. Root keys are never needed.
#[derive(Debug, Default)]
pub struct ReleaseSigners {
    /// Signs targets.json, or the board's delegated role.
    pub targets: Vec<RoleSigner>,
    /// Signs snapshot.json.
    pub snapshot: Vec<RoleSigner>,
    /// Signs timestamp.json.
    pub timestamp: Vec<RoleSigner>,
}

/// A release to add: its TUF target name, the archive file to hash, and kiln's custom data.
#[derive(Debug, Clone, Copy)]
pub struct NewTarget<'a> {
    /// Target name (`BOARD/NAME-VERSION.oci.tar`, a relative path under targets/).
    pub name: &'a str,
    /// The archive as it will be served.
    pub archive: &'a Path,
    /// Board, compatible strings, versions, manifest digest.
    pub info: &'a ReleaseInfo,
}

/// Where a release was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The role that lists it: "targets" or the board's delegated role.
    pub role: String,
    /// That role's new version.
    pub version: u64,
}

fn metadata_dir(dir: &Path) -> PathBuf {
    dir.join("metadata")
}

fn root_path(dir: &Path) -> PathBuf {
    metadata_dir(dir).join("root.json")
}

fn expires(now: u64, days: u64) -> String {
    rfc3339(now.saturating_add(days.saturating_mul(86_400)))
}

fn check_role_keys(role: &str, keys: &RoleKeys, file: &Path) -> Result<(), TufError> {
    if keys.keys.is_empty() {
        return Err(err(file, format!("the {role} role needs at least one key")));
    }
    let distinct: std::collections::BTreeSet<String> = keys.keys.iter().map(key_id).collect();
    if keys.threshold == 0 || keys.threshold > distinct.len() as u64 {
        return Err(err(
            file,
            format!(
                "the {role} role's threshold {} is not between 1 and its {} distinct key(s)",
                keys.threshold,
                distinct.len()
            ),
        ));
    }
    Ok(())
}

fn role_object(keys: &RoleKeys) -> Value {
    let mut ids: Vec<String> = keys.keys.iter().map(key_id).collect();
    ids.sort();
    ids.dedup();
    json!({"keyids": ids, "threshold": keys.threshold})
}

fn root_signed(roles: &BTreeMap<Role, RoleKeys>, version: u64, expires: String) -> Value {
    let mut keys = Map::new();
    let mut defs = Map::new();
    for (role, rk) in roles {
        for k in &rk.keys {
            keys.insert(key_id(k), key_object(k));
        }
        defs.insert(role.name().to_string(), role_object(rk));
    }
    json!({
        "_type": "root",
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": expires,
        "consistent_snapshot": false,
        "keys": keys,
        "roles": defs,
    })
}

/// Whether one key signs every top-level role (fine for a dev board; a fleet separates them).
pub fn single_key(roles: &BTreeMap<Role, RoleKeys>) -> bool {
    let ids: std::collections::BTreeSet<String> = roles
        .values()
        .flat_map(|r| r.keys.iter().map(key_id))
        .collect();
    ids.len() == 1
}

/// Creates the repository's first root (version 1) naming each role's keys and threshold,
/// signed by `root_signers` (at least the root threshold of the root keys). Refuses a
/// repository that already has a root: a root changes only by [`rotate_root`].
pub fn init(
    dir: &Path,
    roles: &BTreeMap<Role, RoleKeys>,
    root_signers: &[&RoleSigner],
    now: u64,
    root_days: u64,
) -> Result<Value, TufError> {
    let path = root_path(dir);
    if read_metadata(&path)?.is_some() {
        return Err(err(
            &path,
            "exists: a root changes only by `kiln trust rotate-root`",
        ));
    }
    for role in Role::ALL {
        let keys = roles
            .get(&role)
            .ok_or_else(|| err(&path, format!("no keys given for the {role} role")))?;
        check_role_keys(role.name(), keys, &path)?;
    }
    let signed = root_signed(roles, 1, expires(now, root_days));
    let root = sign_role(signed, root_signers, &path)?;
    let def = RoleDefinition::from_root(&root, Role::Root, "root version 1")
        .map_err(|e| err(&path, e))?;
    check_signatures(&def, &root, &path)?;
    let meta = metadata_dir(dir);
    fs::create_dir_all(&meta).map_err(|e| err(&meta, e))?;
    let bytes = file_bytes(&root, &path)?;
    write_atomic(&meta.join("1.root.json"), &bytes)?;
    write_atomic(&path, &bytes)?;
    Ok(root)
}

/// The current root (`metadata/root.json`).
pub fn current_root(dir: &Path) -> Result<Value, TufError> {
    let path = root_path(dir);
    let root = read_json(&path)?;
    check_type(&root, "root", &path)?;
    Ok(root)
}

/// The keys and threshold `root` assigns to `role`.
pub fn role_keys(root: &Value, role: Role, file: &Path) -> Result<RoleKeys, TufError> {
    let def = RoleDefinition::from_root(root, role, "the root").map_err(|e| err(file, e))?;
    let mut keys = Vec::new();
    for kid in def.keyid_set() {
        let key = def
            .keys
            .get(kid)
            .and_then(|k| k.pointer("/keyval/public"))
            .and_then(Value::as_str)
            .and_then(|pem| {
                <VerifyingKey as p256::pkcs8::DecodePublicKey>::from_public_key_pem(pem).ok()
            })
            .ok_or_else(|| err(file, format!("{role} key {kid} is not a P-256 key")))?;
        keys.push(key);
    }
    Ok(RoleKeys {
        keys,
        threshold: def.threshold,
    })
}

/// Writes root version N+1 with `changes` applied, signed by a threshold of the current root
/// keys and a threshold of the new ones (spec 5.3.4: a client trusts N+1 only then). Revoking
/// a leaked targets, snapshot or timestamp key is such a rotation that drops it. Returns the
/// new root.
pub fn rotate_root(
    dir: &Path,
    changes: &BTreeMap<Role, RoleChange>,
    signers: &[&RoleSigner],
    now: u64,
    root_days: u64,
) -> Result<Value, TufError> {
    let path = root_path(dir);
    let old = current_root(dir)?;
    let version = version_of(&old);
    let mut roles = BTreeMap::new();
    for role in Role::ALL {
        let mut keys = role_keys(&old, role, &path)?;
        if let Some(change) = changes.get(&role) {
            if let Some(k) = &change.keys {
                keys.keys = k.clone();
            }
            if let Some(t) = change.threshold {
                keys.threshold = t;
            }
        }
        check_role_keys(role.name(), &keys, &path)?;
        roles.insert(role, keys);
    }
    let next = version + 1;
    let new_path = metadata_dir(dir).join(format!("{next}.root.json"));
    let signed = root_signed(&roles, next, expires(now, root_days));
    let root = sign_role(signed, signers, &new_path)?;
    let old_by = format!("root version {version}");
    let old_def =
        RoleDefinition::from_root(&old, Role::Root, &old_by).map_err(|e| err(&path, e))?;
    check_signatures(&old_def, &root, &new_path)?;
    let new_by = format!("root version {next}");
    let new_def =
        RoleDefinition::from_root(&root, Role::Root, &new_by).map_err(|e| err(&new_path, e))?;
    check_signatures(&new_def, &root, &new_path)?;
    // A repository made before roots were kept by version: keep the old one for walkers.
    let old_versioned = metadata_dir(dir).join(format!("{version}.root.json"));
    if read_metadata(&old_versioned)?.is_none() {
        write_atomic(&old_versioned, &file_bytes(&old, &old_versioned)?)?;
    }
    let bytes = file_bytes(&root, &new_path)?;
    write_atomic(&new_path, &bytes)?;
    write_atomic(&path, &bytes)?;
    Ok(root)
}

/// The delegation a board has in targets.json, if any: the role name and its definition.
fn delegation_of<'a>(targets: &'a Value, board: &str) -> Option<&'a Value> {
    targets
        .pointer("/signed/delegations/roles")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("name").and_then(Value::as_str) == Some(board))
}

/// Writes the targets-like `files` (already signed) with a new snapshot naming their versions
/// and a new timestamp naming that snapshot, signed by `signers`.
pub(crate) fn publish(
    dir: &Path,
    files: Vec<(String, Value)>,
    signers: &ReleaseSigners,
    now: u64,
    days: u64,
) -> Result<(), TufError> {
    let root = current_root(dir)?;
    Publication {
        meta: metadata_dir(dir),
        files,
    }
    .publish(&root, signers, now, days)
}

/// The documents one change re-signs: the targets-like files that changed, then snapshot and
/// timestamp. Everything is signed and checked first, then written, timestamp last.
struct Publication {
    meta: PathBuf,
    files: Vec<(String, Value)>,
}

impl Publication {
    fn publish(
        self,
        root: &Value,
        signers: &ReleaseSigners,
        now: u64,
        days: u64,
    ) -> Result<(), TufError> {
        let meta = &self.meta;
        let snap_path = meta.join("snapshot.json");
        let old_snapshot = match read_metadata(&snap_path)? {
            Some(b) => Some(super::metadata::parse(&snap_path, &b)?),
            None => None,
        };
        let mut snap_meta = old_snapshot
            .as_ref()
            .and_then(|s| s.pointer("/signed/meta"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (name, doc) in &self.files {
            snap_meta.insert(name.clone(), json!({"version": version_of(doc)}));
        }
        let expires = expires(now, days);
        let snapshot = sign_with(
            root,
            Role::Snapshot,
            json!({
                "_type": "snapshot",
                "spec_version": SPEC_VERSION,
                "version": old_snapshot.as_ref().map(version_of).unwrap_or(0) + 1,
                "expires": expires,
                "meta": snap_meta,
            }),
            &signers.snapshot,
            &snap_path,
        )?;
        let snapshot_bytes = file_bytes(&snapshot, &snap_path)?;
        let ts_path = meta.join("timestamp.json");
        let timestamp = timestamp_for(root, &snapshot_bytes, &ts_path, signers, &expires)?;
        for (name, doc) in &self.files {
            let p = meta.join(name);
            write_atomic(&p, &file_bytes(doc, &p)?)?;
        }
        write_atomic(&snap_path, &snapshot_bytes)?;
        write_atomic(&ts_path, &file_bytes(&timestamp, &ts_path)?)?;
        Ok(())
    }
}

/// Signs a top-level role's document and checks it against the root's definition.
fn sign_with(
    root: &Value,
    role: Role,
    signed: Value,
    signers: &[RoleSigner],
    file: &Path,
) -> Result<Value, TufError> {
    let refs: Vec<&RoleSigner> = signers.iter().collect();
    let doc = sign_role(signed, &refs, file)?;
    let by = format!("root version {}", version_of(root));
    let def = RoleDefinition::from_root(root, role, &by).map_err(|e| err(file, e))?;
    check_signatures(&def, &doc, file)?;
    Ok(doc)
}

fn timestamp_for(
    root: &Value,
    snapshot_bytes: &[u8],
    ts_path: &Path,
    signers: &ReleaseSigners,
    expires: &str,
) -> Result<Value, TufError> {
    let old = match read_metadata(ts_path)? {
        Some(b) => Some(super::metadata::parse(ts_path, &b)?),
        None => None,
    };
    let snapshot: Value = serde_json::from_slice(snapshot_bytes).map_err(|e| err(ts_path, e))?;
    sign_with(
        root,
        Role::Timestamp,
        json!({
            "_type": "timestamp",
            "spec_version": SPEC_VERSION,
            "version": old.as_ref().map(version_of).unwrap_or(0) + 1,
            "expires": expires,
            "meta": {"snapshot.json": {
                "version": version_of(&snapshot),
                "length": snapshot_bytes.len(),
                "hashes": {"sha256": crate::digest::sha256_hex(snapshot_bytes)},
            }},
        }),
        &signers.timestamp,
        ts_path,
    )
}

fn read_optional(path: &Path) -> Result<Option<Value>, TufError> {
    match read_metadata(path)? {
        Some(b) => Ok(Some(super::metadata::parse(path, &b)?)),
        None => Ok(None),
    }
}

fn targets_signed(version: u64, expires: String, targets: Map<String, Value>) -> Value {
    json!({
        "_type": "targets",
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": expires,
        "targets": targets,
    })
}

/// Delegates `BOARD/*` to the board team's keys (a terminating delegation: no other role is
/// asked about that board's releases), or replaces the keys of an existing delegation. Signed
/// by the targets keys; snapshot and timestamp follow.
pub fn delegate(
    dir: &Path,
    board: &str,
    keys: &RoleKeys,
    signers: &ReleaseSigners,
    now: u64,
    days: u64,
) -> Result<u64, TufError> {
    let meta = metadata_dir(dir);
    let root = current_root(dir)?;
    let targets_path = meta.join("targets.json");
    if !is_role_name(board) {
        return Err(err(
            &targets_path,
            format!("board {board:?} is not usable as a delegated role's name"),
        ));
    }
    check_role_keys(board, keys, &targets_path)?;
    let old = read_optional(&targets_path)?;
    let mut signed = match &old {
        Some(o) => o.get("signed").cloned().unwrap_or_default(),
        None => targets_signed(0, String::new(), Map::new()),
    };
    let mut del_keys = signed
        .pointer("/delegations/keys")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut roles: Vec<Value> = signed
        .pointer("/delegations/roles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    roles.retain(|r| r.get("name").and_then(Value::as_str) != Some(board));
    for k in &keys.keys {
        del_keys.insert(key_id(k), key_object(k));
    }
    let mut role = role_object(keys);
    role["name"] = json!(board);
    role["paths"] = json!([format!("{board}/*")]);
    role["terminating"] = json!(true);
    roles.push(role);
    roles.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    // Keys no delegation names any more are dropped.
    let used: std::collections::BTreeSet<String> = roles
        .iter()
        .flat_map(|r| r["keyids"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    del_keys.retain(|k, _| used.contains(k));
    let version = version_of(&json!({"signed": signed})) + 1;
    signed["version"] = json!(version);
    signed["expires"] = json!(expires(now, days));
    signed["delegations"] = json!({"keys": del_keys, "roles": roles});
    let doc = sign_with(
        &root,
        Role::Targets,
        signed,
        &signers.targets,
        &targets_path,
    )?;
    publish(dir, vec![("targets.json".into(), doc)], signers, now, days)?;
    Ok(version)
}

/// Adds the archive `name` (at `archive`, already in `dir/targets/`) to the repository: to the
/// board's delegated role when targets.json delegates the board, else to targets.json itself,
/// signed by `signers.targets` (which must meet that role's threshold); snapshot and timestamp
/// follow. A release whose version is not newer than every earlier one of the board is
/// refused, as is a second board in a targets.json without delegations.
pub fn add_release(
    dir: &Path,
    target: &NewTarget,
    signers: &ReleaseSigners,
    now: u64,
    expiry: Expiry,
) -> Result<Recorded, TufError> {
    let (name, archive, info) = (target.name, target.archive, target.info);
    let meta = metadata_dir(dir);
    let root = current_root(dir)?;
    let targets_path = meta.join("targets.json");
    let top = read_optional(&targets_path)?;
    let delegation = top.as_ref().and_then(|t| delegation_of(t, &info.board));
    let (role_name, role_path) = match delegation {
        Some(_) => (
            info.board.clone(),
            meta.join(format!("{}.json", info.board)),
        ),
        None => ("targets".to_string(), targets_path.clone()),
    };
    let old = if delegation.is_some() {
        read_optional(&role_path)?
    } else {
        top.clone()
    };
    let mut entries = old
        .as_ref()
        .and_then(|o| o.pointer("/signed/targets"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let new_version = crate::debian::version::Version::parse(&info.version)
        .map_err(|e| err(&role_path, format!("image version {:?}: {e}", info.version)))?;
    // Every earlier release of this board, wherever it is listed.
    let top_entries = top
        .as_ref()
        .and_then(|t| t.pointer("/signed/targets"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let has_delegations = top
        .as_ref()
        .and_then(|t| t.pointer("/signed/delegations/roles"))
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty());
    for (file, list) in [(&targets_path, &top_entries), (&role_path, &entries)] {
        for (other, entry) in list {
            let board = entry
                .pointer("/custom/board")
                .and_then(Value::as_str)
                .unwrap_or("");
            if board != info.board {
                if delegation.is_none() && !has_delegations {
                    return Err(err(
                        file,
                        format!("holds releases of board {board:?} ({other}); one repository per board unless boards are delegated (`kiln trust delegate`), this image is for {:?}", info.board),
                    ));
                }
                continue;
            }
            let v = entry
                .pointer("/custom/version")
                .and_then(Value::as_str)
                .unwrap_or("");
            if let Ok(existing) = crate::debian::version::Version::parse(v) {
                if existing >= new_version {
                    return Err(err(
                        file,
                        format!(
                            "already releases version {v} ({other}); version {} is not newer",
                            info.version
                        ),
                    ));
                }
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
    let version = old.as_ref().map(version_of).unwrap_or(0) + 1;
    let mut signed = old
        .as_ref()
        .and_then(|o| o.get("signed").cloned())
        .unwrap_or_else(|| targets_signed(0, String::new(), Map::new()));
    signed["_type"] = json!("targets");
    signed["spec_version"] = json!(SPEC_VERSION);
    signed["version"] = json!(version);
    signed["expires"] = json!(expires(now, expiry.release_days));
    signed["targets"] = Value::Object(entries);
    let doc = match delegation {
        None => sign_with(&root, Role::Targets, signed, &signers.targets, &role_path)?,
        Some(def) => {
            let refs: Vec<&RoleSigner> = signers.targets.iter().collect();
            let doc = sign_role(signed, &refs, &role_path)?;
            let keys = top
                .as_ref()
                .and_then(|t| t.pointer("/signed/delegations/keys"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let d = RoleDefinition::from_object(&role_name, "targets.json", &keys, def)
                .map_err(|e| err(&targets_path, e))?;
            check_signatures(&d, &doc, &role_path)?;
            doc
        }
    };
    let file_name = role_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    publish(
        dir,
        vec![(file_name, doc)],
        signers,
        now,
        expiry.release_days,
    )?;
    Ok(Recorded {
        role: role_name,
        version,
    })
}

/// Re-signs only timestamp.json (version + 1, the same snapshot, a new expiry) with the
/// online timestamp key: run from cron, it lets clients tell a frozen mirror from a quiet
/// one. Returns the new timestamp version.
pub fn refresh_timestamp(
    dir: &Path,
    signers: &[RoleSigner],
    now: u64,
    days: u64,
) -> Result<u64, TufError> {
    let root = current_root(dir)?;
    let ts_path = metadata_dir(dir).join("timestamp.json");
    let old = read_json(&ts_path)?;
    check_type(&old, "timestamp", &ts_path)?;
    let mut signed = old.get("signed").cloned().unwrap_or_default();
    let version = version_of(&old) + 1;
    signed["version"] = json!(version);
    signed["expires"] = json!(expires(now, days));
    let doc = sign_with(&root, Role::Timestamp, signed, signers, &ts_path)?;
    write_atomic(&ts_path, &file_bytes(&doc, &ts_path)?)?;
    Ok(version)
}
