//! The signed archive index: fetches a suite's `InRelease`, verifies it (see [`crate::debian::trust`]),
//! and loads the `Packages` indices it lists, each checked against the size and SHA-256 the
//! signed Release states. Nothing unsigned is ever parsed for content.

use crate::debian::control::{self, parse_relations, AlternativeGroup, Dependency};
use crate::debian::trust::{self, Keyring, TimeAnchor, TrustError};
use crate::debian::version::Version;
use crate::decompress::Compression;
use crate::digest::sha256_hex;
use crate::recipe::Board;
use crate::timefmt::parse_rfc2822;
use crate::transport::{Transport, TransportError};
use std::collections::BTreeMap;
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

/// Why the archive's index could not be loaded or trusted.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Download failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Signature rejected.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The Release file is unusable.
    #[error("{url}: {reason}")]
    Release {
        /// Where the Release came from.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A Packages index does not match what the signed Release says, or does not parse.
    #[error("{url}: {reason}")]
    Index {
        /// Which index.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// The verified facts of a suite's Release file.
#[derive(Debug, Clone)]
pub struct Release {
    /// URL of the InRelease (or Release) file that was verified.
    pub url: String,
    /// SHA-256 of the InRelease file as downloaded (what the lock records).
    pub inrelease_sha256: String,
    /// Fingerprint of the key whose signature was accepted.
    pub signer: String,
    /// The `Date` field as written.
    pub date_text: String,
    /// The `Date` field in seconds since the epoch.
    pub date: u64,
    /// `Valid-Until` in seconds since the epoch, if present.
    pub valid_until: Option<u64>,
    /// SHA-256 and size of every file the Release lists, by path under `dists/SUITE/`.
    pub files: BTreeMap<String, (String, u64)>,
}

/// One binary package of a Packages index.
#[derive(Debug, Clone)]
pub struct PackageEntry {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: Version,
    /// Debian architecture, or `all`.
    pub arch: String,
    /// `Essential: yes`.
    pub essential: bool,
    /// `Priority`, such as `required`.
    pub priority: String,
    /// `Pre-Depends` groups.
    pub pre_depends: Vec<AlternativeGroup>,
    /// `Depends` groups.
    pub depends: Vec<AlternativeGroup>,
    /// `Provides` (a provided name may carry `= version`).
    pub provides: Vec<Dependency>,
    /// `Conflicts` groups.
    pub conflicts: Vec<AlternativeGroup>,
    /// `Breaks` groups.
    pub breaks: Vec<AlternativeGroup>,
    /// Path of the .deb under the mirror root.
    pub filename: String,
    /// Size of the .deb in bytes.
    pub size: u64,
    /// SHA-256 of the .deb, lower-case hex.
    pub sha256: String,
}

/// A suite's verified Release and every package of its indices for one architecture.
#[derive(Debug)]
pub struct ArchiveIndex {
    /// The verified Release.
    pub release: Release,
    /// All packages of all components, in index order.
    pub packages: Vec<PackageEntry>,
}

/// Clock skew allowed between a Release's `Date` and this machine (apt allows 10 s by default;
/// build runners' clocks drift more than a mirror's).
pub const FUTURE_TOLERANCE: u64 = 300;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Fetches and verifies the suite's Release for a board.
pub fn fetch_release(transport: &Transport, board: &Board) -> Result<Release, ArchiveError> {
    let base = format!("{}/dists/{}", board.mirror, board.suite);
    let keyring = Keyring::load(&board.keyring)?;
    let anchor = if board.archived {
        TimeAnchor::SignatureTime
    } else {
        TimeAnchor::Now
    };
    let inrelease_url = format!("{base}/InRelease");
    let (url, raw, verified) = match transport.get(&inrelease_url) {
        Ok(bytes) => {
            let v = trust::verify_inrelease(&inrelease_url, &bytes, &keyring, anchor)?;
            (inrelease_url, bytes, v)
        }
        Err(TransportError::NotFound { .. }) => {
            let url = format!("{base}/Release");
            let release = transport.get(&url)?;
            let sig = transport.get(&format!("{url}.gpg"))?;
            let v = trust::verify_detached(&url, &release, &sig, &keyring, anchor)?;
            (url, release, v)
        }
        Err(e) => return Err(e.into()),
    };
    release_from_verified(url, &raw, verified, board, true)
}

/// Verifies an InRelease kiln fetched before (kept in its cache by digest) for `board`: the
/// signature at the time it was made, the suite, the digests; not its age (`kiln sources
/// --offline` reads the Release a lock's sources were found through, days later).
pub fn verify_kept_inrelease(
    url: &str,
    raw: &[u8],
    board: &Board,
) -> Result<Release, ArchiveError> {
    let keyring = Keyring::load(&board.keyring)?;
    let verified = trust::verify_inrelease(url, raw, &keyring, TimeAnchor::SignatureTime)?;
    release_from_verified(url.to_string(), raw, verified, board, false)
}

/// The facts of a verified Release text; `fresh` also refuses a future Date and an expired
/// Valid-Until (for live suites).
fn release_from_verified(
    url: String,
    raw: &[u8],
    verified: trust::Verified,
    board: &Board,
    fresh: bool,
) -> Result<Release, ArchiveError> {
    let bad = |reason: String| ArchiveError::Release {
        url: url.clone(),
        reason,
    };
    let paragraphs = control::parse(&verified.text).map_err(|e| bad(e.to_string()))?;
    let p = paragraphs
        .first()
        .ok_or_else(|| bad("empty Release file".into()))?;
    let suite_matches = [p.get("Suite"), p.get("Codename")]
        .into_iter()
        .flatten()
        .any(|s| s == board.suite);
    if !suite_matches {
        return Err(bad(format!(
            "signed for suite '{}' (codename '{}'), not '{}': refusing a Release of another suite",
            p.get("Suite").unwrap_or("?"),
            p.get("Codename").unwrap_or("?"),
            board.suite
        )));
    }
    let date_text = p
        .get("Date")
        .ok_or_else(|| bad("no Date field".into()))?
        .to_string();
    let date = parse_rfc2822(&date_text)
        .ok_or_else(|| bad(format!("Date '{date_text}' is not an RFC 2822 date")))?;
    // apt refuses a Release that is "not valid yet" (Acquire::Max-FutureTime); kiln allows
    // FUTURE_TOLERANCE of clock skew. A future Date would become the image's creation time
    // and mtime clamp, so it is refused for archived suites too.
    if fresh && date > now_secs() + FUTURE_TOLERANCE {
        return Err(bad(format!(
            "not valid yet: Date '{date_text}' lies in the future (more than {} minutes ahead of this machine's clock)",
            FUTURE_TOLERANCE / 60
        )));
    }
    let valid_until = match p.get("Valid-Until") {
        Some(v) => {
            Some(parse_rfc2822(v).ok_or_else(|| bad(format!("Valid-Until '{v}' is not a date")))?)
        }
        None => None,
    };
    if let Some(until) = valid_until {
        if fresh && until < now_secs() && !board.archived {
            return Err(bad(format!(
                "expired: Valid-Until {} has passed (a replayed or stale archive; if the suite is archived, set `archived = true` in {})",
                p.get("Valid-Until").unwrap_or(""),
                board.path.display()
            )));
        }
    }
    let mut files = BTreeMap::new();
    for line in p.get("SHA256").unwrap_or("").lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let [hash, size, path] = fields[..] else {
            return Err(bad(format!("malformed SHA256 line '{}'", line.trim())));
        };
        let size: u64 = size
            .parse()
            .map_err(|_| bad(format!("malformed size in SHA256 line '{}'", line.trim())))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "malformed digest in SHA256 line '{}'",
                line.trim()
            )));
        }
        let entry = (hash.to_ascii_lowercase(), size);
        if let Some(earlier) = files.get(path) {
            if *earlier != entry {
                return Err(bad(format!(
                    "lists {path} twice with different digests or sizes: refusing the ambiguity"
                )));
            }
        }
        files.insert(path.to_string(), entry);
    }
    if files.is_empty() {
        return Err(bad(
            "lists no SHA256 digests (kiln does not trust MD5 or SHA1)".into(),
        ));
    }
    Ok(Release {
        inrelease_sha256: sha256_hex(raw),
        signer: verified.signer,
        url,
        date_text,
        date,
        valid_until,
        files,
    })
}

/// Loads every Packages index of the board's components for its architecture.
pub fn load_index(transport: &Transport, board: &Board) -> Result<ArchiveIndex, ArchiveError> {
    let release = fetch_release(transport, board)?;
    let base = format!("{}/dists/{}", board.mirror, board.suite);
    let mut packages = Vec::new();
    for component in &board.components {
        let stem = format!("{component}/binary-{}/Packages", board.arch);
        let choice = ["xz", "gz", "bz2", ""]
            .iter()
            .map(|ext| {
                if ext.is_empty() {
                    stem.clone()
                } else {
                    format!("{stem}.{ext}")
                }
            })
            .find(|p| release.files.contains_key(p));
        let Some(path) = choice else {
            return Err(ArchiveError::Release {
                url: release.url.clone(),
                reason: format!("lists no {stem} index (wrong component or architecture?)"),
            });
        };
        let (want_hash, want_size) = release.files[&path].clone();
        let url = format!("{base}/{path}");
        let bytes = transport.get(&url)?;
        let got = sha256_hex(&bytes);
        if bytes.len() as u64 != want_size || got != want_hash {
            return Err(ArchiveError::Index {
                url,
                reason: format!(
                    "does not match the signed Release: sha256 {got} ({} bytes), expected {want_hash} ({want_size} bytes)",
                    bytes.len()
                ),
            });
        }
        let compression = Compression::from_name(&path).unwrap_or(Compression::None);
        let mut text = String::new();
        compression
            .decoder(&bytes[..])
            .and_then(|mut r| r.read_to_string(&mut text))
            .map_err(|e| ArchiveError::Index {
                url: url.clone(),
                reason: format!("cannot decompress: {e}"),
            })?;
        packages.extend(parse_packages(&text).map_err(|reason| ArchiveError::Index {
            url: url.clone(),
            reason,
        })?);
    }
    Ok(ArchiveIndex { release, packages })
}

/// Parses a Packages index into entries; the error names the line.
pub fn parse_packages(text: &str) -> Result<Vec<PackageEntry>, String> {
    let paragraphs = control::parse(text).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(paragraphs.len());
    for p in paragraphs {
        let line = p.line;
        let field = |name: &str| {
            p.get(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("line {line}: package without a {name} field"))
        };
        let name = field("Package")?.to_string();
        if !control::valid_package_name(&name) {
            return Err(format!(
                "line {line}: Package '{}' is not a valid Debian package name",
                name.chars().take(80).collect::<String>()
            ));
        }
        let ctx = |e: String| format!("line {line}: package {name}: {e}");
        let version = Version::parse(field("Version")?).map_err(|e| ctx(e.to_string()))?;
        let relations = |f: &str| -> Result<Vec<AlternativeGroup>, String> {
            parse_relations(p.get(f).unwrap_or("")).map_err(|e| ctx(format!("{f}: {e}")))
        };
        let provides = relations("Provides")?.into_iter().flatten().collect();
        let size = field("Size")?
            .parse::<u64>()
            .map_err(|_| ctx("Size is not a number".into()))?;
        let sha256 = field("SHA256")?.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ctx("SHA256 is not a SHA-256 digest".into()));
        }
        let filename = field("Filename")?.to_string();
        if filename.starts_with('/') || filename.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(ctx(format!(
                "Filename '{filename}' is not a path inside the mirror"
            )));
        }
        let arch = field("Architecture")?.to_string();
        if !control::valid_arch_name(&arch) {
            return Err(ctx(
                "Architecture is not a valid Debian architecture name".into()
            ));
        }
        out.push(PackageEntry {
            arch,
            essential: p.get("Essential") == Some("yes"),
            priority: p.get("Priority").unwrap_or("optional").to_string(),
            pre_depends: relations("Pre-Depends")?,
            depends: relations("Depends")?,
            conflicts: relations("Conflicts")?,
            breaks: relations("Breaks")?,
            provides,
            filename,
            size,
            sha256,
            version,
            name,
        });
    }
    Ok(out)
}
