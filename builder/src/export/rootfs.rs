//! The flattened root filesystem: as a tar stream, or materialised as a directory tree in a
//! private staging directory for the file-system tools to read.
//!
//! Materialising never follows a symlink: the tree is created from nothing, parents before
//! children, and an entry whose parent is not a directory in the image (a layer that put a
//! file "under" a symlink) is refused instead of being written through the link.

use super::{io_err, ExportError, SourceImage};
use crate::image::{parent, DeviceKind, ImageTree, Kind, Node};
use crate::inroot::{Dir, ImageRoot, InRootError, Owner};
use rustix::fs::FileType;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A private working directory beside the output file, removed when dropped.
pub struct Staging {
    dir: tempfile::TempDir,
}

impl Staging {
    /// Creates `.kiln-export-*` in the directory of `output`.
    pub fn new(output: &Path) -> Result<Staging, ExportError> {
        let parent = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = tempfile::Builder::new()
            .prefix(".kiln-export-")
            .tempdir_in(parent)
            .map_err(io_err(parent))?;
        Ok(Staging { dir })
    }

    /// The working directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Materialises the image tree under `rootfs/` (once) and returns its path.
    pub fn materialise(&self, image: &SourceImage) -> Result<PathBuf, ExportError> {
        let dest = self.path().join("rootfs");
        if dest.exists() {
            return Ok(dest);
        }
        if !rustix::process::geteuid().is_root() {
            return Err(ExportError::Usage(
                "this format needs root: the file system must keep the image's owners and device nodes"
                    .into(),
            ));
        }
        std::fs::create_dir(&dest).map_err(io_err(&dest))?;
        materialise(&image.tree, &dest, image.created)?;
        Ok(dest)
    }
}

fn owner_of(node: &Node, sde: u64) -> Owner {
    Owner {
        uid: node.uid as u32,
        gid: node.gid as u32,
        mode: node.mode,
        mtime: node.mtime.min(sde) as i64,
    }
}

fn bad(path: &str, reason: &str) -> ExportError {
    ExportError::BadImage {
        image: path.to_string(),
        reason: reason.to_string(),
    }
}

/// Checks that `path`'s parent is a directory of the image (never a symlink).
fn parent_is_dir(tree: &ImageTree, path: &str) -> Result<(), ExportError> {
    let p = parent(path);
    match tree.get(p).map(|n| &n.kind) {
        Some(Kind::Dir) => Ok(()),
        Some(_) => Err(bad(
            path,
            &format!(
                "its parent {p} is not a directory in the image (refusing to write through it)"
            ),
        )),
        None => Err(bad(path, &format!("its parent {p} is missing"))),
    }
}

/// Creates the image tree under `dest` (an empty directory) with the image's owners, modes and
/// clamped mtimes; hard links stay hard links.
pub fn materialise(tree: &ImageTree, dest: &Path, sde: u64) -> Result<(), ExportError> {
    let fail = |path: &str, e: InRootError| bad(path, &e.reason);
    let image = ImageRoot::open(dest).map_err(|e| fail("/", e))?;
    // The parent of an image path (checked to be a directory of the image) and the last name.
    let slot = |path: &str| -> Result<(Dir, OsString), ExportError> {
        parent_is_dir(tree, path)?;
        image
            .parent(path, false)
            .map_err(|e| fail(path, e))?
            .ok_or_else(|| bad(path, "its parent directory was not created"))
    };
    let mut dirs: Vec<(&str, Owner)> = Vec::new();
    let mut aliases: Vec<(&str, &str, &Node)> = Vec::new();
    for (path, node) in tree.iter() {
        if path == "/" {
            dirs.push((path, owner_of(node, sde)));
            continue;
        }
        let (dir, name) = slot(path)?;
        match &node.kind {
            Kind::Dir => {
                dir.make_dir(&name, None).map_err(|e| fail(path, e))?;
                dirs.push((path, owner_of(node, sde)));
                continue;
            }
            Kind::File => {
                if let Some(leader) = tree.hard_link_leader(path) {
                    aliases.push((path, leader, node));
                    continue;
                }
                let data = tree.read(path).map_err(io_err(Path::new(path)))?;
                dir.write(&name, &data, owner_of(node, sde))
                    .map_err(|e| fail(path, e))?;
                continue;
            }
            Kind::Symlink(target) => {
                dir.symlink(&name, target).map_err(|e| fail(path, e))?;
            }
            Kind::Special => {
                let Some(dev) = node.device else {
                    return Err(bad(path, "sockets cannot be exported"));
                };
                let kind = match dev.kind {
                    DeviceKind::Char => FileType::CharacterDevice,
                    DeviceKind::Block => FileType::BlockDevice,
                    DeviceKind::Fifo => FileType::Fifo,
                };
                dir.mknod(&name, kind, dev.major, dev.minor)
                    .map_err(|e| fail(path, e))?;
            }
        }
        dir.set_owner(&name, owner_of(node, sde))
            .map_err(|e| fail(path, e))?;
    }
    for (path, leader, node) in aliases {
        let (dir, name) = slot(path)?;
        let (from, from_name) = slot(leader)?;
        dir.hardlink(&name, &from, &from_name)
            .map_err(|e| fail(path, e))?;
        dir.set_owner(&name, owner_of(node, sde))
            .map_err(|e| fail(path, e))?;
    }
    // Directories last, deepest first: creating children changes a directory's mtime.
    for (path, owner) in dirs.into_iter().rev() {
        if path == "/" {
            let root = image.root_dir().map_err(|e| fail(path, e))?;
            let fd = root.open_self().map_err(|e| fail(path, e))?;
            root.set_owner_fd(".", &fd, owner)
                .map_err(|e| fail(path, e))?;
        } else {
            let (dir, name) = slot(path)?;
            dir.set_owner(&name, owner).map_err(|e| fail(path, e))?;
        }
    }
    Ok(())
}

/// Writes the image tree as one tar: the root as `./`, then every path in order, GNU headers,
/// numeric owners, mtimes clamped to `sde`, each hard-linked file stored once.
pub fn write_tar(tree: &ImageTree, sde: u64, out: &mut dyn Write) -> Result<(), ExportError> {
    let werr = |path: &str| {
        let path = path.to_string();
        move |e: io::Error| ExportError::Io {
            path: PathBuf::from(format!("tar member {path}")),
            reason: e.to_string(),
        }
    };
    let mut tar = tar::Builder::new(out);
    let mut written: BTreeMap<&str, String> = BTreeMap::new();
    for (path, node) in tree.iter() {
        if path != "/" {
            parent_is_dir(tree, path)?;
        }
        let name = if path == "/" {
            "./".to_string()
        } else {
            path.trim_start_matches('/').to_string()
        };
        let mut h = tar::Header::new_gnu();
        h.set_mode(node.mode);
        h.set_uid(node.uid);
        h.set_gid(node.gid);
        h.set_mtime(node.mtime.min(sde));
        h.set_size(0);
        match &node.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                let name = if name.ends_with('/') {
                    name
                } else {
                    format!("{name}/")
                };
                tar.append_data(&mut h, &name, io::empty())
                    .map_err(werr(path))?;
            }
            Kind::File => {
                let group = tree.hard_link_leader(path).unwrap_or(path.as_str());
                if let Some(first) = written.get(group) {
                    h.set_entry_type(tar::EntryType::Link);
                    tar.append_link(&mut h, &name, first).map_err(werr(path))?;
                    continue;
                }
                written.insert(group, name.clone());
                let data = tree.read(path).map_err(werr(path))?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, &name, &data[..])
                    .map_err(werr(path))?;
            }
            Kind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                tar.append_link(&mut h, &name, target).map_err(werr(path))?;
            }
            Kind::Special => {
                let Some(dev) = node.device else {
                    return Err(bad(path, "sockets cannot be exported"));
                };
                h.set_entry_type(match dev.kind {
                    DeviceKind::Char => tar::EntryType::Char,
                    DeviceKind::Block => tar::EntryType::Block,
                    DeviceKind::Fifo => tar::EntryType::Fifo,
                });
                h.set_device_major(dev.major).map_err(werr(path))?;
                h.set_device_minor(dev.minor).map_err(werr(path))?;
                tar.append_data(&mut h, &name, io::empty())
                    .map_err(werr(path))?;
            }
        }
    }
    tar.finish().map_err(werr("end of archive"))?;
    Ok(())
}

/// Bytes the tree's regular files and directories take in 4 KiB blocks, and its inode count:
/// the basis for sizing a file system when the board gives no partition size.
pub fn footprint(tree: &ImageTree) -> (u64, u64) {
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    for (path, node) in tree.iter() {
        inodes += 1;
        if node.kind == Kind::File && tree.hard_link_leader(path).is_none() {
            let len = tree.read(path).map(|d| d.len() as u64).unwrap_or(0);
            bytes += len.div_ceil(4096) * 4096;
        } else if node.kind == Kind::Dir {
            bytes += 4096;
        }
    }
    (bytes, inodes)
}
