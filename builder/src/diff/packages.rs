//! Package, wheel and licence changes between two images, read from the SPDX SBOMs `kiln
//! build` attaches: each package's ecosystem and architecture come from its package URL
//! (`pkg:deb/debian/NAME@VERSION?arch=ARCH`, `pkg:pypi/NAME@VERSION`), versions compare in
//! dpkg's order (Debian Policy 5.6.12; Python release versions order the same way for the
//! numeric-dotted versions locks pin).
//!
//! A Debian package whose epoch and upstream version stay and only the Debian revision moves
//! (`2.36-9+deb12u3` to `2.36-9+deb12u4`) is a point-release update: how Debian ships security
//! and stable fixes. Those come first in every report, since they are what a reviewer must not
//! miss.

use crate::debian::version::Version;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

pub use crate::spdx::{read_packages as from_spdx, ListedPackage as Package};

/// How a package changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// Only the Debian revision moved (a stable or security update): listed first.
    PointRelease,
    /// A newer version.
    Upgraded,
    /// An older version.
    Downgraded,
    /// The same version, other bytes (rebuilt).
    Rebuilt,
    /// Only in NEW.
    Added,
    /// Only in OLD.
    Removed,
}

/// One package's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageChange {
    /// "deb" or "pypi".
    pub ecosystem: String,
    /// Name.
    pub name: String,
    /// Architecture.
    pub arch: String,
    /// What happened.
    pub kind: ChangeKind,
    /// OLD's version.
    pub old: Option<String>,
    /// NEW's version.
    pub new: Option<String>,
}

/// Every package change, and the licences that came or went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PackageDiff {
    /// Point-release updates first, then upgrades, downgrades, rebuilds, additions, removals;
    /// by name within each.
    pub changes: Vec<PackageChange>,
    /// Packages identical on both sides.
    pub unchanged: usize,
    /// Licences NEW declares and OLD does not.
    pub licenses_added: Vec<String>,
    /// Licences OLD declares and NEW does not.
    pub licenses_removed: Vec<String>,
}

fn order(a: &str, b: &str) -> Ordering {
    match (Version::parse(a), Version::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ => a.cmp(b),
    }
}

fn is_point_release(old: &str, new: &str) -> bool {
    match (Version::parse(old), Version::parse(new)) {
        (Ok(o), Ok(n)) => {
            o.epoch == n.epoch && o.upstream == n.upstream && o.revision != n.revision
        }
        _ => false,
    }
}

/// Compares the packages of OLD and NEW.
pub fn compare(old: &[Package], new: &[Package]) -> PackageDiff {
    let key = |p: &Package| (p.ecosystem.clone(), p.name.clone(), p.arch.clone());
    let old_map: BTreeMap<_, &Package> = old.iter().map(|p| (key(p), p)).collect();
    let new_map: BTreeMap<_, &Package> = new.iter().map(|p| (key(p), p)).collect();
    let mut changes = Vec::new();
    let mut unchanged = 0;
    let change = |(eco, name, arch): &(String, String, String),
                  kind,
                  old: Option<&str>,
                  new: Option<&str>| PackageChange {
        ecosystem: eco.clone(),
        name: name.clone(),
        arch: arch.clone(),
        kind,
        old: old.map(str::to_string),
        new: new.map(str::to_string),
    };
    for (k, o) in &old_map {
        match new_map.get(k) {
            None => changes.push(change(k, ChangeKind::Removed, Some(&o.version), None)),
            Some(n) => {
                let kind = match order(&o.version, &n.version) {
                    Ordering::Less
                        if o.ecosystem == "deb" && is_point_release(&o.version, &n.version) =>
                    {
                        ChangeKind::PointRelease
                    }
                    Ordering::Less => ChangeKind::Upgraded,
                    Ordering::Greater => ChangeKind::Downgraded,
                    Ordering::Equal if o.sha256 != n.sha256 => ChangeKind::Rebuilt,
                    Ordering::Equal => {
                        unchanged += 1;
                        continue;
                    }
                };
                changes.push(change(k, kind, Some(&o.version), Some(&n.version)));
            }
        }
    }
    for (k, n) in &new_map {
        if !old_map.contains_key(k) {
            changes.push(change(k, ChangeKind::Added, None, Some(&n.version)));
        }
    }
    changes.sort_by(|a, b| {
        (a.kind, &a.ecosystem, &a.name, &a.arch).cmp(&(b.kind, &b.ecosystem, &b.name, &b.arch))
    });
    let licenses = |ps: &[Package]| -> BTreeSet<String> {
        ps.iter().flat_map(|p| p.licenses.iter().cloned()).collect()
    };
    let (lo, ln) = (licenses(old), licenses(new));
    PackageDiff {
        changes,
        unchanged,
        licenses_added: ln.difference(&lo).cloned().collect(),
        licenses_removed: lo.difference(&ln).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deb(name: &str, version: &str, licenses: &[&str]) -> Package {
        Package {
            ecosystem: "deb".into(),
            name: name.into(),
            arch: "arm64".into(),
            version: version.into(),
            sha256: format!("{name}{version}"),
            licenses: licenses.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn point_releases_come_first_and_versions_compare_as_dpkg_does() {
        let old = [
            deb("libc6", "2.36-9+deb12u3", &["LGPL-2.1"]),
            deb("zlib1g", "1:1.2.13.dfsg-1", &["Zlib"]),
            deb("bash", "5.2.15-2", &["GPL-3"]),
            deb("gone", "1.0-1", &["Artistic"]),
            deb("curl", "7.88.1-10", &["curl"]),
        ];
        let new = [
            deb("libc6", "2.36-9+deb12u4", &["LGPL-2.1"]),
            deb("zlib1g", "1:1.2.13.dfsg-1", &["Zlib"]),
            deb("bash", "5.2.37-1", &["GPL-3"]),
            deb("added", "2.0-1", &["MIT"]),
            deb("curl", "7.88.1~rc1-1", &["curl"]),
        ];
        let d = compare(&old, &new);
        let kinds: Vec<(&str, ChangeKind)> = d
            .changes
            .iter()
            .map(|c| (c.name.as_str(), c.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("libc6", ChangeKind::PointRelease),
                ("bash", ChangeKind::Upgraded),
                ("curl", ChangeKind::Downgraded),
                ("added", ChangeKind::Added),
                ("gone", ChangeKind::Removed),
            ]
        );
        assert_eq!(d.unchanged, 1);
        assert_eq!(d.licenses_added, ["MIT"]);
        assert_eq!(d.licenses_removed, ["Artistic"]);
    }
}
