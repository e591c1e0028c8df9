//! Signing and verification end to end: keys from `kiln keygen`, a fixture image signed with
//! `kiln sign` (and through an external command), checked by `kiln verify`, by openssl alone
//! (ci/verify-openssl), and copied by skopeo; then the tamper matrix, each case refused with a
//! message naming the broken thing.

use crate::fixture;

use fixture::{kiln, stderr, text};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The fixture image again as version 1.1 (same packages; the base layer comes from the cache).
pub(crate) fn built_v11() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let work = built().0.path();
        let recipe = work.join("recipe-1.1");
        std::fs::create_dir_all(&recipe).unwrap();
        let st = Command::new("cp")
            .arg("-a")
            .arg(work.join("recipe/boards"))
            .arg(work.join("recipe/kiln.lock"))
            .arg(&recipe)
            .status()
            .unwrap();
        assert!(st.success());
        let toml = std::fs::read_to_string(work.join("recipe/kiln.toml")).unwrap();
        std::fs::write(
            recipe.join("kiln.toml"),
            toml.replace("version = \"1.0\"", "version = \"1.1\""),
        )
        .unwrap();
        let o = kiln(&recipe, &work.join("cache"), &["build", "-o", "out"]);
        assert!(o.status.success(), "{}", stderr(&o));
        recipe.join("out")
    })
}

/// A built, unsigned fixture layout (built once) and the directory holding it.
pub(crate) fn built() -> &'static (tempfile::TempDir, PathBuf) {
    static BUILT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let work = tempfile::tempdir().unwrap();
        let (_, recipe) = fixture::hello_recipe(work.path());
        let o = kiln(&recipe, &work.path().join("cache"), &["build", "-o", "out"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = recipe.join("out");
        (work, out)
    })
}

fn run(args: &[&str], paths: &[&Path]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.args(args);
    for p in paths {
        c.arg(p);
    }
    c.output().unwrap()
}

/// A fresh copy of the built image, signed with a new key; returns (dir, out, key base).
pub(crate) fn signed_copy() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&built().1)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let key = dir.path().join("release.key");
    let o = run(&["keygen", "-o"], &[&key]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["sign"], &[&out, Path::new("--key"), &key]);
    assert!(o.status.success(), "{}", text(&o));
    (dir, out, key)
}

pub(crate) fn pub_of(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

fn verify(out: &Path, key: &Path, extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.arg("verify")
        .arg(out)
        .arg("--key")
        .arg(pub_of(key))
        .args(extra);
    c.output().unwrap()
}

fn layout_json(out: &Path, digest: &str) -> serde_json::Value {
    let hex = digest.trim_start_matches("sha256:");
    serde_json::from_slice(&std::fs::read(out.join("oci/blobs/sha256").join(hex)).unwrap()).unwrap()
}

fn index(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("oci/index.json")).unwrap()).unwrap()
}

/// (image manifest digest, signature manifest digest, payload digest, config digest, layer digest)
fn digests(out: &Path) -> [String; 5] {
    let idx = index(out);
    let manifests = idx["manifests"].as_array().unwrap();
    let d = |sig: bool| {
        manifests
            .iter()
            .find(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with(".sig")
                    == sig
            })
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (image, sig) = (d(false), d(true));
    let m = layout_json(out, &image);
    let s = layout_json(out, &sig);
    [
        image,
        sig,
        s["layers"][0]["digest"].as_str().unwrap().to_string(),
        m["config"]["digest"].as_str().unwrap().to_string(),
        m["layers"][0]["digest"].as_str().unwrap().to_string(),
    ]
}

fn flip_byte(out: &Path, digest: &str) {
    let p = out
        .join("oci/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&p).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(&p, bytes).unwrap();
}

fn assert_rejected(o: &Output, needles: &[&str]) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(1), "expected exit 1: {t}");
    let line = String::from_utf8_lossy(&o.stdout);
    assert_eq!(line.lines().count(), 1, "one-line verdict: {t}");
    assert!(line.starts_with("REJECTED: "), "{t}");
    for n in needles {
        assert!(line.contains(n), "verdict lacks '{n}': {t}");
    }
}

#[test]
fn a_signed_image_verifies_with_kiln_openssl_and_skopeo_and_signing_is_deterministic() {
    let (dir, out, key) = signed_copy();
    let [image, ..] = digests(&out);
    let o = verify(
        &out,
        &key,
        &["--compatible", "kiln,test", "--installed-version", "0.9"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let line = String::from_utf8_lossy(&o.stdout);
    assert!(
        line.starts_with(&format!("accepted {image} (board test-board, version 1.0)")),
        "{line}"
    );

    // No kiln code: jq, sha256sum, base64 and openssl agree.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/verify-openssl");
    let o = Command::new("bash")
        .arg(&script)
        .arg(out.join("oci"))
        .arg(pub_of(&key))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Verified OK"), "{}", text(&o));

    // skopeo still copies the image and the signature out of the signed layout.
    let sig_tag = format!("{}.sig", image.replace(':', "-"));
    for tag in ["1.0", sig_tag.as_str()] {
        let o = Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:{tag}", out.join("oci").display()))
            .arg(format!("oci:{}:{tag}", dir.path().join("copy").display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "skopeo copy {tag}: {}", text(&o));
    }

    // RFC 6979: signing again with the same key changes nothing.
    let before = std::fs::read(out.join("oci/index.json")).unwrap();
    let o = run(&["sign"], &[&out, Path::new("--key"), &key]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(out.join("oci/index.json")).unwrap(), before);

    // JSON lists every check.
    let o = verify(&out, &key, &["--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["accepted"], true);
    assert!(v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["check"] == "signature" && c["ok"] == true));
}

/// The key ids the DSSE envelopes among a layout's blobs name.
fn envelope_keyids(out: &Path) -> std::collections::BTreeSet<String> {
    let mut ids = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(out.join("oci/blobs/sha256")).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if v.get("payloadType").is_some() {
            for sig in v["signatures"].as_array().unwrap() {
                ids.insert(sig["keyid"].as_str().unwrap().to_string());
            }
        }
    }
    ids
}

#[test]
fn an_external_sign_command_signs_and_a_bad_one_is_refused() {
    let (dir, out, key) = signed_copy();
    // Re-sign through openssl, as an HSM wrapper would: payload in, DER signature out.
    let other = dir.path().join("hsm.key");
    assert!(run(&["keygen", "-o"], &[&other]).status.success());
    let cmd = format!("openssl dgst -sha256 -sign {}", other.display());
    let o = run(
        &["sign"],
        &[&out, Path::new("--sign-command"), Path::new(&cmd)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(verify(&out, &other, &[]).status.success());
    assert_rejected(
        &verify(&out, &key, &[]),
        &["does not verify with any of the 1 given key"],
    );

    // With the command's public key: the attestation names its key id (the one a key file
    // gives), and a command that signs with another key is refused before anything is written.
    let before = envelope_keyids(&out);
    let other_pub = dir.path().join("hsm.key.pub");
    let sign_checked = |public: &Path| {
        run(
            &["sign"],
            &[
                &out,
                Path::new("--sign-command"),
                Path::new(&cmd),
                Path::new("--public-key"),
                public,
            ],
        )
    };
    let o = sign_checked(&other_pub);
    assert!(o.status.success(), "{}", text(&o));
    let named: Vec<String> = envelope_keyids(&out).difference(&before).cloned().collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0].len(), 64, "{named:?}");
    let (_d2, out2, _) = signed_copy();
    let o = run(&["sign"], &[&out2, Path::new("--key"), &other]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(envelope_keyids(&out2).contains(&named[0]));
    assert!(verify(&out, &other, &[]).status.success());
    let unsigned = std::fs::read(out.join("oci/index.json")).unwrap();
    let o = sign_checked(&key.with_extension("key.pub"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("does not verify with") && err.contains("another key"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("oci/index.json")).unwrap(), unsigned);

    let before = std::fs::read(out.join("oci/index.json")).unwrap();
    let o = run(
        &["sign"],
        &[
            &out,
            Path::new("--sign-command"),
            Path::new("echo not-a-signature"),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("did not print an ASN.1 DER ECDSA P-256 signature"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(out.join("oci/index.json")).unwrap(),
        before,
        "layout untouched"
    );
}

#[test]
fn an_exposed_private_key_is_refused_and_never_printed() {
    let (_dir, out, key) = signed_copy();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read(out.join("oci/index.json")).unwrap();
    let o = run(&["sign"], &[&out, Path::new("--key"), &key]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("readable by group or others (mode 0644)"),
        "{}",
        text(&o)
    );
    let pem = std::fs::read_to_string(&key).unwrap();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text(&o).contains(line), "key material in the output");
    }
    assert_eq!(std::fs::read(out.join("oci/index.json")).unwrap(), before);
}

#[test]
fn tampering_is_refused_naming_the_broken_thing() {
    type Tamper = fn(&Path, &[String; 5]);
    let cases: Vec<(&str, Tamper, Vec<&str>)> = vec![
        (
            "layer",
            |o, d| flip_byte(o, &d[4]),
            vec!["layer 1 of", "content hashes to"],
        ),
        ("config", |o, d| flip_byte(o, &d[3]), vec!["config of"]),
        (
            "image manifest",
            |o, d| flip_byte(o, &d[0]),
            vec!["image manifest", "content hashes to"],
        ),
        (
            "payload",
            |o, d| flip_byte(o, &d[2]),
            vec!["signature payload"],
        ),
        (
            "signature manifest",
            |o, d| flip_byte(o, &d[1]),
            vec!["signature manifest"],
        ),
        (
            "missing blob",
            |o, d| {
                std::fs::remove_file(
                    o.join("oci/blobs/sha256")
                        .join(d[4].trim_start_matches("sha256:")),
                )
                .unwrap()
            },
            vec!["blob is missing"],
        ),
    ];
    for (name, tamper, needles) in cases {
        let (_dir, out, key) = signed_copy();
        let d = digests(&out);
        tamper(&out, &d);
        let o = verify(&out, &key, &[]);
        assert_rejected(&o, &needles);
        eprintln!("{name}: {}", String::from_utf8_lossy(&o.stdout).trim());
    }
}

/// Runs `kiln verify` with a hang guard: a verify that blocks (on a FIFO, on /dev/zero) is
/// killed after 30 s and the test fails. Returns the output and how long it took.
fn verify_guarded(out: &Path, key: &Path) -> (Output, std::time::Duration) {
    kiln_guarded(&[
        "verify".as_ref(),
        out.as_os_str(),
        "--key".as_ref(),
        pub_of(key).as_os_str(),
    ])
}

/// Runs kiln with `args`, failing the test if it has not finished after 30 seconds.
fn kiln_guarded(args: &[&std::ffi::OsStr]) -> (Output, std::time::Duration) {
    let start = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("kiln {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), start.elapsed())
}

/// What a blob is, not only what it hashes to: a FIFO, a device, a symlink (to /dev/zero, to
/// another blob, out of the layout), a sparse file of 4 GiB and a FIFO pre-filled with the real
/// manifest (the two-faced blob: an implementation that opens twice hashes one content and
/// parses another) are each refused at once, with one line naming the blob.
#[test]
fn verify_refuses_blobs_that_are_not_plain_files_at_once() {
    type Plant = fn(&Path, &Path);
    let cases: Vec<(&str, usize, Plant)> = vec![
        ("layer FIFO", 4, |p, _| {
            std::fs::remove_file(p).unwrap();
            let st = Command::new("mkfifo").arg(p).status().unwrap();
            assert!(st.success());
        }),
        ("layer symlink to /dev/zero", 4, |p, _| {
            std::fs::remove_file(p).unwrap();
            std::os::unix::fs::symlink("/dev/zero", p).unwrap();
        }),
        ("layer character device", 4, |p, _| {
            std::fs::remove_file(p).unwrap();
            let st = Command::new("mknod")
                .arg(p)
                .args(["c", "1", "5"])
                .status()
                .unwrap();
            assert!(st.success());
        }),
        ("layer symlink out of the layout", 4, |p, dir| {
            let copy = dir.join("elsewhere");
            std::fs::copy(p, &copy).unwrap();
            std::fs::remove_file(p).unwrap();
            std::os::unix::fs::symlink(&copy, p).unwrap();
        }),
        ("config symlink to another blob", 3, |p, _| {
            let copy = p.with_extension("same");
            std::fs::copy(p, &copy).unwrap();
            std::fs::remove_file(p).unwrap();
            std::os::unix::fs::symlink(copy.file_name().unwrap(), p).unwrap();
        }),
        ("layer sparse 4 GiB", 4, |p, _| {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(4 << 30).unwrap();
        }),
        ("two-faced manifest", 0, |p, _| {
            let real = std::fs::read(p).unwrap();
            std::fs::remove_file(p).unwrap();
            let st = Command::new("mkfifo").arg(p).status().unwrap();
            assert!(st.success());
            // Held open read-write (never blocks) and pre-filled with the true bytes.
            let mut w = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .unwrap();
            std::io::Write::write_all(&mut w, &real).unwrap();
            std::mem::forget(w);
        }),
    ];
    for (name, which, plant) in cases {
        let (dir, out, key) = signed_copy();
        let d = digests(&out);
        let hex = d[which].trim_start_matches("sha256:").to_string();
        plant(&out.join("oci/blobs/sha256").join(&hex), dir.path());
        let (o, took) = verify_guarded(&out, &key);
        eprintln!(
            "{name}: {:.2} s: {}",
            took.as_secs_f64(),
            String::from_utf8_lossy(&o.stdout).trim()
        );
        assert_rejected(&o, &[&hex[..12]]);
        // kiln check reads the same layout as the OTA server gets it: refused as fast, named
        // (it reads the manifest and the layers, not the config).
        if which == 3 {
            continue;
        }
        let board = std::fs::read_dir(built().0.path().join("recipe/boards"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let (o, took) = kiln_guarded(&[
            "check".as_ref(),
            out.join("oci").as_os_str(),
            "--board".as_ref(),
            board.as_os_str(),
        ]);
        eprintln!("kiln check, {name}: {:.2} s", took.as_secs_f64());
        assert!(!o.status.success(), "kiln check accepted {name}");
        assert!(
            text(&o).contains(&hex[..12]) && text(&o).trim().lines().count() == 1,
            "{name}: {}",
            text(&o)
        );
    }
}

#[test]
fn wrong_key_wrong_board_rollback_and_extra_blobs() {
    let (dir, out, key) = signed_copy();
    let other = dir.path().join("other.key");
    assert!(run(&["keygen", "-o"], &[&other]).status.success());
    assert_rejected(
        &verify(&out, &other, &[]),
        &["does not verify with any of the 1 given key"],
    );
    // Any one trusted key suffices.
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("verify")
        .arg(&out)
        .arg("--key")
        .arg(pub_of(&other))
        .arg("--key")
        .arg(pub_of(&key))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    assert_rejected(
        &verify(&out, &key, &["--compatible", "acme,other-robot"]),
        &["\"acme,other-robot\" is not among the image's"],
    );
    for installed in ["1.0", "1.1", "2.0~rc1"] {
        assert_rejected(
            &verify(&out, &key, &["--installed-version", installed]),
            &["not newer than the installed", "rollback"],
        );
    }

    // An extra blob is reported, not fatal.
    std::fs::write(out.join("oci/blobs/sha256").join("0".repeat(64)), b"stray").unwrap();
    let o = verify(&out, &key, &["--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["verdict"]
            .as_str()
            .unwrap()
            .contains("1 unreferenced blob"),
        "{v}"
    );

    // An unsigned image is refused; a missing layout cannot be verified at all (exit 2).
    let plain = &built().1;
    assert_rejected(&verify(plain, &key, &[]), &["no signature for"]);
    let o = verify(&dir.path().join("nowhere"), &key, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// Signs a copy of `out` with `key` (made if missing) into `dir/name`.
pub(crate) fn sign_copy(out: &Path, dir: &Path, name: &str, key: &Path) -> PathBuf {
    let copy = dir.join(name);
    assert!(Command::new("cp")
        .arg("-a")
        .arg(out)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    if !key.exists() {
        assert!(run(&["keygen", "-o"], &[key]).status.success());
    }
    let o = run(&["sign"], &[&copy, Path::new("--key"), key]);
    assert!(o.status.success(), "{}", text(&o));
    copy
}

fn release(out: &Path, key: &Path, repo: &Path, extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.arg("release")
        .arg(out)
        .arg("--key")
        .arg(key)
        .arg("--to")
        .arg(repo)
        .args(extra);
    c.output().unwrap()
}

fn verify_repo(repo: &Path, key: &Path, extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.arg("verify")
        .arg(repo)
        .arg("--root")
        .arg(repo.join("metadata/root.json"))
        .arg("--key")
        .arg(pub_of(key))
        .args(extra);
    c.output().unwrap()
}

#[test]
fn releases_make_a_tuf_repository_that_python_tuf_and_kiln_verify() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.key");
    let v10 = sign_copy(&built().1, dir.path(), "v10", &key);
    let v11 = sign_copy(built_v11(), dir.path(), "v11", &key);
    let repo = dir.path().join("repo");

    let o = release(&v10, &key, &repo, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("targets version 1"), "{}", text(&o));
    let o = verify_repo(
        &repo,
        &key,
        &["--compatible", "kiln,test", "--installed-version", "0.9"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("version 1.0"),
        "{}",
        text(&o)
    );

    // Versions only go up: the same version again is refused and leaves the repository alone.
    let targets_before = std::fs::read(repo.join("metadata/targets.json")).unwrap();
    let o = release(&v10, &key, &repo, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is not newer"), "{}", text(&o));
    assert_eq!(
        std::fs::read(repo.join("metadata/targets.json")).unwrap(),
        targets_before
    );
    assert!(repo
        .join("targets/test-board/fixture-1.0.oci.tar")
        .is_file());

    // 1.1 revokes everything below it.
    let o = release(&v11, &key, &repo, &["--min-version", "1.1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("targets version 2"), "{}", text(&o));
    let o = verify_repo(&repo, &key, &["--installed-version", "1.0"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("version 1.1"),
        "newest by default: {}",
        text(&o)
    );
    let o = verify_repo(&repo, &key, &["--target", "test-board/fixture-1.0.oci.tar"]);
    assert_rejected(&o, &["below min_version 1.1", "revoked"]);

    // The reference TUF client agrees (python-tuf from PyPI, no kiln code).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/verify-tuf");
    let o = Command::new("bash")
        .arg(&script)
        .arg(&repo)
        .arg(repo.join("metadata/root.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("test-board/fixture-1.1.oci.tar verified"),
        "{}",
        text(&o)
    );

    // skopeo reads the released archive.
    let o = Command::new("skopeo")
        .arg("inspect")
        .arg(format!(
            "oci-archive:{}:1.1",
            repo.join("targets/test-board/fixture-1.1.oci.tar")
                .display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn release_tampering_and_expiry_are_refused_naming_the_broken_thing() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.key");
    let v10 = sign_copy(&built().1, dir.path(), "v10", &key);
    let fresh = |name: &str, extra: &[&str]| {
        let repo = dir.path().join(name);
        let o = release(&v10, &key, &repo, extra);
        assert!(o.status.success(), "{}", text(&o));
        repo
    };

    // One byte of the signed targets metadata.
    let repo = fresh("meta", &[]);
    let p = repo.join("metadata/targets.json");
    let t = std::fs::read_to_string(&p)
        .unwrap()
        .replacen("\"1.0\"", "\"9.0\"", 1);
    std::fs::write(&p, t).unwrap();
    assert_rejected(
        &verify_repo(&repo, &key, &[]),
        &["targets.json", "valid signature"],
    );

    // One byte of the archive.
    let repo = fresh("archive", &[]);
    let a = repo.join("targets/test-board/fixture-1.0.oci.tar");
    let mut bytes = std::fs::read(&a).unwrap();
    let i = bytes.len() - 2000;
    bytes[i] ^= 1;
    std::fs::write(&a, bytes).unwrap();
    assert_rejected(
        &verify_repo(&repo, &key, &[]),
        &["fixture-1.0.oci.tar", "differs from targets.json"],
    );

    // Expired metadata.
    let repo = fresh("expired", &["--expires-days", "0"]);
    assert_rejected(
        &verify_repo(&repo, &key, &[]),
        &["timestamp.json", "expired at"],
    );

    // A repository signed by another key than the pinned root trusts.
    let repo = fresh("pinned", &[]);
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other = other_dir.join("k");
    let v10_other = sign_copy(&built().1, &other_dir, "v10", &other);
    let other_repo = other_dir.join("repo");
    assert!(release(&v10_other, &other, &other_repo, &[])
        .status
        .success());
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("verify")
        .arg(&other_repo)
        .arg("--root")
        .arg(repo.join("metadata/root.json"))
        .arg("--key")
        .arg(pub_of(&key))
        .output()
        .unwrap();
    assert_rejected(&o, &["timestamp.json", "0 valid signature"]);

    // An image not signed by the release key is not released.
    let unsigned = dir.path().join("unsigned");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&built().1)
        .arg(&unsigned)
        .status()
        .unwrap()
        .success());
    let o = release(&unsigned, &key, &dir.path().join("never"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("not released: REJECTED: no signature"),
        "{}",
        text(&o)
    );
    assert!(!dir.path().join("never/metadata/targets.json").exists());
}

#[test]
fn the_sbom_lists_every_deb_validates_as_spdx_and_is_bound_to_the_signature() {
    let (_dir, out, key) = signed_copy();
    let idx = index(&out);
    let image = digests(&out)[0].clone();
    let sbom_entry = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["artifactType"] == "application/spdx+json")
        .expect("an SBOM referrer in index.json")
        .clone();
    assert_eq!(
        sbom_entry["annotations"]["org.opencontainers.image.ref.name"],
        format!("{}.sbom", image.replace(':', "-"))
    );
    let referrer = layout_json(&out, sbom_entry["digest"].as_str().unwrap());
    assert_eq!(referrer["subject"]["digest"], image.as_str());
    let doc_digest = referrer["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let doc = layout_json(&out, &doc_digest);
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");

    // Every .deb of the lock, with its sha256.
    let lock = std::fs::read_to_string(built().0.path().join("recipe/kiln.lock")).unwrap();
    let hashes: Vec<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("sha256 = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert!(!hashes.is_empty());
    let listed: Vec<&str> = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["checksums"][0]["checksumValue"].as_str())
        .collect();
    for h in &hashes {
        assert!(listed.contains(h), "{h} not in the SBOM");
    }

    // The SPDX project's validator accepts it.
    let file = out.join("sbom.spdx.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/validate-spdx");
    let o = Command::new("bash")
        .arg(&script)
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_file(&file).unwrap();

    // The signed payload names the SBOM; a different (self-consistent) SBOM is refused.
    let o = verify(&out, &key, &["--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["check"] == "sbom" && c["ok"] == true),
        "{v}"
    );
    let mut forged = doc.clone();
    forged["packages"].as_array_mut().unwrap().truncate(1);
    let forged_bytes = serde_json::to_vec(&forged).unwrap();
    let put = |bytes: &[u8]| {
        let hex = fixture::sha256(bytes);
        std::fs::write(out.join("oci/blobs/sha256").join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (fd, fs_) = put(&forged_bytes);
    let mut forged_referrer = referrer.clone();
    forged_referrer["layers"][0]["digest"] = fd.into();
    forged_referrer["layers"][0]["size"] = fs_.into();
    let (rd, rs) = put(forged_referrer.to_string().as_bytes());
    let mut idx2 = idx.clone();
    for m in idx2["manifests"].as_array_mut().unwrap() {
        if m["artifactType"] == "application/spdx+json" {
            m["digest"] = rd.clone().into();
            m["size"] = rs.into();
        }
    }
    std::fs::write(out.join("oci/index.json"), idx2.to_string()).unwrap();
    assert_rejected(&verify(&out, &key, &[]), &["the signature names SBOM"]);
}

/// The signed layout's bytes are part of what a release reproduces: signing a fixed
/// layout (image + SBOM referrer, foreign annotations and an extra index field kept) with a
/// fixed key gives these index.json and signature-manifest bytes, whatever reads the layout.
#[test]
fn signing_a_fixed_layout_gives_fixed_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = kiln::digest::sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (config, config_size) =
        put(br#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#);
    let manifest = format!(
        r#"{{"annotations":{{"org.opencontainers.image.title":"robot"}},"config":{{"digest":"{config}","mediaType":"application/vnd.oci.image.config.v1+json","size":{config_size}}},"layers":[],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}}"#
    );
    let (image, image_size) = put(manifest.as_bytes());
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": kiln::image::oci::INDEX_MEDIA_TYPE, "manifests": [{
        "mediaType": kiln::image::oci::MANIFEST_MEDIA_TYPE, "digest": image, "size": image_size,
        "annotations": {kiln::signing::sign::REF_NAME: "1.0", "org.example.z": "kept", "org.example.a": "kept"},
        "platform": {"architecture": "arm64", "os": "linux"},
    }]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    kiln::pipeline::sbom::attach(
        &layout,
        &image,
        &serde_json::json!({"spdxVersion": "SPDX-2.3"}),
        0,
    )
    .unwrap();
    let key = p256::ecdsa::SigningKey::from_slice(&[5u8; 32]).unwrap();
    let signed =
        kiln::signing::sign::sign_layout(&layout, &kiln::signing::sign::KeySigner(key.clone()))
            .unwrap();
    // Signing again replaces the signature with the same bytes.
    assert_eq!(
        kiln::signing::sign::sign_layout(&layout, &kiln::signing::sign::KeySigner(key)).unwrap(),
        signed
    );
    let index_bytes = std::fs::read(layout.join("index.json")).unwrap();
    assert_eq!(
        (
            kiln::digest::sha256_hex(&index_bytes).as_str(),
            signed[0].signature_manifest.as_str()
        ),
        (
            "f976374dacf1c9a1917c2dae97cedc46a8589c5ec1387e0df250f20436fcdd2a",
            "sha256:ef3b80b0ec2af3c5317a1e8c231e17e73e16e2a244746d7f5ea70f7ab00bd5b1"
        ),
        "{}",
        String::from_utf8_lossy(&index_bytes)
    );
}
