//! The SBOM: an SPDX 2.3 JSON document listing every .deb of the image (name, version,
//! architecture, SHA-256 of the .deb, source package, and the licences its machine-readable
//! copyright file declares), attached to the image as an OCI 1.1 referrer
//! (`artifactType: application/spdx+json`, `subject` = the image manifest) and tagged
//! `sha256-<hex>.sbom` in index.json, the way `cosign attach sbom` names it.
//!
//! The package facts are gathered when the base layer is built (the copyright files are read
//! from the staging root, symlinks resolved inside it) and cached with the layer, so a reused
//! base still gets its SBOM. The document is deterministic: its time is SOURCE_DATE_EPOCH and
//! its namespace derives from the image name, version and lock digest.

use crate::digest::sha256_hex;
use crate::pipeline::compose::Composed;
use crate::pipeline::lock::LockedPackage;
use crate::timefmt::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;

use crate::image::layout::{Layout, LayoutError, REF_NAME};
use crate::image::oci::{EMPTY_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, SPDX_MEDIA_TYPE};

/// Where a package of the SBOM comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ecosystem {
    /// A Debian .deb (base or a debs overlay).
    #[default]
    Debian,
    /// A Python wheel of a python-venv overlay.
    PyPI,
}

/// What the SBOM says about one package: a .deb, or a wheel of an overlay's env.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SbomPackage {
    /// Debian or PyPI (layer records written before wheels existed are Debian).
    #[serde(default)]
    pub ecosystem: Ecosystem,
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// SHA-256 of the .deb or wheel file, hex.
    pub sha256: String,
    /// Source package (Source: field, or the package's own name).
    pub source: String,
    /// Licence short names from a DEP-5 copyright file; empty when it is not machine-readable.
    pub licenses: Vec<String>,
}

/// The licence short names a DEP-5 copyright file declares (`License:` first words), sorted.
pub fn dep5_licenses(text: &str) -> Vec<String> {
    if !text.starts_with("Format:") {
        return Vec::new();
    }
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(value) = line.strip_prefix("License:") else {
            continue;
        };
        // "GPL-2+ or Artistic" and "GPL-2+ and BSD-3-clause" name several.
        for part in value.trim().split([' ', ',']) {
            let p = part.trim_matches(|c| c == '(' || c == ')');
            if !p.is_empty() && !matches!(p.to_ascii_lowercase().as_str(), "or" | "and" | "with") {
                names.insert(p.to_string());
            }
        }
    }
    names.into_iter().collect()
}

/// Gathers the SBOM entries of the composed packages (in lock order).
/// The licences a package's installed DEP-5 copyright file (`/usr/share/doc/PKG/copyright` in
/// the tree at `root`) declares; empty when there is none or it is not machine-readable.
pub fn installed_licenses(root: &Path, package: &str) -> Vec<String> {
    // Read through the in-root API: a copyright path that is a symlink, a FIFO or huge is
    // not followed, blocked on or read whole.
    crate::inroot::ImageRoot::open(root)
        .ok()
        .and_then(|image| {
            image
                .read(format!("usr/share/doc/{package}/copyright"), MAX_COPYRIGHT)
                .ok()
                .flatten()
        })
        .map(|b| dep5_licenses(&String::from_utf8_lossy(&b)))
        .unwrap_or_default()
}

/// Largest copyright file read (Debian's largest are a few MB).
const MAX_COPYRIGHT: u64 = 16 << 20;

/// Every .deb of the base layer as the SBOM lists it.
pub fn debian_entries(composed: &Composed, locked: &[LockedPackage]) -> Vec<SbomPackage> {
    locked
        .iter()
        .map(|l| {
            let control = composed
                .packages
                .iter()
                .find(|p| p.name == l.name && p.arch == l.arch);
            let source = control
                .and_then(|p| p.control.control.get("Source"))
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or(&l.name)
                .to_string();
            let licenses = installed_licenses(&composed.root, &l.name);
            SbomPackage {
                ecosystem: Ecosystem::Debian,
                name: l.name.clone(),
                version: l.version.clone(),
                arch: l.arch.clone(),
                sha256: l.sha256.clone(),
                source,
                licenses,
            }
        })
        .collect()
}

/// Debian's short licence names (copyright-format 1.0, "License specification") to SPDX ids.
fn spdx_id(debian: &str) -> Option<&'static str> {
    Some(match debian {
        "GPL-1" => "GPL-1.0-only",
        "GPL-1+" => "GPL-1.0-or-later",
        "GPL-2" => "GPL-2.0-only",
        "GPL-2+" => "GPL-2.0-or-later",
        "GPL-3" => "GPL-3.0-only",
        "GPL-3+" => "GPL-3.0-or-later",
        "LGPL-2" => "LGPL-2.0-only",
        "LGPL-2+" => "LGPL-2.0-or-later",
        "LGPL-2.1" => "LGPL-2.1-only",
        "LGPL-2.1+" => "LGPL-2.1-or-later",
        "LGPL-3" => "LGPL-3.0-only",
        "LGPL-3+" => "LGPL-3.0-or-later",
        "BSD-2-clause" | "BSD-2-Clause" => "BSD-2-Clause",
        "BSD-3-clause" | "BSD-3-Clause" => "BSD-3-Clause",
        "BSD-4-clause" | "BSD-4-Clause" => "BSD-4-Clause",
        "Expat" | "MIT" => "MIT",
        "Apache-2.0" => "Apache-2.0",
        "Artistic" | "Artistic-1.0" => "Artistic-1.0",
        "Artistic-2.0" => "Artistic-2.0",
        "Zlib" => "Zlib",
        "ISC" => "ISC",
        "MPL-1.1" => "MPL-1.1",
        "MPL-2.0" => "MPL-2.0",
        "CC0-1.0" => "CC0-1.0",
        "GFDL-1.2+" => "GFDL-1.2-or-later",
        "GFDL-1.3+" => "GFDL-1.3-or-later",
        "OpenSSL" => "OpenSSL",
        "PSF-2" => "PSF-2.0",
        _ => return None,
    })
}

fn license_ref(debian: &str) -> String {
    format!("LicenseRef-Debian-{}", crate::spdx::idstring(debian))
}

/// The image an SBOM describes.
#[derive(Debug, Clone)]
pub struct Described<'a> {
    /// Image name.
    pub name: &'a str,
    /// Image version.
    pub version: &'a str,
    /// `sha256:` digest of the lock.
    pub lock_digest: &'a str,
    /// SOURCE_DATE_EPOCH.
    pub created: u64,
}

/// The SPDX 2.3 JSON document.
pub fn spdx_document(image: &Described, debs: &[SbomPackage]) -> Value {
    let mut refs = BTreeSet::new();
    let packages: Vec<Value> = debs
        .iter()
        .map(|d| {
            let declared = if d.licenses.is_empty() {
                "NOASSERTION".to_string()
            } else {
                d.licenses
                    .iter()
                    .map(|l| match spdx_id(l) {
                        Some(id) => id.to_string(),
                        None => {
                            refs.insert(l.clone());
                            license_ref(l)
                        }
                    })
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(" AND ")
            };
            if d.ecosystem == Ecosystem::PyPI {
                // The wheel's own licence fields are free text; kiln does not guess from them.
                return json!({
                    "SPDXID": crate::spdx::element_id("pypi", &d.name, &d.arch),
                    "name": d.name,
                    "versionInfo": d.version,
                    "supplier": "NOASSERTION",
                    "downloadLocation": "NOASSERTION",
                    "filesAnalyzed": false,
                    "packageFileName": d.source,
                    "checksums": [{"algorithm": "SHA256", "checksumValue": d.sha256}],
                    "sourceInfo": format!("Python wheel {}", d.source),
                    "licenseConcluded": "NOASSERTION",
                    "licenseDeclared": "NOASSERTION",
                    "copyrightText": "NOASSERTION",
                    "externalRefs": [{
                        "referenceCategory": "PACKAGE-MANAGER",
                        "referenceType": "purl",
                        "referenceLocator": format!("pkg:pypi/{}@{}", d.name, d.version),
                    }],
                });
            }
            json!({
                "SPDXID": crate::spdx::element_id("deb", &d.name, &d.arch),
                "name": d.name,
                "versionInfo": d.version,
                "supplier": "NOASSERTION",
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "packageFileName": format!("{}_{}_{}.deb", d.name, d.version.replace(':', "%3a"), d.arch),
                "checksums": [{"algorithm": "SHA256", "checksumValue": d.sha256}],
                "sourceInfo": format!("built from Debian source package {}", d.source),
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": declared,
                "copyrightText": "NOASSERTION",
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": format!(
                        "pkg:deb/debian/{}@{}?arch={}&upstream={}",
                        d.name,
                        d.version.replace(':', "%3A").replace('+', "%2B"),
                        d.arch,
                        d.source
                    ),
                }],
            })
        })
        .collect();
    let image_id = "SPDXRef-Image";
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    for d in debs {
        relationships.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": crate::spdx::element_id(
                if d.ecosystem == Ecosystem::PyPI { "pypi" } else { "deb" },
                &d.name,
                &d.arch,
            ),
        }));
    }
    let mut all_packages = vec![json!({
        "SPDXID": image_id,
        "name": image.name,
        "versionInfo": image.version,
        "supplier": "NOASSERTION",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "OPERATING-SYSTEM",
    })];
    all_packages.extend(packages);
    let extracted: Vec<Value> = refs
        .iter()
        .map(|l| {
            json!({
                "licenseId": license_ref(l),
                "name": l,
                "extractedText": format!("The Debian licence short name \"{l}\"; the text is in the package's /usr/share/doc/*/copyright."),
            })
        })
        .collect();
    let namespace_key =
        sha256_hex(format!("{}\n{}\n{}", image.name, image.version, image.lock_digest).as_bytes());
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", image.name, image.version),
        "documentNamespace": format!("https://spdx.kiln.invalid/{}-{}-{namespace_key}", image.name, image.version),
        "creationInfo": {
            "created": rfc3339(image.created),
            "creators": [format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": all_packages,
        "relationships": relationships,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = Value::Array(extracted);
    }
    doc
}

/// Writes the SBOM into the layout: the document, OCI 1.1's empty config, and a referrer
/// manifest whose subject is `image` (`sha256:…`), listed in index.json as
/// `sha256-<hex>.sbom`. Returns the referrer manifest's digest.
pub fn attach(
    layout: &Path,
    image: &str,
    doc: &Value,
    created: u64,
) -> Result<String, LayoutError> {
    let files = Layout::open(layout)?;
    let mut index = files.index()?;
    let image_size = index
        .manifests()
        .iter()
        .find(|d| d.digest().to_string() == image)
        .map(|d| d.size())
        .ok_or_else(|| files.err("index.json", format!("does not list the image {image}")))?;
    let doc_bytes = serde_json::to_vec(doc).map_err(|e| files.err("index.json", e))?;
    let (doc_digest, doc_size) = files.write_blob(&doc_bytes)?;
    let (empty_digest, empty_size) = files.write_blob(b"{}")?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": SPDX_MEDIA_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": empty_digest, "size": empty_size},
        "layers": [{"mediaType": SPDX_MEDIA_TYPE, "digest": doc_digest, "size": doc_size}],
        "subject": {
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": image,
            "size": image_size,
        },
        "annotations": {"org.opencontainers.image.created": rfc3339(created)},
    });
    let (manifest_digest, manifest_size) = files.write_blob(manifest.to_string().as_bytes())?;
    let tag = format!("{}.sbom", image.replace(':', "-"));
    let referrer = serde_json::from_value(json!({
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": SPDX_MEDIA_TYPE,
        "digest": manifest_digest,
        "size": manifest_size,
        "annotations": {REF_NAME: tag},
    }))
    .map_err(|e| files.err("index.json", e))?;
    let mut manifests = index.manifests().clone();
    manifests.push(referrer);
    index.set_manifests(manifests);
    files.write_index(&index)?;
    Ok(manifest_digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep5_licences_are_read_and_prose_copyright_files_are_not() {
        let text = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\nFiles: *\nCopyright: 1999 A\nLicense: GPL-2+ or Artistic\n\nFiles: lib/*\nLicense: BSD-3-clause\n Redistribution and use...\n\nLicense: GPL-2+\n On Debian systems...\n";
        assert_eq!(dep5_licenses(text), ["Artistic", "BSD-3-clause", "GPL-2+"]);
        assert!(dep5_licenses("This package was debianized by X.\nLicense: GPL\n").is_empty());
    }

    #[test]
    fn the_document_is_spdx_2_3_with_a_checksum_and_licence_per_deb() {
        let debs = vec![SbomPackage {
            ecosystem: Ecosystem::Debian,
            name: "libc6".into(),
            version: "2.36-9+deb12u1".into(),
            arch: "arm64".into(),
            sha256: "ab".repeat(32),
            source: "glibc".into(),
            licenses: vec!["GPL-2+".into(), "public-domain".into()],
        }];
        let doc = spdx_document(
            &Described {
                name: "robot",
                version: "1.0",
                lock_digest: "sha256:00",
                created: 0,
            },
            &debs,
        );
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
        let p = &doc["packages"][1];
        assert_eq!(p["name"], "libc6");
        assert_eq!(p["checksums"][0]["checksumValue"], "ab".repeat(32));
        assert_eq!(
            p["licenseDeclared"],
            "GPL-2.0-or-later AND LicenseRef-Debian-public-domain"
        );
        assert_eq!(
            doc["hasExtractedLicensingInfos"][0]["licenseId"],
            "LicenseRef-Debian-public-domain"
        );
        assert_eq!(p["sourceInfo"], "built from Debian source package glibc");
    }
}
