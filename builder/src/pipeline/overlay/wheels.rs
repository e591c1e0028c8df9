//! Where a python-venv overlay's files come from, and getting them verified into the cache.
//!
//! Sources, in order: the overlay's own wheelhouse, pip's `find-links` directories, the cache
//! (files fetched by earlier builds, content-addressed by the sha256 the lock names), then the
//! indexes of pip's own configuration (`index-url`, `extra-index-url`; PyPI when none is set),
//! through PEP 503's simple HTML pages, which every index serves. Only files whose sha256 the
//! lock allows are candidates (pip's hash-checking mode does the same); the best one for the
//! target is chosen by [`super::wheeltags`], never by a pip. A file of the overlay's own
//! wheelhouse that matches a requirement and fits the target but has another hash is an error:
//! it is the team's own file, and a silent fallback would hide a wrong lock or a swapped wheel.
//! The index is asked only when the local sources hold no fitting file, so a build from a
//! filled cache needs no network.

use super::wheeltags::{select, PythonTarget, WheelName};
use crate::digest::sha256_hex;
use crate::pipeline::fetch::Cache;
use crate::recipe::requirements::{normalize_name, Requirement};
use crate::transport::Transport;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Why a requirement's file could not be had.
#[derive(Debug, thiserror::Error)]
pub enum WheelError {
    /// A file whose content is not what the lock allows.
    #[error("{file}: sha256 {got}, but the lock ({lock}) allows only {allowed} for {requirement}")]
    HashMismatch {
        /// The requirement, `name version`.
        requirement: String,
        /// The file (path or URL).
        file: String,
        /// What it hashes to.
        got: String,
        /// The lock's hashes.
        allowed: String,
        /// The lock file and line.
        lock: String,
    },
    /// No file fits the target.
    #[error("{lock}: {reason}")]
    NoFile {
        /// The lock file and line.
        lock: String,
        /// Why, with what was found.
        reason: String,
    },
    /// An index or a file could not be read.
    #[error("{what}: {reason}")]
    Io {
        /// The file, directory or URL.
        what: String,
        /// Why.
        reason: String,
    },
}

/// A file that may satisfy a requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its file name (the wheel's tags are in it).
    pub file: String,
    /// Its sha256 (from the file itself, the cache's name, or the index's `#sha256=`).
    pub sha256: String,
    /// Where it is.
    pub origin: Origin,
}

/// Where a candidate is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A local file (a wheelhouse, or the cache).
    Local(PathBuf),
    /// A URL of an index.
    Url(String),
    /// Seen on an index by an earlier build (the cache knows its name), not downloaded.
    Unfetched,
}

/// The file chosen for a requirement, in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The requirement's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The wheel's file name.
    pub file: String,
    /// Its sha256.
    pub sha256: String,
    /// The verified file in the cache.
    pub path: PathBuf,
    /// A source distribution (no wheel fits): it must be built first.
    pub sdist: bool,
}

/// pip's configuration, as far as finding files goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipConfig {
    /// `index-url` then each `extra-index-url`.
    pub indexes: Vec<String>,
    /// Local `find-links` directories.
    pub find_links: Vec<PathBuf>,
    /// pip's `cert`: the CA bundle to trust for the indexes (else Mozilla's roots, as pip's
    /// certifi).
    pub cert: Option<PathBuf>,
}

/// PyPI's simple index, pip's default.
pub const PYPI: &str = "https://pypi.org/simple";

impl PipConfig {
    /// Reads pip's configuration as pip does (pip's "Configuration" docs): the files
    /// /etc/xdg/pip/pip.conf, /etc/pip.conf, ~/.pip/pip.conf, ~/.config/pip/pip.conf and
    /// $PIP_CONFIG_FILE, later ones overriding, sections `[global]` then `[install]`; then the
    /// `PIP_INDEX_URL`, `PIP_EXTRA_INDEX_URL` and `PIP_FIND_LINKS` variables.
    pub fn from_host() -> PipConfig {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        let mut files = vec![
            PathBuf::from("/etc/xdg/pip/pip.conf"),
            PathBuf::from("/etc/pip.conf"),
            home.join(".pip/pip.conf"),
            home.join(".config/pip/pip.conf"),
        ];
        if let Some(f) = std::env::var_os("PIP_CONFIG_FILE") {
            files.push(PathBuf::from(f));
        }
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        for f in files {
            if let Ok(text) = std::fs::read_to_string(&f) {
                for section in ["global", "install"] {
                    for (k, v) in ini_section(&text, section) {
                        values.insert(k, v);
                    }
                }
            }
        }
        for (var, key) in [
            ("PIP_INDEX_URL", "index-url"),
            ("PIP_EXTRA_INDEX_URL", "extra-index-url"),
            ("PIP_FIND_LINKS", "find-links"),
            ("PIP_CERT", "cert"),
        ] {
            if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
                values.insert(key.into(), v);
            }
        }
        PipConfig::from_values(&values)
    }

    fn from_values(values: &BTreeMap<String, String>) -> PipConfig {
        let mut indexes = vec![values
            .get("index-url")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| PYPI.to_string())];
        if let Some(extra) = values.get("extra-index-url") {
            indexes.extend(extra.split_whitespace().map(str::to_string));
        }
        let find_links = values
            .get("find-links")
            .map(|v| {
                v.split_whitespace()
                    .map(|l| PathBuf::from(l.strip_prefix("file://").unwrap_or(l)))
                    .filter(|p| p.is_absolute() && p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        PipConfig {
            indexes: indexes
                .into_iter()
                .map(|i| i.trim_end_matches('/').to_string())
                .collect(),
            find_links,
            cert: values
                .get("cert")
                .map(|c| PathBuf::from(c.trim()))
                .filter(|c| c.is_file()),
        }
    }
}

/// `key = value` pairs of one section of an INI file (continuation lines joined).
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.starts_with(';') || t.is_empty() {
            continue;
        }
        if t.starts_with('[') {
            inside = t.trim_matches(|c| c == '[' || c == ']').trim() == section;
            continue;
        }
        if !inside {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(t);
            }
            continue;
        }
        if let Some((k, v)) = t.split_once('=').or_else(|| t.split_once(':')) {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// The `(file name, URL, sha256)` links of a PEP 503 simple page; `page` is the page's URL (links
/// may be relative to it). Links without a `#sha256=` are left out: nothing unhashed is used.
pub fn parse_simple_page(html: &str, page: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<a ").or_else(|| rest.find("<A ")) {
        rest = &rest[start + 3..];
        let Some(tag_end) = rest.find('>') else { break };
        let attrs = &rest[..tag_end];
        let Some(close) = rest[tag_end..]
            .find("</a>")
            .or_else(|| rest[tag_end..].find("</A>"))
        else {
            break;
        };
        let text = rest[tag_end + 1..tag_end + close].trim().to_string();
        rest = &rest[tag_end + close..];
        let Some(href) = attribute(attrs, "href") else {
            continue;
        };
        let href = href.replace("&amp;", "&");
        let (url, fragment) = href.split_once('#').unwrap_or((&href, ""));
        let Some(sha) = fragment.strip_prefix("sha256=") else {
            continue;
        };
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        out.push((text, join_url(page, url), sha.to_ascii_lowercase()));
    }
    out
}

fn attribute(attrs: &str, name: &str) -> Option<String> {
    let at = attrs.find(&format!("{name}="))?;
    let v = &attrs[at + name.len() + 1..];
    let quote = v.chars().next()?;
    if quote == '"' || quote == '\'' {
        let end = v[1..].find(quote)?;
        Some(v[1..1 + end].to_string())
    } else {
        Some(v.split_whitespace().next()?.to_string())
    }
}

/// `url` resolved against the page it is on.
fn join_url(page: &str, url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    let scheme_end = page.find("://").map(|i| i + 3).unwrap_or(0);
    if let Some(abs) = url.strip_prefix('/') {
        let host_end = page[scheme_end..]
            .find('/')
            .map(|i| scheme_end + i)
            .unwrap_or(page.len());
        return format!("{}/{abs}", &page[..host_end]);
    }
    let base = match page.rfind('/') {
        Some(i) if i >= scheme_end => &page[..=i],
        _ => page,
    };
    let mut joined = format!("{base}{url}");
    // Resolve `../` segments (PyPI's own pages link to ../../packages/…).
    while let Some(i) = joined.find("/../") {
        let before = &joined[..i];
        let Some(cut) = before.rfind('/').filter(|c| *c >= scheme_end) else {
            break;
        };
        joined = format!("{}{}", &joined[..cut], &joined[i + 3..]);
    }
    joined
}

/// Whether some hash the lock allows for `req` names none of `candidates` (the index must
/// be asked).
fn unknown_hash(req: &Requirement, candidates: &[Candidate]) -> bool {
    req.hashes
        .iter()
        .any(|h| !candidates.iter().any(|c| c.sha256 == *h))
}

/// The sdist file name's distribution and version, when `file` is one.
fn sdist_name(file: &str) -> Option<(String, String)> {
    let stem = file
        .strip_suffix(".tar.gz")
        .or_else(|| file.strip_suffix(".zip"))?;
    let (name, version) = stem.rsplit_once('-')?;
    Some((normalize_name(name), version.to_string()))
}

/// Finds and fetches requirement files for one target.
pub struct WheelSources<'a> {
    /// The overlay's own wheelhouse.
    pub own: Option<&'a Path>,
    /// pip's configuration.
    pub pip: PipConfig,
    /// The cache.
    pub cache: &'a Cache,
    /// For the indexes.
    pub transport: Transport,
    /// Index pages already read.
    pages: std::collections::HashMap<String, Vec<(String, String, String)>>,
}

impl<'a> WheelSources<'a> {
    /// Sources for an overlay.
    pub fn new(
        own: Option<&'a Path>,
        pip: PipConfig,
        cache: &'a Cache,
    ) -> Result<WheelSources<'a>, WheelError> {
        let transport = match &pip.cert {
            Some(bundle) => Transport::with_ca_bundle(bundle).map_err(|e| WheelError::Io {
                what: "pip's cert".into(),
                reason: e.to_string(),
            })?,
            None => Transport::new(),
        };
        Ok(WheelSources {
            own,
            pip,
            cache,
            transport,
            pages: Default::default(),
        })
    }

    fn wheel_dir(&self) -> PathBuf {
        self.cache.root().join("wheels")
    }

    /// Files of `req` in a local directory, with their hashes.
    fn local(dir: &Path, req: &Requirement) -> Result<Vec<Candidate>, WheelError> {
        let io = |e: std::io::Error| WheelError::Io {
            what: dir.display().to_string(),
            reason: e.to_string(),
        };
        let mut out = Vec::new();
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io)? {
            let e = e.map_err(io)?;
            let file = e.file_name().to_string_lossy().into_owned();
            let matches = WheelName::parse(&file)
                .map(|w| (w.name, w.version))
                .or_else(|| sdist_name(&file))
                .is_some_and(|(n, v)| n == req.name && v == req.version);
            if matches && e.path().is_file() {
                names.push((file, e.path()));
            }
        }
        names.sort();
        for (file, path) in names {
            let bytes = std::fs::read(&path).map_err(io)?;
            out.push(Candidate {
                file,
                sha256: sha256_hex(&bytes),
                origin: Origin::Local(path),
            });
        }
        Ok(out)
    }

    /// Files of `req` the cache knows by name (by the lock's hashes): with the verified file
    /// when it holds it, else as seen on an index (origin `Unfetched`).
    fn cached(&self, req: &Requirement) -> Vec<Candidate> {
        req.hashes
            .iter()
            .filter_map(|h| {
                let file = self.cache.python_file_name(h)?;
                let path = self.cache.blob_path(h);
                let held = std::fs::read(&path).is_ok_and(|b| sha256_hex(&b) == *h);
                Some(Candidate {
                    file,
                    sha256: h.clone(),
                    origin: if held {
                        Origin::Local(path)
                    } else {
                        Origin::Unfetched
                    },
                })
            })
            .collect()
    }

    /// Remembers the file name of a hash the lock allows (so that later builds, offline
    /// ones too, choose among the same files).
    fn remember(&self, c: &Candidate) -> Result<(), WheelError> {
        self.cache
            .record_python_file_name(&c.sha256, &c.file)
            .map_err(|e| WheelError::Io {
                what: self.cache.root().display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Files of `req` on the configured indexes.
    fn indexed(&mut self, req: &Requirement) -> Result<Vec<Candidate>, WheelError> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for index in self.pip.indexes.clone() {
            let page = format!("{index}/{}/", req.name);
            if !self.pages.contains_key(&page) {
                match self.transport.get(&page) {
                    Ok(bytes) => {
                        let links = parse_simple_page(&String::from_utf8_lossy(&bytes), &page);
                        self.pages.insert(page.clone(), links);
                    }
                    Err(e) => {
                        errors.push(e.to_string());
                        continue;
                    }
                }
            }
            for (file, url, sha) in self.pages.get(&page).into_iter().flatten() {
                let matches = WheelName::parse(file)
                    .map(|w| (w.name, w.version))
                    .or_else(|| sdist_name(file))
                    .is_some_and(|(n, v)| n == req.name && v == req.version);
                if matches {
                    out.push(Candidate {
                        file: file.clone(),
                        sha256: sha.clone(),
                        origin: Origin::Url(url.clone()),
                    });
                }
            }
        }
        if out.is_empty() && !errors.is_empty() {
            return Err(WheelError::Io {
                what: format!("{} {}", req.name, req.version),
                reason: format!("no index answered: {}", errors.join("; ")),
            });
        }
        Ok(out)
    }

    /// The files of `req` known without asking an index: those in the wheelhouse and pip's
    /// find-links whose hash the lock allows, then those the cache remembers. A wheelhouse
    /// file the lock does not allow goes to `disallowed_own`, which may refuse it.
    fn known_candidates(
        &self,
        req: &Requirement,
        mut disallowed_own: impl FnMut(&Candidate) -> Result<(), WheelError>,
    ) -> Result<Vec<Candidate>, WheelError> {
        let allowed = |c: &Candidate| req.hashes.contains(&c.sha256);
        let mut candidates: Vec<Candidate> = Vec::new();
        if let Some(own) = self.own {
            for c in Self::local(own, req)? {
                if allowed(&c) {
                    candidates.push(c);
                } else {
                    disallowed_own(&c)?;
                }
            }
        }
        for dir in self.pip.find_links.clone() {
            candidates.extend(Self::local(&dir, req)?.into_iter().filter(allowed));
        }
        for c in self.cached(req) {
            if !candidates.iter().any(|k| k.sha256 == c.sha256) {
                candidates.push(c);
            }
        }
        Ok(candidates)
    }

    /// Adds the index's allowed files to `candidates` (remembering their names in the cache);
    /// an index file replaces a remembered one that was never downloaded.
    fn merge_indexed(
        &self,
        candidates: &mut Vec<Candidate>,
        hashed: Vec<Candidate>,
    ) -> Result<(), WheelError> {
        for c in hashed {
            self.remember(&c)?;
            match candidates.iter_mut().find(|k| k.sha256 == c.sha256) {
                Some(k) if k.origin == Origin::Unfetched => *k = c,
                Some(_) => {}
                None => candidates.push(c),
            }
        }
        Ok(())
    }

    /// Chooses, fetches and verifies the file of `req` for `target`; `lock` names the lock file
    /// and line in messages. The choice is among every file whose hash the lock allows: the
    /// index is asked only while some allowed hash is unknown (the cache remembers the names
    /// it saw), so an online and an offline build choose the same file. A wheel that fits wins;
    /// else an allowed sdist (`.tar.gz`), to be built.
    pub fn fetch(
        &mut self,
        req: &Requirement,
        target: &PythonTarget,
        lock: &str,
    ) -> Result<Fetched, WheelError> {
        let allowed = |c: &Candidate| req.hashes.contains(&c.sha256);
        let fits = |c: &Candidate| {
            select(
                target,
                &req.name,
                &req.version,
                std::slice::from_ref(&c.file),
            )
            .is_ok()
        };
        let requirement = format!("{} {}", req.name, req.version);
        let mismatch = |c: &Candidate| WheelError::HashMismatch {
            requirement: requirement.clone(),
            file: c.file.clone(),
            got: c.sha256.clone(),
            allowed: req.hashes.join(", "),
            lock: lock.to_string(),
        };
        let mut candidates = self.known_candidates(req, |c| {
            if fits(c) || sdist_name(&c.file).is_some() {
                Err(mismatch(c))
            } else {
                Ok(())
            }
        })?;
        let mut asked = false;
        if unknown_hash(req, &candidates) && !self.pip.indexes.is_empty() {
            asked = true;
            let indexed = self.indexed(req)?;
            let (hashed, other): (Vec<Candidate>, Vec<Candidate>) =
                indexed.into_iter().partition(allowed);
            if hashed.is_empty() {
                if let Some(c) = other.iter().find(|c| fits(c)) {
                    return Err(mismatch(c));
                }
            }
            self.merge_indexed(&mut candidates, hashed)?;
        }
        let names: Vec<String> = candidates.iter().map(|c| c.file.clone()).collect();
        let (chosen, sdist) = match select(target, &req.name, &req.version, &names) {
            Ok(file) => (file.to_string(), false),
            Err(no) => match names.iter().filter(|n| n.ends_with(".tar.gz")).min() {
                Some(sdist) => (sdist.clone(), true),
                None => {
                    let found = if names.is_empty() && self.pip.indexes.is_empty() {
                        "no file with a hash the lock allows is in the wheelhouse, pip's find-links or the cache, and --offline asks no index".to_string()
                    } else if names.is_empty() {
                        "no file with a hash the lock allows was found in the wheelhouse, pip's find-links, the cache or the index".to_string()
                    } else {
                        format!("the lock's hashes match only {}", names.join(", "))
                    };
                    return Err(WheelError::NoFile {
                        lock: lock.to_string(),
                        reason: format!(
                            "no wheel of {} {} fits {}: {found}",
                            no.name, no.version, no.target
                        ),
                    });
                }
            },
        };
        let Some(mut c) = candidates.into_iter().find(|c| c.file == chosen) else {
            return Err(WheelError::Io {
                what: chosen,
                reason: "chosen file vanished".into(),
            });
        };
        if c.origin == Origin::Unfetched {
            // Known from an earlier build's look at the index, not downloaded yet.
            let url = if asked || self.pip.indexes.is_empty() {
                None
            } else {
                self.indexed(req)?
                    .into_iter()
                    .find(|i| i.sha256 == c.sha256)
                    .map(|i| i.origin)
            };
            c.origin = url.ok_or_else(|| WheelError::NoFile {
                lock: lock.to_string(),
                reason: format!(
                    "{} (sha256 {}) is the file to use, but it is not in the cache and no index can be asked (--offline?)",
                    c.file, c.sha256
                ),
            })?;
        }
        let path = self.store(&c, req, lock)?;
        Ok(Fetched {
            name: req.name.clone(),
            version: req.version.clone(),
            file: c.file,
            sha256: c.sha256,
            path,
            sdist,
        })
    }

    /// The source distribution of `req` that its lock pins (a `.tar.gz` or `.zip` whose hash
    /// the lock allows), fetched and verified into the cache: from the wheelhouse, pip's
    /// find-links, the cache, or the indexes while some allowed hash is unknown. None when the
    /// lock pins no sdist (only wheels); what `kiln sources` bundles as the wheel's source.
    pub fn sdist(&mut self, req: &Requirement, lock: &str) -> Result<Option<Fetched>, WheelError> {
        let allowed = |c: &Candidate| req.hashes.contains(&c.sha256);
        let mut candidates = self.known_candidates(req, |_| Ok(()))?;
        let wants_url = candidates
            .iter()
            .any(|c| c.origin == Origin::Unfetched && sdist_name(&c.file).is_some());
        if (unknown_hash(req, &candidates) || wants_url) && !self.pip.indexes.is_empty() {
            let hashed = self.indexed(req)?.into_iter().filter(allowed).collect();
            self.merge_indexed(&mut candidates, hashed)?;
        }
        let Some(c) = candidates
            .into_iter()
            .filter(|c| sdist_name(&c.file).is_some())
            .min_by(|a, b| a.file.cmp(&b.file))
        else {
            return Ok(None);
        };
        if c.origin == Origin::Unfetched {
            return Err(WheelError::NoFile {
                lock: lock.to_string(),
                reason: format!(
                    "{} (sha256 {}) is the sdist the lock pins, but it is not in the cache and no index can be asked (--offline?)",
                    c.file, c.sha256
                ),
            });
        }
        let path = self.store(&c, req, lock)?;
        Ok(Some(Fetched {
            name: req.name.clone(),
            version: req.version.clone(),
            file: c.file,
            sha256: c.sha256,
            path,
            sdist: true,
        }))
    }

    /// Copies or downloads a candidate into the cache, verifying its hash; returns the entry.
    fn store(&self, c: &Candidate, req: &Requirement, lock: &str) -> Result<PathBuf, WheelError> {
        let dest = self.cache.blob_path(&c.sha256);
        let cache_io = |e: std::io::Error| WheelError::Io {
            what: self.cache.root().display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(self.wheel_dir()).map_err(cache_io)?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(self.cache.root().join("tmp")).map_err(cache_io)?;
        let what = match &c.origin {
            Origin::Unfetched => {
                return Err(WheelError::Io {
                    what: c.file.clone(),
                    reason: "no place to get it from".into(),
                })
            }
            Origin::Local(p) if *p == dest => None,
            Origin::Local(p) => {
                let bytes = std::fs::read(p).map_err(|e| WheelError::Io {
                    what: p.display().to_string(),
                    reason: e.to_string(),
                })?;
                tmp.write_all(&bytes).map_err(cache_io)?;
                Some(p.display().to_string())
            }
            Origin::Url(url) => {
                let (mut reader, _) = self.transport.open(url).map_err(|e| WheelError::Io {
                    what: url.clone(),
                    reason: e.to_string(),
                })?;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = reader.read(&mut buf).map_err(|e| WheelError::Io {
                        what: url.clone(),
                        reason: e.to_string(),
                    })?;
                    if n == 0 {
                        break;
                    }
                    tmp.write_all(&buf[..n]).map_err(cache_io)?;
                }
                Some(url.clone())
            }
        };
        if let Some(what) = what {
            tmp.as_file().sync_all().map_err(cache_io)?;
            let got = sha256_hex(&std::fs::read(tmp.path()).map_err(cache_io)?);
            if got != c.sha256 {
                return Err(WheelError::HashMismatch {
                    requirement: format!("{} {}", req.name, req.version),
                    file: what,
                    got,
                    allowed: c.sha256.clone(),
                    lock: lock.to_string(),
                });
            }
            tmp.persist(&dest).map_err(|e| cache_io(e.error))?;
        }
        self.remember(c)?;
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_pages_give_hashed_links() {
        let html = r#"<html><body>
<a href="https://files.example/packages/aa/orjson-3.11.4-cp311-cp311-manylinux_2_17_armv7l.manylinux2014_armv7l.whl#sha256=8873812c164a90a79f65368f8f96817e59e35d0cc02786a5356f0e2abed78040" data-requires-python="&gt;=3.9">orjson-3.11.4-cp311-cp311-manylinux_2_17_armv7l.manylinux2014_armv7l.whl</a><br />
<a href="../../packages/bb/orjson-3.11.4.tar.gz#sha256=AAAA">orjson-3.11.4.tar.gz</a>
<a href="../../packages/cc/orjson-3.11.3.tar.gz#sha256=39485f4ab4c9b30a3943cfe99e1a213c4776fb69e8abd68f66b83d5a0b0fdc6d">orjson-3.11.3.tar.gz</a>
<a href="/p/x-1.0-py3-none-any.whl#md5=00">x-1.0-py3-none-any.whl</a>
</body></html>"#;
        let links = parse_simple_page(html, "https://pypi.example/simple/orjson/");
        assert_eq!(links.len(), 2, "{links:?}");
        assert_eq!(
            links[0].1,
            "https://files.example/packages/aa/orjson-3.11.4-cp311-cp311-manylinux_2_17_armv7l.manylinux2014_armv7l.whl"
        );
        assert_eq!(
            links[1],
            (
                "orjson-3.11.3.tar.gz".to_string(),
                "https://pypi.example/packages/cc/orjson-3.11.3.tar.gz".to_string(),
                "39485f4ab4c9b30a3943cfe99e1a213c4776fb69e8abd68f66b83d5a0b0fdc6d".to_string()
            )
        );
    }

    #[test]
    fn pip_configuration_is_read_like_pip() {
        let text = "[global]\nindex-url = https://mirror.example/simple/\nextra-index-url =\n  https://a.example/simple\n  https://b.example/simple\n[install]\nfind-links = /nonexistent\n[freeze]\nindex-url = https://ignored\n";
        let mut values = BTreeMap::new();
        for s in ["global", "install"] {
            for (k, v) in ini_section(text, s) {
                values.insert(k, v);
            }
        }
        let c = PipConfig::from_values(&values);
        assert_eq!(
            c.indexes,
            [
                "https://mirror.example/simple",
                "https://a.example/simple",
                "https://b.example/simple"
            ]
        );
        assert!(c.find_links.is_empty(), "a missing directory is left out");
        assert_eq!(PipConfig::from_values(&BTreeMap::new()).indexes, [PYPI]);
    }

    #[test]
    fn offline_choices_come_from_the_wheelhouse_and_the_names_the_cache_remembers() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(&d.path().join("cache")).unwrap();
        let house = d.path().join("wheels");
        std::fs::create_dir(&house).unwrap();
        std::fs::write(house.join("x-1.0-py3-none-any.whl"), b"pure").unwrap();
        let pure = sha256_hex(b"pure");
        let target = PythonTarget {
            version: (3, 11),
            machine: "armv7l".into(),
            glibc: (2, 36),
        };
        let req = |hashes: Vec<String>| Requirement {
            name: "x".into(),
            version: "1.0".into(),
            extras: vec![],
            marker: None,
            hashes,
            line: 3,
        };
        let offline = PipConfig::default();
        let mut sources = WheelSources::new(Some(&house), offline.clone(), &cache).unwrap();
        let got = sources
            .fetch(&req(vec![pure.clone()]), &target, "r.lock:3")
            .unwrap();
        assert_eq!(got.file, "x-1.0-py3-none-any.whl");
        assert!(!got.sdist);
        assert_eq!(std::fs::read(&got.path).unwrap(), b"pure");
        // A better wheel an earlier build saw on the index but never downloaded: offline, kiln
        // says so instead of silently taking the pure one.
        let better = "ab".repeat(32);
        std::fs::write(
            cache.root().join(format!("wheels/{better}.name")),
            "x-1.0-cp311-cp311-manylinux_2_17_armv7l.whl",
        )
        .unwrap();
        let mut sources = WheelSources::new(Some(&house), offline, &cache).unwrap();
        let err = sources
            .fetch(&req(vec![pure, better]), &target, "r.lock:3")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("manylinux_2_17_armv7l.whl") && err.contains("not in the cache"),
            "{err}"
        );
    }

    #[test]
    fn the_sdist_a_lock_pins_is_found_and_one_it_does_not_pin_is_not() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(&d.path().join("cache")).unwrap();
        let house = d.path().join("wheels");
        std::fs::create_dir(&house).unwrap();
        std::fs::write(house.join("x-1.0-py3-none-any.whl"), b"pure").unwrap();
        std::fs::write(house.join("x-1.0.tar.gz"), b"source").unwrap();
        let req = |hashes: Vec<String>| Requirement {
            name: "x".into(),
            version: "1.0".into(),
            extras: vec![],
            marker: None,
            hashes,
            line: 3,
        };
        let mut sources = WheelSources::new(Some(&house), PipConfig::default(), &cache).unwrap();
        let both = req(vec![sha256_hex(b"pure"), sha256_hex(b"source")]);
        let got = sources.sdist(&both, "r.lock").unwrap().unwrap();
        assert_eq!((got.file.as_str(), got.sdist), ("x-1.0.tar.gz", true));
        assert_eq!(std::fs::read(&got.path).unwrap(), b"source");
        // Only the wheel pinned: the sdist beside it is not the lock's, so none.
        let wheel_only = req(vec![sha256_hex(b"pure")]);
        assert!(sources.sdist(&wheel_only, "r.lock").unwrap().is_none());
    }

    #[test]
    fn sdists_are_recognised() {
        assert_eq!(
            sdist_name("Foo_Bar-1.2.tar.gz"),
            Some(("foo-bar".into(), "1.2".into()))
        );
        assert_eq!(sdist_name("foo-1.2-py3-none-any.whl"), None);
    }
}
