//! The compose stage: unpacks the locked .debs natively into a staging root and writes the dpkg
//! database, leaving every package `unpacked` for the configure stage.
//!
//! Unpacking never follows a symlink on the way in (see [`unpack`]); a refused member names its
//! package and member. For merged-/usr suites (bookworm and later) the `/bin`, `/sbin`, `/lib`
//! symlinks into `/usr` are made first and kept, as debootstrap and mmdebstrap do; for older
//! suites (stretch) the tree is left as the packages lay it out.

pub mod dpkgdb;
pub mod unpack;

use crate::debian::deb::{read_deb, DebControl, DebError};
use crate::inroot::{self, ImageRoot, InRootError, Owner};
use crate::pipeline::fetch::Fetched;
use crate::pipeline::lock::LockedPackage;
use crate::recipe::Board;
use md5::{Digest, Md5};
use rustix::fs::FileType;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use unpack::{member_components, UnpackError};

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
    /// The dpkg database could not be written.
    #[error(transparent)]
    Database(#[from] dpkgdb::DatabaseError),
    /// A path inside the staging root was refused or could not be written.
    #[error("staging root: {0}")]
    InRoot(#[from] InRootError),
    /// Filesystem trouble in the staging root.
    #[error("staging root {path}: {reason}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
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

/// What the decompression thread hands over, in lock order: each package's control part, its
/// data.tar in bounded chunks, then how reading it ended.
enum Feed {
    Control(Result<DebControl, ComposeError>),
    Data(Vec<u8>),
    End(Result<(), ComposeError>),
}

/// Size of one data.tar chunk and how many may wait: the decompressed data in flight is at most
/// `CHUNK * (QUEUE + 2)` bytes (16.5 MiB), however large a package inflates.
const CHUNK: usize = 1 << 20;
const QUEUE: usize = 14;

/// The data.tar of the current package as a stream of the chunks the thread sends.
struct FeedReader<'a> {
    receiver: &'a std::sync::mpsc::Receiver<Feed>,
    chunk: Vec<u8>,
    at: usize,
    /// How the package's stream ended, once it has.
    ended: Option<Result<(), ComposeError>>,
}

impl Read for FeedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended.is_some() {
                return Ok(0);
            }
            match self.receiver.recv() {
                Ok(Feed::Data(d)) => {
                    self.chunk = d;
                    self.at = 0;
                }
                Ok(Feed::End(r)) => {
                    let failed = r.is_err();
                    self.ended = Some(r);
                    if failed {
                        return Err(std::io::Error::other("decompression failed"));
                    }
                }
                Ok(Feed::Control(_)) | Err(_) => {
                    self.ended = Some(Err(ComposeError::Io {
                        path: PathBuf::new(),
                        reason: "the decompression thread stopped".into(),
                    }));
                    return Err(std::io::Error::other("decompression thread stopped"));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl FeedReader<'_> {
    /// Reads to the end of this package's stream and returns how it ended.
    fn finish(mut self) -> Result<(), ComposeError> {
        let mut sink = [0u8; 8192];
        while self.read(&mut sink).unwrap_or(0) > 0 {}
        self.ended.unwrap_or(Ok(()))
    }
}

/// Unpacks `debs` (lock entry and verified cache path, in lock order) into the empty directory
/// `root` and writes the dpkg database.
///
/// Memory stays bounded whatever a package inflates to: data.tar is streamed from the
/// decompressing thread to the writer in [`CHUNK`]s, never held whole, and control archives
/// are capped after decompression ([`crate::debian::deb`]).
pub fn compose(root: &Path, board: &Board, debs: &[Fetched]) -> Result<Composed, ComposeError> {
    let io_err = |path: &Path, e: std::io::Error| ComposeError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).map_err(|e| io_err(root, e))?;
    let image = ImageRoot::open(root)?;
    if board.merged_usr {
        let top = image.root_dir()?;
        for dir in merged_usr_dirs(board) {
            image.make_dir_all(format!("usr/{dir}"))?;
            top.symlink(dir, format!("usr/{dir}"))?;
        }
    }
    let mut packages: Vec<Unpacked> = Vec::with_capacity(debs.len());
    let mut owners: HashMap<String, usize> = HashMap::new();
    // Two-stage pipeline: a helper thread decompresses (xz is the costly part) while this
    // thread writes to disk, in lock order, through a bounded queue of chunks.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Feed>(QUEUE);
    std::thread::scope(|scope| -> Result<(), ComposeError> {
        scope.spawn(move || {
            for Fetched {
                package: locked,
                path,
            } in debs
            {
                let mut sent_control = false;
                let result = read_deb(path, &locked.name, |control, data| {
                    check_identity(control, locked, path)?;
                    if sender.send(Feed::Control(Ok(control.clone()))).is_err() {
                        return Ok(());
                    }
                    sent_control = true;
                    loop {
                        let mut chunk = vec![0u8; CHUNK];
                        let n = read_full(data, &mut chunk).map_err(|e| DebError {
                            package: locked.name.clone(),
                            member: "data.tar".into(),
                            reason: format!("corrupt or truncated: {e}"),
                        })?;
                        if n == 0 {
                            return Ok(());
                        }
                        chunk.truncate(n);
                        if sender.send(Feed::Data(chunk)).is_err() {
                            return Ok(());
                        }
                    }
                });
                let failed = result.is_err();
                let message = match (sent_control, result) {
                    (true, r) => Feed::End(r),
                    (false, Err(e)) => Feed::Control(Err(e)),
                    // The writer has gone (it failed): nothing more to do.
                    (false, Ok(())) => break,
                };
                if sender.send(message).is_err() || failed {
                    break;
                }
            }
        });
        // Owned here, so an early return drops it and the helper stops instead of blocking.
        let receiver = receiver;
        for Fetched {
            package: locked, ..
        } in debs
        {
            let control = match receiver.recv() {
                Ok(Feed::Control(c)) => c?,
                _ => {
                    return Err(ComposeError::Io {
                        path: root.to_path_buf(),
                        reason: "the decompression thread stopped".into(),
                    })
                }
            };
            let mut feed = FeedReader {
                receiver: &receiver,
                chunk: Vec::new(),
                at: 0,
                ended: None,
            };
            let entries = match unpack_data(&image, &locked.name, &mut feed) {
                Ok(entries) => {
                    feed.finish()?;
                    entries
                }
                // A decompression error explains a tar error: report it first.
                Err(e) => return Err(feed.ended.and_then(Result::err).unwrap_or(e)),
            };
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
                        crate::debian::deb::ControlFile {
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
                            let replaces = crate::debian::control::parse_relations(
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
            let conffiles = conffile_hashes(&image, &control)?;
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
    dpkgdb::write_database(&image, board.arch.as_str(), &packages)?;
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

/// Fills `buf` as far as the stream allows; 0 only at its end.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// One extracted member: its dpkg path, whether it is a directory, and a regular file's MD5.
struct Member {
    path: String,
    is_dir: bool,
    md5: Option<String>,
}

/// Copies a member's contents into `file`, returning their MD5 (hex), which dpkg records for
/// every file of a package.
fn copy_hashing(content: &mut dyn Read, file: &mut fs::File) -> std::io::Result<String> {
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match content.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        md5.update(&buf[..n]);
        std::io::Write::write_all(file, &buf[..n])?;
    }
    Ok(hex::encode(md5.finalize()))
}

/// Extracts one data.tar; returns every member in archive order.
fn unpack_data(
    image: &ImageRoot,
    package: &str,
    data: &mut dyn Read,
) -> Result<Vec<Member>, ComposeError> {
    let mut archive = tar::Archive::new(data);
    let mut out = Vec::new();
    // Regular files this package has written so far, by member path: hard link targets.
    let mut extracted: HashSet<Vec<Vec<u8>>> = HashSet::new();
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
        let fail_in = |e: InRootError| fail(e.to_string());
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
        let Some((name, parents)) = comps.split_last() else {
            if !kind.is_dir() {
                return Err(fail("the archive root is not a directory".into()).into());
            }
            out.push(Member {
                path: logical,
                is_dir: true,
                md5: None,
            });
            continue;
        };
        let name = OsStr::from_bytes(name);
        let parent_path = Path::new(OsStr::from_bytes(&parents.join(&b'/'))).to_path_buf();
        let dir = image.make_dir_all(&parent_path).map_err(fail_in)?;
        let mut md5 = None;
        match kind {
            tar::EntryType::Directory => {
                match dir.kind(name).map_err(fail_in)? {
                    Some(inroot::Kind::Dir) => {}
                    Some(inroot::Kind::Symlink) => {
                        // dpkg keeps a symlink to a directory where a package has a directory
                        // (this is how merged /usr works); it must lead to a directory.
                        let whole = parent_path.join(name);
                        if image.dir(&whole).map_err(fail_in)?.is_none() {
                            return Err(fail(
                                "a symlink stands where the package has a directory, and it \
                                 leads nowhere"
                                    .into(),
                            )
                            .into());
                        }
                    }
                    Some(_) => return Err(fail("a directory would replace a file".into()).into()),
                    None => {
                        dir.make_dir(name, Some(owner)).map_err(fail_in)?;
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
                let mut file = dir.create_file(name).map_err(fail_in)?;
                md5 = Some(
                    copy_hashing(&mut entry, &mut file)
                        .map_err(|e| fail(format!("cannot write: {e}")))?,
                );
                dir.set_owner_fd(name, &file, owner).map_err(fail_in)?;
                extracted.insert(comps.clone());
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| fail("symlink without a target".into()))?
                    .into_owned();
                if target.is_empty() {
                    return Err(fail("symlink with an empty target".into()).into());
                }
                dir.symlink(name, OsStr::from_bytes(&target))
                    .map_err(fail_in)?;
                dir.set_owner(name, owner).map_err(fail_in)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| fail("hard link without a target".into()))?
                    .into_owned();
                let target_comps = member_components(&target)
                    .map_err(|r| fail(format!("hard link target: {r}")))?;
                // A hard link may only point at a file this package already unpacked.
                let (Some((from_name, from_parents)), true) =
                    (target_comps.split_last(), extracted.contains(&target_comps))
                else {
                    return Err(fail(format!(
                        "hard link to '{}', which this package did not ship before it",
                        String::from_utf8_lossy(&target)
                    ))
                    .into());
                };
                let from_dir = image
                    .dir(OsStr::from_bytes(&from_parents.join(&b'/')))
                    .map_err(fail_in)?
                    .ok_or_else(|| fail("hard link target's directory is gone".into()))?;
                dir.hardlink(name, &from_dir, OsStr::from_bytes(from_name))
                    .map_err(fail_in)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let node = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                dir.mknod(name, node, major, minor).map_err(fail_in)?;
                dir.set_owner(name, owner).map_err(fail_in)?;
            }
            other => return Err(fail(format!("unsupported tar entry type {other:?}")).into()),
        }
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

/// Largest conffile kiln hashes (configuration files are kilobytes).
const MAX_CONFFILE: u64 = 64 << 20;

fn conffile_hashes(
    image: &ImageRoot,
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
        member_components(path.trim_start_matches('/').as_bytes()).map_err(&fail)?;
        let hash = match image.kind(path).map_err(|e| fail(e.to_string()))? {
            Some(inroot::Kind::File) => {
                let bytes = image
                    .read(path, MAX_CONFFILE)
                    .map_err(|e| fail(e.to_string()))?
                    .unwrap_or_default();
                hex::encode(Md5::digest(&bytes))
            }
            // A listed conffile the package does not ship: dpkg records it as new.
            _ => "newconffile".to_string(),
        };
        out.push((path.to_string(), hash));
    }
    Ok(out)
}
