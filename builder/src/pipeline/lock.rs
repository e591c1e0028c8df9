//! The lock stage: resolves a [`Recipe`] against the suite's signed index into a [`Lock`], the
//! plain-data `kiln.lock` every later stage builds from.
//!
//! The lock pins every .deb by path, size and SHA-256, and records the InRelease digest it came
//! from and what of the recipe it was made for, so `kiln build --locked` can tell a stale lock
//! from a current one and name the difference. It is TOML, sorted by package name, one table per
//! .deb, so a lock change reads well in a diff.

use crate::debian::archive::{self, ArchiveError};
use crate::debian::resolve::{self, ResolveError, Universe};
use crate::recipe::{Recipe, Variant};
use crate::transport::Transport;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The lock file's name beside `kiln.toml`.
pub const LOCK_FILE: &str = "kiln.lock";

/// The version of the lock format this kiln reads and writes.
pub const LOCK_FORMAT: u32 = 1;

/// The lock: everything needed to build the same image again, offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Lock {
    /// Lock format version.
    pub lock_format: u32,
    /// What of the recipe this lock was resolved for.
    pub recipe: LockedRecipe,
    /// The signed Release the packages came from.
    pub release: LockedRelease,
    /// Every .deb, sorted by name.
    #[serde(rename = "package")]
    pub packages: Vec<LockedPackage>,
}

/// A lock proven to belong to the recipe being built: only [`Lock::pin`] makes one, so a stage
/// that takes a `Pinned` cannot be handed a stale lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    lock: Lock,
}

impl std::ops::Deref for Pinned {
    type Target = Lock;

    fn deref(&self) -> &Lock {
        &self.lock
    }
}

/// The recipe inputs that determine the package set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedRecipe {
    /// Board file as the recipe names it.
    pub board: String,
    /// Debian architecture.
    pub arch: String,
    /// Suite.
    pub suite: String,
    /// Mirror URL.
    pub mirror: String,
    /// Components.
    pub components: Vec<String>,
    /// Base variant.
    pub variant: Variant,
    /// Requested extra packages.
    pub packages: Vec<String>,
}

/// The verified Release a lock was resolved against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedRelease {
    /// SHA-256 of the InRelease file.
    pub inrelease_sha256: String,
    /// Fingerprint of the key whose signature was accepted.
    pub signer: String,
    /// The Release `Date` as written.
    pub date: String,
    /// The Release `Date` in seconds since the epoch: the default SOURCE_DATE_EPOCH.
    pub date_epoch: u64,
}

/// One pinned .deb.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedPackage {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture (`all` or the board's).
    pub arch: String,
    /// Path under the mirror root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// `sha256:` digest of the InRelease that listed it.
    pub release: String,
}

/// Why locking failed or a lock is unusable.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Loading the index failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// Resolution failed.
    #[error("resolving {suite}/{arch}: {source}")]
    Resolve {
        /// Suite.
        suite: String,
        /// Architecture.
        arch: String,
        /// Why.
        source: Box<ResolveError>,
    },
    /// The lock file cannot be read or parsed.
    #[error("{path}: {reason}")]
    Read {
        /// Lock path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The lock was made for another recipe.
    #[error("{path} does not match the recipe: {difference}; run `kiln lock` to update it")]
    Stale {
        /// Lock path.
        path: PathBuf,
        /// The first difference found.
        difference: String,
    },
    /// The lock cannot be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// Lock path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl LockedRecipe {
    /// The lock-relevant part of a recipe.
    pub fn of(recipe: &Recipe) -> LockedRecipe {
        LockedRecipe {
            board: recipe.board_ref.clone(),
            arch: recipe.board.arch.to_string(),
            suite: recipe.board.suite.clone(),
            // Credentials stay out of the lock (it is committed): the mirror as printed.
            mirror: crate::transport::redact_userinfo(&recipe.board.mirror),
            components: recipe.board.components.clone(),
            variant: recipe.variant,
            packages: recipe.packages.clone(),
        }
    }
}

/// Resolves the recipe against the live archive.
pub fn resolve_lock(recipe: &Recipe, transport: &Transport) -> Result<Lock, LockError> {
    let index = archive::load_index(transport, &recipe.board)?;
    let universe = Universe::new(&index.packages, recipe.board.arch.as_str());
    let set = resolve::resolve(&universe, recipe.variant, &recipe.packages).map_err(|source| {
        LockError::Resolve {
            suite: recipe.board.suite.clone(),
            arch: recipe.board.arch.to_string(),
            source: Box::new(source),
        }
    })?;
    let release_ref = format!("sha256:{}", index.release.inrelease_sha256);
    let mut packages: Vec<LockedPackage> = set
        .into_iter()
        .map(|p| LockedPackage {
            name: p.name.clone(),
            version: p.version.to_string(),
            arch: p.arch.clone(),
            path: p.filename.clone(),
            size: p.size,
            sha256: p.sha256.clone(),
            release: release_ref.clone(),
        })
        .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Lock {
        lock_format: LOCK_FORMAT,
        recipe: LockedRecipe::of(recipe),
        release: LockedRelease {
            inrelease_sha256: index.release.inrelease_sha256,
            signer: index.release.signer,
            date: index.release.date_text,
            date_epoch: index.release.date,
        },
        packages,
    })
}

impl Lock {
    /// Reads and validates a lock file.
    pub fn read(path: &Path) -> Result<Lock, LockError> {
        let err = |reason: String| LockError::Read {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                err("no lock file; run `kiln lock` first".into())
            } else {
                err(e.to_string())
            }
        })?;
        let lock: Lock = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            err(format!(
                "line {line}: {}",
                e.message().trim().replace('\n', " ")
            ))
        })?;
        if lock.lock_format != LOCK_FORMAT {
            return Err(err(format!(
                "lock format {} is not {LOCK_FORMAT}, the one this kiln reads",
                lock.lock_format
            )));
        }
        for p in &lock.packages {
            let valid = p.sha256.len() == 64 && p.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid || !crate::recipe::is_package_name(&p.name) {
                return Err(err(format!("package entry '{}' is malformed", p.name)));
            }
            if p.path.starts_with('/') || p.path.split('/').any(|c| c == "..") {
                return Err(err(format!(
                    "package {}: path '{}' leaves the mirror",
                    p.name, p.path
                )));
            }
        }
        if !lock.packages.windows(2).all(|w| w[0].name < w[1].name) {
            return Err(err(
                "packages are not sorted by name, or a name repeats".into()
            ));
        }
        Ok(lock)
    }

    /// The lock as TOML text, exactly as written to disk.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!("# kiln.lock: generated by `kiln lock`; pins every .deb by SHA-256. Do not edit.\n{body}")
    }

    /// Writes the lock atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let err = |reason: String| LockError::Write {
            path: path.to_path_buf(),
            reason,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(e.to_string()))?;
        std::io::Write::write_all(&mut tmp, self.to_toml().as_bytes())
            .map_err(|e| err(e.to_string()))?;
        tmp.persist(path).map_err(|e| err(e.to_string()))?;
        Ok(())
    }

    /// The lock as pinned to `recipe`, or the first difference when it was made for another
    /// recipe (`path` names the lock file in the message).
    pub fn pin(self, recipe: &Recipe, path: &Path) -> Result<Pinned, LockError> {
        self.check_matches(recipe, path)?;
        Ok(Pinned { lock: self })
    }

    /// Fails, naming the first difference, when the lock was made for another recipe.
    fn check_matches(&self, recipe: &Recipe, path: &Path) -> Result<(), LockError> {
        let want = LockedRecipe::of(recipe);
        let have = &self.recipe;
        let difference = if want.board != have.board {
            Some(format!(
                "board is '{}', the lock has '{}'",
                want.board, have.board
            ))
        } else if want.arch != have.arch {
            Some(format!("arch is {}, the lock has {}", want.arch, have.arch))
        } else if want.suite != have.suite {
            Some(format!(
                "suite is {}, the lock has {}",
                want.suite, have.suite
            ))
        } else if want.mirror != have.mirror {
            Some(format!(
                "mirror is {}, the lock has {}",
                want.mirror, have.mirror
            ))
        } else if want.components != have.components {
            Some(format!(
                "components are {:?}, the lock has {:?}",
                want.components, have.components
            ))
        } else if want.variant != have.variant {
            Some(format!(
                "variant is {}, the lock has {}",
                want.variant, have.variant
            ))
        } else if want.packages != have.packages {
            let added: Vec<&String> = want
                .packages
                .iter()
                .filter(|p| !have.packages.contains(p))
                .collect();
            let removed: Vec<&String> = have
                .packages
                .iter()
                .filter(|p| !want.packages.contains(p))
                .collect();
            Some(format!(
                "packages added to the recipe: {added:?}, removed from it: {removed:?}"
            ))
        } else {
            None
        };
        match difference {
            Some(difference) => Err(LockError::Stale {
                path: path.to_path_buf(),
                difference,
            }),
            None => Ok(()),
        }
    }

    /// `sha256:` digest of the lock as written, for the image annotations.
    pub fn digest(&self) -> String {
        format!(
            "sha256:{}",
            crate::digest::sha256_hex(self.to_toml().as_bytes())
        )
    }
}
