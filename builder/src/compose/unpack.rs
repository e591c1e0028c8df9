//! Safe extraction of a data.tar into the staging root.
//!
//! Every path is resolved by hand, component by component, inside the root: a symlink met on the
//! way is followed the way it would be on the device (an absolute target starts again at the
//! image root), and a relative target that climbs above the root is refused. The last component
//! is never followed: an existing file or symlink is replaced, never written through, and files
//! are opened with `O_NOFOLLOW | O_CREAT | O_EXCL`. So nothing a package says can make kiln write
//! outside the staging root.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// What is wrong with one member of a package.
#[derive(Debug, thiserror::Error)]
#[error("{package}: member '{member}': {reason}")]
pub struct UnpackError {
    /// Package name.
    pub package: String,
    /// The tar member as written in the package.
    pub member: String,
    /// Why it was refused or failed.
    pub reason: String,
}

/// Splits a tar member name into normal components, refusing absolute paths and `..`.
pub fn member_components(name: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if name.first() == Some(&b'/') {
        return Err("absolute path".into());
    }
    let mut out = Vec::new();
    for c in Path::new(OsStr::from_bytes(name)).components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => out.push(n.as_bytes().to_vec()),
            Component::ParentDir => return Err("path contains '..'".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    Ok(out)
}

/// Maximum symlinks followed while resolving one path (Linux's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// The staging root and the rules for resolving paths inside it.
pub struct Root<'a> {
    /// Host path of the image root.
    pub path: &'a Path,
    /// Create missing parent directories (unpacking) or report them (looking up).
    pub create_missing: bool,
}

/// The error text of a lookup that met a missing directory.
pub const MISSING: &str = "no such directory";

/// Where a path's parent directory really is, inside the root.
#[derive(Debug)]
pub struct Resolved {
    /// Host path of the (existing) parent directory.
    pub parent: PathBuf,
    /// The final component, unresolved.
    pub name: Vec<u8>,
}

impl Root<'_> {
    fn host(&self, logical: &[Vec<u8>]) -> PathBuf {
        let mut p = self.path.to_path_buf();
        for c in logical {
            p.push(OsStr::from_bytes(c));
        }
        p
    }

    /// Resolves all but the last component, following symlinks inside the root and creating
    /// missing directories (root-owned, 0755) as dpkg does.
    pub fn resolve_parent(&self, components: &[Vec<u8>]) -> Result<Resolved, String> {
        let Some((name, parents)) = components.split_last() else {
            return Err("empty path".into());
        };
        let mut logical: Vec<Vec<u8>> = Vec::new();
        let mut pending: Vec<Vec<u8>> = parents.iter().rev().cloned().collect();
        let mut followed = 0;
        while let Some(c) = pending.pop() {
            if c == b".." {
                if logical.pop().is_none() {
                    return Err("a symlink on the way leads outside the image root".into());
                }
                continue;
            }
            if c == b"." {
                continue;
            }
            logical.push(c);
            let host = self.host(&logical);
            match fs::symlink_metadata(&host) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && !self.create_missing => {
                    return Err(MISSING.into());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&host)
                        .map_err(|e| format!("cannot create {}: {e}", host.display()))?;
                    fs::set_permissions(&host, fs::Permissions::from_mode(0o755))
                        .map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(format!("{}: {e}", host.display())),
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err("too many levels of symbolic links".into());
                    }
                    let target = fs::read_link(&host).map_err(|e| e.to_string())?;
                    logical.pop();
                    let bytes = target.as_os_str().as_bytes();
                    if bytes.first() == Some(&b'/') {
                        logical.clear();
                    }
                    let parts: Vec<Vec<u8>> = bytes
                        .split(|b| *b == b'/')
                        .filter(|p| !p.is_empty())
                        .map(<[u8]>::to_vec)
                        .collect();
                    pending.extend(parts.into_iter().rev());
                }
                Ok(_) => {
                    return Err(format!(
                        "'/{}' is not a directory",
                        String::from_utf8_lossy(&logical.join(&b'/'))
                    ))
                }
            }
        }
        Ok(Resolved {
            parent: self.host(&logical),
            name: name.clone(),
        })
    }
}

/// Metadata every created entry gets.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Modification time from the archive.
    pub mtime: i64,
}

fn set_times(path: &Path, mtime: i64) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    // SAFETY: `c` is a valid NUL-terminated path and `times` two initialised timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Applies owner, then mode (chown clears setuid bits, so the order matters), then mtime.
pub fn apply_owner(path: &Path, owner: Owner, is_symlink: bool) -> io::Result<()> {
    match std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid)) {
        Ok(()) => {}
        // Unprivileged development runs keep the caller's ownership; CI and builds run as root.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        Err(e) => return Err(e),
    }
    if !is_symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(owner.mode & 0o7777))?;
    }
    set_times(path, owner.mtime)
}

/// Removes whatever non-directory is at `path` so a new entry can take its place.
fn clear_slot(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.to_string()),
        Ok(m) if m.is_dir() => Err("would replace a directory with a non-directory".into()),
        Ok(_) => fs::remove_file(path).map_err(|e| e.to_string()),
    }
}

/// Writes a regular file's contents without following any symlink; returns their MD5 (hex),
/// which dpkg records for every file of a package.
pub fn write_file(dest: &Path, content: &mut dyn Read) -> Result<String, String> {
    clear_slot(dest)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dest)
        .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let mut hashing = Md5Writer {
        inner: &mut file,
        md5: <md5::Md5 as md5::Digest>::new(),
    };
    io::copy(content, &mut hashing).map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    Ok(hex::encode(md5::Digest::finalize(hashing.md5)))
}

struct Md5Writer<'a> {
    inner: &'a mut fs::File,
    md5: md5::Md5,
}

impl io::Write for Md5Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        md5::Digest::update(&mut self.md5, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Creates a symlink, replacing a file or symlink already there.
pub fn write_symlink(dest: &Path, target: &Path) -> Result<(), String> {
    clear_slot(dest)?;
    std::os::unix::fs::symlink(target, dest)
        .map_err(|e| format!("cannot create symlink {}: {e}", dest.display()))
}

/// Creates a hard link to an existing entry (never following a symlink at either end).
pub fn write_hardlink(dest: &Path, existing: &Path) -> Result<(), String> {
    match fs::symlink_metadata(existing) {
        Ok(m) if m.is_dir() => return Err("hard link to a directory".into()),
        Ok(_) => {}
        Err(e) => return Err(format!("hard link target {}: {e}", existing.display())),
    }
    clear_slot(dest)?;
    fs::hard_link(existing, dest).map_err(|e| format!("cannot link {}: {e}", dest.display()))
}

/// Creates a device node or FIFO.
pub fn write_node(dest: &Path, kind: libc::mode_t, major: u32, minor: u32) -> Result<(), String> {
    clear_slot(dest)?;
    let c = std::ffi::CString::new(dest.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let dev = libc::makedev(major, minor);
    // SAFETY: valid C string; mknod does not follow a symlink in the last component.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | 0o600, dev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "mknod {}: {}",
            dest.display(),
            io::Error::last_os_error()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(
            member_components(b"./usr/bin/x").unwrap(),
            vec![b"usr".to_vec(), b"bin".to_vec(), b"x".to_vec()]
        );
        assert!(member_components(b"./").unwrap().is_empty());
        assert!(member_components(b"/etc/passwd").is_err());
        assert!(member_components(b"./usr/../../etc").is_err());
    }

    #[test]
    fn symlinks_resolve_inside_the_root_and_never_escape() {
        let d = tempfile::tempdir().unwrap();
        let root_dir = d.path().join("root");
        fs::create_dir_all(root_dir.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root_dir.join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr", root_dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root_dir.join("up")).unwrap();
        let root = Root {
            path: &root_dir,
            create_missing: true,
        };
        let comps = |s: &str| member_components(s.as_bytes()).unwrap();
        assert_eq!(
            root.resolve_parent(&comps("bin/ls")).unwrap().parent,
            root_dir.join("usr/bin")
        );
        assert_eq!(
            root.resolve_parent(&comps("abs/bin/ls")).unwrap().parent,
            root_dir.join("usr/bin")
        );
        assert!(root
            .resolve_parent(&comps("up/tmp/x"))
            .unwrap_err()
            .contains("outside"));
        // Missing parents are created inside the root.
        assert_eq!(
            root.resolve_parent(&comps("new/dir/f")).unwrap().parent,
            root_dir.join("new/dir")
        );
    }

    #[test]
    fn files_replace_symlinks_instead_of_writing_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert_eq!(
            write_file(&link, &mut &b"new"[..]).unwrap(),
            "22af645d1859cb5ca6da0c484f1f37ea"
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read_to_string(&link).unwrap(), "new");
        assert!(!fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
