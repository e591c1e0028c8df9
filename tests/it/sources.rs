//! `kiln sources` against a fixture archive that publishes its source packages (a Sources
//! index in the signed Release, a clear-signed `.dsc` and a tarball per package): the bundle
//! holds every source package the image's .debs were built from (a binNMU-style `Source: NAME
//! (VERSION)` included), each `.dsc` verified with the archive key and unpacked by Debian's
//! dpkg-source, an index and the extended SBOM (the overlays' files and sdists are
//! ci/example-sources'); the tar is the same bytes twice and again `--offline` with the mirror
//! gone; `--only copyleft` leaves an MIT package out; a Sources index or a .dsc that lies
//! about a tarball is refused in one line and writes nothing.

use crate::fixture::{
    base_packages, build_archive, kiln, text, write_two_board_recipe, ArchiveSpec, Pkg, Signer,
};
use std::path::Path;

const ARCH: &str = "arm64";

fn dep5(license: &str) -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: 2026 Someone\nLicense: {license}\n"
    )
}

fn packages() -> Vec<Pkg> {
    let mut p = base_packages(ARCH);
    p.push(
        Pkg::new("gpl-tool", "1.0-1+b1", ARCH)
            .field("Source", "gpl-src (1.0-1)")
            .file("./usr/share/doc/gpl-tool/copyright", &dep5("GPL-2+"), 0o644),
    );
    p.push(Pkg::new("mit-tool", "2.0-1", ARCH).file(
        "./usr/share/doc/mit-tool/copyright",
        &dep5("MIT"),
        0o644,
    ));
    p
}

/// Builds the fixture recipe against an archive with sources (whose index or .dsc may lie,
/// and whose .dsc files an uploader may have signed).
fn built(
    work: &Path,
    lie_about_source: Option<&str>,
    lie_in_dsc: Option<&str>,
    dsc_signer: Option<&Signer>,
) -> std::path::PathBuf {
    let signer = Signer::new("kiln fixture archive <archive@kiln.invalid>", "never", None);
    let archive = build_archive(
        &work.join("archive"),
        ArchiveSpec {
            sources: true,
            lie_about_source,
            lie_in_dsc,
            dsc_signer,
            ..ArchiveSpec::new("bookworm", ARCH, packages(), &signer)
        },
    );
    let recipe = work.join("recipe");
    archive.write_recipe(&recipe, &["gpl-tool", "mit-tool"], "");
    let o = kiln(&recipe, &work.join("cache"), &["lock"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = kiln(
        &recipe,
        &work.join("cache"),
        &["build", "--locked", "-o", "out"],
    );
    assert!(o.status.success(), "{}", text(&o));
    recipe
}

fn sources(recipe: &Path, cache: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["sources", "out"];
    args.extend_from_slice(extra);
    kiln(recipe, cache, &args)
}

#[test]
fn the_bundle_holds_every_verified_source_and_rebuilds_offline_bit_for_bit() {
    let work = tempfile::tempdir().unwrap();
    let recipe = built(work.path(), None, None, None);
    let cache = work.path().join("cache");

    let o = sources(&recipe, &cache, &["-o", "bundle"]);
    assert!(o.status.success(), "{}", text(&o));
    let bundle = recipe.join("bundle");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("index.json")).unwrap()).unwrap();
    let debian = index["debian"].as_array().unwrap();
    let gpl = debian
        .iter()
        .find(|s| s["source"] == "gpl-src")
        .unwrap_or_else(|| panic!("{index}"));
    // The version comes from the binary's Source field, not its own (1.0-1+b1).
    assert_eq!(gpl["version"], "1.0-1");
    assert_eq!(gpl["binaries"], serde_json::json!(["gpl-tool:arm64"]));
    assert_eq!(gpl["licenses"], serde_json::json!(["GPL-2.0-or-later"]));
    assert!(
        gpl["dsc_signature"]
            .as_str()
            .unwrap()
            .starts_with("verified: "),
        "{gpl}"
    );
    // Every locked .deb's source is there, each file with the digest the index names.
    let locked = std::fs::read_to_string(recipe.join("kiln.lock"))
        .unwrap()
        .matches("[[package]]")
        .count();
    let binaries: usize = debian
        .iter()
        .map(|s| s["binaries"].as_array().unwrap().len())
        .sum();
    assert_eq!(binaries, locked, "{index}");
    for s in debian {
        for f in s["files"].as_array().unwrap() {
            let path = bundle
                .join(s["directory"].as_str().unwrap())
                .join(f["name"].as_str().unwrap());
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                kiln::digest::sha256_hex(&bytes),
                f["sha256"],
                "{}",
                path.display()
            );
        }
    }
    // Debian's own tool unpacks it, checking the files against the .dsc.
    let unpacked = work.path().join("unpacked");
    let o = std::process::Command::new("dpkg-source")
        .args(["--no-copy", "-x"])
        .arg(bundle.join("debian/gpl-src_1.0-1/gpl-src_1.0-1.dsc"))
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read_to_string(unpacked.join("README"))
        .unwrap()
        .contains("the source of gpl-src 1.0-1"));
    // The SBOM: gpl-tool is GENERATED_FROM its source package.
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("sbom.spdx.json")).unwrap()).unwrap();
    assert!(
        sbom["relationships"].as_array().unwrap().iter().any(|r| {
            r["spdxElementId"] == "SPDXRef-deb-gpl-tool-arm64"
                && r["relationshipType"] == "GENERATED_FROM"
                && r["relatedSpdxElement"] == "SPDXRef-debsrc-gpl-src-1.0-1"
        }),
        "{sbom}"
    );

    // The tar: the same bytes twice, and offline with the mirror gone.
    for name in ["a.tar", "b.tar"] {
        let o = sources(&recipe, &cache, &["-o", name]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let a = std::fs::read(recipe.join("a.tar")).unwrap();
    assert_eq!(a, std::fs::read(recipe.join("b.tar")).unwrap());
    std::fs::rename(
        work.path().join("archive/mirror"),
        work.path().join("archive/gone"),
    )
    .unwrap();
    let o = sources(&recipe, &cache, &["-o", "online.tar"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!recipe.join("online.tar").exists());
    let o = sources(&recipe, &cache, &["-o", "offline.tar", "--offline"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(a == std::fs::read(recipe.join("offline.tar")).unwrap());

    // Copyleft only: the MIT package's source is left out and named.
    let o = sources(
        &recipe,
        &cache,
        &["-o", "copyleft", "--offline", "--only", "copyleft"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(recipe.join("copyleft/index.json")).unwrap())
            .unwrap();
    let kept: Vec<&str> = index["debian"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert!(
        kept.contains(&"gpl-src") && !kept.contains(&"mit-tool"),
        "{index}"
    );
    assert_eq!(
        index["excluded_by_policy"][0]["source"], "mit-tool",
        "{index}"
    );
}

#[test]
fn an_index_or_dsc_that_lies_about_a_file_is_refused_and_nothing_is_written() {
    for (lie_about_source, lie_in_dsc, needle) in [
        (Some("gpl-src"), None, "gpl-src_1.0-1.tar.gz"),
        (None, Some("gpl-src"), "other files or digests"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let recipe = built(work.path(), lie_about_source, lie_in_dsc, None);
        let o = sources(&recipe, &work.path().join("cache"), &["-o", "bundle.tar"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(!recipe.join("bundle.tar").exists());
        let leftovers: Vec<_> = std::fs::read_dir(&recipe)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp") || n.starts_with(".kiln"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

/// The fingerprints of a signer's primary key and subkeys, in gpg's order.
fn fingerprints(signer: &Signer) -> Vec<String> {
    String::from_utf8(signer.gpg(&["--with-colons", "--list-keys"]))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("fpr:::::::::"))
        .map(|l| l.trim_end_matches(':').to_string())
        .collect()
}

/// The `.dsc` files signed by an uploader with a signing subkey, as Debian developers sign,
/// not by the archive: without their keyring each is "not verified", saying why; with it,
/// verified by the subkey, and still after the subkey was superseded a year later (a
/// retirement does not reach back, RFC 9580 5.2.3.31); never once the whole key was revoked
/// as compromised. An uploaders' keyring that is not there, or not a keyring, is refused in
/// one line naming it, and nothing is written.
#[test]
fn a_dsc_signed_by_an_uploader_is_verified_with_their_keyring_unless_compromised() {
    let work = tempfile::tempdir().unwrap();
    let mut uploader = Signer::new(
        "Uploader <uploader@kiln.invalid>",
        "never",
        Some("20240101T000000"),
    );
    let primary = fingerprints(&uploader)[0].clone();
    uploader.gpg_fed(
        Some("20240102T000000"),
        &[
            "--passphrase",
            "",
            "--quick-add-key",
            &primary,
            "ed25519",
            "sign",
            "never",
        ],
        "",
    );
    let subkey = fingerprints(&uploader)[1].clone();
    // gpg signs with the newest signing subkey.
    uploader.fake_time = Some("20240201T000000".into());
    let recipe = built(work.path(), None, None, Some(&uploader));
    let cache = work.path().join("cache");

    let keyring = |name: &str| {
        let path = work.path().join(name);
        uploader.export(&path);
        path
    };
    let current = keyring("uploader.gpg");
    let edit = |time: &str, answers: &str| {
        uploader.gpg_fed(
            Some(time),
            &[
                "--passphrase",
                "",
                "--command-fd",
                "0",
                "--edit-key",
                &primary,
            ],
            answers,
        );
    };
    // Subkey 1 revoked in 2025, reason 2: "key is superseded".
    edit(
        "20250101T000000",
        "key 1\nrevkey\ny\n2\nsuperseded\n\ny\nsave\n",
    );
    let superseded = keyring("superseded.gpg");
    // The whole key revoked in 2025, reason 1: "key has been compromised".
    edit("20250201T000000", "revkey\ny\n1\nlost\n\ny\nsave\n");
    let only_compromised = keyring("only-compromised.gpg");
    // Beside another uploader's key: a keyring whose every key was revoked is refused whole.
    let compromised = work.path().join("compromised.gpg");
    let other = Signer::new("Other <other@kiln.invalid>", "never", None);
    other.export(&compromised);
    let mut both = std::fs::read(&only_compromised).unwrap();
    both.extend(std::fs::read(&compromised).unwrap());
    std::fs::write(&compromised, both).unwrap();

    let verdict = |out: &str, keyrings: &[&Path]| -> String {
        let mut args = vec!["-o", out, "--offline"];
        for k in keyrings {
            args.extend(["--dsc-keyring", k.to_str().unwrap()]);
        }
        let o = sources(&recipe, &cache, &args);
        assert!(o.status.success(), "{}", text(&o));
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(recipe.join(out).join("index.json")).unwrap())
                .unwrap();
        index["debian"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"] == "gpl-src")
            .unwrap_or_else(|| panic!("{index}"))["dsc_signature"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Online once, to fill the cache; the board's keyring alone does not hold the uploader.
    let o = sources(&recipe, &cache, &["-o", "first"]);
    assert!(o.status.success(), "{}", text(&o));
    let alone = verdict("alone", &[]);
    assert!(
        alone.starts_with("not verified (in no keyring: ")
            && alone.contains(&format!("signature by {subkey} does not verify")),
        "{alone}"
    );
    assert_eq!(
        verdict("current", &[&current]),
        format!("verified: {subkey} (uploader.gpg)")
    );
    assert_eq!(
        verdict("superseded", &[&compromised, &superseded]),
        format!("verified: {subkey} (superseded.gpg)")
    );
    let revoked = verdict("revoked", &[&compromised]);
    assert!(
        revoked.contains(&format!(
            "compromised.gpg: key {subkey} was revoked by its owner at 2025-02-01T00:00:00Z"
        )),
        "{revoked}"
    );

    std::fs::write(work.path().join("junk.gpg"), b"not a keyring").unwrap();
    for (keyring, needle) in [
        (work.path().join("absent.gpg"), "absent.gpg"),
        (
            work.path().join("junk.gpg"),
            "junk.gpg: holds no valid OpenPGP public key",
        ),
        (
            only_compromised,
            "only-compromised.gpg: every key it holds was revoked",
        ),
    ] {
        let o = sources(
            &recipe,
            &cache,
            &[
                "-o",
                "refused.tar",
                "--offline",
                "--dsc-keyring",
                keyring.to_str().unwrap(),
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(!recipe.join("refused.tar").exists());
    }
}

/// A recipe listing two boards: `kiln sources OUT --board NAME` bundles that board's image
/// (OUT/BOARD, its own lock: `:armhf` binaries for the armhf board), the same bundle as when
/// given OUT/BOARD itself; without --board, or with a board the recipe lacks, it is refused
/// naming the boards there are, and nothing is written.
#[test]
fn a_several_board_build_bundles_the_sources_of_the_board_named() {
    let work = tempfile::tempdir().unwrap();
    let signer = Signer::new("kiln fixture archive <archive@kiln.invalid>", "never", None);
    let recipe = work.path().join("recipe");
    write_two_board_recipe(work.path(), &recipe, &signer, true);
    let cache = work.path().join("cache");
    let o = kiln(&recipe, &cache, &["build", "-o", "out"]);
    assert!(o.status.success(), "{}", text(&o));

    for (args, needle) in [
        (
            vec!["sources", "out", "-o", "bundle"],
            "lists 2 boards (robot-arm64, robot-armhf); name the one",
        ),
        (
            vec!["sources", "out", "--board", "robot-riscv", "-o", "bundle"],
            "has no board named 'robot-riscv' (its boards: robot-arm64, robot-armhf)",
        ),
    ] {
        let o = kiln(&recipe, &cache, &args);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(!recipe.join("bundle").exists());
    }

    let read_index = |dir: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(recipe.join(dir).join("index.json")).unwrap())
            .unwrap()
    };
    let o = kiln(
        &recipe,
        &cache,
        &["sources", "out", "--board", "robot-armhf", "-o", "armhf"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let armhf = read_index("armhf");
    let binaries: Vec<String> = armhf["debian"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["binaries"].as_array().unwrap().clone())
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    assert!(!binaries.is_empty(), "{armhf}");
    assert!(
        binaries
            .iter()
            .all(|b| b.ends_with(":armhf") || b.ends_with(":all")),
        "{binaries:?}"
    );
    // The image bundled is the armhf board's, as its layout lists it.
    let layout: serde_json::Value = serde_json::from_slice(
        &std::fs::read(recipe.join("out/robot-armhf/oci/index.json")).unwrap(),
    )
    .unwrap();
    assert!(
        layout["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["digest"] == armhf["image"]),
        "{armhf}"
    );
    // Given OUT/BOARD itself: the same bundle.
    let o = kiln(
        &recipe,
        &cache,
        &[
            "sources",
            "out/robot-armhf",
            "--board",
            "robot-armhf",
            "-o",
            "direct",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read_index("direct"), armhf);
    // The other board's bundle is another image, from its own lock.
    let o = kiln(
        &recipe,
        &cache,
        &["sources", "out", "--board", "robot-arm64", "-o", "arm64"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let arm64 = read_index("arm64");
    assert_ne!(arm64["image"], armhf["image"]);
    assert_ne!(arm64["lock"], armhf["lock"]);
}
