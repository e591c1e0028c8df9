//! The in-root file API: every read and write kiln makes inside an image root goes through here.
//!
//! **What it guarantees.** An image root is untrusted: packages, overlays and maintainer scripts
//! put symlinks, hard links, FIFOs and device nodes into it. Paths are resolved *by the kernel*
//! inside the root (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, through the
//! [`pathrs`] crate, which falls back to an `O_PATH | O_NOFOLLOW` walk that checks every step on
//! kernels without `openat2`). A symlink met on the way is followed as it would be on the device:
//! an absolute target starts again at the image root, `..` stops at the root. The last component
//! is never followed when writing: it is replaced (`O_CREAT | O_EXCL | O_NOFOLLOW`, `symlinkat`,
//! `linkat` without `AT_SYMLINK_FOLLOW`, `mknodat`) and its owner, mode and times are set with
//! `AT_SYMLINK_NOFOLLOW` or on the descriptor just opened. Reads open once, require a regular
//! file, and read at most a stated number of bytes. So nothing an image holds can make kiln read
//! or write a file outside the root, or block on a FIFO.
//!
//! **The rule.** Other modules never join a root path and call `std::fs` on it: they ask an
//! [`ImageRoot`] for a [`Dir`] and work on names inside it. The host path of the root is still
//! available ([`ImageRoot::host`]) for what must name it to the kernel as a whole: a chroot, a
//! mount, a `tar` of the tree.
//!
//! Names that come from packages (a Package field, a trigger name, a control member) are checked
//! by their own rules before they reach this module ([`crate::debian::control::valid_package_name`]);
//! this module refuses a name that is not a single path component.

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// An operation inside an image root that was refused or failed; the path is the image path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct InRootError {
    /// The path inside the image (`/var/lib/dpkg/status`).
    pub path: String,
    /// What went wrong, one line.
    pub reason: String,
}

/// The kind of an entry, as `lstat` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO, socket or device node.
    Special,
}

/// Owner, permission bits and mtime an entry gets (numeric, as in a tar header).
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Modification time.
    pub mtime: i64,
}

/// What `lstat` says of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Its kind.
    pub kind: Kind,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// The whole st_mode (type and permission bits).
    pub mode: u32,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Size in bytes.
    pub size: u64,
    /// Device number of a device node.
    pub rdev: u64,
    /// Number of hard links.
    pub nlink: u64,
    /// Device and inode (to tell hard links apart from copies).
    pub identity: (u64, u64),
}

/// The extended attribute `attr` (at most 256 bytes) of an open file; None when it has none or
/// the filesystem has no xattrs.
fn fd_xattr(
    fd: impl rustix::fd::AsFd,
    attr: &std::ffi::CStr,
) -> Result<Option<Vec<u8>>, rustix::io::Errno> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::fgetxattr(fd, attr, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(None),
        Err(e) => Err(e),
    }
}

fn meta_of(st: &rustix::fs::Stat) -> Meta {
    Meta {
        kind: kind_of(st.st_mode),
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode,
        mtime: st.st_mtime,
        size: st.st_size as u64,
        rdev: st.st_rdev,
        nlink: st.st_nlink,
        identity: (st.st_dev, st.st_ino),
    }
}

/// An image root opened for confined access.
#[derive(Debug)]
pub struct ImageRoot {
    root: pathrs::Root,
    host: PathBuf,
}

/// A directory inside an image root, held open: names inside it are single components.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// The image path of this directory as it was asked for (for messages).
    path: String,
}

fn os_reason(e: impl std::error::Error) -> String {
    // pathrs errors say "<operation> failed" and keep the errno in their source.
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn is_not_found(e: &pathrs::error::Error) -> bool {
    matches!(e.kind(), pathrs::error::ErrorKind::OsError(Some(code)) if code == libc::ENOENT)
}

/// The image path `p` as normal components; `..` and empty paths are refused (callers pass
/// paths from packages and recipes, which never need them).
fn relative(p: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err("path contains '..'".into()),
            Component::Prefix(_) => return Err("not a Unix path".into()),
        }
    }
    Ok(out)
}

/// Symlinks followed while creating directories through dangling links (Linux's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// `p` with `.` dropped and `..` applied lexically, stopping at the root (as the kernel's
/// `RESOLVE_IN_ROOT` does); only used to name directories to create, which are then resolved
/// again by the kernel.
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn display(p: &Path) -> String {
    format!("/{}", p.display())
}

impl ImageRoot {
    /// Opens the directory `host` as an image root.
    pub fn open(host: &Path) -> Result<ImageRoot, InRootError> {
        let root = pathrs::Root::open(host).map_err(|e| InRootError {
            path: host.display().to_string(),
            reason: format!("cannot open the image root: {}", os_reason(e)),
        })?;
        Ok(ImageRoot {
            root,
            host: host.to_path_buf(),
        })
    }

    /// Host path of the root: only for naming the whole tree to the kernel or a tool (chroot,
    /// mount, tar), never for joining and opening paths inside it.
    pub fn host(&self) -> &Path {
        &self.host
    }

    /// The root directory itself.
    pub fn root_dir(&self) -> Result<Dir, InRootError> {
        self.dir("/")?.ok_or_else(|| InRootError {
            path: "/".into(),
            reason: "the image root is gone".into(),
        })
    }

    /// The directory at `path` (symlinks on the way followed inside the root), or None when
    /// some component does not exist.
    pub fn dir(&self, path: impl AsRef<Path>) -> Result<Option<Dir>, InRootError> {
        let path = path.as_ref();
        let fail = |reason: String| InRootError {
            path: display(path),
            reason,
        };
        let rel = relative(path).map_err(fail)?;
        let target = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel.as_path()
        };
        match self.root.resolve(target) {
            Ok(handle) => {
                let fd: OwnedFd = handle.into();
                let st = rustix::fs::fstat(&fd).map_err(|e| fail(e.to_string()))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    return Err(fail("is not a directory".into()));
                }
                Ok(Some(Dir {
                    fd,
                    path: display(&rel),
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(fail(os_reason(e))),
        }
    }

    /// The directory at `path`, creating missing components as root-owned 0755 directories
    /// (as dpkg does for a package's parent directories).
    pub fn make_dir_all(&self, path: impl AsRef<Path>) -> Result<Dir, InRootError> {
        self.make_dir_all_at(path.as_ref(), 0)
    }

    fn make_dir_all_at(&self, path: &Path, depth: usize) -> Result<Dir, InRootError> {
        if let Some(d) = self.dir(path)? {
            return Ok(d);
        }
        let rel = relative(path).map_err(|reason| InRootError {
            path: display(path),
            reason,
        })?;
        let mut dir = self.root_dir()?;
        for name in rel.iter() {
            dir = match dir.kind(name)? {
                None => dir.make_dir(name, None)?,
                // An existing symlink or directory: resolve it inside the root.
                Some(kind) => {
                    let logical = Path::new(&dir.path).join(name);
                    match self.dir(&logical)? {
                        Some(d) => d,
                        // A dangling symlink: create its target (inside the root) as dpkg
                        // would create the directory it names, then resolve it again.
                        None if kind == Kind::Symlink && depth < MAX_SYMLINKS => {
                            let target = dir.read_link(name)?;
                            let base = if target.is_absolute() {
                                PathBuf::from("/")
                            } else {
                                PathBuf::from(&dir.path)
                            };
                            self.make_dir_all_at(&lexical(&base.join(target)), depth + 1)?;
                            self.dir(&logical)?
                                .ok_or_else(|| dir.err(name, "does not resolve"))?
                        }
                        None => return Err(dir.err(name, "is a dangling symbolic link")),
                    }
                }
            };
        }
        Ok(dir)
    }

    /// The host path of directory `path` of the image, created inside the root if missing,
    /// for tools that must be handed a path (a compiler, pip, an unpacker). Refused when
    /// reaching it goes through a symlink anywhere (even one that stays inside the root): only
    /// then does the host path name the same directory the in-root walk found.
    pub fn host_dir(&self, path: impl AsRef<Path>) -> Result<PathBuf, InRootError> {
        let path = path.as_ref();
        let rel = relative(path).map_err(|reason| InRootError {
            path: display(path),
            reason,
        })?;
        self.make_dir_all(&rel)?;
        let mut at = self.root_dir()?;
        for part in rel.components() {
            let name = part.as_os_str();
            match at.kind(name)? {
                Some(Kind::Dir) => {}
                Some(Kind::Symlink) => {
                    return Err(InRootError {
                        path: display(path),
                        reason: format!(
                            "{} is a symbolic link; kiln needs a real directory there",
                            name.to_string_lossy()
                        ),
                    })
                }
                _ => {
                    return Err(InRootError {
                        path: display(path),
                        reason: "is not a directory".into(),
                    })
                }
            }
            at = at.sub(name)?.ok_or_else(|| InRootError {
                path: display(path),
                reason: "vanished while kiln walked to it".into(),
            })?;
        }
        Ok(self.host.join(rel))
    }

    /// The parent directory of `path` and its last component; the parent is created when
    /// `create` is set, otherwise None when it does not exist.
    pub fn parent(
        &self,
        path: impl AsRef<Path>,
        create: bool,
    ) -> Result<Option<(Dir, OsString)>, InRootError> {
        let path = path.as_ref();
        let rel = relative(path).map_err(|reason| InRootError {
            path: display(path),
            reason,
        })?;
        let (Some(name), Some(parent)) = (rel.file_name(), rel.parent()) else {
            return Err(InRootError {
                path: display(path),
                reason: "names the image root itself".into(),
            });
        };
        let dir = if create {
            Some(self.make_dir_all(parent)?)
        } else {
            self.dir(parent)?
        };
        Ok(dir.map(|d| (d, name.to_os_string())))
    }

    /// Writes a whole file (parents created), replacing a file or symlink at the path.
    pub fn write(&self, path: impl AsRef<Path>, data: &[u8], mode: u32) -> Result<(), InRootError> {
        let path = path.as_ref();
        let (dir, name) = self.parent(path, true)?.ok_or_else(|| InRootError {
            path: display(path),
            reason: "its directory is missing".into(),
        })?;
        dir.write_file(&name, data, mode)
    }

    /// Reads a regular file of at most `max` bytes; None when it (or its parent) is missing.
    /// The last component is not followed: a symlink there is refused.
    pub fn read(&self, path: impl AsRef<Path>, max: u64) -> Result<Option<Vec<u8>>, InRootError> {
        match self.parent(path, false)? {
            Some((dir, name)) => dir.read(&name, max),
            None => Ok(None),
        }
    }

    /// The kind of the entry at `path` without following it; None when missing.
    pub fn kind(&self, path: impl AsRef<Path>) -> Result<Option<Kind>, InRootError> {
        match self.parent(path, false)? {
            Some((dir, name)) => dir.kind(&name),
            None => Ok(None),
        }
    }

    /// What `lstat` says of `path` (the root itself included); None when missing.
    pub fn metadata(&self, path: impl AsRef<Path>) -> Result<Option<Meta>, InRootError> {
        let path = path.as_ref();
        let rel = relative(path).map_err(|reason| InRootError {
            path: display(path),
            reason,
        })?;
        if rel.as_os_str().is_empty() {
            let root = self.root_dir()?;
            let st = rustix::fs::fstat(&root.fd).map_err(|e| InRootError {
                path: "/".into(),
                reason: e.to_string(),
            })?;
            return Ok(Some(meta_of(&st)));
        }
        match self.parent(path, false)? {
            Some((dir, name)) => dir.metadata(&name),
            None => Ok(None),
        }
    }

    /// Sets owner, mode and mtime of `path` (the root itself included), never following it.
    pub fn set_owner(&self, path: impl AsRef<Path>, owner: Owner) -> Result<(), InRootError> {
        let path = path.as_ref();
        if relative(path).is_ok_and(|r| r.as_os_str().is_empty()) {
            let root = self.root_dir()?;
            let fd = root.open_self()?;
            return root.set_owner_fd(".", &fd, owner);
        }
        let (dir, name) = self.parent(path, false)?.ok_or_else(|| InRootError {
            path: display(path),
            reason: "is missing".into(),
        })?;
        dir.set_owner(&name, owner)
    }

    /// Removes the non-directory at `path`; Ok(false) when there was none.
    pub fn remove_file(&self, path: impl AsRef<Path>) -> Result<bool, InRootError> {
        match self.parent(path, false)? {
            Some((dir, name)) => dir.remove_file(&name),
            None => Ok(false),
        }
    }

    /// Removes the directory `path` if it is empty; Ok(false) when it is missing or not empty.
    pub fn remove_empty_dir(&self, path: impl AsRef<Path>) -> Result<bool, InRootError> {
        let path = path.as_ref();
        let Some((dir, name)) = self.parent(path, false)? else {
            return Ok(false);
        };
        if dir.kind(&name)? != Some(Kind::Dir) {
            return Ok(false);
        }
        match rustix::fs::unlinkat(&dir.fd, name.as_os_str(), AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOTEMPTY) | Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(dir.err(&name, e)),
        }
    }

    /// Removes `path` and everything under it (never following a symlink); Ok(false) when
    /// there was nothing.
    pub fn remove_all(&self, path: impl AsRef<Path>) -> Result<bool, InRootError> {
        match self.parent(path, false)? {
            Some((dir, name)) => dir.remove_all(&name),
            None => Ok(false),
        }
    }
}

/// Refuses anything but one normal path component.
fn single(name: &OsStr) -> Result<(), String> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(format!(
            "'{}' is not a single file name",
            String::from_utf8_lossy(b)
        ));
    }
    Ok(())
}

fn kind_of(mode: u32) -> Kind {
    match FileType::from_raw_mode(mode) {
        FileType::Directory => Kind::Dir,
        FileType::RegularFile => Kind::File,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Special,
    }
}

impl Dir {
    /// The image path of this directory.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn err(&self, name: &OsStr, reason: impl std::fmt::Display) -> InRootError {
        let base = self.path.trim_end_matches('/');
        InRootError {
            path: format!("{base}/{}", name.to_string_lossy()),
            reason: reason.to_string(),
        }
    }

    fn checked<'n>(&self, name: &'n OsStr) -> Result<&'n OsStr, InRootError> {
        single(name).map_err(|r| self.err(name, r))?;
        Ok(name)
    }

    /// What is at `name`, not following a symlink; None when nothing is.
    pub fn kind(&self, name: impl AsRef<OsStr>) -> Result<Option<Kind>, InRootError> {
        let name = self.checked(name.as_ref())?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(kind_of(st.st_mode))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(self.err(name, e)),
        }
    }

    /// What `lstat` says of `name`; None when nothing is there.
    pub fn metadata(&self, name: impl AsRef<OsStr>) -> Result<Option<Meta>, InRootError> {
        let name = self.checked(name.as_ref())?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(meta_of(&st))),
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => Ok(None),
            Err(e) => Err(self.err(name, e)),
        }
    }

    /// The subdirectory `name` itself (a symlink there is refused, not followed).
    pub fn sub(&self, name: impl AsRef<OsStr>) -> Result<Option<Dir>, InRootError> {
        let name = self.checked(name.as_ref())?;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => Ok(Some(Dir {
                fd,
                path: format!(
                    "{}/{}",
                    self.path.trim_end_matches('/'),
                    name.to_string_lossy()
                ),
            })),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(rustix::io::Errno::NOTDIR) | Err(rustix::io::Errno::LOOP) => {
                Err(self.err(name, "is not a directory"))
            }
            Err(e) => Err(self.err(name, e)),
        }
    }

    /// Removes whatever non-directory is at `name` so a new entry can take its place.
    pub fn clear(&self, name: impl AsRef<OsStr>) -> Result<(), InRootError> {
        let name = name.as_ref();
        match self.kind(name)? {
            None => Ok(()),
            Some(Kind::Dir) => {
                Err(self.err(name, "would replace a directory with a non-directory"))
            }
            Some(_) => rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())
                .map_err(|e| self.err(name, e)),
        }
    }

    /// Creates a new regular file at `name` (replacing a non-directory) with mode 0600, open
    /// for writing; set its owner with [`Dir::set_owner_fd`] once written.
    pub fn create_file(&self, name: impl AsRef<OsStr>) -> Result<File, InRootError> {
        let name = name.as_ref();
        self.clear(name)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_bits_truncate(0o600))
            .map_err(|e| self.err(name, format!("cannot create: {e}")))?;
        Ok(File::from(fd))
    }

    /// Writes a whole file at `name` (replacing a non-directory) with the given owner.
    pub fn write(
        &self,
        name: impl AsRef<OsStr>,
        data: &[u8],
        owner: Owner,
    ) -> Result<(), InRootError> {
        self.write_from(name, &mut &data[..], owner)
    }

    /// As [`Dir::write`], the bytes streamed from `data` (a large file is never held whole).
    pub fn write_from(
        &self,
        name: impl AsRef<OsStr>,
        data: &mut dyn io::Read,
        owner: Owner,
    ) -> Result<(), InRootError> {
        let name = name.as_ref();
        let mut f = self.create_file(name)?;
        io::copy(data, &mut f).map_err(|e| self.err(name, e))?;
        self.set_owner_fd(name, &f, owner)
    }

    /// Writes a whole file kiln itself makes at `name` (replacing a non-directory): owned by
    /// the build (root), `mode`, dated now (packing clamps it to SOURCE_DATE_EPOCH).
    pub fn write_file(
        &self,
        name: impl AsRef<OsStr>,
        data: &[u8],
        mode: u32,
    ) -> Result<(), InRootError> {
        let name = name.as_ref();
        let mut f = self.create_file(name)?;
        io::Write::write_all(&mut f, data).map_err(|e| self.err(name, e))?;
        rustix::fs::fchmod(&f, Mode::from_bits_truncate(mode & 0o7777))
            .map_err(|e| self.err(name, e))
    }

    /// Owner, then mode (chown clears setuid bits, so the order matters), then mtime, on an
    /// open descriptor of `name`.
    pub fn set_owner_fd(
        &self,
        name: impl AsRef<OsStr>,
        fd: impl AsFd,
        owner: Owner,
    ) -> Result<(), InRootError> {
        let name = name.as_ref();
        match rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(owner.uid)),
            Some(rustix::fs::Gid::from_raw(owner.gid)),
        ) {
            // Unprivileged development runs keep the caller's ownership; builds run as root.
            Ok(()) | Err(rustix::io::Errno::PERM) => {}
            Err(e) => return Err(self.err(name, e)),
        }
        rustix::fs::fchmod(&fd, Mode::from_bits_truncate(owner.mode & 0o7777))
            .map_err(|e| self.err(name, e))?;
        rustix::fs::futimens(&fd, &times(owner.mtime)).map_err(|e| self.err(name, e))
    }

    /// Sets owner, mode (unless a symlink) and mtime of `name` without following it.
    pub fn set_owner(&self, name: impl AsRef<OsStr>, owner: Owner) -> Result<(), InRootError> {
        let name = self.checked(name.as_ref())?;
        let kind = self.kind(name)?.ok_or_else(|| self.err(name, "vanished"))?;
        match rustix::fs::chownat(
            &self.fd,
            name,
            Some(rustix::fs::Uid::from_raw(owner.uid)),
            Some(rustix::fs::Gid::from_raw(owner.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(()) | Err(rustix::io::Errno::PERM) => {}
            Err(e) => return Err(self.err(name, e)),
        }
        if kind != Kind::Symlink {
            // Not a symlink (checked above, and nothing else writes this tree meanwhile).
            rustix::fs::chmodat(
                &self.fd,
                name,
                Mode::from_bits_truncate(owner.mode & 0o7777),
                AtFlags::empty(),
            )
            .map_err(|e| self.err(name, e))?;
        }
        rustix::fs::utimensat(
            &self.fd,
            name,
            &times(owner.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.err(name, e))
    }

    /// Creates the directory `name` and returns it: with the given owner, or (None) as kiln's
    /// own directories are made, 0755 by the build, dated now.
    pub fn make_dir(
        &self,
        name: impl AsRef<OsStr>,
        owner: Option<Owner>,
    ) -> Result<Dir, InRootError> {
        let name = self.checked(name.as_ref())?;
        rustix::fs::mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700))
            .map_err(|e| self.err(name, format!("cannot create directory: {e}")))?;
        let handle = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err(name, e))?;
        match owner {
            Some(owner) => self.set_owner_fd(name, &handle, owner)?,
            None => rustix::fs::fchmod(&handle, Mode::from_bits_truncate(0o755))
                .map_err(|e| self.err(name, e))?,
        }
        Ok(Dir {
            fd: handle,
            path: format!(
                "{}/{}",
                self.path.trim_end_matches('/'),
                name.to_string_lossy()
            ),
        })
    }

    /// Device and inode of the non-directory `name` (not followed), to tell whether two paths
    /// are one file; None when missing.
    pub fn file_identity(
        &self,
        name: impl AsRef<OsStr>,
    ) -> Result<Option<(u64, u64)>, InRootError> {
        let name = self.checked(name.as_ref())?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if kind_of(st.st_mode) == Kind::File => Ok(Some((st.st_dev, st.st_ino))),
            Ok(_) | Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(self.err(name, e)),
        }
    }

    /// Renames `from` to `to` inside this directory (replacing a non-directory `to`).
    pub fn rename(
        &self,
        from: impl AsRef<OsStr>,
        to: impl AsRef<OsStr>,
    ) -> Result<(), InRootError> {
        let from = self.checked(from.as_ref())?;
        let to = self.checked(to.as_ref())?;
        rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(|e| {
            self.err(
                from,
                format!("cannot rename to {}: {e}", to.to_string_lossy()),
            )
        })
    }

    /// Empties the regular file `name` in place (owner, mode and inode kept).
    pub fn truncate(&self, name: impl AsRef<OsStr>) -> Result<(), InRootError> {
        let name = self.checked(name.as_ref())?;
        let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::empty())
            .map_err(|e| self.err(name, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.err(name, e))?;
        if kind_of(st.st_mode) != Kind::File {
            return Err(self.err(name, "is not a regular file"));
        }
        rustix::fs::ftruncate(&fd, 0).map_err(|e| self.err(name, e))
    }

    /// This directory opened for reading (for its own owner and mode, or its entries).
    pub fn open_self(&self) -> Result<OwnedFd, InRootError> {
        rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err(OsStr::new("."), e))
    }

    /// The extended attribute `attr` of this directory itself; None when it has none.
    pub fn xattr(&self, attr: &std::ffi::CStr) -> Result<Option<Vec<u8>>, InRootError> {
        let fd = self.open_self()?;
        fd_xattr(&fd, attr).map_err(|e| self.err(OsStr::new("."), e))
    }

    /// The extended attribute `attr` of the regular file `name` (not followed); None when it
    /// has none or is missing.
    pub fn file_xattr(
        &self,
        name: impl AsRef<OsStr>,
        attr: &std::ffi::CStr,
    ) -> Result<Option<Vec<u8>>, InRootError> {
        let name = name.as_ref();
        let Some((file, _)) = self.open_read(name)? else {
            return Ok(None);
        };
        fd_xattr(&file, attr).map_err(|e| self.err(name, e))
    }

    /// The target of the symlink `name`, as stored.
    pub fn read_link(&self, name: impl AsRef<OsStr>) -> Result<PathBuf, InRootError> {
        let name = self.checked(name.as_ref())?;
        rustix::fs::readlinkat(&self.fd, name, Vec::new())
            .map(|t| PathBuf::from(OsStr::from_bytes(t.as_bytes())))
            .map_err(|e| self.err(name, e))
    }

    /// Creates a symlink `name -> target` (replacing a non-directory); the target is stored
    /// as given, never resolved here.
    pub fn symlink(
        &self,
        name: impl AsRef<OsStr>,
        target: impl AsRef<OsStr>,
    ) -> Result<(), InRootError> {
        let name = name.as_ref();
        self.clear(name)?;
        rustix::fs::symlinkat(target.as_ref(), &self.fd, name)
            .map_err(|e| self.err(name, format!("cannot create symlink: {e}")))
    }

    /// Creates a hard link `name` to the non-directory `from_name` in `from` (never following
    /// a symlink at either end).
    pub fn hardlink(
        &self,
        name: impl AsRef<OsStr>,
        from: &Dir,
        from_name: impl AsRef<OsStr>,
    ) -> Result<(), InRootError> {
        let name = name.as_ref();
        let from_name = from.checked(from_name.as_ref())?;
        match from.kind(from_name)? {
            Some(Kind::Dir) => return Err(self.err(name, "hard link to a directory")),
            None => {
                return Err(self.err(
                    name,
                    format!(
                        "hard link target {}/{} does not exist",
                        from.path.trim_end_matches('/'),
                        from_name.to_string_lossy()
                    ),
                ))
            }
            Some(_) => {}
        }
        self.clear(name)?;
        rustix::fs::linkat(&from.fd, from_name, &self.fd, name, AtFlags::empty())
            .map_err(|e| self.err(name, format!("cannot link: {e}")))
    }

    /// Creates a FIFO or device node at `name` (replacing a non-directory).
    pub fn mknod(
        &self,
        name: impl AsRef<OsStr>,
        kind: FileType,
        major: u32,
        minor: u32,
    ) -> Result<(), InRootError> {
        let name = name.as_ref();
        self.clear(name)?;
        rustix::fs::mknodat(
            &self.fd,
            name,
            kind,
            Mode::from_bits_truncate(0o600),
            rustix::fs::makedev(major, minor),
        )
        .map_err(|e| self.err(name, format!("mknod: {e}")))
    }

    /// Opens the regular file `name` for reading; None when missing. A symlink, FIFO or device
    /// there is refused without opening it for I/O, so nothing blocks.
    pub fn open_read(&self, name: impl AsRef<OsStr>) -> Result<Option<(File, u64)>, InRootError> {
        let name = self.checked(name.as_ref())?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                return Err(self.err(name, "is a symbolic link, not a file"))
            }
            Err(e) => return Err(self.err(name, e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| self.err(name, e))?;
        if kind_of(st.st_mode) != Kind::File {
            return Err(self.err(name, "is not a regular file"));
        }
        Ok(Some((File::from(fd), st.st_size as u64)))
    }

    /// Reads the regular file `name` whole, refusing one larger than `max` bytes; None when
    /// missing.
    pub fn read(&self, name: impl AsRef<OsStr>, max: u64) -> Result<Option<Vec<u8>>, InRootError> {
        let name = name.as_ref();
        let Some((file, size)) = self.open_read(name)? else {
            return Ok(None);
        };
        if size > max {
            return Err(self.err(
                name,
                format!("is {size} bytes, more than the {max} allowed"),
            ));
        }
        let mut data = Vec::with_capacity(size as usize);
        file.take(max + 1)
            .read_to_end(&mut data)
            .map_err(|e| self.err(name, e))?;
        if data.len() as u64 > max {
            return Err(self.err(name, format!("grew past the {max} bytes allowed")));
        }
        Ok(Some(data))
    }

    /// Removes the non-directory `name`; Ok(false) when nothing was there.
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> Result<bool, InRootError> {
        let name = name.as_ref();
        match self.kind(name)? {
            None => Ok(false),
            Some(Kind::Dir) => Err(self.err(name, "is a directory")),
            Some(_) => rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())
                .map(|()| true)
                .map_err(|e| self.err(name, e)),
        }
    }

    /// Removes `name` and, for a directory, everything below it, never following a symlink.
    pub fn remove_all(&self, name: impl AsRef<OsStr>) -> Result<bool, InRootError> {
        let name = name.as_ref();
        match self.kind(name)? {
            None => Ok(false),
            Some(Kind::Dir) => {
                if let Some(sub) = self.sub(name)? {
                    for entry in sub.entries()? {
                        sub.remove_all(&entry)?;
                    }
                }
                rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR)
                    .map(|()| true)
                    .map_err(|e| self.err(name, e))
            }
            Some(_) => self.remove_file(name),
        }
    }

    /// The names in this directory, sorted by bytes (`.` and `..` left out).
    pub fn entries(&self) -> Result<Vec<OsString>, InRootError> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err(OsStr::new("."), e))?;
        let mut names = Vec::new();
        let mut dir = rustix::fs::Dir::read_from(&fd).map_err(|e| self.err(OsStr::new("."), e))?;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| self.err(OsStr::new("."), e))?;
            let n = entry.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
        names.sort();
        Ok(names)
    }
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

#[cfg(test)]
mod tests {
    /// The rule of this module's header, kept by a test: outside this file and outside tests,
    /// no code joins a path onto an image root (whatever the variable: root, merged, upper,
    /// lower, rootfs) and hands it to `std::fs` or asks the host file system about it.
    #[test]
    fn no_other_module_touches_an_image_root_through_std_fs() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let roots = ["root", "merged", "upper", "lower", "rootfs", "image_root"];
        let host_calls = [
            ".exists()",
            ".is_dir()",
            ".is_file()",
            ".metadata()",
            ".symlink_metadata()",
            ".read_link()",
        ];
        let mut found = Vec::new();
        let mut stack = vec![src.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                if p.extension() != Some(OsStr::new("rs")) || p.ends_with("inroot.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                for (n, line) in code.lines().enumerate() {
                    let joins_a_root = roots.iter().any(|r| {
                        line.match_indices(&format!("{r}.join(")).any(|(at, _)| {
                            let before = line[..at].chars().next_back();
                            // `self.root` of the download cache is not an image root.
                            !matches!(before, Some(c) if c.is_alphanumeric() || c == '_' || c == '.')
                        })
                    });
                    let touches =
                        line.contains("fs::") || host_calls.iter().any(|c| line.contains(c));
                    if joins_a_root && touches {
                        found.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "use inroot::ImageRoot instead:\n{}",
            found.join("\n")
        );
    }

    use super::*;
    use std::fs;

    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("victim"), "keep").unwrap();
        (d, root, outside)
    }

    #[test]
    fn symlinks_resolve_inside_the_root_and_never_escape() {
        let (_d, root, outside) = tree();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("host")).unwrap();
        let r = ImageRoot::open(&root).unwrap();
        r.write("/bin/ls", b"ls", 0o755).unwrap();
        r.write("abs/bin/cat", b"cat", 0o755).unwrap();
        assert_eq!(fs::read(root.join("usr/bin/ls")).unwrap(), b"ls");
        assert_eq!(fs::read(root.join("usr/bin/cat")).unwrap(), b"cat");
        // Climbing and absolute symlinks to host paths stay inside: `..` stops at the root.
        r.write("up/x", b"x", 0o644).unwrap();
        assert_eq!(fs::read(root.join("x")).unwrap(), b"x");
        let host_inside = relative(&outside).unwrap();
        r.write(Path::new("host").join("victim"), b"new", 0o644)
            .unwrap();
        assert_eq!(fs::read_to_string(outside.join("victim")).unwrap(), "keep");
        assert_eq!(
            fs::read(root.join(&host_inside).join("victim")).unwrap(),
            b"new"
        );
        assert!(r.write("../x", b"", 0o644).is_err());
    }

    #[test]
    fn the_last_component_is_replaced_never_written_through() {
        let (_d, root, outside) = tree();
        std::os::unix::fs::symlink(outside.join("victim"), root.join("link")).unwrap();
        let r = ImageRoot::open(&root).unwrap();
        r.write("link", b"new", 0o644).unwrap();
        assert_eq!(fs::read_to_string(outside.join("victim")).unwrap(), "keep");
        assert!(fs::symlink_metadata(root.join("link")).unwrap().is_file());
        // Reading does not follow it either.
        std::os::unix::fs::symlink(outside.join("victim"), root.join("link2")).unwrap();
        assert!(r
            .read("link2", 100)
            .unwrap_err()
            .reason
            .contains("symbolic link"));
    }

    #[test]
    fn reads_refuse_fifos_and_oversize_files_without_blocking() {
        let (_d, root, _outside) = tree();
        let r = ImageRoot::open(&root).unwrap();
        r.root_dir()
            .unwrap()
            .mknod("fifo", FileType::Fifo, 0, 0)
            .unwrap();
        assert!(r
            .read("fifo", 100)
            .unwrap_err()
            .reason
            .contains("not a regular"));
        r.write("big", &[0u8; 200], 0o644).unwrap();
        assert!(r.read("big", 100).unwrap_err().reason.contains("more than"));
        assert_eq!(r.read("missing/x", 100).unwrap(), None);
    }

    #[test]
    fn names_must_be_single_components() {
        let (_d, root, _outside) = tree();
        let r = ImageRoot::open(&root).unwrap();
        let d = r.root_dir().unwrap();
        for bad in ["..", "a/b", ".", ""] {
            assert!(d.write_file(bad, b"", 0o644).is_err(), "{bad}");
        }
    }

    #[test]
    fn remove_all_does_not_follow_symlinks() {
        let (_d, root, outside) = tree();
        fs::create_dir_all(root.join("var/tmp/deep")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("var/tmp/deep/out")).unwrap();
        let r = ImageRoot::open(&root).unwrap();
        assert!(r.remove_all("var/tmp").unwrap());
        assert!(outside.join("victim").exists());
        assert!(!root.join("var/tmp").exists());
    }

    #[test]
    fn make_dir_all_creates_root_owned_0755_dirs_through_symlinks() {
        let (_d, root, _outside) = tree();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        let r = ImageRoot::open(&root).unwrap();
        // `lib` dangles (usr/lib is missing): its target is created inside the root.
        r.make_dir_all("lib/x").unwrap();
        assert!(root.join("usr/lib/x").is_dir());
        r.make_dir_all("lib/a/b/c").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let m = fs::metadata(root.join("usr/lib/a/b/c")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o755);
    }

    #[test]
    fn host_dir_is_refused_through_any_symlink() {
        let (_d, root, outside) = tree();
        let r = ImageRoot::open(&root).unwrap();
        let ok = r.host_dir("/var/cache/kiln").unwrap();
        assert_eq!(ok, root.join("var/cache/kiln"));
        assert!(ok.is_dir());
        std::os::unix::fs::symlink(&outside, root.join("srv")).unwrap();
        let e = r.host_dir("/srv/build").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // Nothing was created on the host side of the link.
        assert!(!outside.join("build").exists());
        std::os::unix::fs::symlink("usr", root.join("u")).unwrap();
        assert!(
            r.host_dir("/u/bin").is_err(),
            "a link inside the root is refused too"
        );
    }
}
