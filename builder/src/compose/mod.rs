//! The compose stage: unpacks the locked .debs natively into a staging root and writes the dpkg
//! database, leaving every package `unpacked` for the configure stage.
//!
//! Unpacking never follows a symlink on the way in (see [`unpack`]); a refused member names its
//! package and member. For merged-/usr suites (bookworm and later) the `/bin`, `/sbin`, `/lib`
//! symlinks into `/usr` are made first and kept, as debootstrap and mmdebstrap do; for older
//! suites (stretch) the tree is left as the packages lay it out.

pub mod dpkgdb;
pub mod unpack;

use crate::deb::{read_deb, DebControl, DebError};
use crate::lock::LockedPackage;
use crate::spec::Board;
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use unpack::{member_components, Owner, Root, UnpackError};

/// Why the staging root could not be composed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The .deb itself is malformed.
    #[error(transparent)]
    Deb(#[from] DebError),
    /// A member was refused or could not be written.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// The .deb is not the package the lock says.
    #[error("{path}: control says {found}, the lock pins {expected}")]
    WrongPackage {
        /// Cache path.
        path: PathBuf,
        /// What the control file says.
        found: String,
        /// What the lock says.
        expected: String,
    },
    /// Two packages ship the same file and neither replaces the other.
    #[error("'{path}' is shipped by both {first} and {second}, and {second} does not declare Replaces: {first}")]
    FileConflict {
        /// The path.
        path: String,
        /// Earlier package.
        first: String,
        /// Later package.
        second: String,
    },
    /// Filesystem trouble in the staging root.
    #[error("staging root {path}: {reason}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A package whose data.tar has been decompressed, waiting to be written.
struct Decoded {
    control: DebControl,
    tar: Vec<u8>,
}

/// A package unpacked into the staging root.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// Package name.
    pub name: String,
    /// Architecture.
    pub arch: String,
    /// The control archive.
    pub control: DebControl,
    /// Every path of the package as dpkg lists it (`/.` first), in archive order.
    pub paths: Vec<String>,
    /// Conffiles with the md5 of the unpacked file.
    pub conffiles: Vec<(String, String)>,
}

/// The result: a staging root holding unpacked packages and their dpkg database.
#[derive(Debug)]
pub struct Composed {
    /// Host path of the root.
    pub root: PathBuf,
    /// Packages in unpack order.
    pub packages: Vec<Unpacked>,
}

/// Top-level directories that merged /usr turns into symlinks (usrmerge's list, those Debian
/// uses on kiln's architectures).
fn merged_usr_dirs(board: &Board) -> &'static [&'static str] {
    match board.arch {
        crate::arch::DebianArch::Amd64 => &["bin", "sbin", "lib", "lib64"],
        _ => &["bin", "sbin", "lib"],
    }
}

/// Unpacks `debs` (lock entry and verified cache path, in lock order) into the empty directory
/// `root` and writes the dpkg database.
pub fn compose(
    root: &Path,
    board: &Board,
    debs: &[(LockedPackage, PathBuf)],
) -> Result<Composed, ComposeError> {
    let io_err = |path: &Path, e: std::io::Error| ComposeError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).map_err(|e| io_err(root, e))?;
    if board.merged_usr {
        for dir in merged_usr_dirs(board) {
            let real = root.join("usr").join(dir);
            fs::create_dir_all(&real).map_err(|e| io_err(&real, e))?;
            std::os::unix::fs::symlink(format!("usr/{dir}"), root.join(dir))
                .map_err(|e| io_err(&root.join(dir), e))?;
        }
    }
    let mut packages: Vec<Unpacked> = Vec::with_capacity(debs.len());
    let mut owners: HashMap<String, usize> = HashMap::new();
    // Two-stage pipeline: a helper thread decompresses the next packages (xz is the costly
    // part) while this thread writes the current one to disk, in lock order.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<Decoded, ComposeError>>(4);
    std::thread::scope(|scope| -> Result<(), ComposeError> {
        scope.spawn(move || {
            for (locked, path) in debs {
                let decoded = read_deb(path, &locked.name, |control, data| {
                    check_identity(control, locked, path)?;
                    let mut tar = Vec::new();
                    data.read_to_end(&mut tar).map_err(|e| DebError {
                        package: locked.name.clone(),
                        member: "data.tar".into(),
                        reason: format!("corrupt or truncated: {e}"),
                    })?;
                    Ok(Decoded {
                        control: control.clone(),
                        tar,
                    })
                });
                let failed = decoded.is_err();
                if sender.send(decoded).is_err() || failed {
                    break;
                }
            }
        });
        // Owned here, so an early return drops it and the helper stops instead of blocking.
        let receiver = receiver;
        for (locked, _) in debs {
            let Decoded { control, tar } = receiver.recv().map_err(|_| ComposeError::Io {
                path: root.to_path_buf(),
                reason: "the decompression thread stopped".into(),
            })??;
            let entries = unpack_data(root, &locked.name, &mut &tar[..])?;
            let mut control = control;
            let index = packages.len();
            let mut paths = Vec::with_capacity(entries.len());
            let conffile_list = control_conffiles(&control);
            if !control.files.contains_key("md5sums") {
                // dpkg records the MD5 of every file it unpacks, conffiles apart (which it tracks in
                // the status file), for packages that do not ship md5sums themselves.
                let mut md5sums = String::new();
                for m in &entries {
                    if let Some(md5) = &m.md5 {
                        if !conffile_list.contains(&m.path) {
                            md5sums.push_str(&format!("{md5}  {}\n", &m.path[1..]));
                        }
                    }
                }
                if !md5sums.is_empty() {
                    control.files.insert(
                        "md5sums".into(),
                        crate::deb::ControlFile {
                            mode: 0o644,
                            data: md5sums.into_bytes(),
                        },
                    );
                }
            }
            for Member { path, is_dir, .. } in entries {
                if !is_dir {
                    if let Some(&prev) = owners.get(&path) {
                        if prev != index {
                            let replaces = crate::control::parse_relations(
                                control.control.get("Replaces").unwrap_or(""),
                            )
                            .unwrap_or_default();
                            let first = packages[prev].name.clone();
                            if !replaces.iter().flatten().any(|d| d.name == first) {
                                return Err(ComposeError::FileConflict {
                                    path,
                                    first,
                                    second: locked.name.clone(),
                                });
                            }
                            packages[prev].paths.retain(|p| p != &path);
                        }
                    }
                    owners.insert(path.clone(), index);
                }
                paths.push(path);
            }
            let conffiles = conffile_hashes(root, &control)?;
            packages.push(Unpacked {
                name: locked.name.clone(),
                arch: locked.arch.clone(),
                control,
                paths,
                conffiles,
            });
        }
        Ok(())
    })?;
    dpkgdb::write_database(root, board.arch.as_str(), &packages)
        .map_err(|e| io_err(&root.join("var/lib/dpkg"), e))?;
    Ok(Composed {
        root: root.to_path_buf(),
        packages,
    })
}

fn check_identity(
    control: &DebControl,
    locked: &LockedPackage,
    path: &Path,
) -> Result<(), ComposeError> {
    let c = &control.control;
    let found = format!(
        "{} {} {}",
        c.get("Package").unwrap_or(""),
        c.get("Version").unwrap_or(""),
        c.get("Architecture").unwrap_or("")
    );
    let expected = format!("{} {} {}", locked.name, locked.version, locked.arch);
    if found != expected {
        return Err(ComposeError::WrongPackage {
            path: path.to_path_buf(),
            found,
            expected,
        });
    }
    Ok(())
}

/// One extracted member: its dpkg path, whether it is a directory, and a regular file's MD5.
struct Member {
    path: String,
    is_dir: bool,
    md5: Option<String>,
}

/// Extracts one data.tar; returns every member in archive order.
fn unpack_data(
    root_path: &Path,
    package: &str,
    data: &mut dyn Read,
) -> Result<Vec<Member>, ComposeError> {
    let root = Root {
        path: root_path,
        create_missing: true,
    };
    let mut archive = tar::Archive::new(data);
    let mut out = Vec::new();
    let mut extracted: HashMap<Vec<Vec<u8>>, PathBuf> = HashMap::new();
    let entries = archive.entries().map_err(|e| UnpackError {
        package: package.to_string(),
        member: "data.tar".into(),
        reason: e.to_string(),
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|e| UnpackError {
            package: package.to_string(),
            member: "data.tar".into(),
            reason: format!("corrupt or truncated archive: {e}"),
        })?;
        let name_bytes = entry.path_bytes().into_owned();
        let member = String::from_utf8_lossy(&name_bytes).to_string();
        let fail = |reason: String| UnpackError {
            package: package.to_string(),
            member: member.clone(),
            reason,
        };
        let comps = member_components(&name_bytes).map_err(&fail)?;
        let header = entry.header();
        let kind = header.entry_type();
        let owner = Owner {
            uid: header.uid().map_err(|e| fail(e.to_string()))? as u32,
            gid: header.gid().map_err(|e| fail(e.to_string()))? as u32,
            mode: header.mode().map_err(|e| fail(e.to_string()))?,
            mtime: header.mtime().map_err(|e| fail(e.to_string()))? as i64,
        };
        let logical = if comps.is_empty() {
            "/.".to_string()
        } else {
            format!("/{}", String::from_utf8_lossy(&comps.join(&b'/')))
        };
        if comps.is_empty() {
            if !kind.is_dir() {
                return Err(fail("the archive root is not a directory".into()).into());
            }
            out.push(Member {
                path: logical,
                is_dir: true,
                md5: None,
            });
            continue;
        }
        let mut md5 = None;
        let resolved = root.resolve_parent(&comps).map_err(&fail)?;
        let dest = resolved
            .parent
            .join(std::ffi::OsStr::from_bytes(&resolved.name));
        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(m) if m.file_type().is_symlink() => {
                        // dpkg keeps a symlink to a directory where a package has a directory
                        // (this is how merged /usr works); it must resolve inside the root.
                        let mut probe = comps.clone();
                        probe.push(b".".to_vec());
                        root.resolve_parent(&probe).map_err(&fail)?;
                    }
                    Ok(_) => return Err(fail("a directory would replace a file".into()).into()),
                    Err(_) => {
                        fs::create_dir(&dest).map_err(|e| fail(e.to_string()))?;
                        unpack::apply_owner(&dest, owner, false)
                            .map_err(|e| fail(e.to_string()))?;
                    }
                }
                out.push(Member {
                    path: logical,
                    is_dir: true,
                    md5: None,
                });
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                md5 = Some(unpack::write_file(&dest, &mut entry).map_err(&fail)?);
                unpack::apply_owner(&dest, owner, false).map_err(|e| fail(e.to_string()))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| fail("symlink without a target".into()))?
                    .into_owned();
                if target.is_empty() {
                    return Err(fail("symlink with an empty target".into()).into());
                }
                unpack::write_symlink(&dest, Path::new(std::ffi::OsStr::from_bytes(&target)))
                    .map_err(&fail)?;
                unpack::apply_owner(&dest, owner, true).map_err(|e| fail(e.to_string()))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| fail("hard link without a target".into()))?
                    .into_owned();
                let target_comps = member_components(&target)
                    .map_err(|r| fail(format!("hard link target: {r}")))?;
                // A hard link may only point at a file this package already unpacked.
                let existing = extracted.get(&target_comps).cloned().ok_or_else(|| {
                    fail(format!(
                        "hard link to '{}', which this package did not ship before it",
                        String::from_utf8_lossy(&target)
                    ))
                })?;
                unpack::write_hardlink(&dest, &existing).map_err(&fail)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let mode = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                unpack::write_node(&dest, mode, major, minor).map_err(&fail)?;
                unpack::apply_owner(&dest, owner, false).map_err(|e| fail(e.to_string()))?;
            }
            other => return Err(fail(format!("unsupported tar entry type {other:?}")).into()),
        }
        extracted.insert(comps, dest);
        out.push(Member {
            path: logical,
            is_dir: false,
            md5,
        });
    }
    Ok(out)
}

/// The conffile paths a package declares (deb-conffiles(5); a flag may precede the path).
fn control_conffiles(control: &DebControl) -> Vec<String> {
    control
        .files
        .get("conffiles")
        .map(|f| {
            String::from_utf8_lossy(&f.data)
                .lines()
                .filter_map(|l| l.split_whitespace().last().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn conffile_hashes(
    root: &Path,
    control: &DebControl,
) -> Result<Vec<(String, String)>, ComposeError> {
    let Some(file) = control.files.get("conffiles") else {
        return Ok(Vec::new());
    };
    let package = control.control.get("Package").unwrap_or("").to_string();
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(&file.data).lines() {
        // deb-conffiles(5): an optional flag such as `remove-on-upgrade` precedes the path.
        let Some(path) = line.split_whitespace().last() else {
            continue;
        };
        let fail = |reason: String| UnpackError {
            package: package.clone(),
            member: format!("conffiles: {path}"),
            reason,
        };
        let comps = member_components(path.trim_start_matches('/').as_bytes()).map_err(&fail)?;
        let resolved = Root {
            path: root,
            create_missing: false,
        }
        .resolve_parent(&comps)
        .map_err(&fail)?;
        let host = resolved
            .parent
            .join(std::ffi::OsStr::from_bytes(&resolved.name));
        let hash = match fs::symlink_metadata(&host) {
            Ok(m) if m.is_file() => {
                let bytes = fs::read(&host).map_err(|e| fail(e.to_string()))?;
                hex::encode(Md5::digest(&bytes))
            }
            // A listed conffile the package does not ship: dpkg records it as new.
            _ => "newconffile".to_string(),
        };
        out.push((path.to_string(), hash));
    }
    Ok(out)
}
