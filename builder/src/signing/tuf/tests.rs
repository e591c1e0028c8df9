//! The repository writer against the client, and the attack matrix: every attack TUF is
//! built to stop, each refused with the role (its file) named.

use super::client::{update, DirSource, MemorySource, MetadataSource, Trusted, TrustedState};
use super::metadata::{sign_role, version_of, ReleaseInfo, Role, RoleSigner, TufError};
use super::repository::{
    add_release, delegate, init, publish, refresh_timestamp, rotate_root, Expiry, NewTarget,
    ReleaseSigners, RoleChange, RoleKeys,
};
use crate::signing::sign::KeySigner;
use p256::ecdsa::SigningKey;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const NOW: u64 = 1_800_000_000;
const EXPIRY: Expiry = Expiry {
    root_days: 365,
    release_days: 30,
};

fn key() -> SigningKey {
    SigningKey::random(&mut rand_core::OsRng)
}

fn signer(k: &SigningKey) -> RoleSigner {
    RoleSigner {
        public: *k.verifying_key(),
        signer: Box::new(KeySigner(k.clone())),
    }
}

/// A fleet's keys: two root keys (threshold 2), one each for targets, snapshot, timestamp.
struct Fleet {
    root: [SigningKey; 2],
    targets: SigningKey,
    snapshot: SigningKey,
    timestamp: SigningKey,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Fleet {
        let f = Fleet {
            root: [key(), key()],
            targets: key(),
            snapshot: key(),
            timestamp: key(),
            dir: tempfile::tempdir().unwrap(),
        };
        let roles: BTreeMap<Role, RoleKeys> = [
            (
                Role::Root,
                f.root.iter().map(|k| *k.verifying_key()).collect(),
                2,
            ),
            (Role::Targets, vec![*f.targets.verifying_key()], 1),
            (Role::Snapshot, vec![*f.snapshot.verifying_key()], 1),
            (Role::Timestamp, vec![*f.timestamp.verifying_key()], 1),
        ]
        .into_iter()
        .map(|(r, keys, threshold)| (r, RoleKeys { keys, threshold }))
        .collect();
        let signers: Vec<RoleSigner> = f.root.iter().map(signer).collect();
        let refs: Vec<&RoleSigner> = signers.iter().collect();
        init(f.repo(), &roles, &refs, NOW, 365).unwrap();
        f
    }

    fn repo(&self) -> &Path {
        self.dir.path()
    }

    fn meta(&self, name: &str) -> PathBuf {
        self.repo().join("metadata").join(name)
    }

    fn pinned(&self) -> Vec<u8> {
        std::fs::read(self.meta("1.root.json")).unwrap()
    }

    /// The online signers without a targets key (for documents signed separately).
    fn snapshot_and_timestamp(&self) -> ReleaseSigners {
        ReleaseSigners {
            targets: vec![],
            snapshot: vec![signer(&self.snapshot)],
            timestamp: vec![signer(&self.timestamp)],
        }
    }

    fn online(&self, targets: &SigningKey) -> ReleaseSigners {
        ReleaseSigners {
            targets: vec![signer(targets)],
            snapshot: vec![signer(&self.snapshot)],
            timestamp: vec![signer(&self.timestamp)],
        }
    }

    /// Releases BOARD version VERSION signed by `targets` (the targets or a board key).
    fn release(&self, board: &str, version: &str, targets: &SigningKey) -> Result<(), String> {
        let name = format!("{board}/img-{version}.oci.tar");
        let archive = self.repo().join("targets").join(&name);
        std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
        std::fs::write(&archive, format!("image {board} {version}")).unwrap();
        let info = ReleaseInfo {
            board: board.into(),
            compatible: vec![],
            version: version.into(),
            min_version: None,
            manifest_digest: "sha256:00".into(),
        };
        let target = NewTarget {
            name: &name,
            archive: &archive,
            info: &info,
        };
        add_release(self.repo(), &target, &self.online(targets), NOW, EXPIRY)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn client(&self, pinned: &[u8], state: &TrustedState) -> Result<Trusted, String> {
        update(
            &DirSource(self.repo().join("metadata")),
            (Path::new("pinned root.json"), pinned),
            state,
            NOW,
        )
        .map_err(|e| e.to_string())
    }

    /// Copies of every metadata file, to replay later.
    fn snapshot_files(&self) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(self.repo().join("metadata"))
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    fn restore(&self, files: &BTreeMap<String, Vec<u8>>, names: &[&str]) {
        for n in names {
            std::fs::write(self.meta(n), &files[*n]).unwrap();
        }
    }
}

fn assert_refused(result: Result<impl std::fmt::Debug, String>, needles: &[&str]) {
    let e = result.expect_err("must be refused");
    for n in needles {
        assert!(e.contains(n), "{e:?} does not say {n:?}");
    }
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn found_names(t: &Trusted, repo: &Path, board: Option<&str>) -> Vec<String> {
    let src = DirSource(repo.join("metadata"));
    let mut v: Vec<String> = t
        .releases(&src, board, NOW)
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    v.sort();
    v
}

#[test]
fn a_client_pinned_at_root_1_follows_two_rotations_and_refuses_the_dropped_key() {
    let f = Fleet::new();
    let pinned = f.pinned();
    f.release("bot", "1.0", &f.targets).unwrap();
    assert_eq!(
        f.client(&pinned, &TrustedState::default())
            .unwrap()
            .root_version(),
        1
    );

    // Rotation to v2 drops the old targets key: both thresholds of root keys sign.
    let new_targets = key();
    let changes = BTreeMap::from([(
        Role::Targets,
        RoleChange {
            keys: Some(vec![*new_targets.verifying_key()]),
            threshold: None,
        },
    )]);
    let roots: Vec<RoleSigner> = f.root.iter().map(signer).collect();
    let refs: Vec<&RoleSigner> = roots.iter().collect();
    rotate_root(f.repo(), &changes, &refs, NOW, 365).unwrap();
    assert!(f.meta("2.root.json").is_file());

    // The dropped key cannot release any more: the writer refuses, naming role and root.
    assert_refused(
        f.release("bot", "2.0", &f.targets),
        &[
            "targets.json",
            "0 valid signature(s) by targets keys",
            "root version 2",
        ],
    );
    // Until the new key re-signs, targets.json (signed by the dropped key) is refused.
    assert_refused(
        f.client(&pinned, &TrustedState::default()),
        &["targets.json", "0 valid signature(s) by targets keys"],
    );
    f.release("bot", "2.0", &new_targets).unwrap();
    let t = f.client(&pinned, &TrustedState::default()).unwrap();
    assert_eq!(t.root_version(), 2);
    assert_eq!(found_names(&t, f.repo(), None).len(), 2);

    // A targets.json signed by the dropped key (a thief re-signing it) is refused.
    let before = f.snapshot_files();
    let mut doc = read(&f.meta("targets.json"));
    doc["signed"]["version"] = json!(version_of(&doc) + 1);
    let forged = sign_role(
        doc["signed"].clone(),
        &[&signer(&f.targets)],
        Path::new("t"),
    )
    .unwrap();
    publish(
        f.repo(),
        vec![("targets.json".into(), forged)],
        &f.snapshot_and_timestamp(),
        NOW,
        30,
    )
    .unwrap();
    assert_refused(
        f.client(&pinned, &TrustedState::default()),
        &[
            "targets.json",
            "0 valid signature(s) by targets keys, root version 2",
        ],
    );
    f.restore(
        &before,
        &["targets.json", "snapshot.json", "timestamp.json"],
    );

    // A second rotation replaces both root keys (threshold 1 of the new ones).
    let new_root = key();
    let changes = BTreeMap::from([(
        Role::Root,
        RoleChange {
            keys: Some(vec![*new_root.verifying_key()]),
            threshold: Some(1),
        },
    )]);
    let mut signers: Vec<RoleSigner> = f.root.iter().map(signer).collect();
    signers.push(signer(&new_root));
    let refs: Vec<&RoleSigner> = signers.iter().collect();
    rotate_root(f.repo(), &changes, &refs, NOW, 365).unwrap();
    let t = f.client(&pinned, &TrustedState::default()).unwrap();
    assert_eq!(t.root_version(), 3);
}

#[test]
fn a_root_below_threshold_or_rolled_back_is_refused() {
    let f = Fleet::new();
    let pinned = f.pinned();
    f.release("bot", "1.0", &f.targets).unwrap();
    // The writer refuses one of two root keys.
    let one: Vec<RoleSigner> = vec![signer(&f.root[0])];
    let refs: Vec<&RoleSigner> = one.iter().collect();
    assert_refused(
        rotate_root(f.repo(), &BTreeMap::new(), &refs, NOW, 365).map_err(|e| e.to_string()),
        &[
            "2.root.json",
            "1 valid signature(s) by root keys, root version 1 requires 2",
        ],
    );
    assert!(!f.meta("2.root.json").exists());
    // A crafted 2.root.json signed by one key: the client refuses it.
    let mut root = read(&f.meta("root.json"));
    root["signed"]["version"] = json!(2);
    let forged = sign_role(root["signed"].clone(), &refs, Path::new("x")).unwrap();
    std::fs::write(f.meta("2.root.json"), serde_json::to_vec(&forged).unwrap()).unwrap();
    assert_refused(
        f.client(&pinned, &TrustedState::default()),
        &[
            "2.root.json",
            "1 valid signature(s) by root keys, root version 1 requires 2",
        ],
    );
    // A rolled-back root served as the next version: refused.
    std::fs::copy(f.meta("1.root.json"), f.meta("2.root.json")).unwrap();
    assert_refused(
        f.client(&pinned, &TrustedState::default()),
        &["2.root.json", "is root version 1, not 2", "rolled-back"],
    );
    // A client that walked to root 2 refuses a repository whose chain restarts at 1 (its
    // stored root is the anchor; older roots are never walked to again).
    std::fs::remove_file(f.meta("2.root.json")).unwrap();
    let two: Vec<RoleSigner> = f.root.iter().map(signer).collect();
    let refs: Vec<&RoleSigner> = two.iter().collect();
    let threshold_one = BTreeMap::from([(
        Role::Root,
        RoleChange {
            keys: None,
            threshold: Some(1),
        },
    )]);
    rotate_root(f.repo(), &threshold_one, &refs, NOW, 365).unwrap();
    let state = f
        .client(&pinned, &TrustedState::default())
        .unwrap()
        .state()
        .clone();
    assert_eq!(
        version_of(&serde_json::from_slice(state.root.as_ref().unwrap()).unwrap()),
        2
    );
    std::fs::copy(f.meta("1.root.json"), f.meta("2.root.json")).unwrap();
    // The state's root (2) is the anchor; 3.root.json does not exist: still root 2.
    let t = f.client(&pinned, &state).unwrap();
    assert_eq!(t.root_version(), 2);
}

#[test]
fn an_expired_root_counts_only_at_the_end_of_the_chain() {
    let f = Fleet::new();
    f.release("bot", "1.0", &f.targets).unwrap();
    let roots: Vec<RoleSigner> = f.root.iter().map(signer).collect();
    let refs: Vec<&RoleSigner> = roots.iter().collect();
    // Root 2 expires at once; the client refuses it as the final root.
    rotate_root(f.repo(), &BTreeMap::new(), &refs, NOW, 0).unwrap();
    assert_refused(
        f.client(&f.pinned(), &TrustedState::default()),
        &["2.root.json", "root version 2", "expired at"],
    );
    // Root 3 is current: root 2's expiry no longer matters.
    rotate_root(f.repo(), &BTreeMap::new(), &refs, NOW, 365).unwrap();
    assert_eq!(
        f.client(&f.pinned(), &TrustedState::default())
            .unwrap()
            .root_version(),
        3
    );
}

#[test]
fn a_frozen_timestamp_is_refused_and_a_refreshed_one_accepted() {
    let f = Fleet::new();
    f.release("bot", "1.0", &f.targets).unwrap();
    let ts = vec![signer(&f.timestamp)];
    // Only the timestamp key is needed; the snapshot and targets stay as they are.
    let snapshot_before = std::fs::read(f.meta("snapshot.json")).unwrap();
    assert_eq!(refresh_timestamp(f.repo(), &ts, NOW, 0).unwrap(), 2);
    assert_eq!(
        std::fs::read(f.meta("snapshot.json")).unwrap(),
        snapshot_before
    );
    assert_refused(
        f.client(&f.pinned(), &TrustedState::default()),
        &["timestamp.json", "expired at"],
    );
    assert_eq!(refresh_timestamp(f.repo(), &ts, NOW, 1).unwrap(), 3);
    f.client(&f.pinned(), &TrustedState::default()).unwrap();
    // Another role's key cannot refresh it.
    assert_refused(
        refresh_timestamp(f.repo(), &[signer(&f.targets)], NOW, 1).map_err(|e| e.to_string()),
        &["timestamp.json", "0 valid signature(s) by timestamp keys"],
    );
}

#[test]
fn rollbacks_of_timestamp_snapshot_and_targets_are_refused_against_the_trusted_state() {
    let f = Fleet::new();
    let pinned = f.pinned();
    f.release("bot", "1.0", &f.targets).unwrap();
    let v1 = f.snapshot_files();
    f.release("bot", "2.0", &f.targets).unwrap();
    let v2 = f.snapshot_files();
    let state = f
        .client(&pinned, &TrustedState::default())
        .unwrap()
        .state()
        .clone();

    // The whole of release 1 replayed: the timestamp goes back.
    f.restore(&v1, &["targets.json", "snapshot.json", "timestamp.json"]);
    assert_refused(
        f.client(&pinned, &state),
        &[
            "timestamp.json",
            "version 1, older than the trusted version 2",
            "rollback",
        ],
    );
    // Without the state a first-time client cannot tell (TUF's guarantee needs memory).
    f.client(&pinned, &TrustedState::default()).unwrap();

    // A stolen timestamp key pointing a new timestamp at the old snapshot.
    let ts = vec![signer(&f.timestamp)];
    refresh_timestamp(f.repo(), &ts, NOW, 1).unwrap();
    refresh_timestamp(f.repo(), &ts, NOW, 1).unwrap();
    assert_refused(
        f.client(&pinned, &state),
        &[
            "timestamp.json",
            "names snapshot.json version 1, older than the trusted version 2",
        ],
    );

    // Stolen timestamp and snapshot keys: a new snapshot naming the old targets.json.
    f.restore(&v2, &["targets.json", "snapshot.json", "timestamp.json"]);
    f.restore(&v1, &["targets.json"]);
    let old_targets = read(&f.meta("targets.json"));
    let online = f.snapshot_and_timestamp();
    publish(
        f.repo(),
        vec![("targets.json".into(), old_targets)],
        &online,
        NOW,
        30,
    )
    .unwrap();
    assert_refused(
        f.client(&pinned, &state),
        &[
            "snapshot.json",
            "names targets.json version 1, older than the trusted version 2",
        ],
    );
}

#[test]
fn mix_and_match_of_snapshot_and_targets_is_refused() {
    let f = Fleet::new();
    f.release("bot", "1.0", &f.targets).unwrap();
    let v1 = f.snapshot_files();
    f.release("bot", "2.0", &f.targets).unwrap();
    // The current timestamp and snapshot with the old targets.json.
    f.restore(&v1, &["targets.json"]);
    assert_refused(
        f.client(&f.pinned(), &TrustedState::default()),
        &[
            "targets.json",
            "is version 1, snapshot.json names 2",
            "mix-and-match",
        ],
    );
    // The current timestamp with the old snapshot: its hash is pinned.
    f.restore(&v1, &["snapshot.json"]);
    assert_refused(
        f.client(&f.pinned(), &TrustedState::default()),
        &["snapshot.json"],
    );
}

#[test]
fn a_board_team_releases_only_its_own_board() {
    let f = Fleet::new();
    let (team_a, team_b) = (key(), key());
    let online = f.online(&f.targets);
    for (board, k) in [("board-a", &team_a), ("board-b", &team_b)] {
        let keys = RoleKeys {
            keys: vec![*k.verifying_key()],
            threshold: 1,
        };
        delegate(f.repo(), board, &keys, &online, NOW, 30).unwrap();
    }
    // A delegated board whose team released nothing yet lists nothing.
    let t = f.client(&f.pinned(), &TrustedState::default()).unwrap();
    assert!(found_names(&t, f.repo(), None).is_empty());

    f.release("board-a", "1.0", &team_a).unwrap();
    f.release("board-b", "1.0", &team_b).unwrap();
    // Team A's key cannot release for board B, nor the targets key for a delegated board.
    assert_refused(
        f.release("board-b", "2.0", &team_a),
        &[
            "board-b.json",
            "0 valid signature(s) by board-b keys, targets.json requires 1",
        ],
    );
    assert_refused(
        f.release("board-b", "2.0", &f.targets),
        &["board-b.json", "by board-b keys"],
    );
    let t = f.client(&f.pinned(), &TrustedState::default()).unwrap();
    assert_eq!(
        found_names(&t, f.repo(), None),
        ["board-a/img-1.0.oci.tar", "board-b/img-1.0.oci.tar"]
    );
    assert_eq!(
        found_names(&t, f.repo(), Some("board-b")),
        ["board-b/img-1.0.oci.tar"]
    );

    // Team A signs its own role listing a board-b release: not trusted for board B.
    let mut doc = read(&f.meta("board-a.json"));
    doc["signed"]["version"] = json!(version_of(&doc) + 1);
    let entry = doc["signed"]["targets"]["board-a/img-1.0.oci.tar"].clone();
    doc["signed"]["targets"]["board-b/img-9.0.oci.tar"] = entry;
    let forged = sign_role(doc["signed"].clone(), &[&signer(&team_a)], Path::new("a")).unwrap();
    let online_no_targets = f.snapshot_and_timestamp();
    publish(
        f.repo(),
        vec![("board-a.json".into(), forged)],
        &online_no_targets,
        NOW,
        30,
    )
    .unwrap();
    let t = f.client(&f.pinned(), &TrustedState::default()).unwrap();
    let src = DirSource(f.repo().join("metadata"));
    assert!(t
        .find(&src, "board-b/img-9.0.oci.tar", NOW)
        .unwrap()
        .is_none());
    assert!(!found_names(&t, f.repo(), None).contains(&"board-b/img-9.0.oci.tar".to_string()));

    // Team A signing board B's role: refused, naming the role.
    let mut doc = read(&f.meta("board-b.json"));
    doc["signed"]["version"] = json!(version_of(&doc) + 1);
    let forged = sign_role(doc["signed"].clone(), &[&signer(&team_a)], Path::new("b")).unwrap();
    publish(
        f.repo(),
        vec![("board-b.json".into(), forged)],
        &online_no_targets,
        NOW,
        30,
    )
    .unwrap();
    let t = f.client(&f.pinned(), &TrustedState::default()).unwrap();
    let e = t
        .find(&src, "board-b/img-1.0.oci.tar", NOW)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("board-b.json") && e.contains("0 valid signature(s) by board-b keys"),
        "{e}"
    );
    // Board A's releases still verify: one team's broken role does not block another's.
    assert!(t
        .find(&src, "board-a/img-1.0.oci.tar", NOW)
        .unwrap()
        .is_some());
}

#[test]
fn hostile_metadata_is_refused_without_panicking() {
    let f = Fleet::new();
    f.release("bot", "1.0", &f.targets).unwrap();
    let files = f.snapshot_files();
    let pinned = f.pinned();
    let run = |files: &BTreeMap<String, Vec<u8>>| {
        update(
            &MemorySource(files.clone()),
            (Path::new("root.json"), &pinned),
            &TrustedState::default(),
            NOW,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    run(&files).unwrap();
    // A delegation to a role whose name would leave the metadata directory.
    let mut targets = read(&f.meta("targets.json"));
    targets["signed"]["delegations"] = json!({"keys": {}, "roles": [
        {"name": "../../etc/passwd", "keyids": [], "threshold": 1, "paths": ["*"], "terminating": true}
    ]});
    targets["signed"]["version"] = json!(2);
    let forged = sign_role(
        targets["signed"].clone(),
        &[&signer(&f.targets)],
        Path::new("t"),
    )
    .unwrap();
    publish(
        f.repo(),
        vec![("targets.json".into(), forged)],
        &f.online(&f.targets),
        NOW,
        30,
    )
    .unwrap();
    let t = f.client(&pinned, &TrustedState::default()).unwrap();
    let src = DirSource(f.repo().join("metadata"));
    let e = t.find(&src, "x", NOW).unwrap_err().to_string();
    assert!(e.contains("not a usable role name"), "{e}");
    // A threshold of 0 in a root would accept unsigned metadata: refused.
    let mut root = read(&f.meta("root.json"));
    root["signed"]["roles"]["root"]["threshold"] = json!(0);
    let bytes = serde_json::to_vec(&root).unwrap();
    let e = update(
        &DirSource(f.repo().join("metadata")),
        (Path::new("root.json"), &bytes),
        &TrustedState::default(),
        NOW,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("threshold of at least 1"), "{e}");
    // A metadata file that is a FIFO is not read.
    let fifo = f.meta("timestamp.json");
    std::fs::remove_file(&fifo).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    assert_refused(
        f.client(&pinned, &TrustedState::default()),
        &["timestamp.json", "not a regular file"],
    );
}

#[test]
fn a_targets_threshold_of_two_needs_two_release_managers() {
    let f = Fleet::new();
    let (a, b) = (key(), key());
    let changes = BTreeMap::from([(
        Role::Targets,
        RoleChange {
            keys: Some(vec![*a.verifying_key(), *b.verifying_key()]),
            threshold: Some(2),
        },
    )]);
    let roots: Vec<RoleSigner> = f.root.iter().map(signer).collect();
    let refs: Vec<&RoleSigner> = roots.iter().collect();
    rotate_root(f.repo(), &changes, &refs, NOW, 365).unwrap();
    // One manager alone is below threshold; the repository is left as it was.
    assert_refused(
        f.release("bot", "1.0", &a),
        &[
            "targets.json",
            "1 valid signature(s) by targets keys, root version 2 requires 2",
        ],
    );
    assert!(!f.meta("targets.json").exists());
    // Both sign: accepted, and the client counts two distinct keys.
    let name = "bot/img-1.0.oci.tar";
    let archive = f.repo().join("targets").join(name);
    let info = ReleaseInfo {
        board: "bot".into(),
        compatible: vec![],
        version: "1.0".into(),
        min_version: None,
        manifest_digest: "sha256:00".into(),
    };
    let both = ReleaseSigners {
        targets: vec![signer(&a), signer(&b)],
        snapshot: vec![signer(&f.snapshot)],
        timestamp: vec![signer(&f.timestamp)],
    };
    let target = NewTarget {
        name,
        archive: &archive,
        info: &info,
    };
    add_release(f.repo(), &target, &both, NOW, EXPIRY).unwrap();
    f.client(&f.pinned(), &TrustedState::default()).unwrap();
    // The same signature twice counts once.
    let mut doc = read(&f.meta("targets.json"));
    let first = doc["signatures"][0].clone();
    doc["signatures"] = json!([first.clone(), first]);
    let online = f.snapshot_and_timestamp();
    publish(
        f.repo(),
        vec![("targets.json".into(), doc)],
        &online,
        NOW,
        30,
    )
    .unwrap();
    assert_refused(
        f.client(&f.pinned(), &TrustedState::default()),
        &[
            "targets.json",
            "1 valid signature(s) by targets keys, root version 2 requires 2",
        ],
    );
}

#[test]
fn an_expired_snapshot_or_targets_is_refused_naming_the_role() {
    let f = Fleet::new();
    f.release("bot", "1.0", &f.targets).unwrap();
    // A snapshot that expired under a fresh timestamp.
    let targets = read(&f.meta("targets.json"));
    publish(
        f.repo(),
        vec![("targets.json".into(), targets.clone())],
        &f.snapshot_and_timestamp(),
        NOW,
        0,
    )
    .unwrap();
    refresh_timestamp(f.repo(), &[signer(&f.timestamp)], NOW, 1).unwrap();
    assert_refused(
        f.client(&f.pinned(), &TrustedState::default()),
        &["snapshot.json", "expired at"],
    );
    // targets.json expired under a fresh snapshot and timestamp.
    let mut signed = targets["signed"].clone();
    signed["version"] = json!(version_of(&targets) + 1);
    signed["expires"] = json!(crate::timefmt::rfc3339(NOW));
    let expired = sign_role(signed, &[&signer(&f.targets)], Path::new("t")).unwrap();
    publish(
        f.repo(),
        vec![("targets.json".into(), expired)],
        &f.snapshot_and_timestamp(),
        NOW,
        30,
    )
    .unwrap();
    assert_refused(
        f.client(&f.pinned(), &TrustedState::default()),
        &["targets.json", "expired at"],
    );
}

/// Counts the metadata files fetched through it.
struct CountingSource {
    inner: DirSource,
    fetched: std::cell::RefCell<BTreeMap<String, usize>>,
}

impl MetadataSource for CountingSource {
    fn fetch(&self, name: &str) -> Result<Option<Vec<u8>>, TufError> {
        *self
            .fetched
            .borrow_mut()
            .entry(name.to_string())
            .or_default() += 1;
        self.inner.fetch(name)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.inner.path(name)
    }
}

/// `kiln verify` lists the releases, then finds the one asked for: each delegated role is
/// read and checked once, not once per question.
#[test]
fn a_delegated_role_is_read_once_per_verification() {
    let f = Fleet::new();
    let team = key();
    let online = f.online(&f.targets);
    let keys = RoleKeys {
        keys: vec![*team.verifying_key()],
        threshold: 1,
    };
    delegate(f.repo(), "board-a", &keys, &online, NOW, 30).unwrap();
    f.release("board-a", "1.0", &team).unwrap();
    let t = f.client(&f.pinned(), &TrustedState::default()).unwrap();
    let src = CountingSource {
        inner: DirSource(f.repo().join("metadata")),
        fetched: Default::default(),
    };
    let listed = t.releases(&src, Some("board-a"), NOW).unwrap();
    assert_eq!(listed.len(), 1);
    let found = t.find(&src, "board-a/img-1.0.oci.tar", NOW).unwrap();
    assert_eq!(found.map(|f| f.role).as_deref(), Some("board-a"));
    assert_eq!(src.fetched.borrow().get("board-a.json"), Some(&1));
}
