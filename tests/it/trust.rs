//! Fleet trust end to end: an OTA repository made by `kiln trust init` with separate root
//! (offline, threshold 2), targets, snapshot and timestamp keys; releases that never touch the
//! root keys; root rotations that revoke a targets key; per-board delegations; and the attack
//! matrix, each case refused by `kiln verify` naming the role and by python-tuf's ngclient
//! (ci/verify-tuf, no kiln code).

use crate::fixture::text;
use crate::sign::{built, built_v11, pub_of, sign_copy};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

fn refused(o: Output, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    for n in needles {
        assert!(t.contains(n), "{t:?} does not say {n:?}");
    }
}

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let k = dir.join(name);
    ok(kiln(&[
        OsStr::new("keygen"),
        OsStr::new("-o"),
        k.as_os_str(),
    ]));
    k
}

/// The online keys as `kiln release` and `kiln trust delegate` take them.
fn online(targets: &Path, snapshot: &Path, timestamp: &Path) -> Vec<PathBuf> {
    [
        "--targets-key",
        targets.to_str().unwrap(),
        "--snapshot-key",
        snapshot.to_str().unwrap(),
        "--timestamp-key",
        timestamp.to_str().unwrap(),
    ]
    .map(PathBuf::from)
    .to_vec()
}

/// `kiln trust init REPO` with root keys (threshold `root_threshold`) and the public halves
/// of the online keys.
fn trust_init(repo: &Path, roots: &[&Path], root_threshold: u64, online: [&Path; 3]) -> String {
    let mut args = vec![PathBuf::from("trust"), "init".into(), repo.into()];
    for r in roots {
        args.extend([PathBuf::from("--root-key"), r.to_path_buf()]);
    }
    args.extend([
        "--threshold".into(),
        format!("root={root_threshold}").into(),
    ]);
    for (flag, k) in ["--targets-key", "--snapshot-key", "--timestamp-key"]
        .iter()
        .zip(online)
    {
        args.extend([PathBuf::from(flag), pub_of(k)]);
    }
    ok(kiln(&args))
}

fn release(out: &Path, repo: &Path, keys: &[PathBuf]) -> Output {
    let mut args = vec![
        PathBuf::from("release"),
        out.into(),
        "--to".into(),
        repo.into(),
    ];
    args.extend(keys.iter().cloned());
    kiln(&args)
}

/// `kiln verify REPO --root PINNED --key KEY.pub [extra]`.
fn verify(repo: &Path, pinned: &Path, key: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        PathBuf::from("verify"),
        repo.into(),
        "--root".into(),
        pinned.into(),
        "--key".into(),
        pub_of(key),
    ];
    args.extend(extra.iter().map(PathBuf::from));
    kiln(&args)
}

/// python-tuf's client from PyPI: exit 0 only if it accepts `target` (with `state`, a device's
/// metadata directory kept between runs).
fn python_tuf(repo: &Path, pinned: &Path, target: &str, state: Option<&Path>) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/verify-tuf");
    let mut c = Command::new("bash");
    c.arg(&script).arg(repo).arg(pinned).arg(target);
    if let Some(s) = state {
        c.env("TUF_STATE", s);
    }
    c.output().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    assert!(Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success());
}

const V10: &str = "test-board/fixture-1.0.oci.tar";
const V11: &str = "test-board/fixture-1.1.oci.tar";

#[test]
fn a_root_rotation_revokes_a_targets_key_for_kiln_and_python_tuf() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let [r1, r2, r3, t1, t2, s, ts] =
        ["r1", "r2", "r3", "t1", "t2", "s", "ts"].map(|n| keygen(d, n));
    let repo = d.join("repo");
    // Root 1: two root keys, both needed; the online roles listed by their public keys.
    let o = trust_init(&repo, &[&r1, &r2], 2, [&t1, &s, &ts]);
    assert!(
        o.contains("root version 1: root 2 of 2, targets 1 of 1"),
        "{o}"
    );
    assert!(!o.contains("warning"), "{o}");
    let pinned = d.join("pinned-root.json");
    std::fs::copy(repo.join("metadata/1.root.json"), &pinned).unwrap();

    // Release 1 under root 1, with the online keys only.
    let v10 = sign_copy(&built().1, d, "v10", &t1);
    let o = ok(release(&v10, &repo, &online(&t1, &s, &ts)));
    assert!(
        o.contains("targets version 1") && !o.contains("warning"),
        "{o}"
    );
    let old_mirror = d.join("old-mirror");
    copy_dir(&repo, &old_mirror);
    let (kiln_state, tuf_state) = (d.join("kiln-state"), d.join("tuf-state"));
    let state_args = ["--state", kiln_state.to_str().unwrap()];
    ok(verify(&repo, &pinned, &t1, &state_args));
    ok(python_tuf(&repo, &pinned, V10, Some(&tuf_state)));

    // Root 2 drops t1 for t2, signed by both root keys; one alone is below threshold.
    refused(
        kiln(&[
            "trust".as_ref(),
            "rotate-root".as_ref(),
            repo.as_os_str(),
            "--old-root-key".as_ref(),
            r1.as_os_str(),
            "--targets-key".as_ref(),
            pub_of(&t2).as_os_str(),
        ]),
        &[
            "2.root.json",
            "1 valid signature(s) by root keys, root version 1 requires 2",
        ],
    );
    let o = ok(kiln(&[
        "trust".as_ref(),
        "rotate-root".as_ref(),
        repo.as_os_str(),
        "--old-root-key".as_ref(),
        r1.as_os_str(),
        "--old-root-key".as_ref(),
        r2.as_os_str(),
        "--targets-key".as_ref(),
        pub_of(&t2).as_os_str(),
    ]));
    assert!(o.contains("root version 2"), "{o}");

    // The dropped key cannot release; the new one can.
    let v11_t1 = sign_copy(built_v11(), d, "v11-t1", &t1);
    refused(
        release(&v11_t1, &repo, &online(&t1, &s, &ts)),
        &[
            "targets.json",
            "0 valid signature(s) by targets keys, root version 2",
        ],
    );
    let v11 = sign_copy(built_v11(), d, "v11", &t2);
    ok(release(&v11, &repo, &online(&t2, &s, &ts)));

    // Root 3 hands the root to a new key (threshold 1): two rotations since the pin.
    let o = ok(kiln(&[
        "trust".as_ref(),
        "rotate-root".as_ref(),
        repo.as_os_str(),
        "--old-root-key".as_ref(),
        r1.as_os_str(),
        "--old-root-key".as_ref(),
        r2.as_os_str(),
        "--root-key".as_ref(),
        r3.as_os_str(),
        "--threshold".as_ref(),
        "root=1".as_ref(),
    ]));
    assert!(o.contains("root version 3 (root 1 of 1"), "{o}");

    // Clients pinned at root 1 walk to root 3 and accept release 2.
    let o = ok(verify(
        &repo,
        &pinned,
        &t2,
        &["--format", "json", "--state", kiln_state.to_str().unwrap()],
    ));
    assert!(
        o.contains("TUF root (version 3)") && o.contains("\"version\":\"1.1\""),
        "{o}"
    );
    let o = ok(python_tuf(&repo, &pinned, V11, Some(&tuf_state)));
    assert!(
        o.contains("root version 3") && o.contains("fixture-1.1.oci.tar verified"),
        "{o}"
    );
    let o = ok(python_tuf(&repo, &pinned, V11, None));
    assert!(o.contains("root version 3"), "{o}");

    // A thief with t1 (and the online keys) releases into a mirror copied before the
    // rotation, which still trusts t1; the rotation files are public and served beside it.
    ok(release(&v11_t1, &old_mirror, &online(&t1, &s, &ts)));
    for n in ["2.root.json", "3.root.json"] {
        std::fs::copy(
            repo.join("metadata").join(n),
            old_mirror.join("metadata").join(n),
        )
        .unwrap();
    }
    refused(
        verify(&old_mirror, &pinned, &t1, &[]),
        &[
            "targets.json",
            "0 valid signature(s) by targets keys, root version 3",
        ],
    );
    let o = python_tuf(&old_mirror, &pinned, V11, None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o)
            .contains("python-tuf: refused: UnsignedMetadataError: targets was signed by 0/1 keys"),
        "{}",
        text(&o)
    );
    // Hiding the rotations does not help against devices that walked to root 3 before.
    for n in ["2.root.json", "3.root.json"] {
        std::fs::remove_file(old_mirror.join("metadata").join(n)).unwrap();
    }
    refused(
        verify(&old_mirror, &pinned, &t1, &state_args),
        &[
            "targets.json",
            "0 valid signature(s) by targets keys, root version 3",
        ],
    );
    let o = python_tuf(&old_mirror, &pinned, V11, Some(&tuf_state));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("python-tuf: refused"), "{}", text(&o));
}

/// A repository with separate keys and release 1.0 then 1.1; the clients' states trust 1.1.
struct Released {
    dir: tempfile::TempDir,
    keys: [PathBuf; 5],
    v1: PathBuf,
}

impl Released {
    fn new() -> Released {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let keys = ["r1", "r2", "t", "s", "ts"].map(|n| keygen(d, n));
        let [r1, r2, t, s, ts] = &keys;
        let repo = d.join("repo");
        trust_init(&repo, &[r1, r2], 2, [t, s, ts]);
        ok(release(
            &sign_copy(&built().1, d, "v10", t),
            &repo,
            &online(t, s, ts),
        ));
        let v1 = d.join("metadata-1");
        copy_dir(&repo.join("metadata"), &v1);
        ok(release(
            &sign_copy(built_v11(), d, "v11", t),
            &repo,
            &online(t, s, ts),
        ));
        let t = t.clone();
        let r = Released { dir, keys, v1 };
        let kiln_state = r.kiln_state();
        let state = ["--state", kiln_state.to_str().unwrap()];
        ok(verify(&r.repo(), &r.pinned(), &t, &state));
        ok(python_tuf(
            &r.repo(),
            &r.pinned(),
            V11,
            Some(&r.tuf_state()),
        ));
        r
    }
    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    fn pinned(&self) -> PathBuf {
        self.repo().join("metadata/1.root.json")
    }
    fn kiln_state(&self) -> PathBuf {
        self.dir.path().join("kiln-state")
    }
    fn tuf_state(&self) -> PathBuf {
        self.dir.path().join("tuf-state")
    }

    /// A copy of the repository to attack, with copies of both clients' states.
    fn attack(&self, name: &str) -> Attack {
        let base = self.dir.path().join(name);
        std::fs::create_dir(&base).unwrap();
        copy_dir(&self.repo(), &base.join("repo"));
        copy_dir(&self.kiln_state(), &base.join("kiln-state"));
        copy_dir(&self.tuf_state(), &base.join("tuf-state"));
        std::fs::copy(self.pinned(), base.join("pinned.json")).unwrap();
        Attack { base }
    }

    fn restore_v1(&self, attack: &Attack, names: &[&str]) {
        for n in names {
            std::fs::copy(self.v1.join(n), attack.base.join("repo/metadata").join(n)).unwrap();
        }
    }
}

struct Attack {
    base: PathBuf,
}

impl Attack {
    fn repo(&self) -> PathBuf {
        self.base.join("repo")
    }
    /// Both clients refuse: kiln naming `needles`, python-tuf saying `tuf_says`.
    fn refused(&self, key: &Path, with_state: bool, needles: &[&str], tuf_says: &str) {
        let ks = self.base.join("kiln-state");
        let ks = ["--state", ks.to_str().unwrap()];
        let extra: &[&str] = if with_state { &ks } else { &[] };
        refused(
            verify(&self.repo(), &self.base.join("pinned.json"), key, extra),
            needles,
        );
        let ts = self.base.join("tuf-state");
        let o = python_tuf(
            &self.repo(),
            &self.base.join("pinned.json"),
            V11,
            with_state.then_some(ts.as_path()),
        );
        assert_eq!(
            o.status.code(),
            Some(1),
            "python-tuf accepted: {}",
            text(&o)
        );
        let t = text(&o);
        assert!(
            t.contains("python-tuf: refused: ") && t.contains(tuf_says),
            "{t}"
        );
    }
}

#[test]
fn the_attack_matrix_is_refused_by_kiln_and_python_tuf_naming_the_role() {
    let r = Released::new();
    let [r1, _r2, t, _s, ts] = &r.keys;

    // Freeze: the timestamp a frozen mirror keeps serving has expired.
    let a = r.attack("freeze");
    ok(kiln(&[
        "trust".as_ref(),
        "refresh-timestamp".as_ref(),
        a.repo().as_os_str(),
        "--timestamp-key".as_ref(),
        ts.as_os_str(),
        "--expires-days".as_ref(),
        "0".as_ref(),
    ]));
    a.refused(
        t,
        false,
        &["timestamp.json", "expired at"],
        "ExpiredMetadataError: timestamp.json is expired",
    );

    // Rollback: release 1's metadata replayed to devices that trusted release 2.
    let a = r.attack("rollback");
    r.restore_v1(&a, &["timestamp.json", "snapshot.json", "targets.json"]);
    a.refused(
        t,
        true,
        &[
            "timestamp.json",
            "older than the trusted version",
            "rollback",
        ],
        "New timestamp version 1 must be >= 2",
    );

    // Rollback of the snapshot by a stolen timestamp key: a newer timestamp naming it.
    let a = r.attack("snapshot-rollback");
    r.restore_v1(&a, &["timestamp.json", "snapshot.json", "targets.json"]);
    for _ in 0..2 {
        ok(kiln(&[
            "trust".as_ref(),
            "refresh-timestamp".as_ref(),
            a.repo().as_os_str(),
            "--timestamp-key".as_ref(),
            ts.as_os_str(),
        ]));
    }
    a.refused(
        t,
        true,
        &[
            "timestamp.json",
            "names snapshot.json version 1, older than the trusted version 2",
        ],
        "New snapshot version must be >= 2, got version 1",
    );

    // Mix-and-match: the current snapshot with the old targets.json.
    let a = r.attack("mix");
    r.restore_v1(&a, &["targets.json"]);
    a.refused(
        t,
        false,
        &["targets.json", "snapshot.json names 2", "mix-and-match"],
        "Expected targets v2, got v1",
    );

    // A rolled-back root served as the next one.
    let a = r.attack("root-rollback");
    std::fs::copy(
        a.repo().join("metadata/1.root.json"),
        a.repo().join("metadata/2.root.json"),
    )
    .unwrap();
    a.refused(
        t,
        false,
        &["2.root.json", "is root version 1, not 2", "rolled-back"],
        "Expected root version 2 instead got version 1",
    );

    // A root signed below threshold: one of the two root keys.
    let a = r.attack("threshold");
    let mut root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.repo().join("metadata/root.json")).unwrap())
            .unwrap();
    root["signed"]["version"] = serde_json::json!(2);
    let one = kiln::signing::tuf::RoleSigner {
        public: *kiln::signing::keys::load_signing_key(r1)
            .unwrap()
            .verifying_key(),
        signer: Box::new(kiln::signing::sign::KeySigner(
            kiln::signing::keys::load_signing_key(r1).unwrap(),
        )),
    };
    let forged =
        kiln::signing::tuf::metadata::sign_role(root["signed"].clone(), &[&one], Path::new("x"))
            .unwrap();
    std::fs::write(
        a.repo().join("metadata/2.root.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    a.refused(
        t,
        false,
        &[
            "2.root.json",
            "1 valid signature(s) by root keys, root version 1 requires 2",
        ],
        "root was signed by 1/2 keys",
    );
}

#[test]
fn board_teams_release_only_their_own_board_through_delegations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let [root, t, s, ts, team, other_team] =
        ["root", "t", "s", "ts", "team", "other-team"].map(|n| keygen(d, n));
    let repo = d.join("repo");
    trust_init(&repo, &[&root], 1, [&t, &s, &ts]);
    // The timestamp key lives in a KMS: reached through a command, as `kiln sign` does.
    let ts_command = format!(
        "timestamp={}=openssl dgst -sha256 -sign {}",
        pub_of(&ts).display(),
        ts.display()
    );
    for (board, key) in [("test-board", &team), ("other-board", &other_team)] {
        let o = ok(kiln(&[
            "trust".as_ref(),
            "delegate".as_ref(),
            repo.as_os_str(),
            "--board".as_ref(),
            board.as_ref(),
            "--board-key".as_ref(),
            pub_of(key).as_os_str(),
            "--targets-key".as_ref(),
            t.as_os_str(),
            "--snapshot-key".as_ref(),
            s.as_os_str(),
            "--sign-command".as_ref(),
            ts_command.as_ref(),
        ]));
        assert!(
            o.contains(&format!("delegated {board}/* to 1 key(s)")),
            "{o}"
        );
    }
    let team_keys = |k: &Path| {
        let mut v = vec![PathBuf::from("--targets-key"), k.into()];
        v.extend([
            "--snapshot-key".into(),
            s.clone(),
            "--sign-command".into(),
            ts_command.clone().into(),
        ]);
        v
    };
    // The board's team releases its board, into its own role.
    let v10 = sign_copy(&built().1, d, "v10", &team);
    let o = ok(release(&v10, &repo, &team_keys(&team)));
    assert!(o.contains("(test-board version 1)"), "{o}");
    // Another board's team cannot, nor can the top-level targets key (terminating).
    let v11_other = sign_copy(built_v11(), d, "v11-other", &other_team);
    refused(
        release(&v11_other, &repo, &team_keys(&other_team)),
        &[
            "test-board.json",
            "0 valid signature(s) by test-board keys, targets.json requires 1",
        ],
    );
    let v11_t = sign_copy(built_v11(), d, "v11-t", &t);
    refused(
        release(&v11_t, &repo, &team_keys(&t)),
        &["test-board.json", "by test-board keys"],
    );
    // Both clients find the release through the delegation.
    let pinned = repo.join("metadata/1.root.json");
    let o = ok(verify(
        &repo,
        &pinned,
        &team,
        &["--board", "test-board", "--format", "json"],
    ));
    assert!(
        o.contains("is listed by role test-board, delegated by targets.json"),
        "{o}"
    );
    let o = ok(python_tuf(&repo, &pinned, V10, None));
    assert!(o.contains("fixture-1.0.oci.tar verified"), "{o}");
    // A board with no release yet has none to verify.
    refused(
        verify(&repo, &pinned, &other_team, &["--board", "other-board"]),
        &["list no release of board other-board"],
    );
}

#[test]
fn one_key_for_every_role_works_for_a_dev_board_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(dir.path(), "dev");
    let v10 = sign_copy(&built().1, dir.path(), "v10", &key);
    let repo = dir.path().join("repo");
    let o = ok(kiln(&[
        "release".as_ref(),
        v10.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--to".as_ref(),
        repo.as_os_str(),
    ]));
    assert!(o.contains("warning: one key signs every TUF role"), "{o}");
    assert!(repo.join("metadata/1.root.json").is_file());
    // Separate keys without a root are refused: the root comes from `kiln trust init`.
    let [t, s, ts] = ["t", "s", "ts"].map(|n| keygen(dir.path(), n));
    let v10t = sign_copy(&built().1, dir.path(), "v10t", &t);
    refused(
        release(&v10t, &dir.path().join("new"), &online(&t, &s, &ts)),
        &["root.json", "kiln trust init"],
    );
    assert!(!dir.path().join("new/metadata/targets.json").exists());
}
