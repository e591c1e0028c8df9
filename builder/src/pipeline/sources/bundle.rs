//! The sources bundle as a directory or a reproducible tar: `debian/NAME_VERSION/` (the `.dsc`
//! and its files, as `dpkg-source -x` takes them), `python/ENV/` (pinned sdists),
//! `overlays/NAME/` (the overlays' own files), `index.json` (every package, version, licences,
//! file, digest and size) and `sbom.spdx.json` (the image's SBOM with each source package as a
//! package of its own, every binary `GENERATED_FROM` it).
//!
//! The tar is the same bytes from the same inputs: entries sorted by path, GNU headers with
//! owner 0:0, mode 0644 and the lock's SOURCE_DATE_EPOCH as mtime. Either form is written
//! beside its destination and put in place whole, so a failure leaves no partial bundle.

use super::{DebianSource, DscSignature, Gathered, Policy, SourcesError};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What one bundle entry holds.
enum Content {
    /// A file (of the cache or an overlay), copied as it is.
    File(PathBuf),
    /// Bytes made here (the index, the SBOM).
    Bytes(Vec<u8>),
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    /// Files in the bundle.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> SourcesError {
    super::refused(path.display(), e)
}

/// A Debian version as it appears in file names: without its epoch (Policy 5.6.12).
fn without_epoch(version: &str) -> &str {
    version.split_once(':').map_or(version, |(_, v)| v)
}

/// The bundle directory of a Debian source package.
pub fn debian_dir(s: &DebianSource) -> String {
    format!("debian/{}_{}", s.name, without_epoch(&s.version))
}

fn signature_text(s: &DscSignature) -> String {
    match s {
        DscSignature::Verified { signer, keyring } => format!("verified: {signer} ({keyring})"),
        DscSignature::Unverified(why) => format!(
            "not verified ({why}); the .dsc is verified through the signed Release and Sources"
        ),
        DscSignature::Unsigned => {
            "unsigned; the .dsc is verified through the signed Release and Sources".into()
        }
    }
}

/// The index: everything the bundle holds and why it can be trusted.
fn index(g: &Gathered) -> Value {
    let debian: Vec<Value> = g
        .debian
        .iter()
        .map(|s| {
            json!({
                "source": s.name,
                "version": s.version,
                "directory": debian_dir(s),
                "binaries": s.binaries,
                "licenses": s.licenses,
                "dsc": s.dsc_url,
                "dsc_signature": signature_text(&s.dsc_signature),
                "files": s.files.iter().map(|(f, _)| json!({"name": f.name, "sha256": f.sha256, "size": f.size})).collect::<Vec<_>>(),
                "size": s.files.iter().map(|(f, _)| f.size).sum::<u64>(),
            })
        })
        .collect();
    let python: Vec<Value> = g
        .python
        .iter()
        .map(|p| {
            let mut v = json!({"env": p.env, "name": p.name, "version": p.version});
            if let Some((file, sha256, size, _)) = &p.sdist {
                v["sdist"] = json!({"path": format!("python/{}/{file}", p.env), "sha256": sha256, "size": size});
            }
            if let Some(why) = &p.missing {
                v["no_sdist"] = json!(why);
            }
            v
        })
        .collect();
    let overlays: Vec<Value> = g
        .overlays
        .iter()
        .map(|f| json!({"overlay": f.overlay, "path": format!("overlays/{}/{}", f.overlay, f.path), "sha256": f.sha256, "size": f.size}))
        .collect();
    json!({
        "image": g.image,
        "lock": g.lock_digest,
        "release": {"url": g.release.0, "inrelease_sha256": g.release.1, "signer": g.release.2},
        "policy": match g.policy { Policy::All => "all", Policy::Copyleft => "copyleft" },
        "debian": debian,
        "unavailable": g.unavailable.iter().map(|u| json!({"source": u.name, "version": u.version, "reason": u.reason})).collect::<Vec<_>>(),
        "excluded_by_policy": g.excluded.iter().map(|(n, v, l)| json!({"source": n, "version": v, "licenses": l})).collect::<Vec<_>>(),
        "python": python,
        "overlays": overlays,
        "debian_bytes": g.debian.iter().flat_map(|s| s.files.iter().map(|(f, _)| f.size)).sum::<u64>(),
    })
}

fn purl_version(v: &str) -> String {
    v.replace(':', "%3A").replace('+', "%2B")
}

/// The image's SBOM with a package per source package and `GENERATED_FROM` from each binary.
pub fn extended_sbom(g: &Gathered) -> Result<Value, String> {
    let mut doc: Value =
        serde_json::from_slice(&g.sbom).map_err(|e| format!("the SBOM is not JSON: {e}"))?;
    let known: std::collections::BTreeSet<String> = doc["packages"]
        .as_array()
        .ok_or("the SBOM has no packages")?
        .iter()
        .filter_map(|p| p["SPDXID"].as_str().map(String::from))
        .collect();
    let mut packages = Vec::new();
    let mut relations = Vec::new();
    for s in &g.debian {
        let id = format!(
            "SPDXRef-debsrc-{}-{}",
            crate::spdx::idstring(&s.name),
            crate::spdx::idstring(&s.version)
        );
        let (dsc, _) = &s.files[0];
        packages.push(json!({
            "SPDXID": id,
            "name": s.name,
            "versionInfo": s.version,
            "supplier": "NOASSERTION",
            "downloadLocation": s.dsc_url,
            "filesAnalyzed": false,
            "packageFileName": dsc.name,
            "checksums": [{"algorithm": "SHA256", "checksumValue": dsc.sha256}],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "SOURCE",
            "comment": format!("Debian source package, in the bundle at {}/", debian_dir(s)),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!("pkg:deb/debian/{}@{}?arch=source", s.name, purl_version(&s.version)),
            }],
        }));
        for b in &s.binaries {
            let (name, arch) = b.split_once(':').unwrap_or((b, ""));
            let binary = crate::spdx::element_id("deb", name, arch);
            if known.contains(&binary) {
                relations.push(json!({
                    "spdxElementId": binary,
                    "relationshipType": "GENERATED_FROM",
                    "relatedSpdxElement": id,
                }));
            }
        }
    }
    for p in &g.python {
        let Some((file, sha256, _, _)) = &p.sdist else {
            continue;
        };
        let id = format!(
            "SPDXRef-pysrc-{}-{}-{}",
            crate::spdx::idstring(&p.name),
            crate::spdx::idstring(&p.version),
            crate::spdx::idstring(&p.env)
        );
        packages.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "supplier": "NOASSERTION",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "packageFileName": file,
            "checksums": [{"algorithm": "SHA256", "checksumValue": sha256}],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "SOURCE",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!("pkg:pypi/{}@{}", p.name, p.version),
            }],
        }));
        let wheel_prefix = format!("SPDXRef-pypi-{}-", crate::spdx::idstring(&p.name));
        let wheel_suffix = format!("-{}", crate::spdx::idstring(&p.env));
        if let Some(wheel) = known
            .iter()
            .find(|k| k.starts_with(&wheel_prefix) && k.ends_with(&wheel_suffix))
        {
            relations.push(json!({
                "spdxElementId": wheel,
                "relationshipType": "GENERATED_FROM",
                "relatedSpdxElement": id,
            }));
        }
    }
    if let Some(list) = doc["packages"].as_array_mut() {
        list.extend(packages);
    }
    match doc["relationships"].as_array_mut() {
        Some(list) => list.extend(relations),
        None => doc["relationships"] = Value::Array(relations),
    }
    let namespace = doc["documentNamespace"]
        .as_str()
        .unwrap_or("https://spdx.kiln.invalid/image");
    doc["documentNamespace"] = json!(format!("{namespace}-sources"));
    let name = doc["name"].as_str().unwrap_or("image");
    doc["name"] = json!(format!("{name} with sources"));
    Ok(doc)
}

/// Every entry of the bundle, sorted by path.
fn entries(g: &Gathered) -> Result<Vec<(String, Content)>, SourcesError> {
    let mut out: Vec<(String, Content)> = Vec::new();
    for s in &g.debian {
        let dir = debian_dir(s);
        for (f, path) in &s.files {
            out.push((format!("{dir}/{}", f.name), Content::File(path.clone())));
        }
    }
    for p in &g.python {
        if let Some((file, _, _, path)) = &p.sdist {
            out.push((
                format!("python/{}/{file}", p.env),
                Content::File(path.clone()),
            ));
        }
    }
    for f in &g.overlays {
        out.push((
            format!("overlays/{}/{}", f.overlay, f.path),
            Content::File(f.host.clone()),
        ));
    }
    let sbom = extended_sbom(g).map_err(|e| super::refused("the image's SBOM", e))?;
    let mut sbom_bytes = serde_json::to_vec_pretty(&sbom).unwrap_or_default();
    sbom_bytes.push(b'\n');
    out.push(("sbom.spdx.json".into(), Content::Bytes(sbom_bytes)));
    let mut index_bytes = serde_json::to_vec_pretty(&index(g)).unwrap_or_default();
    index_bytes.push(b'\n');
    out.push(("index.json".into(), Content::Bytes(index_bytes)));
    out.sort_by(|a, b| a.0.cmp(&b.0));
    for pair in out.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(super::refused(
                &pair[0].0,
                "two files of the bundle would have this path",
            ));
        }
    }
    Ok(out)
}

fn open(path: &Path) -> Result<(std::fs::File, u64), SourcesError> {
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    if !meta.is_file() {
        return Err(io_err(path, "is not a regular file"));
    }
    Ok((file, meta.len()))
}

/// Writes the bundle to `dest`: a reproducible tar when its name ends in `.tar`, else a
/// directory.
pub fn write(g: &Gathered, dest: &Path) -> Result<Written, SourcesError> {
    let list = entries(g)?;
    let mut written = Written { files: 0, bytes: 0 };
    if dest.extension().is_some_and(|e| e == "tar") {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| io_err(parent, e))?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(tmp));
        for (path, content) in &list {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(g.source_date_epoch);
            header.set_entry_type(tar::EntryType::Regular);
            let size = match content {
                Content::File(host) => {
                    let (file, size) = open(host)?;
                    header.set_size(size);
                    tar.append_data(&mut header, path, file)
                        .map_err(|e| io_err(dest, e))?;
                    size
                }
                Content::Bytes(b) => {
                    header.set_size(b.len() as u64);
                    tar.append_data(&mut header, path, &b[..])
                        .map_err(|e| io_err(dest, e))?;
                    b.len() as u64
                }
            };
            written.files += 1;
            written.bytes += size;
        }
        let buffered = tar.into_inner().map_err(|e| io_err(dest, e))?;
        let tmp = buffered.into_inner().map_err(|e| io_err(dest, e.error()))?;
        tmp.as_file().sync_all().map_err(|e| io_err(dest, e))?;
        tmp.persist(dest).map_err(|e| io_err(dest, e.error))?;
        return Ok(written);
    }
    let staged = crate::output::StagedDir::new(dest).map_err(|e| io_err(dest, e))?;
    for (path, content) in &list {
        let target = staged.path().join(path);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| io_err(&target, e))?;
        let size = match content {
            Content::File(host) => {
                let (mut file, _) = open(host)?;
                std::io::copy(&mut file, &mut out).map_err(|e| io_err(&target, e))?
            }
            Content::Bytes(b) => {
                out.write_all(b).map_err(|e| io_err(&target, e))?;
                b.len() as u64
            }
        };
        written.files += 1;
        written.bytes += size;
    }
    staged.commit().map_err(|e| io_err(dest, e))?;
    Ok(written)
}
