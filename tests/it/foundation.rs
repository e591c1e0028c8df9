//! End-to-end tests of the foundation: lock, fetch, compose and pack against fixture archives the
//! tests generate (see `fixture`), run through the real `kiln` binary. Offline by construction:
//! mirrors are `file://` directories or a loopback HTTP server.

use crate::fixture;
#[path = "fixture/hostile_tree.rs"]
mod hostile_tree;

use fixture::{
    base_packages, build_archive, kiln, stderr, Archive, ArchiveSpec, Entry, Pkg, Signer,
};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ARCH: &str = "arm64";

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "kiln failed ({:?}):\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

/// Asserts exit code 1 and a single-line error mentioning every needle.
fn assert_refused(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit 1, got {:?}: {err}",
        o.status.code()
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line of reason, got: {err}");
    for n in needles {
        assert!(err.contains(n), "reason lacks '{n}': {err}");
    }
}

fn signer() -> Signer {
    Signer::new("kiln fixture archive <archive@kiln.invalid>", "never", None)
}

fn standard_archive(dir: &Path, signer: &Signer, packages: Vec<Pkg>) -> Archive {
    build_archive(dir, ArchiveSpec::new("bookworm", ARCH, packages, signer))
}

/// The standard fixture most tests start from: a signed bookworm archive of the base packages
/// plus `extra` under a fresh WORK/archive, a recipe at WORK/r asking for `request`, and
/// WORK/cache for the cache. `work` owns the directory, so keep it bound while testing.
struct Standard {
    work: tempfile::TempDir,
    signer: Signer,
    archive: Archive,
    recipe: PathBuf,
    cache: PathBuf,
}

fn standard(extra: Vec<Pkg>, request: &[&str]) -> Standard {
    let work = tempfile::tempdir().unwrap();
    let signer = signer();
    let mut packages = base_packages(ARCH);
    packages.extend(extra);
    let archive = standard_archive(&work.path().join("archive"), &signer, packages);
    let recipe = work.path().join("r");
    archive.write_recipe(&recipe, request, "");
    let cache = work.path().join("cache");
    Standard {
        work,
        signer,
        archive,
        recipe,
        cache,
    }
}

/// A tar entry of an image layer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    kind: char,
    mode: u32,
    uid: u64,
    mtime: u64,
    data: Vec<u8>,
    link: String,
}

struct Image {
    manifest_digest: String,
    index: serde_json::Value,
    config: serde_json::Value,
    entries: BTreeMap<String, Item>,
    order: Vec<String>,
}

fn read_image(layout: &Path) -> Image {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mdesc = &index["manifests"][0];
    let digest = mdesc["digest"].as_str().unwrap().to_string();
    let blob = |d: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&digest)).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let layer = &manifest["layers"][0];
    let bytes = blob(layer["digest"].as_str().unwrap());
    let reader: Box<dyn Read> = match layer["mediaType"].as_str().unwrap() {
        "application/vnd.oci.image.layer.v1.tar+zstd" => {
            Box::new(zstd::stream::read::Decoder::new(&bytes[..]).unwrap())
        }
        "application/vnd.oci.image.layer.v1.tar+gzip" => {
            Box::new(flate2::read::GzDecoder::new(&bytes[..]))
        }
        other => panic!("unexpected media type {other}"),
    };
    let mut raw_tar = Vec::new();
    let mut reader = reader;
    reader.read_to_end(&mut raw_tar).unwrap();
    assert_eq!(
        format!("sha256:{}", kiln::digest::sha256_hex(&raw_tar)),
        config["rootfs"]["diff_ids"][0].as_str().unwrap(),
        "diff_id is the digest of the uncompressed layer"
    );
    let mut archive = tar::Archive::new(&raw_tar[..]);
    let mut entries = BTreeMap::new();
    let mut order = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Regular => 'f',
            _ => '?',
        };
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        assert!(
            h.username().unwrap().unwrap_or("").is_empty(),
            "numeric owners only"
        );
        order.push(path.clone());
        entries.insert(
            path,
            Item {
                kind,
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                mtime: h.mtime().unwrap(),
                data,
                link,
            },
        );
    }
    Image {
        manifest_digest: digest,
        index,
        config,
        entries,
        order,
    }
}

fn status_of(image: &Image) -> String {
    String::from_utf8(image.entries["var/lib/dpkg/status"].data.clone()).unwrap()
}

#[test]
fn lock_build_and_inspect_a_fixture_image() {
    let fx = standard(vec![], &["hello"]);
    let (work, archive, recipe, cache) = (&fx.work, &fx.archive, &fx.recipe, &fx.cache);

    assert_ok(&kiln(recipe, cache, &["lock"]));
    let lock = std::fs::read_to_string(recipe.join("kiln.lock")).unwrap();
    let names: Vec<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    // Essential + required + apt, the or-group's first choice, the virtual package through its
    // required provider, and the requested package; not the unrelated or alternative ones.
    assert_eq!(
        names,
        [
            "apt",
            "base-files",
            "debian-archive-keyring",
            "gpgv",
            "hello",
            "libc6",
            "mawk"
        ]
    );
    let inrelease = std::fs::read(archive.dists().join("InRelease")).unwrap();
    assert!(lock.contains(&format!(
        "release = \"sha256:{}\"",
        fixture::sha256(&inrelease)
    )));

    assert_ok(&kiln(recipe, cache, &["build", "--locked", "-o", "out"]));
    let layout = recipe.join("out/oci");
    let image = read_image(&layout);

    // OCI metadata.
    let ann = &image.index["manifests"][0]["annotations"];
    assert_eq!(ann["org.opencontainers.image.ref.name"], "1.0");
    assert_eq!(
        ann["org.opencontainers.image.created"],
        "2023-06-10T08:54:14Z"
    );
    assert_eq!(ann["dev.kiln.board"], "test-board");
    assert_eq!(ann["dev.kiln.compatible"], r#"["kiln,test"]"#);
    let lock_digest = format!("sha256:{}", fixture::sha256(lock.as_bytes()));
    assert_eq!(ann["dev.kiln.lock.digest"], lock_digest.as_str());
    assert_eq!(
        image.index["manifests"][0]["platform"]["architecture"],
        "arm64"
    );
    assert_eq!(image.index["manifests"][0]["platform"]["variant"], "v8");
    assert_eq!(image.config["architecture"], "arm64");
    assert_eq!(
        std::fs::read_to_string(layout.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );

    // The tree: merged /usr, files through the /bin and /lib symlinks, hard link kept.
    let e = &image.entries;
    assert_eq!(e["bin"].kind, 'l');
    assert_eq!(e["bin"].link, "usr/bin");
    assert_eq!(e["lib"].link, "usr/lib");
    // The hard link pair is stored once, then as a link to the first in sorted order.
    assert_eq!(e["usr/bin/sh-alias"].kind, 'f');
    assert_eq!(e["usr/bin/sh-alias"].mode, 0o755);
    assert_eq!(e["usr/bin/sh-alias"].data, b"#!/bin/sh\n");
    assert_eq!(e["usr/bin/sh-like"].kind, 'h');
    assert_eq!(e["usr/bin/sh-like"].link, "usr/bin/sh-alias");
    assert_eq!(e["usr/lib/ld-linux.so"].data, b"loader\n");
    assert_eq!(e["usr/bin/awk"].kind, 'l');
    assert_eq!(e["tmp"].mode, 0o1777);
    assert!(e.values().all(|i| i.uid == 0));
    // mtimes clamped to SOURCE_DATE_EPOCH (the Release date), never the build time.
    assert!(e.values().all(|i| i.mtime <= 1_686_387_254));
    assert_eq!(e["usr/bin/hello"].mtime, 1_500_000_000);
    // Sorted, parents first.
    let mut sorted = image.order.clone();
    sorted.sort();
    assert_eq!(image.order.len(), sorted.len());
    assert!(
        image.order.iter().position(|p| p == "usr").unwrap()
            < image.order.iter().position(|p| p == "usr/bin").unwrap()
    );

    // The dpkg database: the host's dpkg reads it and sees every package unpacked.
    let status = status_of(&image);
    assert_eq!(status.matches("Status: install ok unpacked").count(), 7);
    assert!(status.contains(
        "Package: base-files\nEssential: yes\nStatus: install ok unpacked\nPriority: required\n"
    ));
    let issue_md5 = md5_of(b"Debian GNU/Linux 12\n");
    assert!(
        status.contains(&format!("Conffiles:\n /etc/issue {issue_md5}\n")),
        "{status}"
    );
    assert_eq!(
        e["var/lib/dpkg/info/libc6:arm64.list"].data,
        b"/.\n/usr\n/usr/lib\n/usr/lib/libc.so.6\n/lib\n/lib/ld-linux.so\n"
    );
    assert!(e.contains_key("var/lib/dpkg/info/libc6:arm64.postinst"));
    assert_eq!(e["var/lib/dpkg/info/base-files.preinst"].mode, 0o755);
    assert_eq!(e["var/lib/dpkg/info/format"].data, b"1\n");
    assert_eq!(
        e["var/lib/dpkg/triggers/File"].data,
        b"/usr/share/apt-interest apt/noawait\n"
    );
    assert_eq!(e["var/lib/dpkg/triggers/apt-cache"].data, b"apt\n");
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("var/lib/dpkg")).unwrap();
    std::fs::write(rootfs.join("var/lib/dpkg/status"), &status).unwrap();
    let q = Command::new("dpkg-query")
        .args([
            "--admindir",
            rootfs.join("var/lib/dpkg").to_str().unwrap(),
            "-W",
            "-f",
            "${db:Status-Abbrev}${Package}=${Version}\n",
        ])
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let listed = String::from_utf8(q.stdout).unwrap();
    assert!(listed.contains("iU libc6=2.36-9+deb12u4"), "{listed}");
    assert_eq!(listed.lines().count(), 7);

    // The build left nothing behind but its check record, the layout and its provenance.
    let mut leftovers: Vec<_> = std::fs::read_dir(recipe.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    leftovers.sort();
    assert_eq!(
        leftovers,
        vec![
            std::ffi::OsString::from("check.json"),
            std::ffi::OsString::from("oci"),
            std::ffi::OsString::from("provenance.json")
        ]
    );
}

fn md5_of(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

#[test]
fn fixture_debs_are_real_debs() {
    let work = tempfile::tempdir().unwrap();
    let deb = work.path().join("x.deb");
    std::fs::write(&deb, base_packages(ARCH)[1].build()).unwrap();
    let info = Command::new("dpkg-deb")
        .arg("--field")
        .arg(&deb)
        .arg("Package")
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&info.stdout).trim(), "base-files");
    let contents = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&contents.stdout).contains("./etc/issue"));
}

#[test]
fn same_lock_gives_the_same_digest_in_another_directory_and_time() {
    let work = tempfile::tempdir().unwrap();
    let signer = signer();
    let archive = standard_archive(&work.path().join("archive"), &signer, base_packages(ARCH));
    let a = work.path().join("a");
    archive.write_recipe(&a, &["hello"], "");
    let cache = work.path().join("cache");
    assert_ok(&kiln(&a, &cache, &["lock"]));
    assert_ok(&kiln(&a, &cache, &["build", "--locked", "-o", "out"]));
    let first = read_image(&a.join("out/oci")).manifest_digest;

    // Another directory, another cache, a second later, offline from a fresh fetch.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = work.path().join("elsewhere/b");
    std::fs::create_dir_all(&b).unwrap();
    for f in ["kiln.toml", "kiln.lock"] {
        std::fs::copy(a.join(f), b.join(f)).unwrap();
    }
    std::fs::create_dir_all(b.join("boards")).unwrap();
    std::fs::copy(a.join("boards/test.toml"), b.join("boards/test.toml")).unwrap();
    let cache2 = work.path().join("cache2");
    assert_ok(&kiln(
        &b,
        &cache2,
        &["build", "--locked", "-o", "other-out"],
    ));
    assert_ok(&kiln(
        &b,
        &cache2,
        &["build", "--locked", "--offline", "-o", "third"],
    ));
    assert_eq!(read_image(&b.join("other-out/oci")).manifest_digest, first);
    assert_eq!(read_image(&b.join("third/oci")).manifest_digest, first);

    // gzip layers are deterministic too, and differ from zstd ones.
    assert_ok(&kiln(
        &a,
        &cache,
        &["build", "--locked", "--compression", "gzip", "-o", "gz1"],
    ));
    assert_ok(&kiln(
        &b,
        &cache2,
        &["build", "--locked", "--compression", "gzip", "-o", "gz2"],
    ));
    let gz = read_image(&a.join("gz1/oci")).manifest_digest;
    assert_eq!(gz, read_image(&b.join("gz2/oci")).manifest_digest);
    assert_ne!(gz, first);
}

#[test]
fn locked_build_names_what_changed_and_writes_nothing() {
    let fx = standard(vec![], &["hello"]);
    let (archive, recipe, cache) = (&fx.archive, &fx.recipe, &fx.cache);
    assert_ok(&kiln(recipe, cache, &["lock"]));
    archive.write_recipe(recipe, &[], "");
    let o = kiln(recipe, cache, &["build", "--locked", "-o", "out"]);
    assert_refused(
        &o,
        &[
            "kiln.lock does not match the recipe",
            "removed from it: [\"hello\"]",
        ],
    );
    assert!(!recipe.join("out/oci").exists());

    // Without --locked but --offline, a stale lock cannot be refreshed either.
    let o = kiln(recipe, cache, &["build", "--offline", "-o", "out"]);
    assert_refused(&o, &["does not match the recipe"]);
    // Online and unlocked, kiln re-resolves and rewrites the lock.
    assert_ok(&kiln(recipe, cache, &["build", "-o", "out"]));
    assert!(!std::fs::read_to_string(recipe.join("kiln.lock"))
        .unwrap()
        .contains("name = \"hello\""));
}

#[test]
fn untrusted_archives_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let signer = signer();
    let archive = standard_archive(&work.path().join("archive"), &signer, base_packages(ARCH));
    let cache = work.path().join("cache");
    let recipe = work.path().join("r");

    // A keyring holding another key.
    let stranger = Signer::new("someone else <x@kiln.invalid>", "never", None);
    let other_keyring = work.path().join("other.gpg");
    stranger.export(&other_keyring);
    let board_extra = "";
    archive.write_recipe(&recipe, &[], board_extra);
    let board = recipe.join("boards/test.toml");
    let text = std::fs::read_to_string(&board).unwrap();
    std::fs::write(
        &board,
        text.replace(
            archive.keyring.to_str().unwrap(),
            other_keyring.to_str().unwrap(),
        ),
    )
    .unwrap();
    let o = kiln(&recipe, &cache, &["lock"]);
    assert_refused(
        &o,
        &[
            "InRelease",
            "no valid signature",
            "does not verify with any key",
        ],
    );
    assert!(!recipe.join("kiln.lock").exists());

    // A modified InRelease (one field changed after signing).
    archive.write_recipe(&recipe, &[], board_extra);
    let inrelease = archive.dists().join("InRelease");
    let original = std::fs::read_to_string(&inrelease).unwrap();
    std::fs::write(
        &inrelease,
        original.replace("Label: kiln-tests", "Label: kiln-evil"),
    )
    .unwrap();
    let o = kiln(&recipe, &cache, &["lock"]);
    assert_refused(&o, &["InRelease", "no valid signature"]);
    std::fs::write(&inrelease, &original).unwrap();

    // A Packages index that differs from what the signed Release states.
    let packages = archive.dists().join("main/binary-arm64/Packages.xz");
    let good = std::fs::read(&packages).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x40;
    std::fs::write(&packages, &bad).unwrap();
    let o = kiln(&recipe, &cache, &["lock"]);
    assert_refused(&o, &["Packages.xz", "does not match the signed Release"]);
    std::fs::write(&packages, &good).unwrap();

    // Release of another suite replayed under this one.
    assert_ok(&kiln(&recipe, &cache, &["lock"]));
}

/// Debian's archive keys are certified by other keys (bullseye's by the release keys); such a
/// third-party certification is not the key owner's statement and must not make the key unusable.
#[test]
fn an_archive_key_certified_by_another_key_is_accepted() {
    let work = tempfile::tempdir().unwrap();
    let signer = signer();
    let archive = standard_archive(&work.path().join("archive"), &signer, base_packages(ARCH));
    let recipe = work.path().join("r");
    archive.write_recipe(&recipe, &[], "");
    let fingerprint = String::from_utf8(signer.gpg(&["--with-colons", "--list-keys"]))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("fpr:::::::::"))
        .map(|f| f.trim_end_matches(':').to_string())
        .unwrap();
    let certifier = Signer::new("release team <r@kiln.invalid>", "never", None);
    let archive_key = work.path().join("archive-key.gpg");
    signer.export(&archive_key);
    certifier.gpg(&["--import", archive_key.to_str().unwrap()]);
    certifier.gpg(&["--quick-sign-key", &fingerprint]);
    let certified = certifier.gpg(&["--export", &fingerprint]);
    let listed = certifier.gpg(&["--with-colons", "--check-sigs", &fingerprint]);
    assert!(
        String::from_utf8_lossy(&listed).matches("\nsig:").count() >= 2,
        "the key carries its self-signature and the certifier's"
    );
    std::fs::write(&archive.keyring, certified).unwrap();
    assert_ok(&kiln(&recipe, &work.path().join("cache"), &["lock"]));
}

#[test]
fn a_lying_index_entry_never_reaches_the_cache() {
    let work = tempfile::tempdir().unwrap();
    let signer = signer();
    let archive = build_archive(
        &work.path().join("archive"),
        ArchiveSpec {
            index_compressions: &["gz"],
            lie_about: Some("hello"),
            ..ArchiveSpec::new("bookworm", ARCH, base_packages(ARCH), &signer)
        },
    );
    let recipe = work.path().join("r");
    archive.write_recipe(&recipe, &["hello"], "");
    let cache = work.path().join("cache");
    assert_ok(&kiln(&recipe, &cache, &["lock"]));
    let o = kiln(&recipe, &cache, &["build", "--locked", "-o", "out"]);
    assert_refused(&o, &["hello", "the lock pins", "refusing it"]);
    assert!(!recipe.join("out/oci").exists());
    // The fetch stops handing out work at the first refusal, so how many honest packages were
    // fetched by then depends on scheduling; what is cached must be honest, and never the liar.
    let lock = std::fs::read_to_string(recipe.join("kiln.lock")).unwrap();
    let pinned: Vec<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("sha256 = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert_eq!(pinned.len(), 7, "six honest packages and the liar: {lock}");
    let cached: Vec<PathBuf> = std::fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(cached.len() <= 6, "the lying one is not cached: {cached:?}");
    for blob in &cached {
        let name = blob.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            fixture::sha256(&std::fs::read(blob).unwrap()),
            name,
            "{name}"
        );
        assert!(pinned.contains(&name), "{name} is a locked package");
    }
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0);
}

#[test]
fn corrupt_cache_entries_are_detected_and_refetched() {
    let fx = standard(vec![], &[]);
    let (recipe, cache) = (&fx.recipe, &fx.cache);
    assert_ok(&kiln(recipe, cache, &["build", "-o", "out"]));
    let digest = read_image(&recipe.join("out/oci")).manifest_digest;

    // Truncate one .deb and flip a byte in another; drop the layer records so the base must be
    // built from the .debs again.
    let lock = std::fs::read_to_string(recipe.join("kiln.lock")).unwrap();
    let debs: Vec<PathBuf> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("sha256 = \""))
        .map(|h| cache.join("blobs/sha256").join(h.trim_end_matches('"')))
        .collect();
    let data = std::fs::read(&debs[0]).unwrap();
    std::fs::write(&debs[0], &data[..data.len() / 2]).unwrap();
    let mut data = std::fs::read(&debs[1]).unwrap();
    data[10] ^= 1;
    std::fs::write(&debs[1], &data).unwrap();
    std::fs::remove_dir_all(cache.join("layers")).unwrap();

    // Offline, a corrupt entry is not trusted: it is reported missing.
    let o = kiln(recipe, cache, &["build", "--offline", "-o", "out2"]);
    assert_refused(&o, &["is not in the cache", "--offline"]);
    // Online, it is fetched again and the image is the same.
    assert_ok(&kiln(recipe, cache, &["build", "-o", "out2"]));
    assert_eq!(read_image(&recipe.join("out2/oci")).manifest_digest, digest);
}

#[test]
fn an_unchanged_base_layer_is_reused_and_a_corrupt_one_rebuilt() {
    let fx = standard(vec![], &["hello"]);
    let (recipe, cache) = (&fx.recipe, &fx.cache);
    let first = kiln(recipe, cache, &["build", "-o", "out"]);
    assert_ok(&first);
    assert!(!String::from_utf8_lossy(&first.stdout).contains("reused"));
    let digest = read_image(&recipe.join("out/oci")).manifest_digest;

    // Nothing changed: the layer comes from the layer cache, without the .debs.
    let lock = std::fs::read_to_string(recipe.join("kiln.lock")).unwrap();
    for h in lock.lines().filter_map(|l| l.strip_prefix("sha256 = \"")) {
        std::fs::remove_file(cache.join("blobs/sha256").join(h.trim_end_matches('"'))).unwrap();
    }
    let again = kiln(recipe, cache, &["build", "--offline", "-o", "out"]);
    assert_ok(&again);
    assert!(String::from_utf8_lossy(&again.stdout).contains("base layer reused"));
    assert_eq!(read_image(&recipe.join("out/oci")).manifest_digest, digest);

    // A corrupt cached layer is a miss: the base is built again (from a fresh fetch).
    let record = std::fs::read_dir(cache.join("layers"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let blob = cache
        .join("blobs/sha256")
        .join(rec["digest"].as_str().unwrap());
    let mut data = std::fs::read(&blob).unwrap();
    data[100] ^= 0xff;
    std::fs::write(&blob, &data).unwrap();
    let rebuilt = kiln(recipe, cache, &["build", "-o", "out"]);
    assert_ok(&rebuilt);
    assert!(!String::from_utf8_lossy(&rebuilt.stdout).contains("reused"));
    assert_eq!(read_image(&recipe.join("out/oci")).manifest_digest, digest);
}

/// The whole-image check a build records (OUT/check.json) is taken from the cache when the
/// image, the waivers and the day are unchanged; a cached record whose bytes were altered is
/// a miss and the image is checked again; another waiver is another key, never stale findings.
#[test]
fn an_unchanged_image_check_is_reused_and_a_corrupt_one_redone() {
    let fx = standard(vec![], &["hello"]);
    let (archive, recipe, cache) = (&fx.archive, &fx.recipe, &fx.cache);
    assert_ok(&kiln(recipe, cache, &["build", "-o", "out"]));
    let checked = std::fs::read(recipe.join("out/check.json")).unwrap();
    let records: Vec<PathBuf> = std::fs::read_dir(cache.join("checks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    let blob = |digest: &str| cache.join("blobs/sha256").join(digest);
    assert_eq!(
        std::fs::read(blob(rec["digest"].as_str().unwrap())).unwrap(),
        checked
    );

    // Reused: point the record at other findings (a well-formed entry) and the rebuild
    // records exactly those; the image itself is not read again.
    let planted = b"{\"check\":\"planted\"}\n".to_vec();
    let planted_digest = fixture::sha256(&planted);
    std::fs::write(blob(&planted_digest), &planted).unwrap();
    std::fs::write(
        record,
        format!(
            "{{\"digest\":\"{planted_digest}\",\"size\":{}}}",
            planted.len()
        ),
    )
    .unwrap();
    assert_ok(&kiln(recipe, cache, &["build", "-o", "out"]));
    assert_eq!(
        std::fs::read(recipe.join("out/check.json")).unwrap(),
        planted
    );

    // Altered bytes: a miss, the image is checked again and the record repaired.
    let mut bad = planted.clone();
    bad[3] ^= 0x20;
    std::fs::write(blob(&planted_digest), &bad).unwrap();
    assert_ok(&kiln(recipe, cache, &["build", "-o", "out"]));
    assert_eq!(
        std::fs::read(recipe.join("out/check.json")).unwrap(),
        checked
    );
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    assert_eq!(
        std::fs::read(blob(rec["digest"].as_str().unwrap())).unwrap(),
        checked
    );

    // A record that is not JSON is a miss too.
    std::fs::write(record, b"not json").unwrap();
    assert_ok(&kiln(recipe, cache, &["build", "-o", "out"]));
    assert_eq!(
        std::fs::read(recipe.join("out/check.json")).unwrap(),
        checked
    );

    // A new waiver (one that accepts nothing) changes the findings: the check runs again
    // and reports the unused waiver; the same image is built.
    let digest = read_image(&recipe.join("out/oci")).manifest_digest;
    archive.write_recipe(
        recipe,
        &["hello"],
        "\n[[waiver]]\npath = \"/nothing/here\"\ncheck = \"textrel\"\nreason = \"stale\"\nexpires = \"2999-01-01\"\n",
    );
    assert_ok(&kiln(recipe, cache, &["build", "-o", "out"]));
    assert_eq!(read_image(&recipe.join("out/oci")).manifest_digest, digest);
    let waived = String::from_utf8(std::fs::read(recipe.join("out/check.json")).unwrap()).unwrap();
    assert!(waived.contains("/nothing/here"), "{waived}");
    assert_eq!(std::fs::read_dir(cache.join("checks")).unwrap().count(), 2);
}

/// Builds a fixture with one extra hostile package and returns kiln's result.
fn build_with(work: &Path, hostile: Pkg) -> (Output, PathBuf) {
    let signer = signer();
    let mut pkgs = base_packages(ARCH);
    let name = hostile.name.clone();
    pkgs.push(hostile);
    let archive = standard_archive(&work.join("archive"), &signer, pkgs);
    let recipe = work.join("r");
    archive.write_recipe(&recipe, &[&name], "");
    let cache = work.join("cache");
    let o = kiln(&recipe, &cache, &["build", "-o", "out"]);
    (o, recipe)
}

#[test]
fn hostile_packages_are_refused_without_writing_outside() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("pwned");
    let cases: Vec<(Pkg, Vec<&str>)> = vec![
        (
            Pkg::new("evil-dotdot", "1", ARCH).entry(Entry::RawFile(
                b"./../../../../../../../../tmp/kiln-pwned".to_vec(),
                b"x".to_vec(),
            )),
            vec!["evil-dotdot", "member './../../", "'..'"],
        ),
        (
            Pkg::new("evil-absolute", "1", ARCH).entry(Entry::RawFile(
                format!("{}", target.display()).into_bytes(),
                b"x".to_vec(),
            )),
            vec!["evil-absolute", "absolute path"],
        ),
        (
            Pkg::new("evil-hardlink", "1", ARCH).entry(Entry::Hardlink(
                "./etc-passwd",
                "../../../../../../etc/passwd",
            )),
            vec!["evil-hardlink", "hard link target", "'..'"],
        ),
        (
            Pkg::new("evil-hardlink2", "1", ARCH).entry(Entry::Hardlink("./shadow", "etc/shadow")),
            vec!["evil-hardlink2", "did not ship before it"],
        ),
        (
            {
                let mut p = Pkg::new("truncated", "1", ARCH)
                    .file("./usr/share/big", &"y".repeat(100_000), 0o644)
                    .compression("gz", "none");
                let full = p.build().len();
                p.truncate_to = Some(full - 50_000);
                p
            },
            vec!["truncated", "data.tar"],
        ),
    ];
    for (pkg, needles) in cases {
        let work = tempfile::tempdir().unwrap();
        let (o, recipe) = build_with(work.path(), pkg);
        assert_refused(&o, &needles);
        assert!(!target.exists(), "wrote outside the staging root");
        assert!(!Path::new("/tmp/kiln-pwned").exists());
        // Nothing partial: not even the output directory the build created.
        assert!(!recipe.join("out").exists(), "left behind: out/");
    }
}

/// A symlink climbing above the root resolves as it would on the robot (and in a chroot): `..`
/// at `/` stays at `/`. The kernel keeps the write inside the image; nothing reaches the host.
#[test]
fn a_symlink_climbing_above_the_root_resolves_inside_it() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("pwned");
    let work = tempfile::tempdir().unwrap();
    let pkg = Pkg::new("evil-symlink", "1", ARCH)
        .entry(Entry::Symlink(
            "./escape",
            "../../../../../../../../../../../../..",
        ))
        .file(
            &format!("./escape/srv/kiln-contained{}", target.display()),
            "x",
            0o644,
        );
    let (o, recipe) = build_with(work.path(), pkg);
    assert_ok(&o);
    assert!(!target.exists(), "wrote outside the staging root");
    let files = read_image(&recipe.join("out/oci")).entries;
    let inside = format!("srv/kiln-contained{}", target.display());
    assert!(
        files.keys().any(|k| k.trim_start_matches("./") == inside),
        "the file did not land inside the image at /{inside}"
    );
}

/// Builds the base fixture into out/, then rebuilds with `extra` packages requested; asserts the
/// rebuild left the previous image and nothing else in out/, and returns what it printed.
fn rebuild_that_fails(extra: Vec<Pkg>) -> Output {
    let fx = standard(vec![], &[]);
    let (work, signer, recipe, cache) = (&fx.work, &fx.signer, &fx.recipe, &fx.cache);
    assert_ok(&kiln(recipe, cache, &["build", "-o", "out"]));
    let before = read_image(&recipe.join("out/oci")).manifest_digest;

    let names: Vec<String> = extra.iter().map(|p| p.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut pkgs = base_packages(ARCH);
    pkgs.extend(extra);
    let archive2 = standard_archive(&work.path().join("archive2"), signer, pkgs);
    archive2.write_recipe(recipe, &names, "");
    let provenance_before = std::fs::read(recipe.join("out/provenance.json")).unwrap();
    let check_before = std::fs::read(recipe.join("out/check.json")).unwrap();
    let o = kiln(recipe, cache, &["build", "-o", "out"]);
    assert_eq!(read_image(&recipe.join("out/oci")).manifest_digest, before);
    // The layout, the check record and the provenance of the same (previous) image, nothing else.
    assert_eq!(std::fs::read_dir(recipe.join("out")).unwrap().count(), 3);
    assert_eq!(
        std::fs::read(recipe.join("out/provenance.json")).unwrap(),
        provenance_before
    );
    assert_eq!(
        std::fs::read(recipe.join("out/check.json")).unwrap(),
        check_before
    );
    o
}

#[test]
fn a_failed_build_keeps_the_previous_output() {
    let o =
        rebuild_that_fails(vec![Pkg::new("evil-dotdot", "1", ARCH)
            .entry(Entry::RawFile(b"../x".to_vec(), b"x".to_vec()))]);
    assert_refused(&o, &["evil-dotdot"]);
}

#[test]
fn stretch_style_archive_with_expired_key_and_old_compressions() {
    let work = tempfile::tempdir().unwrap();
    // A key made in 2019 that expired in 2020, signing a Release dated 2019 whose Valid-Until
    // has long passed: what archive.debian.org serves for stretch.
    let signer = Signer::new(
        "stretch archive <stretch@kiln.invalid>",
        "1y",
        Some("20190601T000000!"),
    );
    let mut pkgs = base_packages("armhf");
    for p in &mut pkgs {
        *p = p.clone().compression("gz", "bz2");
    }
    pkgs[1] = pkgs[1].clone().compression("gz", "xz");
    let archive = build_archive(
        &work.path().join("archive"),
        ArchiveSpec {
            dates: fixture::stretch_dates(),
            index_compressions: &["gz"],
            ..ArchiveSpec::new("stretch", "armhf", pkgs, &signer)
        },
    );
    let cache = work.path().join("cache");
    let recipe = work.path().join("r");

    archive.write_recipe(&recipe, &[], "");
    let o = kiln(&recipe, &cache, &["lock"]);
    assert_refused(&o, &["had expired", "archived = true"]);

    archive.write_recipe(&recipe, &[], "archived = true\n");
    assert_ok(&kiln(&recipe, &cache, &["lock"]));
    assert_ok(&kiln(&recipe, &cache, &["build", "--locked", "-o", "out"]));
    let image = read_image(&recipe.join("out/oci"));
    assert_eq!(
        image.index["manifests"][0]["platform"]["architecture"],
        "arm"
    );
    assert_eq!(image.index["manifests"][0]["platform"]["variant"], "v7");
    // stretch is not merged-/usr: /bin and /lib are real directories.
    assert_eq!(image.entries["bin"].kind, 'd');
    assert_eq!(image.entries["lib"].kind, 'd');
    assert_eq!(image.entries["bin/sh-like"].link, "bin/sh-alias");
    assert!(image
        .entries
        .contains_key("var/lib/dpkg/info/libc6:armhf.list"));

    // The Valid-Until check still guards a live (non-archived) suite signed by a valid key.
    let fresh = Signer::new("fresh <f@kiln.invalid>", "never", None);
    let archive = build_archive(
        &work.path().join("archive2"),
        ArchiveSpec {
            dates: fixture::stretch_dates(),
            index_compressions: &["xz"],
            ..ArchiveSpec::new("stretch", "armhf", base_packages("armhf"), &fresh)
        },
    );
    archive.write_recipe(&recipe, &[], "");
    let o = kiln(&recipe, &cache, &["lock"]);
    assert_refused(&o, &["expired: Valid-Until"]);
}

#[test]
fn detached_release_signature_is_used_when_inrelease_is_missing() {
    let fx = standard(vec![], &[]);
    let (archive, recipe, cache) = (&fx.archive, &fx.recipe, &fx.cache);
    std::fs::remove_file(archive.dists().join("InRelease")).unwrap();
    assert_ok(&kiln(recipe, cache, &["lock"]));
    // ...and a Release modified after signing is refused.
    let release = archive.dists().join("Release");
    let text = std::fs::read_to_string(&release).unwrap();
    std::fs::write(&release, text.replace("kiln fixture", "kiln fixturE")).unwrap();
    let o = kiln(recipe, cache, &["lock"]);
    assert_refused(&o, &["Release", "no valid signature"]);
}

#[test]
fn bad_recipes_get_one_line_naming_file_line_and_key() {
    let fx = standard(vec![], &["no-such-package"]);
    let (recipe, cache) = (&fx.recipe, &fx.cache);
    let o = kiln(recipe, cache, &["lock"]);
    assert_refused(&o, &["'no-such-package' is not in the archive index"]);

    let toml = std::fs::read_to_string(recipe.join("kiln.toml")).unwrap();
    std::fs::write(
        recipe.join("kiln.toml"),
        toml.replace("variant = \"minbase\"", "variant = \"maxbase\""),
    )
    .unwrap();
    let o = kiln(recipe, cache, &["build", "-o", "out"]);
    assert_refused(
        &o,
        &[
            "kiln.toml:7: key 'base.variant'",
            "unknown variant 'maxbase'",
        ],
    );

    let board = recipe.join("boards/test.toml");
    let text = std::fs::read_to_string(&board).unwrap();
    std::fs::write(&board, text.replace("arch = \"arm64\"", "arch = \"arm65\"")).unwrap();
    let o = kiln(recipe, cache, &["lock"]);
    assert_refused(&o, &["test.toml:2: key 'arch'", "arm65"]);

    std::fs::write(&board, text.replace("[debian]", "[debian]\nmirorr = \"x\"")).unwrap();
    let o = kiln(recipe, cache, &["lock"]);
    assert_refused(&o, &["test.toml:6", "mirorr"]);
    std::fs::write(recipe.join("kiln.toml"), &toml).unwrap();

    // A keyring that is a device: named as what it is, and never read.
    let keyring_line = text.lines().find(|l| l.starts_with("keyring")).unwrap();
    std::fs::write(
        &board,
        text.replace(keyring_line, "keyring = \"/dev/zero\""),
    )
    .unwrap();
    let o = kiln(recipe, cache, &["lock"]);
    assert_refused(
        &o,
        &["debian.keyring", "/dev/zero", "is not a regular file"],
    );

    // A mirror URL's credentials are never printed.
    let mirror_line = text.lines().find(|l| l.starts_with("mirror")).unwrap();
    std::fs::write(
        &board,
        text.replace(
            mirror_line,
            "mirror = \"http://ci-bot:s3cret-token@127.0.0.1:9/debian\"",
        ),
    )
    .unwrap();
    let o = kiln(recipe, cache, &["lock"]);
    // Unreachable: an environment failure (exit 2), named without the credentials.
    assert_eq!(o.status.code(), Some(2), "{}", text_of(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", text_of(&o));
    assert!(!text_of(&o).contains("s3cret"), "{}", text_of(&o));
    assert!(
        stderr(&o).contains("http://***@127.0.0.1:9/"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&board, &text).unwrap();

    // Names and versions that cannot be an OCI reference.
    for (from, to, needles) in [
        (
            "name = \"fixture\"",
            "name = \"..\"".to_string(),
            vec!["image.name", "not an OCI repository name"],
        ),
        (
            "name = \"fixture\"",
            "name = \"-x\"".to_string(),
            vec!["image.name"],
        ),
        (
            "name = \"fixture\"",
            "name = \"a..b\"".to_string(),
            vec!["image.name"],
        ),
        (
            "version = \"1.0\"",
            format!("version = \"{}\"", "1".repeat(129)),
            vec!["image.version", "at most 128 characters", "it has 129"],
        ),
        (
            "version = \"1.0\"",
            "version = \".1\"".to_string(),
            vec!["image.version"],
        ),
    ] {
        std::fs::write(recipe.join("kiln.toml"), toml.replace(from, &to)).unwrap();
        let o = kiln(recipe, cache, &["build", "-o", "out"]);
        assert_refused(&o, &needles);
    }
    assert!(!recipe.join("out").exists());
}

/// Everything a command printed, both streams.
fn text_of(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Generates version pairs that stress every rule of dpkg's ordering and checks each against
/// the real `dpkg --compare-versions` on this machine.
#[test]
fn version_order_agrees_with_dpkg_on_generated_pairs() {
    let atoms = [
        "0",
        "1",
        "1.0",
        "1.00",
        "1.0a",
        "1.0+",
        "1.0~",
        "1.0~rc1",
        "1.0~~",
        "1.0.1",
        "1.10",
        "1.9",
        "2:0.1",
        "1:1.0",
        "0:1.0",
        "1.0-1",
        "1.0-0",
        "1.0-1~bpo1",
        "1.0-1+b1",
        "1.0-10",
        "1.0-9",
        "1.0+dfsg-1",
        "1.0+dfsg1-1",
        "1.0a-1",
        "1.0A-1",
        "1.0.a",
        "1.0-1.1",
        "1:1.0-1",
        "2.36-9+deb12u4",
        "2.36-9+deb12u10",
        "3.0~alpha",
        "3.0~beta2",
        "3.0",
        "3.0.0",
        "10",
        "9.99",
        "1.2.3-4-5",
        "1.2-3-4",
        "0.0001",
        "1.2+git20230101",
        "1.2+git20221231",
        "7",
        "7.0",
        "7.0-",
        "a",
    ];
    let valid: Vec<&str> = atoms
        .iter()
        .copied()
        .filter(|a| kiln::debian::version::Version::parse(a).is_ok())
        .collect();
    let mut pairs = Vec::new();
    for (i, a) in valid.iter().enumerate() {
        for b in valid.iter().skip(i) {
            pairs.push((*a, *b));
        }
    }
    assert!(pairs.len() >= 500, "only {} pairs", pairs.len());
    // One dpkg call per pair; run them through a shell loop to keep it quick.
    let mut script = String::new();
    for (a, b) in &pairs {
        script.push_str(&format!(
            "if dpkg --compare-versions '{a}' lt '{b}'; then echo lt; elif dpkg --compare-versions '{a}' eq '{b}'; then echo eq; else echo gt; fi\n"
        ));
    }
    let mut child = Command::new("sh")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let answers: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(answers.len(), pairs.len());
    for ((a, b), dpkg) in pairs.iter().zip(&answers) {
        let ours = match kiln::debian::version::Version::parse(a)
            .unwrap()
            .cmp(&kiln::debian::version::Version::parse(b).unwrap())
        {
            std::cmp::Ordering::Less => "lt",
            std::cmp::Ordering::Equal => "eq",
            std::cmp::Ordering::Greater => "gt",
        };
        assert_eq!(ours, dpkg, "{a} vs {b}");
    }
    // Strings dpkg rejects, kiln rejects too.
    for bad in ["a", "7.0-", "", "1:", ":1"] {
        assert!(kiln::debian::version::Version::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn fetches_over_http_in_parallel_and_refuses_a_truncated_download() {
    let fx = standard(vec![], &["hello"]);
    let (work, archive, recipe, cache) = (&fx.work, &fx.archive, &fx.recipe, &fx.cache);
    let server = fixture::HttpServer::serve(&archive.mirror, &[]);
    let board = recipe.join("boards/test.toml");
    let text = std::fs::read_to_string(&board).unwrap();
    std::fs::write(&board, text.replace(&archive.mirror_url(), &server.url)).unwrap();
    assert_ok(&kiln(recipe, cache, &["build", "-o", "out"]));
    // InRelease, Packages.xz and seven .debs.
    assert_eq!(server.requests.load(std::sync::atomic::Ordering::SeqCst), 9);
    let layer = read_image(&recipe.join("out/oci")).config["rootfs"].clone();

    // The same root filesystem as from the file:// mirror (the manifest differs only because
    // the lock, and so its digest annotation, names another mirror).
    let recipe2 = work.path().join("r2");
    archive.write_recipe(&recipe2, &["hello"], "");
    std::fs::copy(recipe.join("kiln.lock"), recipe2.join("kiln.lock")).unwrap();
    let lock = std::fs::read_to_string(recipe2.join("kiln.lock")).unwrap();
    std::fs::write(
        recipe2.join("kiln.lock"),
        lock.replace(&server.url, &archive.mirror_url()),
    )
    .unwrap();
    assert_ok(&kiln(
        &recipe2,
        &work.path().join("cache2"),
        &["build", "--locked", "-o", "out"],
    ));
    assert_eq!(read_image(&recipe2.join("out/oci")).config["rootfs"], layer);

    // A connection that drops mid-body: refused, and nothing half-written stays in the cache.
    let cut = fixture::HttpServer::serve(&archive.mirror, &[".deb"]);
    std::fs::write(&board, text.replace(&archive.mirror_url(), &cut.url)).unwrap();
    let cache3 = work.path().join("cache3");
    let o = kiln(recipe, &cache3, &["build", "-o", "out3"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(cache3.join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(std::fs::read_dir(cache3.join("tmp")).unwrap().count(), 0);
    assert!(!recipe.join("out3/oci").exists());
}

/// skopeo and umoci (from Debian, installed by ci/setup) read what kiln writes.
#[test]
fn real_oci_tools_accept_the_layout() {
    let fx = standard(vec![], &["hello"]);
    let (work, recipe, cache) = (&fx.work, &fx.recipe, &fx.cache);
    assert_ok(&kiln(recipe, cache, &["build", "-o", "out"]));
    assert_ok(&kiln(
        recipe,
        cache,
        &["build", "--locked", "--compression", "gzip", "-o", "gz"],
    ));
    let layout = recipe.join("out/oci");
    let inspect = Command::new("skopeo")
        .args(["inspect", &format!("oci:{}:1.0", layout.display())])
        .output()
        .expect("skopeo is installed (ci/setup)");
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Architecture"], "arm64");
    assert_eq!(v["Created"], "2023-06-10T08:54:14Z");
    let copy = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            &format!("oci:{}:1.0", layout.display()),
            &format!("oci:{}:1.0", work.path().join("copy").display()),
        ])
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", stderr(&copy));

    let bundle = work.path().join("bundle");
    let unpack = Command::new("umoci")
        .args([
            "unpack",
            "--image",
            &format!("{}:1.0", recipe.join("gz/oci").display()),
            bundle.to_str().unwrap(),
        ])
        .output()
        .expect("umoci is installed (ci/setup)");
    assert!(unpack.status.success(), "{}", stderr(&unpack));
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("usr/bin/hello")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert!(rootfs.join("var/lib/dpkg/status").is_file());
}

#[test]
fn a_build_whose_check_finds_an_error_fails_and_keeps_the_previous_output() {
    // The host's /bin/true: an x86-64 ELF, not for the arm64 board.
    let host_elf = std::fs::read("/bin/true").unwrap();
    let o = rebuild_that_fails(vec![Pkg::new("wrong-arch", "1", ARCH)
        .entry(Entry::Dir("./usr/", 0o755))
        .entry(Entry::Dir("./usr/bin/", 0o755))
        .entry(Entry::File("./usr/bin/wrong".into(), host_elf, 0o755))]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.contains("check:") && last.contains("arch /usr/bin/wrong"),
        "{err}"
    );
    assert!(
        err.contains("wrong-arch"),
        "the report names the package: {err}"
    );
}

/// The containment property over random package sets (dirs, files, symlinks absolute, relative,
/// climbing, looping and aimed at a canary on the host, hard links, names colliding across
/// packages and with the dpkg database): whatever compose does with them, nothing outside the
/// staging root changes. The fuzz target `compose_tree` explores the same space with coverage.
#[test]
fn random_hostile_trees_never_change_anything_outside_the_root() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut accepted = 0;
    let cases = 400;
    for _ in 0..cases {
        let bytes: Vec<u8> = (0..160)
            .map(|_| {
                // xorshift64*: deterministic, so a failure reproduces.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect();
        if hostile_tree::compose_hostile_tree(&bytes) {
            accepted += 1;
        }
    }
    // Both outcomes are exercised: the generator is not refused wholesale.
    assert!(
        accepted > cases / 10 && accepted < cases,
        "{accepted} of {cases} composed"
    );
}

/// A `&'static str` for the fixture's link entries.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Builds the base fixture plus `extra` (the named ones requested) and asserts that the canary
/// directory is byte-identical afterwards and that a refused build left no `out/`.
fn contained(canary: &Path, extra: Vec<Pkg>, request: &[&str]) -> Output {
    let before = hostile_tree::snapshot(canary);
    let fx = standard(extra, request);
    let (recipe, cache) = (&fx.recipe, &fx.cache);
    let o = kiln(recipe, cache, &["build", "-o", "out"]);
    assert_eq!(
        before,
        hostile_tree::snapshot(canary),
        "the canary outside the root changed:\n{}",
        stderr(&o)
    );
    if !o.status.success() {
        assert!(!recipe.join("out").exists(), "left behind: out/");
    }
    o
}

/// A canary directory outside every staging root: a file, a directory, a symlink.
fn canary() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "canary").unwrap();
    std::fs::create_dir(dir.path().join("dir")).unwrap();
    std::fs::write(dir.path().join("dir/inner"), "inner").unwrap();
    std::os::unix::fs::symlink("file", dir.path().join("link")).unwrap();
    let abs = dir.path().display().to_string();
    let climb = format!("{}{}", "../".repeat(16), abs.trim_start_matches('/'));
    (dir, abs, climb)
}

/// Items 1 of the containment issue: the dpkg database is written inside the root whatever
/// the packages put where it lives (its directory, `status`, `info/`, a package's own list
/// and maintainer script, `triggers/`), as absolute or climbing symlinks to the host.
#[test]
fn the_dpkg_database_is_written_inside_the_root_whatever_packages_plant_there() {
    let (canary_dir, abs, climb) = canary();
    let canary_path = canary_dir.path();
    let link = |pkg: &str, at: &str, to: String| {
        Pkg::new(pkg, "1", ARCH).entry(Entry::Symlink(leak(at.to_string()), leak(to)))
    };
    let cases: Vec<Pkg> = vec![
        link("db-abs", "./var/lib/dpkg", abs.clone()),
        link("db-climb", "./var/lib/dpkg", climb.clone()),
        link("db-status", "./var/lib/dpkg/status", format!("{abs}/file")),
        link("db-info", "./var/lib/dpkg/info", abs.clone()),
        link("db-info-climb", "./var/lib/dpkg/info", climb.clone()),
        link(
            "db-list",
            "./var/lib/dpkg/info/db-list.list",
            format!("{abs}/file"),
        ),
        link(
            "db-md5",
            "./var/lib/dpkg/info/db-md5.md5sums",
            format!("{abs}/file"),
        )
        .control_file("md5sums", "d41d8cd98f00b204e9800998ecf8427e  x\n", 0o644),
        link(
            "db-postinst",
            "./var/lib/dpkg/info/db-postinst.postinst",
            format!("{abs}/file"),
        )
        .control_file("postinst", "#!/bin/sh\nexit 0\n", 0o755),
        link("db-triggers", "./var/lib/dpkg/triggers", abs.clone()).control_file(
            "triggers",
            "interest kiln-test-trigger\n",
            0o644,
        ),
        link(
            "db-triggers-climb",
            "./var/lib/dpkg/triggers",
            climb.clone(),
        )
        .control_file("triggers", "interest-noawait kiln-test-trigger\n", 0o644),
        link("db-arch", "./var/lib/dpkg/arch", format!("{abs}/file")),
        link("db-file-dir", "./var/lib/dpkg/info", format!("{abs}/file")),
    ];
    for pkg in cases {
        let name = pkg.name.clone();
        let o = contained(canary_path, vec![pkg], &[&name]);
        eprintln!("{name}: exit {:?} {}", o.status.code(), stderr(&o).trim());
        if !o.status.success() {
            assert_refused(&o, &[]);
        }
    }
}

/// Item 2: names from Packages and control files are never path components unchecked, and a
/// .deb carries only the members dpkg knows (a forged `list`, a second control.tar, a
/// `data.tarball.xz` are refused as dpkg refuses them).
#[test]
fn hostile_names_and_members_are_refused_naming_them() {
    let (canary_dir, _abs, climb) = canary();
    let canary_path = canary_dir.path();
    let second_control = {
        let p = Pkg::new("two-controls", "1", ARCH);
        let deb = p.build();
        // The control.tar member of a sound package, appended again.
        let mut a = ar::Archive::new(&deb[..]);
        let mut control = None;
        while let Some(m) = a.next_entry() {
            let mut m = m.unwrap();
            if m.header().identifier().starts_with(b"control.tar") {
                let mut v = Vec::new();
                m.read_to_end(&mut v).unwrap();
                control = Some((
                    String::from_utf8_lossy(m.header().identifier()).into_owned(),
                    v,
                ));
            }
        }
        let mut p = p;
        p.extra_members.push(control.unwrap());
        p
    };
    let tarball = {
        let mut p = Pkg::new("tarball", "1", ARCH).file("./usr/share/t", "t", 0o644);
        p.data_member = Some("data.tarball.xz".into());
        p
    };
    let cases: Vec<(Pkg, Vec<&str>, bool)> = vec![
        (
            Pkg::new(&format!("{climb}/y"), "1", ARCH).field("Priority", "required"),
            vec!["Package", "is not a valid Debian package name"],
            false,
        ),
        (
            Pkg::new("bad-trigger", "1", ARCH).control_file(
                "triggers",
                &format!("interest {climb}/z\n"),
                0o644,
            ),
            vec!["bad-trigger", "trigger"],
            true,
        ),
        (
            Pkg::new("forged-list", "1", ARCH)
                .file("./usr/share/f", "f", 0o644)
                .control_file("list", "/etc/passwd\n", 0o644),
            vec!["forged-list", "list"],
            true,
        ),
        (second_control, vec!["two-controls", "control.tar"], true),
        (tarball, vec!["tarball", "data.tarball.xz"], true),
    ];
    for (pkg, needles, request) in cases {
        let name = pkg.name.clone();
        let requested = if request { vec![name.as_str()] } else { vec![] };
        let o = contained(canary_path, vec![pkg], &requested);
        eprintln!("{name}: {}", stderr(&o).trim());
        assert_refused(&o, &needles);
    }
}

/// Every kind of swap across packages: a directory one package ships becomes a symlink to the
/// host in the next, a symlink becomes a directory, a hard link to a symlink, a regular file
/// over a symlink. The later package's files land inside the root or the build is refused.
#[test]
fn symlink_hardlink_and_directory_swaps_across_packages_stay_inside() {
    let (canary_dir, abs, climb) = canary();
    let canary_path = canary_dir.path();
    let abs: &'static str = leak(abs);
    let climb: &'static str = leak(climb);
    let file_in_canary: &'static str = leak(format!("{abs}/file"));
    let sets: Vec<Vec<Pkg>> = vec![
        vec![
            Pkg::new("swap-a1", "1", ARCH).entry(Entry::Dir("./srv/d/", 0o755)),
            Pkg::new("swap-a2", "1", ARCH).entry(Entry::Symlink("./srv/d", abs)),
            Pkg::new("swap-a3", "1", ARCH).file("./srv/d/file", "pwned", 0o644),
        ],
        vec![
            Pkg::new("swap-b1", "1", ARCH).entry(Entry::Symlink("./srv/s", climb)),
            Pkg::new("swap-b2", "1", ARCH)
                .entry(Entry::Dir("./srv/s/", 0o755))
                .file("./srv/s/file", "pwned", 0o644),
        ],
        vec![
            Pkg::new("swap-c1", "1", ARCH).entry(Entry::Symlink("./srv/l", file_in_canary)),
            Pkg::new("swap-c2", "1", ARCH)
                .entry(Entry::Hardlink("./srv/h", "./srv/l"))
                .file("./srv/l", "pwned", 0o644),
        ],
        vec![
            Pkg::new("swap-d1", "1", ARCH).entry(Entry::Symlink("./srv/dir", abs)),
            Pkg::new("swap-d2", "1", ARCH).file("./srv/dir/dir/inner", "pwned", 0o644),
        ],
        vec![
            Pkg::new("swap-e1", "1", ARCH)
                .entry(Entry::Symlink("./srv/x", file_in_canary))
                .entry(Entry::Hardlink("./srv/y", "./srv/x")),
            Pkg::new("swap-e2", "1", ARCH).file("./srv/y", "pwned", 0o644),
        ],
    ];
    for pkgs in sets {
        let names: Vec<String> = pkgs.iter().map(|p| p.name.clone()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let o = contained(canary_path, pkgs, &names);
        eprintln!(
            "{names:?}: exit {:?} {}",
            o.status.code(),
            stderr(&o).trim()
        );
        if !o.status.success() {
            assert_refused(&o, &[]);
        }
    }
}

/// Runs kiln under GNU time and returns (output, peak resident set of the kiln process in KiB).
fn kiln_peak_rss(dir: &Path, cache: &Path, args: &[&str]) -> (Output, u64) {
    let report = dir.join("time.txt");
    let o = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(dir)
        .env("KILN_CACHE_DIR", cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let kib = std::fs::read_to_string(&report)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap();
    (o, kib)
}

/// The memory bound a whole build keeps whatever its packages inflate to (the issue's aim).
const PEAK_RSS_BOUND_KIB: u64 = 512 * 1024;

/// Decompression bombs: a package whose data.tar inflates to 1 GiB (built: it streams into
/// the root and into the layer) and one whose control.tar does (refused at its 32 MiB cap).
/// The peak resident memory of kiln stays below 512 MiB in both; CI's log keeps the figures.
#[test]
fn decompression_bombs_keep_peak_memory_bounded() {
    const GIB: u64 = 1 << 30;
    let mut data_bomb = Pkg::new("data-bomb", "1", ARCH);
    data_bomb.data_bytes = Some((
        "data.tar.zst".into(),
        fixture::zstd_tar(&[], &[("./usr/share/bomb/zeros", GIB)]),
    ));
    let mut control_bomb = Pkg::new("control-bomb", "1", ARCH);
    control_bomb.control_member = Some((
        "control.tar.zst".into(),
        fixture::zstd_tar(
            &[("./control", &control_bomb.control_bytes())],
            &[("./md5sums", GIB)],
        ),
    ));
    for (pkg, refused) in [(data_bomb, None), (control_bomb, Some("control-bomb"))] {
        let name = pkg.name.clone();
        let fx = standard(vec![pkg], &[&name]);
        let (recipe, cache) = (&fx.recipe, &fx.cache);
        let (o, kib) = kiln_peak_rss(recipe, cache, &["build", "-o", "out"]);
        eprintln!("{name}: kiln peak RSS {} MiB", kib / 1024);
        match refused {
            None => assert_ok(&o),
            Some(needle) => assert_refused(&o, &[needle, "control.tar.zst"]),
        }
        assert!(
            kib < PEAK_RSS_BOUND_KIB,
            "{name}: kiln peaked at {} MiB, above the {} MiB bound",
            kib / 1024,
            PEAK_RSS_BOUND_KIB / 1024
        );
    }
}

/// An image holding one 384 MiB file exports as a tar in well under that much memory: its
/// contents spool to an unlinked file beside the output and stream into the tar, never all
/// in memory (nor mapped); nothing is left beside the output; `kiln check` of that tar
/// streams it too.
#[test]
fn a_large_file_exports_within_bounded_memory() {
    const SIZE: u64 = 384 << 20;
    let mut big = Pkg::new("big-file", "1", ARCH);
    big.data_bytes = Some((
        "data.tar.zst".into(),
        fixture::zstd_tar(&[], &[("./usr/share/big/zeros", SIZE)]),
    ));
    let fx = standard(vec![big], &["big-file"]);
    let (recipe, cache) = (&fx.recipe, &fx.cache);
    assert_ok(&kiln(recipe, cache, &["build", "-o", "out"]));
    let (o, kib) = kiln_peak_rss(
        recipe,
        cache,
        &["export", "out", "--format", "tar", "-o", "image.tar"],
    );
    assert_ok(&o);
    eprintln!(
        "kiln export of a {} MiB file: peak RSS {} MiB",
        SIZE >> 20,
        kib / 1024
    );
    assert!(
        kib * 1024 < SIZE / 3,
        "kiln export peaked at {} MiB for a {} MiB file",
        kib / 1024,
        SIZE >> 20
    );
    let size = std::fs::metadata(recipe.join("image.tar")).unwrap().len();
    assert!(size > SIZE, "the export is {size} bytes");
    // kiln check reads that tar streamed (its contents spooled), within the same bound.
    let (o, kib) = kiln_peak_rss(
        recipe,
        cache,
        &["check", "image.tar", "--board", "boards/test.toml"],
    );
    assert!(
        o.status.code().is_some_and(|c| c <= 1),
        "{}",
        fixture::text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("files"),
        "{}",
        fixture::text(&o)
    );
    eprintln!("kiln check of that tar: peak RSS {} MiB", kib / 1024);
    assert!(
        kib * 1024 < SIZE / 3,
        "kiln check peaked at {} MiB for a {} MiB file",
        kib / 1024,
        SIZE >> 20
    );
    let leftovers: Vec<_> = std::fs::read_dir(recipe)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".kiln") || n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Debian's real removed archive keys: the expiry kiln computes for each key it keeps is the one
/// `gpg --list-keys` shows (these keys carry certifications by other keys, newer than their
/// self-signatures and without an expiry, which must not make them live forever).
#[test]
fn debians_removed_keys_expire_when_gpg_says_they_do() {
    let (compared, expired) = compare_expiries_with_gpg(Path::new(
        "/usr/share/keyrings/debian-archive-removed-keys.gpg",
    ));
    eprintln!("{compared} removed keys ({expired} expired): kiln's expiry is gpg's for each");
    assert!(compared >= 10, "only {compared} keys compared");
    assert!(expired >= 10, "only {expired} of them expired");
    // The live keyring too: its keys are current, so none may have expired for kiln.
    let (compared, expired) =
        compare_expiries_with_gpg(Path::new("/usr/share/keyrings/debian-archive-keyring.gpg"));
    eprintln!("{compared} current keys: kiln's expiry is gpg's for each");
    assert!(compared >= 3 && expired == 0);
}

/// Compares kiln's computed expiry of every key it keeps from `path` with gpg's listing;
/// returns (keys compared, keys expired).
fn compare_expiries_with_gpg(path: &Path) -> (usize, usize) {
    let ring = kiln::debian::trust::Keyring::load(path).unwrap();
    let listing = Command::new("gpg")
        .args(["--no-default-keyring", "--keyring"])
        .arg(path)
        .args(["--with-colons", "--fixed-list-mode", "--list-keys"])
        .env("GNUPGHOME", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    // pub/sub lines: field 5 is the key id, field 7 the expiry (empty: never).
    let mut gpg_expiry: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let mut primary: Option<u64> = None;
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f[0] != "pub" && f[0] != "sub" {
            continue;
        }
        let own = f[6].parse::<u64>().ok();
        let effective = if f[0] == "pub" {
            primary = own;
            own
        } else {
            // A subkey cannot outlive its primary key.
            match (own, primary) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        gpg_expiry.insert(f[4].to_string(), effective);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (mut compared, mut expired) = (0, 0);
    for (fingerprint, expires) in ring.expiries() {
        let id = &fingerprint[fingerprint.len() - 16..];
        let Some(want) = gpg_expiry.get(id) else {
            panic!("kiln kept {fingerprint}, which gpg does not list");
        };
        assert_eq!(&expires, want, "expiry of {fingerprint}");
        if expires.is_some_and(|t| t < now) {
            expired += 1;
        }
        compared += 1;
    }
    (compared, expired)
}

/// A throw-away key that expired in 2020 but carries a newer certification by another key
/// (without an expiry, as Debian's archive keys do): a live board refuses what it signs.
#[test]
fn a_certification_by_another_key_does_not_revive_an_expired_key() {
    let work = tempfile::tempdir().unwrap();
    let expired = Signer::new(
        "expired archive <expired@kiln.invalid>",
        "1y",
        Some("20190601T000000!"),
    );
    let archive = standard_archive(&work.path().join("archive"), &expired, base_packages(ARCH));
    let fingerprint = String::from_utf8(expired.gpg(&["--with-colons", "--list-keys"]))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("fpr:::::::::"))
        .map(|f| f.trim_end_matches(':').to_string())
        .unwrap();
    // Certified a month after the key was made (gpg will not certify an expired key today).
    let certifier = Signer::new(
        "release team <r@kiln.invalid>",
        "never",
        Some("20190701T000000!"),
    );
    let exported = work.path().join("expired-key.gpg");
    expired.export(&exported);
    certifier.gpg(&["--import", exported.to_str().unwrap()]);
    certifier.gpg(&["--quick-sign-key", &fingerprint]);
    std::fs::write(&archive.keyring, certifier.gpg(&["--export", &fingerprint])).unwrap();
    let listed = certifier.gpg(&["--with-colons", "--check-sigs", &fingerprint]);
    assert!(
        String::from_utf8_lossy(&listed).matches("\nsig:").count() >= 2,
        "the key carries its self-signature and the newer certification"
    );
    let recipe = work.path().join("r");
    archive.write_recipe(&recipe, &[], "");
    let o = kiln(&recipe, &work.path().join("cache"), &["lock"]);
    assert_refused(&o, &["had expired"]);
}

/// Signed metadata apt or gpgv would refuse: a Release dated in 2100 (not valid yet; it would
/// become the image's creation time), one listing the same index twice with different hashes,
/// an InRelease whose `Hash:` armor header disagrees with its signature, and one with 200 KB
/// of bytes after the signature (one short line, not the bytes echoed back).
#[test]
fn signed_metadata_that_apt_or_gpgv_refuses_is_refused_in_one_short_line() {
    type Tamper = fn(&Archive, &Signer);
    let cases: Vec<(&str, Tamper, Vec<&str>)> = vec![
        (
            "future Date",
            |a, s| {
                let r = std::fs::read_to_string(a.dists().join("Release")).unwrap();
                let date = r.lines().find(|l| l.starts_with("Date: ")).unwrap();
                let r = r.replace(date, "Date: Fri, 01 Jan 2100 00:00:00 UTC");
                let dists = a.dists();
                std::fs::write(dists.join("Release"), r).unwrap();
                std::fs::remove_file(dists.join("InRelease")).unwrap();
                std::fs::remove_file(dists.join("Release.gpg")).unwrap();
                s.clearsign(&dists.join("Release"), &dists.join("InRelease"));
                s.detach_sign(&dists.join("Release"), &dists.join("Release.gpg"));
            },
            vec!["not valid yet", "2100", "in the future"],
        ),
        (
            "duplicate SHA256 entry",
            |a, s| {
                let r = std::fs::read_to_string(a.dists().join("Release")).unwrap();
                let entry = r
                    .lines()
                    .find(|l| l.ends_with("Packages.xz") && l.starts_with(' '))
                    .unwrap()
                    .to_string();
                let forged = format!(" {}{}", "0".repeat(64), &entry[65..]);
                let r = r.replace(&entry, &format!("{entry}\n{forged}"));
                let dists = a.dists();
                std::fs::write(dists.join("Release"), r).unwrap();
                std::fs::remove_file(dists.join("InRelease")).unwrap();
                std::fs::remove_file(dists.join("Release.gpg")).unwrap();
                s.clearsign(&dists.join("Release"), &dists.join("InRelease"));
                s.detach_sign(&dists.join("Release"), &dists.join("Release.gpg"));
            },
            vec!["twice", "Packages.xz"],
        ),
        (
            "Hash header mismatch",
            |a, _| {
                let p = a.dists().join("InRelease");
                let t = std::fs::read_to_string(&p).unwrap();
                assert!(t.contains("Hash: SHA512"));
                std::fs::write(&p, t.replace("Hash: SHA512", "Hash: SHA256")).unwrap();
                std::fs::remove_file(a.dists().join("Release.gpg")).unwrap();
            },
            vec!["Hash armor header says SHA256", "SHA512"],
        ),
        (
            "200 KB after the signature",
            |a, _| {
                let p = a.dists().join("InRelease");
                let mut t = std::fs::read(&p).unwrap();
                t.extend(std::iter::repeat_n(b'A', 200_000));
                std::fs::write(&p, t).unwrap();
                std::fs::remove_file(a.dists().join("Release.gpg")).unwrap();
            },
            vec!["data follows the signature block"],
        ),
        (
            "binary bytes after the signature",
            |a, _| {
                let p = a.dists().join("InRelease");
                let mut t = std::fs::read(&p).unwrap();
                t.extend((0..200_000u32).map(|i| (i * 7 % 251) as u8 | 0x80));
                std::fs::write(&p, t).unwrap();
                std::fs::remove_file(a.dists().join("Release.gpg")).unwrap();
            },
            vec!["InRelease"],
        ),
    ];
    for (name, tamper, needles) in cases {
        let work = tempfile::tempdir().unwrap();
        let signer = signer();
        let archive = standard_archive(&work.path().join("archive"), &signer, base_packages(ARCH));
        tamper(&archive, &signer);
        let recipe = work.path().join("r");
        archive.write_recipe(&recipe, &[], "");
        let o = kiln(&recipe, &work.path().join("cache"), &["lock"]);
        eprintln!("{name}: {}", stderr(&o).trim());
        assert_refused(&o, &needles);
        assert!(stderr(&o).len() < 400, "{name}: a long reason");
    }
}

/// A recipe built once into `out` from an archive that also offers `slow-unpack` (1 GiB of
/// zeros: seconds to unpack, so a later build that includes it can be caught in the middle).
/// Returns the working directory, the archive, the recipe and cache directories, and the
/// first image's manifest digest.
fn built_once_beside_a_slow_package() -> (tempfile::TempDir, Archive, PathBuf, PathBuf, String) {
    let work = tempfile::tempdir().unwrap();
    let signer = signer();
    let mut slow = Pkg::new("slow-unpack", "1", ARCH);
    slow.data_bytes = Some((
        "data.tar.zst".into(),
        fixture::zstd_tar(&[], &[("./usr/share/slow/zeros", 1 << 30)]),
    ));
    let mut pkgs = base_packages(ARCH);
    pkgs.push(slow);
    let archive = standard_archive(&work.path().join("archive"), &signer, pkgs);
    let recipe = work.path().join("r");
    let cache = work.path().join("cache");
    archive.write_recipe(&recipe, &[], "");
    assert_ok(&kiln(&recipe, &cache, &["build", "-o", "out"]));
    let before = read_image(&recipe.join("out/oci")).manifest_digest;
    (work, archive, recipe, cache, before)
}

/// `kill -9` in the middle of a build: OUT keeps the previous image, and the working
/// directories the killed build left in OUT are swept by the next build (under OUT's lock).
#[test]
fn debris_of_a_killed_build_is_swept_by_the_next() {
    let (_work, archive, recipe, cache, before) = built_once_beside_a_slow_package();
    let debris = |out: &Path| -> Vec<String> {
        std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".kiln-"))
            .collect()
    };

    archive.write_recipe(&recipe, &["slow-unpack"], "");
    for _ in 0..2 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", "-o", "out"])
            .current_dir(&recipe)
            .env("KILN_CACHE_DIR", &cache)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        // Killed once its root is being unpacked (a working directory with files in it).
        while debris(&recipe.join("out")).len() < 2
            && start.elapsed() < std::time::Duration::from_secs(60)
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let left = debris(&recipe.join("out"));
    eprintln!("left by two killed builds: {left:?}");
    assert!(
        left.len() >= 2,
        "the killed builds left no working directory: {left:?}"
    );
    assert_eq!(read_image(&recipe.join("out/oci")).manifest_digest, before);

    archive.write_recipe(&recipe, &[], "");
    assert_ok(&kiln(&recipe, &cache, &["build", "-o", "out"]));
    assert_eq!(debris(&recipe.join("out")), Vec::<String>::new());
    assert_eq!(read_image(&recipe.join("out/oci")).manifest_digest, before);
}

/// A command that reads or signs OUT while a build is writing into it waits for the build
/// (OUT's lock: shared for readers, exclusive for sign), then works on the new image: sign
/// never adds a signature to a layout the build is about to swap away, and verify never reads
/// a layout replaced halfway.
#[test]
fn sign_and_verify_wait_for_a_build_in_the_same_out() {
    let (work, archive, recipe, cache, before) = built_once_beside_a_slow_package();
    let key = work.path().join("release");
    assert_ok(&kiln(
        &recipe,
        &cache,
        &["keygen", "-o", &key.display().to_string()],
    ));
    let public = format!("{}.pub", key.display());

    archive.write_recipe(&recipe, &["slow-unpack"], "");
    let build = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "-o", "out"])
        .current_dir(&recipe)
        .env("KILN_CACHE_DIR", &cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The build holds OUT once its working directories exist.
    let start = std::time::Instant::now();
    while !std::fs::read_dir(recipe.join("out")).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".kiln-rootfs-")
    }) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "no build started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sign = kiln(
        &recipe,
        &cache,
        &["sign", "out", "--key", &key.display().to_string()],
    );
    let built = build.wait_with_output().unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    assert_ok(&sign);
    assert!(
        stderr(&sign).contains("waiting for the build in out to finish"),
        "{}",
        fixture::text(&sign)
    );
    let after = read_image(&recipe.join("out/oci")).manifest_digest;
    assert_ne!(after, before, "the build replaced the image");
    assert!(
        fixture::text(&sign).contains(&after),
        "sign signed the new image {after}: {}",
        fixture::text(&sign)
    );
    assert_ok(&kiln(&recipe, &cache, &["verify", "out", "--key", &public]));
}
