//! What an overlay's build changed, read from the overlayfs upper directory and compared with
//! the lower (the base), and the layer directory made of exactly those changes.
//!
//! overlayfs records a deletion as a 0/0 character device and a directory replaced wholesale
//! with the `trusted.overlay.opaque` attribute (kernel Documentation/filesystems/overlayfs.rst);
//! an OCI layer says the same with `.wh.NAME` and `.wh..wh..opq` entries (OCI image-spec,
//! layer.md). Files copied up without being changed (opened for writing, chmod to the same
//! mode) are not changes and are left out.

use crate::inroot::{Dir, ImageRoot, InRootError, Kind, Meta, Owner};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::path::Path;

/// One changed path of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Created or modified (file, symlink, directory whose metadata changed, special file).
    Written,
    /// Removed.
    Deleted,
    /// A directory whose previous contents are all hidden.
    Opaque,
}

/// The changes of an upper directory, by image path (`/etc/x`), and the directories that only
/// hold changes.
#[derive(Debug, Default)]
pub struct Changes {
    /// Changed paths.
    pub changed: BTreeMap<String, Change>,
    /// Directories present in upper only as parents of changes.
    pub parents: Vec<String>,
}

fn same_meta(a: &Meta, b: &Meta) -> bool {
    a.mode == b.mode && a.uid == b.uid && a.gid == b.gid
}

fn inroot(e: InRootError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Whether the upper file `name` of `dir` has the contents of the lower's regular file at
/// `image` (both read inside their roots, never following a link out), compared in chunks.
fn same_content(dir: &Dir, name: &OsStr, lower: &ImageRoot, image: &str) -> io::Result<bool> {
    use std::io::Read;
    let Some((low_dir, low_name)) = lower.parent(image, false).map_err(inroot)? else {
        return Ok(false);
    };
    let Some((mut b, b_len)) = low_dir.open_read(&low_name).map_err(inroot)? else {
        return Ok(false);
    };
    let Some((mut a, a_len)) = dir.open_read(name).map_err(inroot)? else {
        return Ok(false);
    };
    if a_len != b_len {
        return Ok(false);
    }
    let (mut x, mut y) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(true);
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

/// Whether the upper directory carries overlayfs' opaque mark.
fn is_opaque(dir: &Dir) -> io::Result<bool> {
    Ok(dir
        .xattr(c"trusted.overlay.opaque")
        .map_err(inroot)?
        .is_some_and(|v| v == b"y"))
}

/// Whether an upper entry is overlayfs' whiteout: a character device numbered 0/0.
fn is_whiteout(meta: &Meta) -> bool {
    meta.kind == Kind::Special && meta.mode & libc::S_IFMT == libc::S_IFCHR && meta.rdev == 0
}

/// Reads the changes of `upper` against `lower`, both opened as image roots.
pub fn changes(upper: &Path, lower: &Path) -> io::Result<Changes> {
    let mut out = Changes::default();
    let lower = ImageRoot::open(lower).map_err(inroot)?;
    let upper = ImageRoot::open(upper).map_err(inroot)?;
    walk(&upper.root_dir().map_err(inroot)?, &lower, "", &mut out)?;
    Ok(out)
}

fn walk(dir: &Dir, lower: &ImageRoot, rel: &str, out: &mut Changes) -> io::Result<bool> {
    let mut any = false;
    for name in dir.entries().map_err(inroot)? {
        let image = format!("{rel}/{}", name.to_string_lossy());
        let vanished = || io::Error::other(format!("{image}: vanished from the overlay"));
        let meta = dir.metadata(&name).map_err(inroot)?.ok_or_else(vanished)?;
        let lower_meta = lower.metadata(&image).map_err(inroot)?;
        let change = if is_whiteout(&meta) {
            // A whiteout: a change only when the lower had the path.
            lower_meta.is_some().then_some(Change::Deleted)
        } else if meta.kind == Kind::Dir {
            let sub = dir.sub(&name).map_err(inroot)?.ok_or_else(vanished)?;
            if is_opaque(&sub)? {
                walk(&sub, lower, &image, out)?;
                Some(Change::Opaque)
            } else {
                let children = walk(&sub, lower, &image, out)?;
                let unchanged = lower_meta
                    .as_ref()
                    .is_some_and(|l| l.kind == Kind::Dir && same_meta(l, &meta));
                if unchanged {
                    if children {
                        out.parents.push(image.clone());
                        any = true;
                    }
                    None
                } else {
                    Some(Change::Written)
                }
            }
        } else if meta.kind == Kind::File {
            let unchanged = match &lower_meta {
                Some(l) if l.kind == Kind::File && same_meta(l, &meta) => {
                    same_content(dir, &name, lower, &image)?
                }
                _ => false,
            };
            (!unchanged).then_some(Change::Written)
        } else if meta.kind == Kind::Symlink {
            let unchanged = match &lower_meta {
                Some(l) if l.kind == Kind::Symlink => {
                    let (low_dir, low_name) = lower
                        .parent(&image, false)
                        .map_err(inroot)?
                        .ok_or_else(|| io::Error::other(format!("{image}: vanished")))?;
                    let low_target = low_dir.read_link(&low_name).map_err(inroot)?;
                    dir.read_link(&name).map_err(inroot)? == low_target && l.uid == meta.uid
                }
                _ => false,
            };
            (!unchanged).then_some(Change::Written)
        } else {
            Some(Change::Written)
        };
        if let Some(c) = change {
            out.changed.insert(image, c);
            any = true;
        }
    }
    Ok(any)
}

/// Builds the layer directory `dest` holding exactly `changes` of `upper` (whiteouts as
/// `.wh.` files), ready for [`crate::image::pack::pack_layer`].
pub fn layer_dir(upper: &Path, changes: &Changes, dest: &Path, sde: u64) -> io::Result<()> {
    let source = ImageRoot::open(upper).map_err(inroot)?;
    let layer = ImageRoot::open(dest).map_err(inroot)?;
    let owner_of = |m: &Meta| Owner {
        uid: m.uid,
        gid: m.gid,
        mode: m.mode & 0o7777,
        mtime: m.mtime.min(sde as i64),
    };
    let whiteout_owner = Owner {
        uid: 0,
        gid: 0,
        mode: 0o644,
        mtime: sde as i64,
    };
    let meta_of = |path: &str| -> io::Result<Meta> {
        source
            .metadata(path)
            .map_err(inroot)?
            .ok_or_else(|| io::Error::other(format!("{path}: vanished from the overlay")))
    };
    // Parents and changed directories first (path order puts a parent before its children).
    let mut dirs: Vec<&str> = changes.parents.iter().map(String::as_str).collect();
    for (p, c) in &changes.changed {
        let is_dir = source.kind(p).map_err(inroot)? == Some(Kind::Dir);
        if *c == Change::Opaque || (*c == Change::Written && is_dir) {
            dirs.push(p.as_str());
        }
    }
    dirs.sort();
    for d in &dirs {
        layer.make_dir_all(d).map_err(inroot)?;
    }
    let mut owners: Vec<(String, Owner)> = Vec::new();
    for (path, change) in &changes.changed {
        match change {
            Change::Deleted => {
                let (dir, name) = layer
                    .parent(path, true)
                    .map_err(inroot)?
                    .ok_or_else(|| io::Error::other("no parent"))?;
                let wh = format!(".wh.{}", name.to_string_lossy());
                dir.write_file(&wh, b"", 0o644).map_err(inroot)?;
                owners.push((
                    format!("{}/{wh}", crate::image::parent(path).trim_end_matches('/')),
                    whiteout_owner,
                ));
            }
            Change::Opaque => {
                let dir = layer.make_dir_all(path).map_err(inroot)?;
                dir.write_file(".wh..wh..opq", b"", 0o644).map_err(inroot)?;
                owners.push((format!("{path}/.wh..wh..opq"), whiteout_owner));
            }
            Change::Written => {
                let (from_dir, name) =
                    source.parent(path, false).map_err(inroot)?.ok_or_else(|| {
                        io::Error::other(format!("{path}: vanished from the overlay"))
                    })?;
                let kind = from_dir.kind(&name).map_err(inroot)?;
                if kind == Some(Kind::Dir) {
                    continue;
                }
                let meta = meta_of(path)?;
                let (to_dir, _) = layer
                    .parent(path, true)
                    .map_err(inroot)?
                    .ok_or_else(|| io::Error::other("no parent"))?;
                match kind {
                    Some(Kind::Symlink) => {
                        let target = from_dir.read_link(&name).map_err(inroot)?;
                        to_dir.symlink(&name, &target).map_err(inroot)?;
                    }
                    Some(Kind::File) => {
                        let (mut from, _) = from_dir
                            .open_read(&name)
                            .map_err(inroot)?
                            .ok_or_else(|| io::Error::other(format!("{path}: vanished")))?;
                        let mut to = to_dir.create_file(&name).map_err(inroot)?;
                        io::copy(&mut from, &mut to)?;
                    }
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{path}: special files cannot go into an overlay layer"),
                        ))
                    }
                }
                owners.push((path.clone(), owner_of(&meta)));
            }
        }
    }
    let set = |path: &str, owner: Owner| layer.set_owner(path, owner).map_err(inroot);
    for (p, o) in owners {
        set(&p, o)?;
    }
    // Directories' metadata last, deepest first.
    for d in dirs.iter().rev() {
        set(d, owner_of(&meta_of(d)?))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn unchanged_copy_ups_are_not_changes() {
        let d = tempfile::tempdir().unwrap();
        let (lower, upper) = (d.path().join("l"), d.path().join("u"));
        for p in [&lower, &upper] {
            fs::create_dir_all(p.join("etc")).unwrap();
            fs::write(p.join("etc/same"), "x").unwrap();
        }
        fs::write(lower.join("etc/changed"), "old").unwrap();
        fs::write(upper.join("etc/changed"), "new").unwrap();
        fs::create_dir_all(upper.join("opt/app")).unwrap();
        fs::write(upper.join("opt/app/run"), "#!/bin/sh\n").unwrap();
        let c = changes(&upper, &lower).unwrap();
        let paths: Vec<&str> = c.changed.keys().map(String::as_str).collect();
        assert_eq!(paths, ["/etc/changed", "/opt", "/opt/app", "/opt/app/run"]);
        assert_eq!(c.parents, ["/etc"]);
        let layer = d.path().join("layer");
        fs::create_dir(&layer).unwrap();
        layer_dir(&upper, &c, &layer, 1_700_000_000).unwrap();
        assert!(layer.join("etc/changed").is_file());
        assert!(!layer.join("etc/same").exists());
        assert!(layer.join("opt/app/run").is_file());
    }

    /// Deletions and a directory replaced wholesale, as a real overlayfs records them (needs
    /// root and overlayfs, as kiln's overlay stage does): whiteouts become `.wh.` files, the
    /// opaque mark `.wh..wh..opq`; a symlink in upper pointing out of the tree is a change, not
    /// a way out.
    #[test]
    fn whiteouts_and_opaque_directories_of_a_real_overlayfs() {
        use std::process::Command;
        let d = tempfile::tempdir().unwrap();
        let [lower, upper, work, merged] = ["l", "u", "w", "m"].map(|n| d.path().join(n));
        for p in [&lower, &upper, &work, &merged] {
            fs::create_dir_all(p).unwrap();
        }
        fs::create_dir_all(lower.join("etc/old.d")).unwrap();
        fs::write(lower.join("etc/old.d/a"), "a").unwrap();
        fs::write(lower.join("etc/gone"), "g").unwrap();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let mounted = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged)
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting overlayfs (run as root)");
        fs::remove_file(merged.join("etc/gone")).unwrap();
        fs::remove_dir_all(merged.join("etc/old.d")).unwrap();
        fs::create_dir(merged.join("etc/old.d")).unwrap();
        fs::write(merged.join("etc/old.d/b"), "b").unwrap();
        std::os::unix::fs::symlink("/etc", merged.join("etc/out")).unwrap();
        assert!(Command::new("umount")
            .arg(&merged)
            .status()
            .unwrap()
            .success());
        let c = changes(&upper, &lower).unwrap();
        let got: Vec<(&str, &Change)> = c.changed.iter().map(|(p, c)| (p.as_str(), c)).collect();
        assert_eq!(
            got,
            [
                ("/etc/gone", &Change::Deleted),
                ("/etc/old.d", &Change::Opaque),
                ("/etc/old.d/b", &Change::Written),
                ("/etc/out", &Change::Written),
            ]
        );
        let layer = d.path().join("layer");
        fs::create_dir(&layer).unwrap();
        layer_dir(&upper, &c, &layer, 1_700_000_000).unwrap();
        assert!(layer.join("etc/.wh.gone").is_file());
        assert!(layer.join("etc/old.d/.wh..wh..opq").is_file());
        assert_eq!(
            fs::read_link(layer.join("etc/out")).unwrap(),
            Path::new("/etc")
        );
    }
}
