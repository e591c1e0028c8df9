//! SPDX 2.3 as kiln writes and reads it: the ids kiln gives packages (shared by the SBOM's
//! writer, [`crate::pipeline::sbom`], and its readers, so a reader finds an element by name
//! without a second convention) and the packages of an SBOM as `kiln diff` and `kiln sources`
//! read them back.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// An SPDX idstring of `s`: letters, digits, `.` and `-` are kept, anything else becomes `-`
/// (SPDX 2.3, clause 7.2: `SPDXRef-[idstring]`).
pub fn idstring(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The SPDX id of a package element: `SPDXRef-KIND-NAME-ARCH` (KIND `deb` or `pypi`; a
/// wheel's ARCH is `BOARDARCH:ENV`, so the env is in its id).
pub fn element_id(kind: &str, name: &str, arch: &str) -> String {
    format!("SPDXRef-{kind}-{}-{}", idstring(name), idstring(arch))
}

/// One package of an SBOM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedPackage {
    /// "deb" or "pypi".
    pub ecosystem: String,
    /// Package name.
    pub name: String,
    /// Architecture; for a wheel, the env it is installed in.
    pub arch: String,
    /// Version.
    pub version: String,
    /// SHA-256 of the .deb or wheel.
    pub sha256: String,
    /// Declared licences (Debian short names or SPDX ids).
    pub licenses: Vec<String>,
}

fn text_of(p: &Value, key: &str) -> String {
    p.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// The env of a wheel entry, from the SPDX id kiln writes for it (empty when it is not one).
fn wheel_env(p: &Value, name: &str) -> String {
    let id = text_of(p, "SPDXID");
    let prefix = format!("SPDXRef-pypi-{}-", idstring(name));
    id.strip_prefix(&prefix)
        .and_then(|rest| rest.split_once('-'))
        .map(|(_arch, env)| env.to_string())
        .unwrap_or_default()
}

/// Reads the packages of an SPDX 2.3 JSON document (the image itself is not one).
pub fn read_packages(bytes: &[u8]) -> Result<Vec<ListedPackage>, String> {
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the SBOM is not JSON: {e}"))?;
    // LicenseRef ids back to the Debian short names they stand for.
    let refs: BTreeMap<&str, &str> = doc
        .get("hasExtractedLicensingInfos")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| Some((l.get("licenseId")?.as_str()?, l.get("name")?.as_str()?)))
        .collect();
    let mut out = Vec::new();
    for p in doc
        .get("packages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(purl) = p
            .get("externalRefs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| r.get("referenceType").and_then(Value::as_str) == Some("purl"))
            .and_then(|r| r.get("referenceLocator").and_then(Value::as_str))
        else {
            continue;
        };
        let ecosystem = if purl.starts_with("pkg:deb/") {
            "deb"
        } else if purl.starts_with("pkg:pypi/") {
            "pypi"
        } else {
            continue;
        };
        // A wheel's env is in its SPDX id only (`SPDXRef-pypi-NAME-ARCH-ENV`, as kiln build
        // writes it); a wheel in two envs is two packages.
        let arch = if ecosystem == "pypi" {
            wheel_env(p, &text_of(p, "name"))
        } else {
            purl.split_once('?')
                .map(|(_, q)| q)
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("arch="))
                .unwrap_or("")
                .to_string()
        };
        let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let declared = text("licenseDeclared");
        let licenses = if declared == "NOASSERTION" || declared.is_empty() {
            Vec::new()
        } else {
            declared
                .split(" AND ")
                .map(|l| refs.get(l).copied().unwrap_or(l).to_string())
                .collect()
        };
        let sha256 = p
            .get("checksums")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("algorithm").and_then(Value::as_str) == Some("SHA256"))
            .and_then(|c| c.get("checksumValue").and_then(Value::as_str))
            .unwrap_or("")
            .to_string();
        out.push(ListedPackage {
            ecosystem: ecosystem.into(),
            name: text("name"),
            arch,
            version: text("versionInfo"),
            sha256,
            licenses,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sbom_is_read_by_package_url() {
        let doc = serde_json::json!({
            "packages": [
                {"SPDXID": "SPDXRef-Image", "name": "img"},
                {"name": "libc6", "versionInfo": "2.36-9", "licenseDeclared": "LicenseRef-Debian-GPL-2 AND MIT",
                 "checksums": [{"algorithm": "SHA256", "checksumValue": "aa"}],
                 "externalRefs": [{"referenceType": "purl", "referenceLocator": "pkg:deb/debian/libc6@2.36-9?arch=arm64&upstream=glibc"}]},
                {"name": "requests", "versionInfo": "2.31.0", "licenseDeclared": "NOASSERTION",
                 "externalRefs": [{"referenceType": "purl", "referenceLocator": "pkg:pypi/requests@2.31.0"}]},
                {"SPDXID": "SPDXRef-pypi-zope.interface-arm64-tele-metry", "name": "zope.interface", "versionInfo": "7.0",
                 "externalRefs": [{"referenceType": "purl", "referenceLocator": "pkg:pypi/zope-interface@7.0"}]},
            ],
            "hasExtractedLicensingInfos": [{"licenseId": "LicenseRef-Debian-GPL-2", "name": "GPL-2"}],
        });
        let p = read_packages(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[0].arch.as_str(), p[0].licenses.clone()),
            ("arm64", vec!["GPL-2".to_string(), "MIT".into()])
        );
        // A wheel's env comes from the SPDX id kiln writes; without one it is unknown.
        assert_eq!((p[1].ecosystem.as_str(), p[1].arch.as_str()), ("pypi", ""));
        assert_eq!(p[2].arch, "tele-metry");
        assert!(read_packages(b"{not json").is_err());
    }

    #[test]
    fn ids_keep_only_what_spdx_allows() {
        assert_eq!(
            element_id("pypi", "zope_interface", "arm64:tele"),
            "SPDXRef-pypi-zope-interface-arm64-tele"
        );
        assert_eq!(idstring("libstdc++6"), "libstdc--6");
    }
}
