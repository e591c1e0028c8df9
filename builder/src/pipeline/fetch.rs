//! The fetch stage: makes every .deb of a lock present in the content-addressed cache, verified.
//!
//! The cache maps SHA-256 to file (`blobs/sha256/<hex>`). An entry is written to a temporary
//! file in the cache, hashed while it is written and renamed into place only when digest and
//! size match the lock, so an interrupted download never leaves a corrupt entry. Entries are
//! re-hashed whenever they are used (2 GB/s here); a corrupt or truncated one is removed and
//! fetched again, never trusted. With `offline`, nothing touches the network.

use crate::digest::{sha256_reader, HashingWriter};
use crate::pipeline::lock::LockedPackage;
use crate::transport::{Transport, TransportError};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Why a .deb could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The download failed.
    #[error("{package}: {source}")]
    Transport {
        /// Package.
        package: String,
        /// Why.
        source: TransportError,
    },
    /// The bytes are not the ones the lock pins.
    #[error("{package}: {url} has sha256 {got} ({got_size} bytes), the lock pins {want} ({want_size} bytes); refusing it")]
    Mismatch {
        /// Package.
        package: String,
        /// Source URL.
        url: String,
        /// Digest found.
        got: String,
        /// Size found.
        got_size: u64,
        /// Digest pinned.
        want: String,
        /// Size pinned.
        want_size: u64,
    },
    /// Offline and not cached.
    #[error("{package} {version} (sha256 {sha256}) is not in the cache {cache} and --offline forbids the network")]
    NotCached {
        /// Package.
        package: String,
        /// Version.
        version: String,
        /// Digest.
        sha256: String,
        /// Cache directory.
        cache: PathBuf,
    },
    /// The cache directory is unusable.
    #[error("cache {path}: {reason}")]
    Cache {
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The content-addressed cache directory, and the registry repository shared by a fleet of
/// runners when there is one.
#[derive(Clone)]
pub struct Cache {
    root: PathBuf,
    remote: Option<std::sync::Arc<crate::registry::Registry>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("root", &self.root)
            .field(
                "remote",
                &self.remote.as_ref().map(|r| r.name().to_string()),
            )
            .finish()
    }
}

impl Cache {
    /// The default location: `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("KILN_CACHE_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("kiln");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        PathBuf::from(home).join(".cache").join("kiln")
    }

    /// Opens (creating) a cache directory.
    pub fn open(cache_dir: &Path) -> Result<Cache, FetchError> {
        for sub in ["blobs/sha256", "tmp"] {
            std::fs::create_dir_all(cache_dir.join(sub)).map_err(|e| FetchError::Cache {
                path: cache_dir.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        Ok(Cache {
            root: cache_dir.to_path_buf(),
            remote: None,
        })
    }

    /// The same cache, backed for finished layers by a registry repository.
    pub fn with_remote(mut self, registry: crate::registry::Registry) -> Cache {
        self.remote = Some(std::sync::Arc::new(registry));
        self
    }

    /// The registry repository behind the layer cache, when there is one.
    pub fn remote(&self) -> Option<&crate::registry::Registry> {
        self.remote.as_deref()
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(sha256)
    }

    /// The file name a Python distribution file of this sha256 was seen under (on an index, in
    /// a wheelhouse or an inputs archive), when one was recorded.
    pub fn python_file_name(&self, sha256: &str) -> Option<String> {
        let record = self.root.join("wheels").join(format!("{sha256}.name"));
        std::fs::read_to_string(record)
            .ok()
            .map(|f| f.trim().to_string())
    }

    /// Records the file name of a Python distribution file (so that later builds, offline ones
    /// too, choose among the same files); written whole or not at all.
    pub fn record_python_file_name(&self, sha256: &str, file: &str) -> std::io::Result<()> {
        if self.python_file_name(sha256).as_deref() == Some(file) {
            return Ok(());
        }
        let dir = self.root.join("wheels");
        std::fs::create_dir_all(&dir)?;
        let mut name = tempfile::NamedTempFile::new_in(self.root.join("tmp"))?;
        std::io::Write::write_all(&mut name, file.as_bytes())?;
        name.persist(dir.join(format!("{sha256}.name")))
            .map_err(|e| e.error)?;
        Ok(())
    }

    /// Stores the bytes `write` produces as the entry of `sha256`, `size` bytes, when they are
    /// that (written to a temporary file in the cache and renamed into place, so a failure
    /// leaves no entry); `write` reports its own failure, which is passed on.
    pub fn insert_verified<E>(
        &self,
        sha256: &str,
        size: u64,
        write: impl FnOnce(&mut std::fs::File) -> Result<(), E>,
        io_err: impl Fn(String) -> E,
    ) -> Result<PathBuf, E> {
        let mut tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))
            .map_err(|e| io_err(e.to_string()))?;
        write(tmp.as_file_mut())?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| io_err(e.to_string()))?;
        let file = tmp.reopen().map_err(|e| io_err(e.to_string()))?;
        let (got, got_size) = sha256_reader(file).map_err(|e| io_err(e.to_string()))?;
        if got != sha256 || got_size != size {
            return Err(io_err(format!(
                "the bytes hash to sha256:{got} ({got_size} bytes), not sha256:{sha256} ({size} bytes)"
            )));
        }
        let path = self.blob_path(sha256);
        tmp.persist(&path)
            .map_err(|e| io_err(e.error.to_string()))?;
        Ok(path)
    }

    /// The path of a verified entry, or None when absent; a corrupt entry is removed.
    pub fn verified(&self, sha256: &str, size: u64) -> Result<Option<PathBuf>, FetchError> {
        let path = self.blob_path(sha256);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(FetchError::Cache {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let (got, got_size) = sha256_reader(file).map_err(|e| FetchError::Cache {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if got == sha256 && got_size == size {
            return Ok(Some(path));
        }
        std::fs::remove_file(&path).map_err(|e| FetchError::Cache {
            path: path.clone(),
            reason: format!("cannot remove corrupt entry: {e}"),
        })?;
        Ok(None)
    }

    /// Stores a stream under its expected digest; fails (storing nothing) if it differs.
    fn insert(
        &self,
        package: &LockedPackage,
        url: &str,
        reader: &mut dyn Read,
        progress: &ProgressBar,
    ) -> Result<PathBuf, FetchError> {
        let cache_err = |reason: String| FetchError::Cache {
            path: self.root.clone(),
            reason,
        };
        let tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))
            .map_err(|e| cache_err(e.to_string()))?;
        let mut writer = HashingWriter::new(BufWriter::new(tmp.as_file()));
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|e| FetchError::Transport {
                package: package.name.clone(),
                source: TransportError::Failed {
                    url: url.to_string(),
                    reason: e.to_string(),
                },
            })?;
            if n == 0 {
                break;
            }
            std::io::Write::write_all(&mut writer, &buf[..n])
                .map_err(|e| cache_err(e.to_string()))?;
            progress.inc(n as u64);
        }
        let (got, got_size, inner) = writer.into_parts();
        inner
            .into_inner()
            .map_err(|e| cache_err(e.to_string()))?
            .sync_all()
            .map_err(|e| cache_err(e.to_string()))?;
        if got != package.sha256 || got_size != package.size {
            return Err(FetchError::Mismatch {
                package: package.name.clone(),
                url: url.to_string(),
                got,
                got_size,
                want: package.sha256.clone(),
                want_size: package.size,
            });
        }
        let dest = self.blob_path(&package.sha256);
        tmp.persist(&dest).map_err(|e| cache_err(e.to_string()))?;
        Ok(dest)
    }
}

/// Attempts per download: a mirror that hiccups (DNS, a reset connection) gets two more tries
/// after a pause; a wrong digest is final at once.
const ATTEMPTS: u32 = 3;

fn fetch_one(
    cache: &Cache,
    transport: &Transport,
    p: &LockedPackage,
    url: &str,
    progress: &ProgressBar,
) -> Result<PathBuf, FetchError> {
    let mut attempt = 1;
    loop {
        let result = transport
            .open(url)
            .map_err(|source| FetchError::Transport {
                package: p.name.clone(),
                source,
            })
            .and_then(|(mut reader, _)| cache.insert(p, url, &mut reader, progress));
        match result {
            Err(FetchError::Transport {
                source: TransportError::Failed { .. },
                ..
            }) if attempt < ATTEMPTS => {
                std::thread::sleep(std::time::Duration::from_millis(500 * u64::from(attempt)));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A locked .deb and its verified copy in the cache: what the fetch stage hands to compose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The lock's entry.
    pub package: LockedPackage,
    /// The cache file, whose size and SHA-256 matched the entry.
    pub path: PathBuf,
}

/// Makes every package available in the cache; returns them in lock order.
pub fn fetch_all(
    cache: &Cache,
    transport: &Transport,
    mirror: &str,
    packages: &[LockedPackage],
    offline: bool,
    show_progress: bool,
) -> Result<Vec<Fetched>, FetchError> {
    let mut paths: Vec<Option<PathBuf>> = Vec::with_capacity(packages.len());
    let mut missing = Vec::new();
    for (i, p) in packages.iter().enumerate() {
        let found = cache.verified(&p.sha256, p.size)?;
        if found.is_none() {
            if offline {
                return Err(FetchError::NotCached {
                    package: p.name.clone(),
                    version: p.version.clone(),
                    sha256: p.sha256.clone(),
                    cache: cache.root.clone(),
                });
            }
            missing.push(i);
        }
        paths.push(found);
    }
    if !missing.is_empty() {
        let total: u64 = missing.iter().map(|&i| packages[i].size).sum();
        let progress = if show_progress {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "fetch {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<(usize, Result<PathBuf, FetchError>)>> = Mutex::new(Vec::new());
        let workers = missing.len().clamp(1, 8);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = missing.get(k) else { break };
                    let p = &packages[i];
                    let url = format!("{mirror}/{}", p.path);
                    let result = fetch_one(cache, transport, p, &url, &progress);
                    let failed = result.is_err();
                    if let Ok(mut r) = results.lock() {
                        r.push((i, result));
                    }
                    if failed {
                        // Stop handing out work; the first error is reported.
                        next.store(missing.len(), Ordering::Relaxed);
                    }
                });
            }
        });
        progress.finish_and_clear();
        let mut results = results.into_inner().unwrap_or_default();
        results.sort_by_key(|(i, _)| *i);
        for (i, r) in results {
            paths[i] = Some(r?);
        }
    }
    paths
        .into_iter()
        .zip(packages)
        .map(|(p, pkg)| match p {
            Some(path) => Ok(Fetched {
                package: pkg.clone(),
                path,
            }),
            None => Err(FetchError::Cache {
                path: cache.root.clone(),
                reason: format!("{} was not fetched", pkg.name),
            }),
        })
        .collect()
}
