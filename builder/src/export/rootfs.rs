//! The flattened root filesystem: as a tar stream, or materialised as a directory tree in a
//! private staging directory for the file-system tools to read.
//!
//! Materialising ([`crate::image::materialise`]) never follows a symlink, and the tar refuses
//! the same hostile trees: an entry whose parent is not a directory in the image.

use super::{io_err, ExportError, SourceImage};
use crate::image::materialise::{materialise, parent_is_dir};
use crate::image::{DeviceKind, ImageTree, Kind};
use std::collections::BTreeMap;
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

fn bad(path: &str, reason: &str) -> ExportError {
    ExportError::BadImage {
        image: path.to_string(),
        reason: reason.to_string(),
    }
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
            parent_is_dir(tree, path).map_err(|e| bad(&e.path, &e.reason))?;
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
                let (data, len) = tree.reader(path).map_err(werr(path))?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(len);
                tar.append_data(&mut h, &name, data).map_err(werr(path))?;
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
