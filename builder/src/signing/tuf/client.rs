//! Verifying an OTA repository as TUF's client workflow says (spec 5.3 to 5.6): from the
//! pinned root (or the newer one a client walked to before), walk `N+1.root.json` while the
//! repository has it, each signed by a threshold of the old and of the new root keys and
//! exactly one version up; only the final root's expiry counts. Then timestamp, snapshot and
//! targets, each signed by its role's threshold, unexpired, and pinned by its parent's version
//! (and for snapshot, length and hash). With the state the client trusted before, versions
//! never go down (rollback). Delegated roles are read only for the target names their paths
//! cover, in order, stopping at a terminating delegation (spec 5.6.7).
//!
//! Every refusal names the file, and so the role, and what is wrong.

use super::metadata::{
    check_expiry, check_signatures, check_type, err, is_role_name, parse, path_matches,
    read_metadata, version_of, write_atomic, Role, RoleDefinition, TufError,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The most root rotations walked in one update (python-tuf's default is 256 too): a hostile
/// repository with endless `N.root.json` files cannot keep the client busy.
pub const MAX_ROOT_ROTATIONS: u64 = 256;

/// Where metadata comes from: a repository's `metadata/` directory, or memory.
pub trait MetadataSource {
    /// The bytes of metadata file `name`, or `None` when the repository has none.
    fn fetch(&self, name: &str) -> Result<Option<Vec<u8>>, TufError>;
    /// The path messages name for `name`.
    fn path(&self, name: &str) -> PathBuf;
}

/// A repository's `metadata/` directory on disk.
#[derive(Debug, Clone)]
pub struct DirSource(pub PathBuf);

impl MetadataSource for DirSource {
    fn fetch(&self, name: &str) -> Result<Option<Vec<u8>>, TufError> {
        read_metadata(&self.0.join(name))
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

/// Metadata held in memory by file name (what the fuzz target drives).
#[derive(Debug, Clone, Default)]
pub struct MemorySource(pub BTreeMap<String, Vec<u8>>);

impl MetadataSource for MemorySource {
    fn fetch(&self, name: &str) -> Result<Option<Vec<u8>>, TufError> {
        Ok(self.0.get(name).cloned())
    }
    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(name)
    }
}

/// What a client trusted at its last update: the root it walked to, and the timestamp and
/// snapshot whose versions a later update must not go below.
#[derive(Debug, Clone, Default)]
pub struct TrustedState {
    /// root.json.
    pub root: Option<Vec<u8>>,
    /// timestamp.json.
    pub timestamp: Option<Vec<u8>>,
    /// snapshot.json.
    pub snapshot: Option<Vec<u8>>,
}

const STATE_FILES: [&str; 3] = ["root.json", "timestamp.json", "snapshot.json"];

impl TrustedState {
    /// Reads the state kept in `dir` (nothing yet when it does not exist).
    pub fn load(dir: &Path) -> Result<TrustedState, TufError> {
        let [root, timestamp, snapshot] = STATE_FILES.map(|name| read_metadata(&dir.join(name)));
        Ok(TrustedState {
            root: root?,
            timestamp: timestamp?,
            snapshot: snapshot?,
        })
    }

    /// Keeps this state in `dir`, each file replaced atomically.
    pub fn save(&self, dir: &Path) -> Result<(), TufError> {
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        for (name, bytes) in STATE_FILES
            .iter()
            .zip([&self.root, &self.timestamp, &self.snapshot])
        {
            if let Some(b) = bytes {
                write_atomic(&dir.join(name), b)?;
            }
        }
        Ok(())
    }
}

/// A target the metadata vouches for, and the role that lists it.
#[derive(Debug, Clone)]
pub struct Found {
    /// The target name (`BOARD/NAME-VERSION.oci.tar`).
    pub name: String,
    /// Its targets entry (length, hashes, custom).
    pub entry: Value,
    /// "targets" or the delegated role's name.
    pub role: String,
}

/// The verified top-level metadata of a repository.
#[derive(Debug, Clone)]
pub struct Trusted {
    /// The final root.
    pub root: Value,
    /// timestamp.json.
    pub timestamp: Value,
    /// snapshot.json.
    pub snapshot: Value,
    /// targets.json.
    pub targets: Value,
    state: TrustedState,
    /// Delegated roles already read and checked, by where they came from, the delegation
    /// that vouches for them and the time: `releases` then `find` read each role once.
    roles: std::cell::RefCell<BTreeMap<(PathBuf, String, u64), Value>>,
}

fn fetch_required(source: &dyn MetadataSource, name: &str) -> Result<(PathBuf, Vec<u8>), TufError> {
    let path = source.path(name);
    let bytes = source
        .fetch(name)?
        .ok_or_else(|| err(&path, "is missing"))?;
    Ok((path, bytes))
}

fn top_role_check(root: &Value, role: Role, doc: &Value, file: &Path) -> Result<u64, TufError> {
    let by = format!("root version {}", version_of(root));
    let def = RoleDefinition::from_root(root, role, &by).map_err(|e| err(file, e))?;
    check_signatures(&def, doc, file)?;
    check_type(doc, role.name(), file)
}

/// A previously trusted document, kept only if the current root's keys still sign it (spec
/// 5.3.11: after a rotation of the timestamp or snapshot keys the old one is discarded, so a
/// revoked key's high version cannot block the new keys).
fn still_trusted(root: &Value, role: Role, bytes: Option<&Vec<u8>>) -> Option<Value> {
    let doc: Value = serde_json::from_slice(bytes?).ok()?;
    let def = RoleDefinition::from_root(root, role, "").ok()?;
    check_signatures(&def, &doc, Path::new(role.name())).ok()?;
    Some(doc)
}

/// Walks and checks a repository's top-level metadata from `anchor` (the pinned root.json,
/// its path for messages) and the state trusted before, at time `now`.
pub fn update(
    source: &dyn MetadataSource,
    anchor: (&Path, &[u8]),
    previous: &TrustedState,
    now: u64,
) -> Result<Trusted, TufError> {
    let (anchor_path, anchor_bytes) = anchor;
    let mut root = parse(anchor_path, anchor_bytes)?;
    let mut root_bytes = anchor_bytes.to_vec();
    let mut root_path = anchor_path.to_path_buf();
    top_role_check(&root, Role::Root, &root, anchor_path)?;
    // A root walked to before is trusted as much as the pinned one (spec 5.2).
    if let Some(prev) = &previous.root {
        let state_path = Path::new("trusted state root.json");
        let prev_root = parse(state_path, prev)?;
        if version_of(&prev_root) > version_of(&root) {
            top_role_check(&prev_root, Role::Root, &prev_root, state_path)?;
            root = prev_root;
            root_bytes = prev.clone();
            root_path = state_path.to_path_buf();
        }
    }
    for _ in 0..MAX_ROOT_ROTATIONS {
        let version = version_of(&root);
        let next = version + 1;
        let name = format!("{next}.root.json");
        let Some(bytes) = source.fetch(&name)? else {
            break;
        };
        let path = source.path(&name);
        let new = parse(&path, &bytes)?;
        // Signed by a threshold of the trusted root's keys, then of its own (spec 5.3.5).
        top_role_check(&root, Role::Root, &new, &path)?;
        let new_version = top_role_check(&new, Role::Root, &new, &path)?;
        if new_version != next {
            return Err(err(
                &path,
                format!("is root version {new_version}, not {next}: a rolled-back or skipped root is refused"),
            ));
        }
        root = new;
        root_bytes = bytes;
        root_path = path;
    }
    // Only the final root's expiry counts (spec 5.3.10): old ones may long have expired.
    check_expiry(&root, &root_path, now).map_err(|e| TufError {
        reason: format!("root version {}: {}", version_of(&root), e.reason),
        ..e
    })?;

    let (ts_path, ts_bytes) = fetch_required(source, "timestamp.json")?;
    let timestamp = parse(&ts_path, &ts_bytes)?;
    let ts_version = top_role_check(&root, Role::Timestamp, &timestamp, &ts_path)?;
    let snap_meta = timestamp
        .pointer("/signed/meta/snapshot.json")
        .cloned()
        .ok_or_else(|| err(&ts_path, "names no snapshot.json"))?;
    let want_snap = snap_meta
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| err(&ts_path, "names no snapshot.json version"))?;
    if let Some(prev) = still_trusted(&root, Role::Timestamp, previous.timestamp.as_ref()) {
        let (pv, ps) = (
            version_of(&prev),
            prev.pointer("/signed/meta/snapshot.json/version")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        );
        if ts_version < pv {
            return Err(err(
                &ts_path,
                format!("is version {ts_version}, older than the trusted version {pv}: rollback refused"),
            ));
        }
        if want_snap < ps {
            return Err(err(
                &ts_path,
                format!("names snapshot.json version {want_snap}, older than the trusted version {ps}: rollback refused"),
            ));
        }
    }
    check_expiry(&timestamp, &ts_path, now)?;

    let (snap_path, snap_bytes) = fetch_required(source, "snapshot.json")?;
    if let Some(len) = snap_meta.get("length").and_then(Value::as_u64) {
        if snap_bytes.len() as u64 != len {
            return Err(err(
                &snap_path,
                format!("is {} bytes, timestamp.json says {len}", snap_bytes.len()),
            ));
        }
    }
    if let Some(h) = snap_meta.pointer("/hashes/sha256").and_then(Value::as_str) {
        if crate::digest::sha256_hex(&snap_bytes) != h {
            return Err(err(&snap_path, "does not hash to what timestamp.json says"));
        }
    }
    let snapshot = parse(&snap_path, &snap_bytes)?;
    let snap_version = top_role_check(&root, Role::Snapshot, &snapshot, &snap_path)?;
    if snap_version != want_snap {
        return Err(err(
            &snap_path,
            format!("is version {snap_version}, timestamp.json names {want_snap}"),
        ));
    }
    if let Some(prev) = still_trusted(&root, Role::Snapshot, previous.snapshot.as_ref()) {
        let prev_meta = prev
            .pointer("/signed/meta")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (name, m) in prev_meta {
            let old = m.get("version").and_then(Value::as_u64).unwrap_or(0);
            let new = listed_version(&snapshot, &name);
            match new {
                None => {
                    return Err(err(
                        &snap_path,
                        format!("no longer lists {name}, which the trusted snapshot did: rollback refused"),
                    ))
                }
                Some(n) if n < old => {
                    return Err(err(
                        &snap_path,
                        format!("names {name} version {n}, older than the trusted version {old}: rollback refused"),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    check_expiry(&snapshot, &snap_path, now)?;

    let (targets_path, targets_bytes) = fetch_required(source, "targets.json")?;
    let targets = parse(&targets_path, &targets_bytes)?;
    let targets_version = top_role_check(&root, Role::Targets, &targets, &targets_path)?;
    let want_targets = listed_version(&snapshot, "targets.json")
        .ok_or_else(|| err(&snap_path, "does not list targets.json"))?;
    if targets_version != want_targets {
        return Err(err(
            &targets_path,
            format!("is version {targets_version}, snapshot.json names {want_targets} (mix-and-match refused)"),
        ));
    }
    check_expiry(&targets, &targets_path, now)?;
    Ok(Trusted {
        roles: Default::default(),
        root,
        timestamp,
        snapshot,
        targets,
        state: TrustedState {
            root: Some(root_bytes),
            timestamp: Some(ts_bytes),
            snapshot: Some(snap_bytes),
        },
    })
}

fn listed_version(snapshot: &Value, file: &str) -> Option<u64> {
    snapshot
        .pointer("/signed/meta")
        .and_then(Value::as_object)?
        .get(file)?
        .get("version")
        .and_then(Value::as_u64)
}

fn entries(doc: &Value) -> impl Iterator<Item = (&String, &Value)> {
    doc.pointer("/signed/targets")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

/// One delegation of targets.json.
struct Delegation<'a> {
    name: &'a str,
    def: &'a Value,
    paths: Vec<&'a str>,
    terminating: bool,
}

impl Trusted {
    /// What to keep so that the next update refuses rollbacks.
    pub fn state(&self) -> &TrustedState {
        &self.state
    }

    /// targets.json's version.
    pub fn targets_version(&self) -> u64 {
        version_of(&self.targets)
    }

    /// The final root's version.
    pub fn root_version(&self) -> u64 {
        version_of(&self.root)
    }

    fn delegations(&self) -> Vec<Delegation<'_>> {
        self.targets
            .pointer("/signed/delegations/roles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|def| Delegation {
                name: def.get("name").and_then(Value::as_str).unwrap_or(""),
                def,
                paths: def
                    .get("paths")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect(),
                terminating: def
                    .get("terminating")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
            .collect()
    }

    /// Reads and checks a delegated role: signed by a threshold of the keys targets.json
    /// delegates to it, of the version snapshot.json names, unexpired.
    fn load_role(
        &self,
        source: &dyn MetadataSource,
        d: &Delegation,
        now: u64,
    ) -> Result<Value, TufError> {
        let targets_file = source.path("targets.json");
        if !is_role_name(d.name) {
            return Err(err(
                &targets_file,
                format!("delegates to {:?}, which is not a usable role name", d.name),
            ));
        }
        let file = format!("{}.json", d.name);
        let path = source.path(&file);
        let memo = (path.clone(), d.def.to_string(), now);
        if let Some(doc) = self.roles.borrow().get(&memo) {
            return Ok(doc.clone());
        }
        let want = listed_version(&self.snapshot, &file).ok_or_else(|| {
            err(
                &path,
                format!(
                    "snapshot.json does not list it: role {} has released nothing",
                    d.name
                ),
            )
        })?;
        let bytes = source
            .fetch(&file)?
            .ok_or_else(|| err(&path, format!("is missing (role {})", d.name)))?;
        let doc = parse(&path, &bytes)?;
        let empty = serde_json::Map::new();
        let keys = self
            .targets
            .pointer("/signed/delegations/keys")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let def = RoleDefinition::from_object(d.name, "targets.json", keys, d.def)
            .map_err(|e| err(&targets_file, e))?;
        check_signatures(&def, &doc, &path)?;
        let version = check_type(&doc, "targets", &path)?;
        if version != want {
            return Err(err(
                &path,
                format!("is version {version}, snapshot.json names {want} (mix-and-match refused)"),
            ));
        }
        check_expiry(&doc, &path, now)?;
        self.roles.borrow_mut().insert(memo, doc.clone());
        Ok(doc)
    }

    /// The target `name` as TUF's preorder search finds it: in targets.json, else in the
    /// delegated roles whose paths cover it, in order, up to a terminating one.
    pub fn find(
        &self,
        source: &dyn MetadataSource,
        name: &str,
        now: u64,
    ) -> Result<Option<Found>, TufError> {
        if let Some(entry) = self
            .targets
            .pointer("/signed/targets")
            .and_then(Value::as_object)
            .and_then(|t| t.get(name))
        {
            return Ok(Some(Found {
                name: name.to_string(),
                entry: entry.clone(),
                role: "targets".into(),
            }));
        }
        for d in self.delegations() {
            if !d.paths.iter().any(|p| path_matches(p, name)) {
                continue;
            }
            let doc = self.load_role(source, &d, now)?;
            if let Some(entry) = doc
                .pointer("/signed/targets")
                .and_then(Value::as_object)
                .and_then(|t| t.get(name))
            {
                return Ok(Some(Found {
                    name: name.to_string(),
                    entry: entry.clone(),
                    role: d.name.to_string(),
                }));
            }
            if d.terminating {
                break;
            }
        }
        Ok(None)
    }

    /// Every release the metadata vouches for (of `board` only, when given): targets.json's,
    /// then each delegated role's within its delegated paths. A role's entries outside its
    /// paths are not trusted (a board team cannot release for another board).
    pub fn releases(
        &self,
        source: &dyn MetadataSource,
        board: Option<&str>,
        now: u64,
    ) -> Result<Vec<Found>, TufError> {
        let of_board = |name: &str| board.is_none_or(|b| name.split('/').next() == Some(b));
        let mut found: Vec<Found> = entries(&self.targets)
            .filter(|(n, _)| of_board(n))
            .map(|(n, e)| Found {
                name: n.clone(),
                entry: e.clone(),
                role: "targets".into(),
            })
            .collect();
        for d in self.delegations() {
            let covers_board = match board {
                Some(b) => d.paths.iter().any(|p| path_matches(p, &format!("{b}/x"))),
                None => true,
            };
            if !covers_board
                || listed_version(&self.snapshot, &format!("{}.json", d.name)).is_none()
            {
                continue;
            }
            let doc = self.load_role(source, &d, now)?;
            found.extend(
                entries(&doc)
                    .filter(|(n, _)| of_board(n) && d.paths.iter().any(|p| path_matches(p, n)))
                    .map(|(n, e)| Found {
                        name: n.clone(),
                        entry: e.clone(),
                        role: d.name.to_string(),
                    }),
            );
        }
        Ok(found)
    }
}

/// Verifies the repository in `metadata` from the pinned `trusted_root` at time `now`, with
/// no earlier state: the root chain, timestamp, snapshot and targets.
pub fn verify_repository(
    metadata: &Path,
    trusted_root: &Path,
    now: u64,
) -> Result<Trusted, TufError> {
    let anchor = read_metadata(trusted_root)?.ok_or_else(|| err(trusted_root, "is missing"))?;
    update(
        &DirSource(metadata.to_path_buf()),
        (trusted_root, &anchor),
        &TrustedState::default(),
        now,
    )
}
