//! Signing and verification end to end: keys from `kiln keygen`, a fixture image signed with
//! `kiln sign` (and through an external command), checked by `kiln verify`, by openssl alone
//! (ci/verify-openssl), and copied by skopeo; then the tamper matrix, each case refused with a
//! message naming the broken thing.

mod fixture;

use fixture::{base_packages, build_archive, kiln, stderr, ArchiveSpec, Signer};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// A built, unsigned fixture layout (built once) and the directory holding it.
fn built() -> &'static (tempfile::TempDir, PathBuf) {
    static BUILT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let work = tempfile::tempdir().unwrap();
        let signer = Signer::new("kiln fixture archive <archive@kiln.invalid>", "never", None);
        let archive = build_archive(
            &work.path().join("archive"),
            ArchiveSpec::new("bookworm", "arm64", base_packages("arm64"), &signer),
        );
        let recipe = work.path().join("recipe");
        archive.write_recipe(&recipe, &["hello"], "");
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

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh copy of the built image, signed with a new key; returns (dir, out, key base).
fn signed_copy() -> (tempfile::TempDir, PathBuf, PathBuf) {
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

fn pub_of(key: &Path) -> PathBuf {
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
