//! The release stage: turns a signed image into what an OTA server serves. The OCI layout
//! becomes one archive (the `oci-archive` format: the layout's files at the tar's root, as
//! `skopeo copy oci-archive:` reads it), placed under `DIR/targets/BOARD/`, and the TUF
//! repository in `DIR/metadata` gets a new signed targets version naming it (see [`crate::signing::tuf`]).
//!
//! Only an intact image signed by a key of the role that lists it is released: the layout is
//! verified with the public halves of the targets (or board) signers first.
//!
//! A repository starts with `kiln trust init` (root keys offline). For a dev board, the first
//! release with one key for every role creates the root itself, all roles trusting that key.

use crate::image::oci::annotation;
use crate::signing::tuf::{self, Expiry, ReleaseInfo, ReleaseSigners, Role, RoleKeys};
use crate::signing::verify::{verify_layout, VerifyOptions};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Why a release could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The image is not intact or not signed by this key.
    #[error("{layout}: not released: {verdict}")]
    NotVerified {
        /// The layout.
        layout: PathBuf,
        /// The verifier's one line.
        verdict: String,
    },
    /// The TUF repository refused the release (not newer, another board, another key).
    #[error(transparent)]
    Metadata(#[from] tuf::TufError),
    /// Reading or writing failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ReleaseError {
    ReleaseError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Options of a release.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// The lowest version devices may still be given (recorded in the target's `custom`).
    pub min_version: Option<String>,
    /// Expiry of the metadata.
    pub expiry: Expiry,
    /// Seconds since the epoch to date the metadata from (the time of the release).
    pub now: u64,
}

/// What was released.
#[derive(Debug, Clone)]
pub struct Released {
    /// TUF target name (`BOARD/NAME-VERSION.oci.tar`).
    pub target: String,
    /// The archive.
    pub archive: PathBuf,
    /// The role that lists it ("targets" or the board's delegated role) and its new version.
    pub recorded: tuf::Recorded,
    /// Whether this release created the repository's root with one key for every role.
    pub created_single_key_root: bool,
    /// Image manifest digest.
    pub image: String,
}

/// Writes the layout as a reproducible tar: sorted names, owner 0:0, modes 0644/0755, every
/// mtime `mtime`.
pub fn write_oci_archive(layout: &Path, dest: &Path, mtime: u64) -> Result<(), ReleaseError> {
    let mut paths = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = layout.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| io_err(&dir, e))?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let meta = fs::symlink_metadata(layout.join(&r)).map_err(|e| io_err(&r, e))?;
            if meta.is_dir() {
                stack.push(r.clone());
                paths.push((r, true));
            } else if meta.is_file() {
                paths.push((r, false));
            } else {
                return Err(io_err(
                    &layout.join(&r),
                    "is neither a file nor a directory",
                ));
            }
        }
    }
    paths.sort();
    // A new file of a random name beside `dest` (O_EXCL: nothing planted is followed).
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staged = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_err(dir, e))?;
    let tmp = staged.path().to_path_buf();
    let (file, temp_path) = staged.into_parts();
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    for (rel, is_dir) in &paths {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        if *is_dir {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_cksum();
            builder
                .append_data(&mut h, rel, std::io::empty())
                .map_err(|e| io_err(&tmp, e))?;
        } else {
            let full = layout.join(rel);
            let f = fs::File::open(&full).map_err(|e| io_err(&full, e))?;
            let len = f.metadata().map_err(|e| io_err(&full, e))?.len();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(len);
            h.set_cksum();
            builder
                .append_data(&mut h, rel, f)
                .map_err(|e| io_err(&tmp, e))?;
        }
    }
    let out = builder.into_inner().map_err(|e| io_err(&tmp, e))?;
    let file = out.into_inner().map_err(|e| io_err(&tmp, e))?;
    file.sync_all().map_err(|e| io_err(&tmp, e))?;
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(|e| io_err(&tmp, e))?;
    temp_path.persist(dest).map_err(|e| io_err(dest, e.error))
}

/// Releases the signed image in `layout` into the OTA repository `dir`, signing with the
/// online keys in `signers`.
pub fn release(
    layout: &Path,
    dir: &Path,
    signers: &ReleaseSigners,
    opts: &ReleaseOptions,
) -> Result<Released, ReleaseError> {
    let checked = verify_layout(
        layout,
        &VerifyOptions {
            keys: signers.targets.iter().map(|s| s.public).collect(),
            ..Default::default()
        },
    )
    .map_err(|e| io_err(&e.path, e.reason))?;
    let (Some(image), true) = (checked.image.clone(), checked.accepted) else {
        return Err(ReleaseError::NotVerified {
            layout: layout.to_path_buf(),
            verdict: checked.verdict(),
        });
    };
    let manifest_path = layout
        .join("blobs/sha256")
        .join(image.trim_start_matches("sha256:"));
    let manifest: Value = fs::read(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| io_err(&manifest_path, "unreadable image manifest"))?;
    let ann = |k: &str| {
        manifest
            .pointer(&format!("/annotations/{}", k.replace('/', "~1")))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let board = ann(annotation::BOARD);
    let version = ann("org.opencontainers.image.version");
    let title = ann("org.opencontainers.image.title");
    let compatible: Vec<String> =
        serde_json::from_str(&ann(annotation::COMPATIBLE)).unwrap_or_default();
    let created =
        crate::timefmt::parse_rfc3339_utc(&ann("org.opencontainers.image.created")).unwrap_or(0);
    if board.is_empty() || version.is_empty() {
        return Err(io_err(
            &manifest_path,
            "the image manifest names no board or version",
        ));
    }
    let safe = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c))
    };
    if !safe(&board) || !safe(&version) || !safe(&title) {
        return Err(io_err(&manifest_path, format!("board {board:?}, title {title:?} or version {version:?} is not usable in a file name")));
    }
    // Before anything is written: a new repository gets a root only from one dev key.
    let created_single_key_root = init_single_key_root(dir, signers, opts)?;
    let target = format!("{board}/{title}-{version}.oci.tar");
    let archive = dir.join("targets").join(&target);
    let parent = archive.parent().unwrap_or(dir);
    fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    // Written beside its final name and moved there only once the metadata accepted it, so a
    // refused release (not newer, another board) never touches an earlier release's archive.
    let mut staged = archive.as_os_str().to_owned();
    staged.push(".staged");
    let staged = PathBuf::from(staged);
    write_oci_archive(layout, &staged, created)?;
    let info = ReleaseInfo {
        board,
        compatible,
        version,
        min_version: opts.min_version.clone(),
        manifest_digest: image.clone(),
    };
    let new = tuf::NewTarget {
        name: &target,
        archive: &staged,
        info: &info,
    };
    let added = tuf::add_release(dir, &new, signers, opts.now, opts.expiry);
    let recorded = match added {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&staged);
            return Err(e.into());
        }
    };
    fs::rename(&staged, &archive).map_err(|e| io_err(&archive, e))?;
    Ok(Released {
        target,
        archive,
        recorded,
        image,
        created_single_key_root,
    })
}

/// A repository without a root gets one on its first release only when one key signs every
/// role (a dev board): that key then is the root key too. Otherwise the root must come from
/// `kiln trust init`, made with the root keys, which a release never needs.
fn init_single_key_root(
    dir: &Path,
    signers: &ReleaseSigners,
    opts: &ReleaseOptions,
) -> Result<bool, tuf::TufError> {
    let root_path = dir.join("metadata/root.json");
    if tuf::metadata::read_metadata(&root_path)?.is_some() {
        return Ok(false);
    }
    let ids: std::collections::BTreeSet<String> =
        [&signers.targets, &signers.snapshot, &signers.timestamp]
            .into_iter()
            .flatten()
            .map(|s| tuf::key_id(&s.public))
            .collect();
    let (1, Some(only)) = (ids.len(), signers.targets.first()) else {
        return Err(tuf::metadata::err(
            &root_path,
            "is missing: create the repository with `kiln trust init` and the root keys first",
        ));
    };
    let roles: BTreeMap<Role, RoleKeys> = Role::ALL
        .into_iter()
        .map(|r| {
            (
                r,
                RoleKeys {
                    keys: vec![only.public],
                    threshold: 1,
                },
            )
        })
        .collect();
    tuf::init(dir, &roles, &[only], opts.now, opts.expiry.root_days)?;
    Ok(true)
}
