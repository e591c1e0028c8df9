//! `kiln export` end to end on a fixture image: every format twice (byte-identical), each one
//! read back by the real tools (tar, mount of the ext4, unsquashfs, sfdisk, mtools, bmaptool)
//! and compared with the OCI layers applied in order; then bad input, refused with nothing left
//! behind.
//!
//! The file-system formats need root (owners, device nodes), as CI runs; as another user those
//! tests stop with a message saying so.

use crate::fixture;

use fixture::{base_packages, build_archive, kiln, stderr, text, ArchiveSpec, Entry, Pkg, Signer};
use kiln::image::{ImageTree, Kind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const FLASH: &str = "[flash]\ntable = \"gpt\"\nmax-device-size = 512\npartitions = [\n  { name = \"boot\", size = 8 },\n  { name = \"rootfs-a\", size = 48 },\n  { name = \"rootfs-b\", size = 48 },\n  { name = \"data\", size = 16 },\n]\n";

/// A package with what the export formats must carry faithfully: a /boot for the FAT
/// partition, a symlink into it, odd file names (debugfs and mtools quoting), a setuid file,
/// an owner other than root, a hard link.
fn kernel_pkg() -> Pkg {
    Pkg::new("linux-fixture", "6.1-1", "arm64")
        .field("Priority", "optional")
        .entry(Entry::Dir("./boot/", 0o755))
        .file("./boot/vmlinuz-6.1", "not really a kernel\n", 0o644)
        .entry(Entry::Dir("./boot/dtbs/", 0o755))
        .file("./boot/dtbs/robot.dtb", "not really a device tree\n", 0o644)
        .entry(Entry::Symlink("./vmlinuz", "boot/vmlinuz-6.1"))
        .entry(Entry::Dir("./etc/", 0o755))
        .file("./etc/odd \"name\" with spaces", "quoted\n", 0o600)
        .file("./etc/setuid-tool", "pretend\n", 0o4755)
        .entry(Entry::Hardlink(
            "./etc/setuid-tool-too",
            "./etc/setuid-tool",
        ))
}

/// A built fixture image (built once): (workdir, recipe dir, OUT).
fn built() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static BUILT: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let work = tempfile::tempdir().unwrap();
        let signer = Signer::new("kiln fixture archive <archive@kiln.invalid>", "never", None);
        let mut packages = base_packages("arm64");
        packages.push(kernel_pkg());
        let archive = build_archive(
            &work.path().join("archive"),
            ArchiveSpec::new("bookworm", "arm64", packages, &signer),
        );
        let recipe = work.path().join("recipe");
        archive.write_recipe(&recipe, &["hello", "linux-fixture"], FLASH);
        let o = kiln(&recipe, &work.path().join("cache"), &["build", "-o", "out"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = recipe.join("out");
        (work, recipe, out)
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn export(args: &[&str], paths: &[&Path]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.arg("export");
    for p in paths {
        c.arg(p);
    }
    c.args(args);
    c.env_remove("SOURCE_DATE_EPOCH");
    c.output().unwrap()
}

/// `kiln export OUT --format disk -o TARGET --board BOARD`.
fn export_disk(out: &Path, target: &Path, board: &Path) -> Output {
    let args = [
        "--format",
        "disk",
        "-o",
        target.to_str().unwrap(),
        "--board",
        board.to_str().unwrap(),
    ];
    export(&args, &[out])
}

/// Every path of a tree with its kind, mode, owner, mtime, link target and content hash.
fn summary(tree: &ImageTree, skip: &[&str]) -> BTreeMap<String, String> {
    tree.iter()
        .filter(|(p, _)| !skip.contains(&p.as_str()))
        .map(|(p, n)| {
            let what = match &n.kind {
                Kind::Dir => "dir".to_string(),
                Kind::File => {
                    let data = tree.read(p).unwrap();
                    format!("file {}", kiln::digest::sha256_hex(&data))
                }
                Kind::Symlink(t) => format!("symlink {t}"),
                Kind::Special => format!("special {:?}", n.device),
            };
            (
                p.clone(),
                format!("{what} {:o} {}:{} {}", n.mode, n.uid, n.gid, n.mtime),
            )
        })
        .collect()
}

fn assert_same_tree(expected: &ImageTree, got: &ImageTree, what: &str) {
    assert_same_summary(expected, &summary(got, &[]), what);
}

fn assert_same_summary(expected: &ImageTree, got: &BTreeMap<String, String>, what: &str) {
    let a = summary(expected, &[]);
    for (p, s) in &a {
        assert_eq!(Some(s), got.get(p), "{what}: {p}");
    }
    for p in got.keys() {
        assert!(a.contains_key(p), "{what}: extra path {p}");
    }
}

/// Exports `format` twice into `dir` and checks the two files are byte-identical.
fn export_twice(format: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    let out = &built().2;
    let mut files = Vec::new();
    for i in 0..2 {
        let f = dir.join(format!("{format}-{i}.img"));
        let mut args = vec!["--format", format, "-o", f.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = export(&args, &[out]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("exported sha256:"), "{}", text(&o));
        files.push(f);
    }
    let a = std::fs::read(&files[0]).unwrap();
    let b = std::fs::read(&files[1]).unwrap();
    assert!(a == b, "two {format} exports differ");
    files.swap_remove(0)
}

fn layers() -> ImageTree {
    ImageTree::from_oci_layout(&built().2.join("oci")).unwrap()
}

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn tar_export_is_the_layers_applied_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let tar = export_twice("tar", dir.path(), &[]);
    let got = ImageTree::open(&tar).unwrap();
    assert_same_tree(&layers(), &got, "tar");
    // GNU tar lists it, with numeric owners only.
    let listing = run_ok(
        Command::new("tar")
            .arg("-tvf")
            .arg(&tar)
            .arg("--numeric-owner"),
    );
    assert!(
        listing.contains("etc/setuid-tool-too link to etc/setuid-tool"),
        "{listing}"
    );
}

#[test]
fn ext4_export_mounts_as_the_same_tree() {
    if !is_root() {
        eprintln!("skipped: the ext4 export needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = export_twice("ext4", dir.path(), &[]);
    run_ok(Command::new("e2fsck").arg("-fn").arg(&img));
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-o", "loop,ro"])
            .arg(&img)
            .arg(&mnt),
    );
    // Compared before unmounting: a directory tree's files are read when asked for.
    let got = ImageTree::from_dir(&mnt).map(|t| summary(&t, &["/lost+found"]));
    let _ = Command::new("umount").arg(&mnt).status();
    assert_same_summary(&layers(), &got.unwrap(), "ext4");
    // The board's partition size is used when a board is given.
    let sized = dir.path().join("sized.ext4");
    let board = built().1.join("boards/test.toml");
    let o = export(
        &[
            "--format",
            "ext4",
            "-o",
            sized.to_str().unwrap(),
            "--board",
            board.to_str().unwrap(),
        ],
        &[&built().2],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::metadata(&sized).unwrap().len(), 48 << 20);
}

#[test]
fn squashfs_export_unpacks_as_the_same_tree() {
    if !is_root() {
        eprintln!("skipped: the squashfs export needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = export_twice("squashfs", dir.path(), &[]);
    let unpacked = dir.path().join("unpacked");
    run_ok(
        Command::new("unsquashfs")
            .args(["-no-progress", "-d"])
            .arg(&unpacked)
            .arg(&img),
    );
    let got = ImageTree::from_dir(&unpacked).unwrap();
    assert_same_tree(&layers(), &got, "squashfs");
}

#[test]
fn disk_export_has_the_boards_partitions_and_a_bmap_bmaptool_accepts() {
    if !is_root() {
        eprintln!("skipped: the disk export needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let board = built().1.join("boards/test.toml");
    let img = export_twice("disk", dir.path(), &["--board", board.to_str().unwrap()]);
    let bmap = PathBuf::from(format!("{}.bmap", img.display()));
    let other_bmap = dir.path().join("disk-1.img.bmap");
    assert_eq!(
        std::fs::read(&bmap).unwrap(),
        std::fs::read(&other_bmap).unwrap(),
        "two bmaps differ"
    );
    assert_eq!(
        std::fs::metadata(&img).unwrap().len(),
        (1 + 8 + 48 + 48 + 16 + 1) << 20
    );

    // The partition table, as sfdisk reads it back.
    let table: serde_json::Value =
        serde_json::from_str(&run_ok(Command::new("sfdisk").arg("--json").arg(&img))).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["boot", "rootfs-a", "rootfs-b", "data"]);
    assert_eq!(parts[1]["start"], 2048 + 8 * 2048);

    // The same board with an MBR table (the stretch boards' layout).
    let mbr_board = dir.path().join("mbr.toml");
    std::fs::write(
        &mbr_board,
        std::fs::read_to_string(&board)
            .unwrap()
            .replace("table = \"gpt\"", "table = \"mbr\""),
    )
    .unwrap();
    let mbr = dir.path().join("mbr.img");
    let o = export_disk(&built().2, &mbr, &mbr_board);
    assert!(o.status.success(), "{}", text(&o));
    let table: serde_json::Value =
        serde_json::from_str(&run_ok(Command::new("sfdisk").arg("--json").arg(&mbr))).unwrap();
    assert_eq!(table["partitiontable"]["label"], "dos", "{table}");
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["c", "83", "83", "83"], "{table}");
    assert_eq!(parts[0]["bootable"], true, "{table}");

    // bmaptool writes only the mapped blocks and checks every range's sha256.
    let copy = dir.path().join("copy.img");
    run_ok(
        Command::new("bmaptool")
            .arg("copy")
            .arg("--bmap")
            .arg(&bmap)
            .arg(&img)
            .arg(&copy),
    );

    // The root partition mounts as the image's tree; the boot partition holds /boot.
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let offset = (1 + 8) << 20;
    run_ok(
        Command::new("mount")
            .arg("-o")
            .arg(format!("loop,ro,offset={offset},sizelimit={}", 48 << 20))
            .arg(&copy)
            .arg(&mnt),
    );
    let got = ImageTree::from_dir(&mnt).map(|t| summary(&t, &["/lost+found"]));
    let _ = Command::new("umount").arg(&mnt).status();
    assert_same_summary(&layers(), &got.unwrap(), "disk rootfs-a");
    let boot = run_ok(
        Command::new("mdir")
            .args(["-/", "-b", "-i"])
            .arg(format!("{}@@{}", copy.display(), 1 << 20))
            .env("MTOOLS_SKIP_CHECK", "1"),
    );
    assert!(boot.contains("vmlinuz-6.1"), "{boot}");
    assert!(boot.contains("robot.dtb"), "{boot}");
}

#[test]
fn bad_input_is_refused_with_nothing_left_behind() {
    let (_, recipe, out) = built();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("x.img");
    let board = recipe.join("boards/test.toml");
    let listing = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };

    // A disk without a board.
    let o = export(
        &["--format", "disk", "-o", target.to_str().unwrap()],
        &[out],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("--format disk needs --board"),
        "{}",
        text(&o)
    );

    // A board whose flash layout is wrong, and a board the image was not built for.
    let bad_board = dir.path().join("bad.toml");
    let board_text = std::fs::read_to_string(&board).unwrap();
    std::fs::write(&bad_board, board_text.replace("size = 48", "size = -1")).unwrap();
    let o = export_disk(out, &target, &bad_board);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("bad.toml: [flash] partitions[1].size: must be a positive number of MiB"),
        "{}",
        text(&o)
    );
    let other_board = dir.path().join("other.toml");
    std::fs::write(
        &other_board,
        board_text.replace("name = \"test-board\"", "name = \"other-board\""),
    )
    .unwrap();
    let o = export_disk(out, &target, &other_board);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("built for board 'test-board', not 'other-board'"),
        "{}",
        text(&o)
    );

    // An unsigned image when a signature is required.
    let keybase = dir.path().join("release");
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("keygen")
        .arg("-o")
        .arg(&keybase)
        .output()
        .unwrap();
    assert!(o.status.success());
    let public = format!("{}.pub", keybase.display());
    let o = export(
        &[
            "--format",
            "tar",
            "-o",
            target.to_str().unwrap(),
            "--key",
            &public,
        ],
        &[out],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("REJECTED"), "{}", text(&o));

    // A layer changed on disk.
    let copy = dir.path().join("out");
    run_ok(Command::new("cp").arg("-a").arg(out).arg(&copy));
    let manifest = ImageTree::from_oci_layout(&copy.join("oci")).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("oci/index.json")).unwrap()).unwrap();
    let m_hex = index["manifests"][0]["digest"].as_str().unwrap()[7..].to_string();
    assert_eq!(manifest.manifest.unwrap().digest, format!("sha256:{m_hex}"));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.join("oci/blobs/sha256").join(&m_hex)).unwrap())
            .unwrap();
    let layer = copy
        .join("oci/blobs/sha256")
        .join(&m["layers"][0]["digest"].as_str().unwrap()[7..]);
    let mut bytes = std::fs::read(&layer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&layer, bytes).unwrap();
    let o = export(
        &["--format", "tar", "-o", target.to_str().unwrap()],
        &[&copy],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("does not match its digest"),
        "{}",
        text(&o)
    );

    // Nothing was written: no output, no staging directory.
    let left: Vec<String> = listing(dir.path())
        .into_iter()
        .filter(|n| {
            !["bad.toml", "other.toml", "out"].contains(&n.as_str()) && !n.starts_with("release")
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `kiln keygen` + `kiln cert`: (dir, CA cert, release key, release cert).
fn rauc_keys(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let k = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    };
    k(&["keygen", "-o", "ca"]);
    k(&["keygen", "-o", "release"]);
    k(&[
        "cert",
        "ca",
        "--key",
        "ca",
        "--subject",
        "CN=Robot CA,O=kiln tests",
        "-o",
        "ca.pem",
    ]);
    k(&[
        "cert",
        "issue",
        "--ca-key",
        "ca",
        "--ca",
        "ca.pem",
        "--for",
        "release.pub",
        "-o",
        "release.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("release"),
        dir.join("release.pem"),
    )
}

#[test]
fn rauc_bundle_is_accepted_by_rauc_and_refused_after_a_flipped_byte() {
    if !is_root() {
        eprintln!("skipped: the rauc export needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, key, cert) = rauc_keys(dir.path());
    // openssl agrees the release certificate chains to the CA.
    run_ok(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&ca)
            .arg(&cert),
    );
    let bundle = export_twice(
        "rauc",
        dir.path(),
        &[
            "--signing-key",
            key.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ],
    );
    let keyring = format!("--keyring={}", ca.display());
    let info = run_ok(
        Command::new("rauc")
            .args(["info", "--output-format=json", &keyring])
            .arg(&bundle),
    );
    let info: serde_json::Value = serde_json::from_str(info.lines().last().unwrap()).unwrap();
    assert_eq!(info["compatible"], "kiln,test", "{info}");
    assert_eq!(info["version"], "1.0", "{info}");
    let image = ImageTree::from_oci_layout(&built().2.join("oci"))
        .unwrap()
        .manifest
        .unwrap()
        .digest;
    assert_eq!(info["build"], image.as_str(), "{info}");

    // rauc extract checks the payload against the signed verity root hash.
    let extracted = dir.path().join("extracted");
    run_ok(
        Command::new("rauc")
            .args(["extract", &keyring])
            .arg(&bundle)
            .arg(&extracted),
    );
    let slot = ImageTree::open(&extracted.join("rootfs.img"));
    assert!(slot.is_err(), "rootfs.img is a squashfs, not a tar");
    let unpacked = dir.path().join("slot");
    run_ok(
        Command::new("unsquashfs")
            .args(["-no-progress", "-d"])
            .arg(&unpacked)
            .arg(extracted.join("rootfs.img")),
    );
    assert_same_tree(
        &layers(),
        &ImageTree::from_dir(&unpacked).unwrap(),
        "rauc slot",
    );

    // veritysetup, independently, agrees with the tree and root hash the manifest signs.
    let bytes = std::fs::read(&bundle).unwrap();
    let n = bytes.len();
    let sig_len = u64::from_be_bytes(bytes[n - 8..].try_into().unwrap()) as usize;
    // rauc 1.8's JSON leaves the verity fields out; its text output has them.
    let text_info = run_ok(Command::new("rauc").args(["info", &keyring]).arg(&bundle));
    let field = |name: &str| -> String {
        let line = text_info
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text_info}"));
        line.split(':')
            .nth(1)
            .unwrap()
            .trim()
            .trim_matches('\'')
            .to_string()
    };
    let hash_size: usize = field("Verity Size").parse().unwrap();
    let data_len = n - 8 - sig_len - hash_size;
    let data = dir.path().join("data");
    let tree = dir.path().join("tree");
    std::fs::write(&data, &bytes[..data_len]).unwrap();
    std::fs::write(&tree, &bytes[data_len..data_len + hash_size]).unwrap();
    run_ok(
        Command::new("veritysetup")
            .args(["verify", "--no-superblock"])
            .arg(format!("--data-blocks={}", data_len / 4096))
            .arg(format!("--salt={}", field("Verity Salt")))
            .arg(&data)
            .arg(&tree)
            .arg(field("Verity Hash")),
    );

    // One payload byte flipped: rauc refuses to extract.
    let mut bad = bytes.clone();
    bad[data_len / 2] ^= 1;
    let bad_bundle = dir.path().join("bad.raucb");
    std::fs::write(&bad_bundle, bad).unwrap();
    let o = Command::new("rauc")
        .args(["extract", &keyring])
        .arg(&bad_bundle)
        .arg(dir.path().join("bad-extract"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("corrupted"), "{}", text(&o));

    // A keyring that is not the issuing CA: refused.
    let o = Command::new("rauc")
        .arg("info")
        .arg(format!("--keyring={}", cert.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));

    // A release key that does not belong to the certificate: kiln refuses, writes nothing.
    let stranger = dir.path().join("ca");
    let target = dir.path().join("wrong.raucb");
    let o = export(
        &[
            "--format",
            "rauc",
            "-o",
            target.to_str().unwrap(),
            "--signing-key",
            stranger.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ],
        &[&built().2],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("does not belong to the release certificate"),
        "{}",
        text(&o)
    );
    assert!(!target.exists());
}

/// A loop device over a new sparse file of `mib` MiB, detached when dropped.
struct Loop {
    device: PathBuf,
}

impl Loop {
    fn new(dir: &Path, name: &str, mib: u64) -> Loop {
        let backing = dir.join(name);
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let device = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(&backing));
        Loop {
            device: PathBuf::from(device.trim()),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.device).output();
        let _ = Command::new("losetup").arg("-d").arg(&self.device).output();
    }
}

#[test]
fn flash_writes_a_signed_image_onto_a_loop_device_and_refuses_unsafe_targets() {
    if !is_root() {
        eprintln!("skipped: flashing a loop device needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, recipe, out) = built();
    let board = recipe.join("boards/test.toml");
    let signed = dir.path().join("out");
    run_ok(Command::new("cp").arg("-a").arg(out).arg(&signed));
    let (_, key, _) = rauc_keys(dir.path());
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("sign")
            .arg(&signed)
            .arg("--key")
            .arg(&key),
    );
    let public = format!("{}.pub", key.display());
    let cache = dir.path().join("cache");
    let flash = |image: &Path, device: &Path, extra: &[&str]| -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.arg("flash")
            .arg(image)
            .arg(device)
            .args(["--key", &public, "--board"])
            .arg(&board)
            .arg("--cache")
            .arg(&cache)
            .args(extra);
        c.output().unwrap()
    };

    // Onto a loop device: written, read back, and equal to `kiln export --format disk`.
    let card = Loop::new(dir.path(), "card.img", 200);
    let o = flash(&signed, &card.device, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("read back and verified"), "{}", text(&o));
    let disk = dir.path().join("disk.img");
    let o = export_disk(&signed, &disk, &board);
    assert!(o.status.success(), "{}", text(&o));
    let size = std::fs::metadata(&disk).unwrap().len().to_string();
    run_ok(
        Command::new("cmp")
            .args(["-n", &size])
            .arg(&disk)
            .arg(&card.device),
    );
    let leftovers: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "the disk image stays in the cache: {leftovers:?}"
    );

    // A mounted device: refused, naming the mount point.
    let mounted = Loop::new(dir.path(), "mounted.img", 200);
    run_ok(Command::new("mkfs.ext4").arg("-q").arg(&mounted.device));
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run_ok(Command::new("mount").arg(&mounted.device).arg(&mnt));
    let o = flash(&signed, &mounted.device, &[]);
    let _ = Command::new("umount").arg(&mnt).output();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "{} is mounted at {}",
            mounted.device.display(),
            mnt.display()
        )),
        "{}",
        text(&o)
    );

    // Larger than the board's max-device-size (512 MiB): refused unless forced.
    let big = Loop::new(dir.path(), "big.img", 600);
    let o = flash(&signed, &big.device, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("more than the board's max-device-size 512 MiB"),
        "{}",
        text(&o)
    );
    let o = flash(&signed, &big.device, &["--force"]);
    assert!(o.status.success(), "{}", text(&o));

    // Too small, a regular file, an unsigned image: refused.
    let small = Loop::new(dir.path(), "small.img", 64);
    let o = flash(&signed, &small.device, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("the image needs 122 MiB"), "{}", text(&o));
    let o = flash(&signed, &disk, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not a block device"), "{}", text(&o));
    let o = flash(out, &card.device, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("REJECTED"), "{}", text(&o));
}

/// The spooled reader `kiln build` checks the whole image with (layers streamed, contents in an
/// unlinked file) sees the same tree as the in-memory one, hard links and all, and refuses a
/// layer whose bytes no longer match its digest.
#[test]
fn the_spooled_layout_reader_sees_the_same_tree_and_refuses_altered_layers() {
    let spool_dir = tempfile::tempdir().unwrap();
    let layout = built().2.join("oci");
    let spooled = ImageTree::from_oci_layout_spooled(
        &layout,
        tempfile::tempfile_in(spool_dir.path()).unwrap(),
    )
    .unwrap();
    assert_same_tree(&layers(), &spooled, "spooled");
    assert!(
        spooled
            .iter()
            .any(|(p, _)| spooled.hard_link_leader(p).is_some()),
        "no hard link survived spooling"
    );

    // Flip one byte of the base layer (same size, so only the digest can tell).
    let copy = spool_dir.path().join("oci");
    let o = Command::new("cp")
        .arg("-a")
        .arg(&layout)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let blob = |digest: &serde_json::Value| {
        copy.join("blobs/sha256")
            .join(digest.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let index = json(copy.join("index.json"));
    let manifest = json(blob(&index["manifests"][0]["digest"]));
    let largest = blob(&manifest["layers"][0]["digest"]);
    let mut bytes = std::fs::read(&largest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&largest, &bytes).unwrap();
    let err =
        ImageTree::from_oci_layout_spooled(&copy, tempfile::tempfile_in(spool_dir.path()).unwrap())
            .expect_err("an altered layer was read");
    assert!(
        err.to_string().contains("does not match its digest"),
        "{err}"
    );
}
