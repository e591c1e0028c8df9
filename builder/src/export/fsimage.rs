//! File-system images of a materialised tree: ext4 (mke2fs -d), squashfs (mksquashfs) and the
//! FAT boot partition (mkfs.vfat + mcopy), each made reproducible.
//!
//! What makes them reproducible, tool by tool:
//! - mke2fs: a fixed UUID and directory-hash seed (`-U`, `-E hash_seed`), a kiln-written
//!   mke2fs.conf instead of the host's (`MKE2FS_CONFIG`), `E2FSPROGS_FAKE_TIME` for the
//!   superblock times. e2fsprogs 1.47.0 copies each inode's ctime and atime from the staging
//!   tree (the time kiln created it, which no syscall can set), so kiln sets both to the mtime
//!   afterwards with `debugfs -w` (`set_inode_field`); 1.47.1 would honour SOURCE_DATE_EPOCH.
//! - mksquashfs: `-reproducible` is its default since 4.4; `-mkfs-time` fixes the superblock,
//!   file mtimes are already clamped; xattrs off (layers carry none).
//! - FAT: `mkfs.vfat --invariant` with a fixed volume id; mtools honours SOURCE_DATE_EPOCH.

use super::{io_err, run_tool, ExportError, SourceImage};
use crate::image::{ImageTree, Kind};
use crate::inroot::{ImageRoot, Owner};
use std::path::Path;
use std::process::Command;

/// The identity of one ext4 file system.
pub struct Ext4Ids {
    /// File-system UUID.
    pub uuid: String,
    /// Directory hash seed (a UUID).
    pub hash_seed: String,
    /// Volume label (at most 16 bytes).
    pub label: String,
}

impl Ext4Ids {
    /// Identifiers for the file system of slot `label`, derived from the image digest.
    pub fn for_slot(image: &SourceImage, label: &str) -> Ext4Ids {
        Ext4Ids {
            uuid: image.derived_uuid(&format!("ext4-uuid {label}")),
            hash_seed: image.derived_uuid(&format!("ext4-hash-seed {label}")),
            label: label.chars().take(16).collect(),
        }
    }
}

/// mke2fs's configuration, fixed so the host's /etc/mke2fs.conf cannot change the bytes. The
/// features are those of Debian's ext4 default that stretch's kernel (4.9) and e2fsprogs
/// (1.43) understand; orphan_file (e2fsprogs 1.47) is left out on purpose.
const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 5.0
\tlazy_itable_init = 1

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

const MIB: u64 = 1 << 20;

/// The size an ext4 file system of `tree` gets when the board gives none: the data in 4 KiB
/// blocks and 256-byte inodes, a quarter more for metadata and the journal's room, plus 32 MiB,
/// rounded up to whole MiB.
pub fn default_ext4_size(tree: &ImageTree) -> u64 {
    let (bytes, inodes) = super::rootfs::footprint(tree);
    let raw = (bytes + inodes * 256) * 5 / 4 + 32 * MIB;
    raw.div_ceil(MIB) * MIB
}

/// Writes an ext4 image of `dir` (the materialised `image`, or an empty file system when
/// `dir` is None) to `out`, `size` bytes (default: [`default_ext4_size`]).
pub fn ext4(
    image: &SourceImage,
    dir: &Path,
    out: &Path,
    size: Option<u64>,
    ids: &Ext4Ids,
) -> Result<(), ExportError> {
    let size = match size {
        Some(s) => {
            let (bytes, inodes) = super::rootfs::footprint(&image.tree);
            let needed = bytes + inodes * 256;
            if needed + needed / 20 > s {
                return Err(ExportError::Usage(format!(
                    "the root filesystem needs about {} MiB but its partition holds {} MiB",
                    (needed + needed / 20).div_ceil(MIB),
                    s / MIB
                )));
            }
            s
        }
        None => default_ext4_size(&image.tree),
    };
    make_ext4(Some(dir), out, size, ids, image.created)?;
    fix_inode_times(&image.tree, out, image.created)
}

/// An empty ext4 file system (a data partition).
pub fn empty_ext4(out: &Path, size: u64, ids: &Ext4Ids, sde: u64) -> Result<(), ExportError> {
    make_ext4(None, out, size, ids, sde)
}

fn make_ext4(
    dir: Option<&Path>,
    out: &Path,
    size: u64,
    ids: &Ext4Ids,
    sde: u64,
) -> Result<(), ExportError> {
    let conf = out.with_extension("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF).map_err(io_err(&conf))?;
    let file = std::fs::File::create(out).map_err(io_err(out))?;
    file.set_len(size).map_err(io_err(out))?;
    drop(file);
    let mut cmd = Command::new("mke2fs");
    cmd.args(["-q", "-F", "-t", "ext4", "-U", &ids.uuid, "-L", &ids.label])
        .arg("-E")
        .arg(format!(
            "hash_seed={},root_owner=0:0,nodiscard",
            ids.hash_seed
        ))
        .env("MKE2FS_CONFIG", &conf)
        .env("E2FSPROGS_FAKE_TIME", sde.to_string())
        .env("SOURCE_DATE_EPOCH", sde.to_string());
    if let Some(dir) = dir {
        cmd.arg("-d").arg(dir);
    }
    cmd.arg(out).arg(format!("{}k", size / 1024));
    let result = run_tool(&mut cmd, None);
    let _ = std::fs::remove_file(&conf);
    result
}

/// Sets every inode's ctime and atime to its (clamped) mtime with one debugfs session.
fn fix_inode_times(tree: &ImageTree, image_file: &Path, sde: u64) -> Result<(), ExportError> {
    let mut script = String::new();
    for (path, node) in tree.iter() {
        if path.contains('\n') {
            return Err(ExportError::BadImage {
                image: path.escape_debug().to_string(),
                reason: "a file name with a newline cannot go into an ext4 image".into(),
            });
        }
        if tree.hard_link_leader(path).is_some() {
            continue;
        }
        // debugfs (libss) quoting: inside double quotes, "" is one literal quote.
        let quoted = format!("\"{}\"", path.replace('"', "\"\""));
        let t = node.mtime.min(sde);
        script.push_str(&format!(
            "sif {quoted} ctime @{t}\nsif {quoted} atime @{t}\n"
        ));
    }
    let script_file = image_file.with_extension("debugfs");
    std::fs::write(&script_file, script).map_err(io_err(&script_file))?;
    let mut cmd = Command::new("debugfs");
    cmd.arg("-w")
        .arg("-f")
        .arg(&script_file)
        .arg(image_file)
        .env("E2FSPROGS_FAKE_TIME", sde.to_string());
    let result = run_tool(&mut cmd, None);
    let _ = std::fs::remove_file(&script_file);
    result
}

/// Writes a squashfs (xz) of `dir` to `out`.
pub fn squashfs(dir: &Path, out: &Path, sde: u64) -> Result<(), ExportError> {
    run_tool(
        Command::new("mksquashfs")
            .arg(dir)
            .arg(out)
            .args([
                "-noappend",
                "-no-progress",
                "-quiet",
                "-no-xattrs",
                "-comp",
                "xz",
                "-reproducible",
            ])
            .arg("-mkfs-time")
            .arg(sde.to_string()),
        None,
    )
}

fn in_boot(e: crate::inroot::InRootError) -> ExportError {
    ExportError::BadImage {
        image: "/boot".into(),
        reason: e.to_string(),
    }
}

/// Writes a FAT file system of `size` bytes holding the image's `/boot` (regular files and
/// directories; a symlink is copied as the file it resolves to inside the image).
pub fn boot_vfat(
    image: &SourceImage,
    staging: &Path,
    out: &Path,
    size: u64,
    label: &str,
) -> Result<(), ExportError> {
    let file = std::fs::File::create(out).map_err(io_err(out))?;
    file.set_len(size).map_err(io_err(out))?;
    drop(file);
    let volume_id = &image.derived_uuid("vfat-volume-id")[..8];
    run_tool(
        Command::new("mkfs.vfat")
            .args(["--invariant", "-i", volume_id, "-n", label])
            .arg(out),
        None,
    )?;
    let src = staging.join("boot-files");
    std::fs::create_dir(&src).map_err(io_err(&src))?;
    // Written through the in-root API: the names come from the image.
    let boot = ImageRoot::open(&src).map_err(in_boot)?;
    let mut top = Vec::new();
    let mut times = Vec::new();
    for (path, node) in image.tree.iter() {
        let Some(rel) = path.strip_prefix("/boot/") else {
            continue;
        };
        let real = image
            .tree
            .resolve(path)
            .and_then(|p| image.tree.get(&p).map(|n| (p.clone(), n.kind.clone())));
        let mode = match (&node.kind, real) {
            (Kind::Dir, _) => {
                boot.make_dir_all(rel).map_err(in_boot)?;
                0o755
            }
            (_, Some((real, Kind::File))) => {
                let data = image.tree.read(&real).map_err(io_err(&src.join(rel)))?;
                boot.write(rel, &data[..], 0o644).map_err(in_boot)?;
                0o644
            }
            _ => continue,
        };
        let mtime = node.mtime.min(image.created) as i64;
        times.push((
            rel.to_string(),
            Owner {
                uid: 0,
                gid: 0,
                mode,
                mtime,
            },
        ));
        if !rel.contains('/') {
            top.push(src.join(rel));
        }
    }
    // Deepest first: creating a directory's children changed its mtime.
    for (rel, owner) in times.into_iter().rev() {
        boot.set_owner(&rel, owner).map_err(in_boot)?;
    }
    if top.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("mcopy");
    cmd.args(["-s", "-p", "-m", "-Q", "-i"])
        .arg(out)
        .args(&top)
        .arg("::/")
        .env("SOURCE_DATE_EPOCH", image.created.to_string())
        .env("MTOOLS_SKIP_CHECK", "1");
    run_tool(&mut cmd, None)
}
