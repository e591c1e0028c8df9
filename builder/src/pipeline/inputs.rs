//! The inputs archive (`kiln vendor`, `kiln build --inputs`): every file a locked build reads
//! from outside the team's repository, stored in a registry next to the release so that it can
//! be rebuilt bit for bit after Debian drops its .debs from the mirror or PyPI yanks a wheel.
//!
//! What is archived: every .deb kiln.lock pins, and every Python file (wheel or sdist) whose
//! sha256 an overlay's requirements lock or build-requirements lock allows and that the cache
//! holds with its file name, which is what the build before it fetched. The team's own files
//! (wheelhouses, an overlay's .debs and files) live in the repository and are not archived.
//! Restoring puts each file back into the cache, hashed while it streams and renamed into place
//! only when it is the pinned bytes, and the lock into the recipe when it has none; an
//! `--offline` build then needs no mirror and no index.

use crate::digest::sha256_digest_hex;
use crate::pipeline::fetch::{Cache, FetchError};
use crate::pipeline::lock::{Lock, LockError, Pinned};
use crate::recipe::overlay::Kind;
use crate::recipe::{Recipe, RecipeError};
use crate::registry::inputs::{self, ArchivedFile, DEB_MEDIA_TYPE, PYTHON_MEDIA_TYPE};
use crate::registry::{Registry, RegistryError};
use std::path::{Path, PathBuf};

/// Why the inputs could not be archived or restored.
#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    /// Bad recipe.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// No lock, a lock for another recipe, or an archived lock that is not one.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The cache is unusable.
    #[error(transparent)]
    Cache(#[from] FetchError),
    /// The registry failed, refused, or holds something else.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A file is missing, or the archive and the recipe disagree.
    #[error("{what}: {reason}")]
    Refused {
        /// The file, package or archive.
        what: String,
        /// Why.
        reason: String,
    },
}

fn refused(what: impl std::fmt::Display, reason: impl std::fmt::Display) -> InputsError {
    InputsError::Refused {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// The files of a build's inputs found in the cache.
#[derive(Debug, Clone)]
pub struct Collected {
    /// The files, each with its place in the cache.
    pub files: Vec<(ArchivedFile, PathBuf)>,
    /// Requirements (`LOCK:LINE name==version`) none of whose allowed files the cache holds:
    /// excluded by a marker for this target, or taken from the overlay's wheelhouse.
    pub not_held: Vec<String>,
}

/// Every input of the locked recipe, from the cache; a .deb the cache lacks is an error (the
/// build has not run here), as is a corrupt entry.
pub fn collect(recipe: &Recipe, lock: &Pinned, cache: &Cache) -> Result<Collected, InputsError> {
    let mut files = Vec::new();
    for p in &lock.packages {
        let path = cache.verified(&p.sha256, p.size)?.ok_or_else(|| {
            refused(
                format!("{} {}", p.name, p.version),
                format!(
                    "sha256 {} is not in the cache {}; build (or fetch) once before archiving",
                    p.sha256,
                    cache.root().display()
                ),
            )
        })?;
        let title = p.path.rsplit('/').next().unwrap_or(&p.path).to_string();
        files.push((
            ArchivedFile {
                media_type: DEB_MEDIA_TYPE.into(),
                title,
                digest: format!("sha256:{}", p.sha256),
                size: p.size,
            },
            path,
        ));
    }
    let (python, not_held) = python_inputs(recipe, cache);
    files.extend(python);
    files.sort_by(|a, b| a.0.digest.cmp(&b.0.digest));
    files.dedup_by(|a, b| a.0.digest == b.0.digest);
    Ok(Collected { files, not_held })
}

/// The Python files the cache holds, by name, for the recipe's requirement locks, and the
/// requirements it holds none for.
pub(crate) fn python_inputs(
    recipe: &Recipe,
    cache: &Cache,
) -> (Vec<(ArchivedFile, PathBuf)>, Vec<String>) {
    let mut files = Vec::new();
    let mut not_held = Vec::new();
    for overlay in &recipe.overlays {
        let Kind::PythonVenv {
            requirements,
            build_requirements,
            ..
        } = &overlay.kind
        else {
            continue;
        };
        for lock in std::iter::once(requirements).chain(build_requirements) {
            for req in &lock.requirements {
                let mut held = false;
                for h in &req.hashes {
                    let Some(title) = cache.python_file_name(h) else {
                        continue;
                    };
                    let path = cache.blob_path(h);
                    let Ok((got, size)) =
                        std::fs::File::open(&path).and_then(crate::digest::sha256_reader)
                    else {
                        continue;
                    };
                    if got != *h {
                        continue;
                    }
                    held = true;
                    files.push((
                        ArchivedFile {
                            media_type: PYTHON_MEDIA_TYPE.into(),
                            title,
                            digest: format!("sha256:{h}"),
                            size,
                        },
                        path,
                    ));
                }
                if !held {
                    not_held.push(format!(
                        "{}:{} {}=={}",
                        lock.label, req.line, req.name, req.version
                    ));
                }
            }
        }
    }
    (files, not_held)
}

/// What `kiln vendor` archived.
#[derive(Debug, Clone)]
pub struct Vendored {
    /// `sha256:` digest of the archive's manifest.
    pub manifest: String,
    /// Files archived.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Bytes the registry did not hold yet.
    pub uploaded: u64,
    /// See [`Collected::not_held`].
    pub not_held: Vec<String>,
}

/// Archives the inputs of the recipe in `recipe_dir` (which must have a matching kiln.lock)
/// from `cache` into `registry` at `tag`.
pub fn vendor(
    recipe_dir: &Path,
    cache: &Cache,
    registry: &Registry,
    tag: &str,
) -> Result<Vendored, InputsError> {
    let recipe = Recipe::load(recipe_dir)?;
    let lock_path = recipe.lock_path();
    let lock = Lock::read(&lock_path)?.pin(&recipe, &lock_path)?;
    let lock_bytes = std::fs::read(&lock_path).map_err(|e| refused(lock_path.display(), e))?;
    let collected = collect(&recipe, &lock, cache)?;
    let listed: Vec<ArchivedFile> = collected.files.iter().map(|(f, _)| f.clone()).collect();
    let open = |f: &ArchivedFile| {
        let hex = f.digest.trim_start_matches("sha256:");
        std::fs::File::open(cache.blob_path(hex))
    };
    let (manifest, uploaded) = inputs::store(registry, tag, &lock_bytes, &listed, &open)?;
    Ok(Vendored {
        manifest,
        files: listed.len(),
        bytes: listed.iter().map(|f| f.size).sum(),
        uploaded,
        not_held: collected.not_held,
    })
}

/// The registry's error about a blob, naming the file it is (a .deb's name says more than
/// its digest).
fn naming(e: RegistryError, title: &str) -> RegistryError {
    match e {
        RegistryError::Corrupt { what, reason } => RegistryError::Corrupt {
            what: format!("{title}: {what}"),
            reason,
        },
        RegistryError::Failed { what, reason } => RegistryError::Failed {
            what: format!("{title}: {what}"),
            reason,
        },
        RegistryError::Denied { what, reason } => RegistryError::Denied {
            what: format!("{title}: {what}"),
            reason,
        },
    }
}

/// What `kiln build --inputs` put back.
#[derive(Debug, Clone)]
pub struct Restored {
    /// `sha256:` digest of the archive's manifest.
    pub manifest: String,
    /// Files in the archive.
    pub files: usize,
    /// Files downloaded (the others were in the cache already).
    pub downloaded: usize,
    /// The lock was written from the archive (the recipe had none).
    pub wrote_lock: bool,
}

/// A file name from an archive: one path component of printable characters, a .deb, wheel or
/// sdist as its media type says.
fn valid_title(title: &str, media_type: &str) -> bool {
    let plain = !title.is_empty()
        && title.len() <= 255
        && !title.starts_with('.')
        && title
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != '\\');
    let suffix = if media_type == DEB_MEDIA_TYPE {
        title.ends_with(".deb")
    } else {
        [".whl", ".tar.gz", ".zip", ".tar.bz2"]
            .iter()
            .any(|s| title.ends_with(s))
    };
    plain && suffix
}

/// Puts the inputs archive at `tag` back into `cache` for the recipe in `recipe_dir`: its lock
/// must be the recipe's (written when the recipe has none), and each file is stored only when
/// it hashes to its digest. Nothing is written when the archive is for another lock.
pub fn restore(
    recipe_dir: &Path,
    cache: &Cache,
    registry: &Registry,
    tag: &str,
) -> Result<Restored, InputsError> {
    let recipe = Recipe::load(recipe_dir)?;
    let archive = inputs::lookup(registry, tag)?;
    let what = format!("{}:{tag}", registry.name());
    let lock_path = recipe.lock_path();
    let wrote_lock = match std::fs::read(&lock_path) {
        Ok(local) if local == archive.lock => false,
        Ok(local) => {
            return Err(refused(
                &what,
                format!(
                    "archives the inputs of another lock (sha256:{}) than {} (sha256:{}); check out the release it was made for",
                    crate::digest::sha256_hex(&archive.lock),
                    lock_path.display(),
                    crate::digest::sha256_hex(&local)
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(refused(lock_path.display(), e)),
    };
    // The archived lock is read like any lock (and must be the recipe's) before it is used.
    let mut staged = tempfile::NamedTempFile::new_in(&recipe.dir)
        .map_err(|e| refused(recipe.dir.display(), e))?;
    std::io::Write::write_all(&mut staged, &archive.lock)
        .map_err(|e| refused(staged.path().display(), e))?;
    let lock = Lock::read(staged.path())
        .map_err(|e| refused(&what, format!("its lock is unusable: {e}")))?
        .pin(&recipe, &lock_path)?;
    // Only what the lock pins (a .deb, by digest and size) or a requirement lock allows (a
    // Python file, by digest) is taken: an archive cannot fill the cache with anything else.
    let debs: std::collections::BTreeMap<&str, u64> = lock
        .packages
        .iter()
        .map(|p| (p.sha256.as_str(), p.size))
        .collect();
    let python: std::collections::BTreeSet<&str> = recipe
        .overlays
        .iter()
        .filter_map(|o| match &o.kind {
            Kind::PythonVenv {
                requirements,
                build_requirements,
                ..
            } => Some(std::iter::once(requirements).chain(build_requirements)),
            _ => None,
        })
        .flatten()
        .flat_map(|l| l.requirements.iter())
        .flat_map(|r| r.hashes.iter().map(String::as_str))
        .collect();
    for f in &archive.files {
        let Some(hex) = sha256_digest_hex(&f.digest) else {
            return Err(refused(&what, format!("unsupported digest {:?}", f.digest)));
        };
        let pinned = if f.media_type == DEB_MEDIA_TYPE {
            debs.get(hex) == Some(&f.size)
        } else {
            python.contains(hex)
        };
        if !pinned && (f.media_type == DEB_MEDIA_TYPE || f.media_type == PYTHON_MEDIA_TYPE) {
            return Err(refused(
                &what,
                format!(
                    "{} ({}, {} bytes) is not an input the lock pins",
                    f.title, f.digest, f.size
                ),
            ));
        }
        if f.media_type != DEB_MEDIA_TYPE && f.media_type != PYTHON_MEDIA_TYPE {
            return Err(refused(
                &what,
                format!(
                    "{} has media type {:?}, not an input's",
                    f.digest, f.media_type
                ),
            ));
        }
        if !valid_title(&f.title, &f.media_type) {
            return Err(refused(
                &what,
                format!(
                    "{} is named {:?}, not a file name of its kind",
                    f.digest, f.title
                ),
            ));
        }
    }
    let mut downloaded = 0;
    for f in &archive.files {
        let hex = f.digest.trim_start_matches("sha256:");
        if cache.verified(hex, f.size)?.is_none() {
            cache.insert_verified(
                hex,
                f.size,
                |file| {
                    registry
                        .get_blob(&f.digest, f.size, file)
                        .map_err(|e| naming(e, &f.title))
                },
                |reason| RegistryError::Corrupt {
                    what: format!("{what} {} ({})", f.title, f.digest),
                    reason,
                },
            )?;
            downloaded += 1;
        }
        if f.media_type == PYTHON_MEDIA_TYPE {
            cache
                .record_python_file_name(hex, &f.title)
                .map_err(|e| refused(cache.root().display(), e))?;
        }
    }
    if wrote_lock {
        staged
            .persist(&lock_path)
            .map_err(|e| refused(lock_path.display(), e.error))?;
    }
    Ok(Restored {
        manifest: archive.manifest,
        files: archive.files.len(),
        downloaded,
        wrote_lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archived_file_names_are_one_plain_component_of_their_kind() {
        assert!(valid_title("hello_1.0-1_arm64.deb", DEB_MEDIA_TYPE));
        assert!(valid_title(
            "six-1.16.0-py2.py3-none-any.whl",
            PYTHON_MEDIA_TYPE
        ));
        assert!(valid_title("pyyaml-6.0.tar.gz", PYTHON_MEDIA_TYPE));
        for bad in [
            "../x.deb", "a/b.deb", ".x.deb", "x.deb\n", "x y.deb", "", "x.whl",
        ] {
            assert!(!valid_title(bad, DEB_MEDIA_TYPE), "{bad:?}");
        }
        assert!(!valid_title("x.deb", PYTHON_MEDIA_TYPE));
    }

    /// The Python half of what is archived: every file of an allowed hash the cache holds with
    /// its name (a corrupt entry is left out), and a note for a requirement it holds none of.
    #[test]
    fn python_inputs_are_the_cached_files_the_requirement_locks_allow() {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, t: &[u8]| {
            let path = d.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, t).unwrap();
        };
        let wheel = b"a wheel".as_slice();
        let other = b"another wheel".as_slice();
        let (h1, h2) = (
            crate::digest::sha256_hex(wheel),
            crate::digest::sha256_hex(other),
        );
        w("key.gpg", b"x");
        w("b.toml", b"name = \"b\"\narch = \"arm64\"\ncompatible = [\"acme,bot\"]\n\n[debian]\nsuite = \"bookworm\"\nmirror = \"http://deb.debian.org/debian\"\nkeyring = \"key.gpg\"\n");
        w("kiln.toml", b"overlays = [\"overlays/t\"]\n[image]\nname = \"img\"\nversion = \"1.0\"\nboard = \"b.toml\"\n");
        w(
            "overlays/t/overlay.toml",
            b"kind = \"python-venv\"\nrequirements = \"requirements.lock\"\n",
        );
        w(
            "overlays/t/requirements.lock",
            format!(
                "six==1.16.0 --hash=sha256:{h1} --hash=sha256:{}\nidna==3.4 --hash=sha256:{h2}\n",
                "0".repeat(64)
            )
            .as_bytes(),
        );
        let recipe = Recipe::load(d.path()).unwrap();
        let cache = Cache::open(&d.path().join("cache")).unwrap();
        std::fs::write(cache.blob_path(&h1), wheel).unwrap();
        cache
            .record_python_file_name(&h1, "six-1.16.0-py2.py3-none-any.whl")
            .unwrap();
        // Known by name but corrupt in the cache: not archived.
        std::fs::write(cache.blob_path(&h2), b"not it").unwrap();
        cache
            .record_python_file_name(&h2, "idna-3.4-py3-none-any.whl")
            .unwrap();

        let (files, not_held) = python_inputs(&recipe, &cache);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0.title, "six-1.16.0-py2.py3-none-any.whl");
        assert_eq!(files[0].0.digest, format!("sha256:{h1}"));
        assert_eq!(files[0].0.size, wheel.len() as u64);
        assert_eq!(files[0].0.media_type, PYTHON_MEDIA_TYPE);
        assert_eq!(not_held.len(), 1);
        assert!(not_held[0].ends_with(":2 idna==3.4"), "{not_held:?}");
    }
}
