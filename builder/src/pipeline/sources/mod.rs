//! `kiln sources`: the corresponding source of what a build shipped, for the vendor's
//! licence obligations (GPL-2 section 3, LGPL-2.1 section 6: exactly the versions shipped).
//!
//! For every .deb of the lock the `Source:` field of the cached .deb names the source package
//! and version; the suite's `Sources` index, reached through the signed InRelease (the same
//! keyring as the build), lists its `.dsc` and files by SHA-256; each file is fetched into the
//! content-addressed cache and checked against that digest, and each `.dsc` against the index
//! and its own signature where a keyring holds the signer: the board's, then the uploaders'
//! keyrings given (`--dsc-keyring`, from Debian's debian-keyring package: an archive keyring
//! never holds an uploader's key; the index says which key, or why none). The InRelease used is remembered in
//! the cache per lock, so `--offline` rebuilds the same bundle from the cache alone, with the
//! same checks. Add the overlays' own files and the sdists their requirement locks pin;
//! [`bundle`] writes the result as a directory or a reproducible tar with an index and the
//! image's SBOM extended by the source packages (`GENERATED_FROM`).

pub mod bundle;

use crate::debian::archive::{self, ArchiveError};
use crate::debian::sources::{self as debsrc, SourceEntry, SourceFile};
use crate::decompress::Compression;
use crate::image::layout::{Layout, LayoutError};
use crate::pipeline::fetch::{self, Cache, FetchError};
use crate::pipeline::lock::{Lock, LockError, LockedPackage};
use crate::recipe::overlay::Kind;
use crate::recipe::{Recipe, RecipeError};
use crate::spdx::ListedPackage;
use crate::transport::Transport;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why the sources could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    /// Bad recipe.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// No lock, or a lock for another recipe.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A download, the cache, or a file that is not the one the index pins.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The InRelease or an index failed verification.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The build output is unreadable.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Anything else, naming what and why.
    #[error("{what}: {reason}")]
    Refused {
        /// The file, package or index.
        what: String,
        /// Why.
        reason: String,
    },
}

fn refused(what: impl std::fmt::Display, reason: impl std::fmt::Display) -> SourcesError {
    SourcesError::Refused {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// Which packages go into the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Every package.
    All,
    /// Packages whose licences include GPL, LGPL, AGPL or MPL (and those whose licence is not
    /// machine-readable: kiln cannot rule copyleft out for them).
    Copyleft,
}

/// How to gather.
#[derive(Debug, Clone)]
pub struct SourcesOptions {
    /// Which packages.
    pub policy: Policy,
    /// From the cache only.
    pub offline: bool,
    /// Show a progress bar for downloads.
    pub progress: bool,
    /// Leave out (and list) a source package whose files the mirror does not serve (404) or,
    /// offline, the cache does not hold, instead of failing.
    pub allow_unavailable: bool,
    /// Keyrings of the people who upload to the archive (debian-keyring's
    /// `/usr/share/keyrings/debian-keyring.gpg`, `debian-maintainers.gpg`), tried after the
    /// board's for each `.dsc`'s own signature: archive keyrings never hold an uploader's key.
    pub dsc_keyrings: Vec<PathBuf>,
}

/// A source package the mirror did not serve: name, version, and the first file missing with
/// why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    /// Source package.
    pub name: String,
    /// Version.
    pub version: String,
    /// The first file that could not be had.
    pub reason: String,
}

/// How a `.dsc`'s own signature fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DscSignature {
    /// Verified: the signer's fingerprint, and the keyring (its file name) holding the key.
    Verified {
        /// The signing (sub)key's fingerprint.
        signer: String,
        /// The file name of the keyring that held it: the board's or a `dsc_keyrings` one.
        keyring: String,
    },
    /// Signed by a key none of the keyrings holds (an uploader's, when no uploaders' keyring
    /// was given): why it was not verified.
    Unverified(String),
    /// Not signed.
    Unsigned,
}

/// One Debian source package of the bundle.
#[derive(Debug, Clone)]
pub struct DebianSource {
    /// Source package name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The binary packages of the image built from it (`name:arch`), sorted.
    pub binaries: Vec<String>,
    /// Licences its binaries declare (DEP-5), sorted; empty when none is machine-readable.
    pub licenses: Vec<String>,
    /// Its files (the `.dsc` first), each verified, and where the cache holds them.
    pub files: Vec<(SourceFile, PathBuf)>,
    /// The `.dsc`'s own signature.
    pub dsc_signature: DscSignature,
    /// The mirror URL of the `.dsc`.
    pub dsc_url: String,
}

/// An overlay's own file.
#[derive(Debug, Clone)]
pub struct OverlayFile {
    /// The overlay.
    pub overlay: String,
    /// Path inside the overlay directory.
    pub path: String,
    /// Where it is.
    pub host: PathBuf,
    /// SHA-256, hex.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// A Python distribution of an env, and its source distribution when the lock pins one.
#[derive(Debug, Clone)]
pub struct PythonSource {
    /// The env (overlay) it is installed in.
    pub env: String,
    /// Distribution name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The sdist: file name, sha256, size and cache path; None when the lock pins none.
    pub sdist: Option<(String, String, u64, PathBuf)>,
    /// Why there is no sdist.
    pub missing: Option<String>,
}

/// Everything the bundle holds.
#[derive(Debug, Clone)]
pub struct Gathered {
    /// The image's manifest digest.
    pub image: String,
    /// `sha256:` digest of the lock.
    pub lock_digest: String,
    /// The lock's SOURCE_DATE_EPOCH (the bundle's file times).
    pub source_date_epoch: u64,
    /// URL and sha256 of the InRelease the sources were found through, and its signer.
    pub release: (String, String, String),
    /// The policy applied.
    pub policy: Policy,
    /// Debian source packages, by name and version.
    pub debian: Vec<DebianSource>,
    /// Source packages the policy left out (name, version, licences).
    pub excluded: Vec<(String, String, Vec<String>)>,
    /// Source packages left out because the mirror (or, offline, the cache) lacks a file of
    /// theirs (`allow_unavailable`).
    pub unavailable: Vec<Unavailable>,
    /// Python distributions of the envs.
    pub python: Vec<PythonSource>,
    /// The overlays' own files.
    pub overlays: Vec<OverlayFile>,
    /// The image's SBOM, as attached by the build.
    pub sbom: Vec<u8>,
}

/// The largest SBOM read.
const MAX_SBOM: u64 = 64 << 20;
/// The largest `Sources` index accepted, decompressed (bookworm main's is about 45 MB).
const MAX_SOURCES_INDEX: u64 = 256 << 20;
/// The largest `.dsc` read.
const MAX_DSC: u64 = 16 << 20;

/// Whether a Debian short licence name is a copyleft one the vendor must offer source for.
pub fn is_copyleft(license: &str) -> bool {
    let l = license.trim().to_ascii_uppercase();
    ["GPL", "LGPL", "AGPL", "MPL"]
        .iter()
        .any(|p| l.starts_with(p))
}

/// Reads the image digest and its SBOM from a build's output (OUT or OUT/oci).
/// The recipe of `board` (by name) among the boards the recipe at `recipe_dir` lists; with no
/// board named, its only one. Several boards and none named, or a name it does not list, is
/// refused naming the boards there are.
fn recipe_for_board(recipe_dir: &Path, board: Option<&str>) -> Result<Recipe, SourcesError> {
    let mut all = Recipe::load_all(recipe_dir)?;
    let names = || {
        all.iter()
            .map(|r| r.board.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match board {
        None if all.len() == 1 => Some(0),
        None => {
            return Err(refused(
                recipe_dir.join("kiln.toml").display(),
                format!(
                    "lists {} boards ({}); name the one whose sources to bundle with --board NAME",
                    all.len(),
                    names()
                ),
            ))
        }
        Some(name) => all.iter().position(|r| r.board.name == name),
    };
    match chosen {
        Some(i) => Ok(all.swap_remove(i)),
        None => Err(refused(
            recipe_dir.join("kiln.toml").display(),
            format!(
                "has no board named '{}' (its boards: {})",
                board.unwrap_or_default(),
                names()
            ),
        )),
    }
}

fn image_and_sbom(out: &Path) -> Result<(String, Vec<u8>), SourcesError> {
    let layout_dir = crate::image::layout::layout_of(out);
    let layout = Layout::open(&layout_dir)?;
    let index = layout.index()?;
    let image = layout.the_image(&index)?;
    let digest = image.digest().to_string();
    let sbom = layout.sbom(&index, &digest, MAX_SBOM)?.ok_or_else(|| {
        refused(
            layout_dir.display(),
            "has no SBOM (kiln build attaches one): the licences of its packages are unknown",
        )
    })?;
    Ok((digest, sbom))
}

/// A file fetched through [`fetch::fetch_all`]: it takes lock entries, so every source file
/// and index is one (name, version, mirror path, size, digest).
fn entry(name: &str, version: &str, path: &str, file: &SourceFile) -> LockedPackage {
    LockedPackage {
        name: name.to_string(),
        version: version.to_string(),
        arch: "source".into(),
        path: path.to_string(),
        size: file.size,
        sha256: file.sha256.clone(),
        release: String::new(),
    }
}

/// Where the cache remembers which InRelease a lock's sources were found through.
fn release_pointer(cache: &Cache, lock_digest: &str) -> PathBuf {
    cache.root().join("sources").join(format!(
        "{}.inrelease",
        lock_digest.trim_start_matches("sha256:")
    ))
}

/// The InRelease of the board's suite: fetched and kept in the cache (online), or the one kept
/// for this lock (offline); verified either way.
fn release(
    cache: &Cache,
    transport: &Transport,
    recipe: &Recipe,
    lock_digest: &str,
    offline: bool,
) -> Result<archive::Release, SourcesError> {
    let board = &recipe.board;
    let url = format!("{}/dists/{}/InRelease", board.mirror, board.suite);
    let pointer = release_pointer(cache, lock_digest);
    let raw = if offline {
        let hex = std::fs::read_to_string(&pointer).map_err(|e| {
            refused(
                pointer.display(),
                format!("{e}: run kiln sources online once for this lock before --offline"),
            )
        })?;
        let hex = hex.trim();
        if crate::digest::sha256_digest_hex(&format!("sha256:{hex}")).is_none() {
            return Err(refused(pointer.display(), "is not a sha256 digest"));
        }
        let path = cache.blob_path(hex);
        let bytes = std::fs::read(&path).map_err(|e| refused(path.display(), e))?;
        if crate::digest::sha256_hex(&bytes) != hex {
            return Err(refused(
                path.display(),
                "is not the InRelease kept for this lock",
            ));
        }
        bytes
    } else {
        let bytes = transport.get(&url).map_err(ArchiveError::from)?;
        let hex = crate::digest::sha256_hex(&bytes);
        cache.insert_verified(
            &hex,
            bytes.len() as u64,
            |f| std::io::Write::write_all(f, &bytes).map_err(|e| refused(&url, e)),
            |reason| refused(&url, reason),
        )?;
        let dir = pointer.parent().unwrap_or(cache.root());
        std::fs::create_dir_all(dir).map_err(|e| refused(dir.display(), e))?;
        crate::output::replace_file(&pointer, format!("{hex}\n").as_bytes())
            .map_err(|e| refused(pointer.display(), e))?;
        bytes
    };
    Ok(archive::verify_kept_inrelease(&url, &raw, board)?)
}

/// Every source package of the board's components' `Sources` indices, by (name, version).
fn source_index(
    cache: &Cache,
    transport: &Transport,
    recipe: &Recipe,
    release: &archive::Release,
    opts: &SourcesOptions,
) -> Result<BTreeMap<(String, String), SourceEntry>, SourcesError> {
    let board = &recipe.board;
    let mut out = BTreeMap::new();
    for component in &board.components {
        let stem = format!("{component}/source/Sources");
        let Some(path) = ["xz", "gz", "bz2", ""]
            .iter()
            .map(|ext| {
                if ext.is_empty() {
                    stem.clone()
                } else {
                    format!("{stem}.{ext}")
                }
            })
            .find(|p| release.files.contains_key(p))
        else {
            return Err(refused(
                &release.url,
                format!("lists no {stem} index: the mirror publishes no sources for {component}"),
            ));
        };
        let (sha256, size) = release.files[&path].clone();
        let file = SourceFile {
            name: path.clone(),
            sha256,
            size,
        };
        let mirror_path = format!("dists/{}/{path}", board.suite);
        let fetched = fetch::fetch_all(
            cache,
            transport,
            &board.mirror,
            &[entry(
                &format!("Sources index ({component})"),
                &board.suite,
                &mirror_path,
                &file,
            )],
            opts.offline,
            false,
        )?;
        let url = format!("{}/{mirror_path}", board.mirror);
        let compressed = std::fs::File::open(&fetched[0].path).map_err(|e| refused(&url, e))?;
        let mut text = String::new();
        Compression::from_name(&path)
            .unwrap_or(Compression::None)
            .decoder(compressed)
            .and_then(|d| d.take(MAX_SOURCES_INDEX + 1).read_to_string(&mut text))
            .map_err(|e| refused(&url, format!("cannot decompress: {e}")))?;
        if text.len() as u64 > MAX_SOURCES_INDEX {
            return Err(refused(
                &url,
                format!("is larger than {MAX_SOURCES_INDEX} bytes decompressed"),
            ));
        }
        for e in debsrc::parse_sources(&text).map_err(|e| refused(&url, e))? {
            out.entry((e.name.clone(), e.version.clone())).or_insert(e);
        }
    }
    Ok(out)
}

/// Gathers the sources of the build in `out` of the recipe in `recipe_dir`.
pub fn gather(
    recipe_dir: &Path,
    out: &Path,
    board: Option<&str>,
    cache: &Cache,
    opts: &SourcesOptions,
) -> Result<Gathered, SourcesError> {
    let recipe = recipe_for_board(recipe_dir, board)?;
    let out = &crate::image::layout::layout_for_board(out, Some(&recipe.board.name));
    let lock_path = recipe.lock_path();
    let lock = Lock::read(&lock_path)?.pin(&recipe, &lock_path)?;
    let (image, sbom) = image_and_sbom(out)?;
    let listed = crate::spdx::read_packages(&sbom).map_err(|e| refused(out.display(), e))?;
    let licences: BTreeMap<(String, String), &ListedPackage> = listed
        .iter()
        .filter(|p| p.ecosystem == "deb")
        .map(|p| ((p.name.clone(), p.arch.clone()), p))
        .collect();
    // The output must be this lock's build: every locked .deb in its SBOM, at that version.
    for p in &lock.packages {
        match licences.get(&(p.name.clone(), p.arch.clone())) {
            Some(l) if l.version == p.version => {}
            _ => {
                return Err(refused(
                    out.display(),
                    format!(
                        "was not built from {}: its SBOM lacks {} {} ({})",
                        lock_path.display(),
                        p.name,
                        p.version,
                        p.arch
                    ),
                ))
            }
        }
    }

    let transport = Transport::new();
    let board = &recipe.board;
    let debs = fetch::fetch_all(
        cache,
        &transport,
        &board.mirror,
        &lock.packages,
        opts.offline,
        opts.progress,
    )?;
    // Source package of each .deb, from its own control file.
    let mut by_source: BTreeMap<(String, String), (BTreeSet<String>, BTreeSet<String>)> =
        BTreeMap::new();
    for d in &debs {
        let p = &d.package;
        let control = crate::debian::deb::read_deb(&d.path, &p.name, |c, _| {
            Ok::<_, crate::debian::deb::DebError>(c.control.clone())
        })
        .map_err(|e| refused(d.path.display(), e))?;
        let (name, version) = debsrc::source_of_binary(&p.name, &p.version, control.get("Source"))
            .map_err(|e| refused(d.path.display(), e))?;
        let slot = by_source.entry((name, version)).or_default();
        slot.0.insert(format!("{}:{}", p.name, p.arch));
        if let Some(l) = licences.get(&(p.name.clone(), p.arch.clone())) {
            slot.1.extend(l.licenses.iter().cloned());
        }
    }

    let release = release(cache, &transport, &recipe, &lock.digest(), opts.offline)?;
    let index = source_index(cache, &transport, &recipe, &release, opts)?;
    let missing: Vec<String> = by_source
        .keys()
        .filter(|k| !index.contains_key(*k))
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    if let Some(first) = missing.first() {
        return Err(refused(
            &release.url,
            format!(
                "the suite's Sources index lacks {} source package(s) the image was built from, first {first} (the mirror has moved on; snapshot.debian.org keeps every version)",
                missing.len()
            ),
        ));
    }

    let mut wanted = Vec::new();
    let mut excluded = Vec::new();
    for ((name, version), (binaries, licenses)) in &by_source {
        let licenses: Vec<String> = licenses.iter().cloned().collect();
        let keep = match opts.policy {
            Policy::All => true,
            Policy::Copyleft => licenses.is_empty() || licenses.iter().any(|l| is_copyleft(l)),
        };
        if keep {
            wanted.push((&index[&(name.clone(), version.clone())], binaries, licenses));
        } else {
            excluded.push((name.clone(), version.clone(), licenses));
        }
    }
    let mut keyrings = vec![(
        crate::debian::trust::Keyring::load(&board.keyring).map_err(ArchiveError::from)?,
        file_name(&board.keyring),
    )];
    for path in &opts.dsc_keyrings {
        keyrings.push((
            crate::debian::trust::Keyring::load(path).map_err(ArchiveError::from)?,
            file_name(path),
        ));
    }
    let mut debian = Vec::new();
    let mut unavailable = Vec::new();
    for (e, binaries, licenses) in wanted {
        let files: Vec<LockedPackage> = e
            .files
            .iter()
            .map(|f| {
                entry(
                    &f.name,
                    &e.version,
                    &format!("{}/{}", e.directory, f.name),
                    f,
                )
            })
            .collect();
        let paths: Vec<PathBuf> = match fetch::fetch_all(
            cache,
            &transport,
            &board.mirror,
            &files,
            opts.offline,
            opts.progress,
        ) {
            Ok(fetched) => fetched.into_iter().map(|f| f.path).collect(),
            Err(FetchError::Transport {
                package: file,
                source: crate::transport::TransportError::NotFound { .. },
            })
            | Err(FetchError::NotCached { package: file, .. })
                if opts.allow_unavailable =>
            {
                // The same words online (404) and offline (never cached): the same bundle.
                unavailable.push(Unavailable {
                    name: e.name.clone(),
                    version: e.version.clone(),
                    reason: format!(
                        "{}/{}/{file} is not served by the mirror",
                        crate::transport::redact_userinfo(&board.mirror),
                        e.directory
                    ),
                });
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        let dsc_index = e
            .files
            .iter()
            .position(|f| f.name.ends_with(".dsc"))
            .ok_or_else(|| refused(&e.name, "lists no .dsc"))?;
        let dsc_url = format!(
            "{}/{}/{}",
            board.mirror, e.directory, e.files[dsc_index].name
        );
        let dsc_bytes =
            read_bounded(&paths[dsc_index], MAX_DSC).map_err(|r| refused(&dsc_url, r))?;
        let dsc = debsrc::parse_dsc(&dsc_bytes).map_err(|r| refused(&dsc_url, r))?;
        if dsc.source != e.name || dsc.version != e.version {
            return Err(refused(
                &dsc_url,
                format!(
                    "describes {} {}, the index says {} {}",
                    dsc.source, dsc.version, e.name, e.version
                ),
            ));
        }
        let mut listed: Vec<&SourceFile> = e
            .files
            .iter()
            .filter(|f| !f.name.ends_with(".dsc"))
            .collect();
        listed.sort();
        let mut own: Vec<&SourceFile> = dsc.files.iter().collect();
        own.sort();
        if listed != own {
            return Err(refused(
                &dsc_url,
                "lists other files or digests than the Sources index vouches for",
            ));
        }
        let dsc_signature = if !dsc.signed {
            DscSignature::Unsigned
        } else {
            dsc_signature(&dsc_url, &dsc_bytes, &keyrings)
        };
        // The .dsc first, then the rest by name.
        let mut files: Vec<(SourceFile, PathBuf)> = e.files.iter().cloned().zip(paths).collect();
        files.sort_by_key(|(f, _)| (!f.name.ends_with(".dsc"), f.name.clone()));
        debian.push(DebianSource {
            name: e.name.clone(),
            version: e.version.clone(),
            binaries: binaries.iter().cloned().collect(),
            licenses,
            files,
            dsc_signature,
            dsc_url: crate::transport::redact_userinfo(&dsc_url),
        });
    }

    Ok(Gathered {
        image,
        lock_digest: lock.digest(),
        source_date_epoch: lock.release.date_epoch,
        release: (
            crate::transport::redact_userinfo(&release.url),
            release.inrelease_sha256.clone(),
            release.signer.clone(),
        ),
        policy: opts.policy,
        debian,
        excluded,
        unavailable,
        python: python_sources(&recipe, cache, opts.offline)?,
        overlays: overlay_files(&recipe)?,
        sbom,
    })
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(200).collect()
}

/// Reads a regular file of at most `max` bytes.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("is larger than {max} bytes"));
    }
    Ok(bytes)
}

/// Each requirement of each env with the sdist its lock pins (a `.tar.gz` or `.zip` whose hash
/// the lock allows), fetched and verified as the build fetches wheels (wheelhouse, pip's
/// find-links, the cache, pip's index unless offline); a requirement whose lock pins only
/// wheels is listed as having none.
fn python_sources(
    recipe: &Recipe,
    cache: &Cache,
    offline: bool,
) -> Result<Vec<PythonSource>, SourcesError> {
    use crate::pipeline::overlay::wheels::{PipConfig, WheelSources};
    let mut out = Vec::new();
    for overlay in &recipe.overlays {
        let Kind::PythonVenv {
            requirements,
            wheelhouse,
            ..
        } = &overlay.kind
        else {
            continue;
        };
        let mut pip = PipConfig::from_host();
        if offline {
            pip.indexes.clear();
        }
        let mut found = WheelSources::new(wheelhouse.as_deref(), pip, cache)
            .map_err(|e| refused(&requirements.label, e))?;
        for req in &requirements.requirements {
            let sdist = found
                .sdist(req, &requirements.label)
                .map_err(|e| refused(&requirements.label, e))?;
            let (sdist, missing) = match sdist {
                Some(f) => {
                    let size = std::fs::metadata(&f.path)
                        .map_err(|e| refused(f.path.display(), e))?
                        .len();
                    (Some((f.file, f.sha256, size, f.path)), None)
                }
                None => (
                    None,
                    Some(format!(
                        "{} pins only wheels: no sdist to include",
                        requirements.label
                    )),
                ),
            };
            out.push(PythonSource {
                env: overlay.name.clone(),
                name: req.name.clone(),
                version: req.version.clone(),
                sdist,
                missing,
            });
        }
    }
    Ok(out)
}

/// A keyring's file name, as the index names it (its directory is this machine's business).
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A signed `.dsc`'s own signature, checked against each keyring in turn (the board's first);
/// the first that holds a key making a valid signature names it, else every keyring's reason.
fn dsc_signature(
    dsc_url: &str,
    dsc: &[u8],
    keyrings: &[(crate::debian::trust::Keyring, String)],
) -> DscSignature {
    let mut reasons = Vec::new();
    for (keyring, name) in keyrings {
        match crate::debian::trust::verify_inrelease(
            dsc_url,
            dsc,
            keyring,
            crate::debian::trust::TimeAnchor::SignatureTime,
        ) {
            Ok(v) => {
                return DscSignature::Verified {
                    signer: v.signer,
                    keyring: name.clone(),
                }
            }
            Err(crate::debian::trust::TrustError::Untrusted { details, .. }) => {
                reasons.push(format!("{name}: {details}"))
            }
            // Not a signature at all: the same for every keyring.
            Err(err) => return DscSignature::Unverified(one_line(&err.to_string())),
        }
    }
    DscSignature::Unverified(format!("in no keyring: {}", reasons.join("; ")))
}

/// Every regular file of every overlay's directory, sorted; symlinks and other kinds are left
/// out (they are not the team's source text).
fn overlay_files(recipe: &Recipe) -> Result<Vec<OverlayFile>, SourcesError> {
    let mut out = Vec::new();
    for overlay in &recipe.overlays {
        let mut stack = vec![overlay.dir.clone()];
        let mut found = Vec::new();
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| refused(dir.display(), e))?;
            for e in entries {
                let e = e.map_err(|e| refused(dir.display(), e))?;
                let path = e.path();
                let ty = e.file_type().map_err(|err| refused(path.display(), err))?;
                if ty.is_dir() {
                    stack.push(path);
                } else if ty.is_file() {
                    found.push(path);
                }
            }
        }
        found.sort();
        for host in found {
            let rel = host
                .strip_prefix(&overlay.dir)
                .map_err(|e| refused(host.display(), e))?
                .to_string_lossy()
                .into_owned();
            let (sha256, size) = std::fs::File::open(&host)
                .and_then(crate::digest::sha256_reader)
                .map_err(|e| refused(host.display(), e))?;
            out.push(OverlayFile {
                overlay: overlay.name.clone(),
                path: rel,
                host,
                sha256,
                size,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copyleft_is_gpl_lgpl_agpl_or_mpl_in_any_version() {
        for l in [
            "GPL-2+",
            "LGPL-2.1",
            "AGPL-3",
            "MPL-2.0",
            "gpl-3 with exception",
        ] {
            assert!(is_copyleft(l), "{l}");
        }
        for l in [
            "MIT",
            "BSD-3-clause",
            "Expat",
            "public-domain",
            "Apache-2.0",
        ] {
            assert!(!is_copyleft(l), "{l}");
        }
    }
}
