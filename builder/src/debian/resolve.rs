//! Dependency resolution: from requested names and a variant to the closed set of packages, with
//! Debian semantics (Policy ch. 7): Pre-Depends and Depends, alternatives, virtual packages via
//! Provides (versioned provides included), versioned relations, `:any`/`:native` qualifiers,
//! Essential, and a final Conflicts/Breaks check.
//!
//! Hand-written because no maintained crate resolves Debian binary dependencies. The choice
//! among alternatives follows apt's observable behaviour for a fresh install (which is what
//! mmdebstrap runs): a group already satisfied by the selection adds nothing; otherwise the first
//! alternative with an installable candidate wins; a virtual package is satisfied by its provider,
//! preferring higher Priority. Unambiguous (single-alternative) dependencies are closed first so
//! that an or-group sees everything that is certainly installed before it chooses.

use crate::debian::archive::PackageEntry;
use crate::debian::control::Dependency;
use crate::recipe::Variant;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Why no consistent package set exists.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// A requested package is not in the index.
    #[error("package '{0}' is not in the archive index (check the name, suite and components)")]
    UnknownPackage(String),
    /// A dependency cannot be met by any package of the index.
    #[error("{package} {version}: {field} '{relation}' cannot be satisfied by any package of the archive")]
    Unsatisfiable {
        /// The depending package.
        package: String,
        /// Its version.
        version: String,
        /// `Depends` or `Pre-Depends`.
        field: &'static str,
        /// The group as written.
        relation: String,
    },
    /// Two selected packages exclude each other.
    #[error("{package} {field} '{relation}', but {other} {other_version} is also selected")]
    Conflict {
        /// The package declaring the conflict.
        package: String,
        /// `Conflicts` or `Breaks`.
        field: &'static str,
        /// The relation as written.
        relation: String,
        /// The selected package it hits.
        other: String,
        /// That package's version.
        other_version: String,
    },
}

/// Which packages of the index can be installed on the architecture, with lookups by name and
/// by provided (virtual) name.
pub struct Universe<'a> {
    /// For every name, candidates sorted best (highest version) first.
    by_name: HashMap<&'a str, Vec<&'a PackageEntry>>,
    /// For every provided name, the packages providing it.
    providers: HashMap<&'a str, Vec<&'a PackageEntry>>,
}

fn priority_rank(p: &str) -> u8 {
    match p {
        "required" => 0,
        "important" => 1,
        "standard" => 2,
        "optional" => 3,
        _ => 4,
    }
}

impl<'a> Universe<'a> {
    /// Indexes the packages built for `arch` or `all`.
    pub fn new(packages: &'a [PackageEntry], arch: &str) -> Universe<'a> {
        let mut by_name: HashMap<&str, Vec<&PackageEntry>> = HashMap::new();
        let mut providers: HashMap<&str, Vec<&PackageEntry>> = HashMap::new();
        for p in packages
            .iter()
            .filter(|p| p.arch == arch || p.arch == "all")
        {
            by_name.entry(&p.name).or_default().push(p);
            for prov in &p.provides {
                providers.entry(&prov.name).or_default().push(p);
            }
        }
        for v in by_name.values_mut() {
            v.sort_by(|a, b| b.version.cmp(&a.version));
        }
        for v in providers.values_mut() {
            v.sort_by(|a, b| {
                priority_rank(&a.priority)
                    .cmp(&priority_rank(&b.priority))
                    .then_with(|| a.name.cmp(&b.name))
                    .then_with(|| b.version.cmp(&a.version))
            });
        }
        Universe { by_name, providers }
    }

    /// The best candidate of a real package name.
    fn candidate(&self, name: &str) -> Option<&'a PackageEntry> {
        self.by_name.get(name).and_then(|v| v.first().copied())
    }

    /// Whether `pkg` satisfies `dep` by being it or providing it.
    fn satisfies(pkg: &PackageEntry, dep: &Dependency) -> bool {
        if pkg.name == dep.name {
            return match &dep.constraint {
                None => true,
                Some((op, v)) => op.holds(&pkg.version, v),
            };
        }
        pkg.provides.iter().any(|prov| {
            prov.name == dep.name
                && match (&dep.constraint, &prov.constraint) {
                    (None, _) => true,
                    // Policy 7.5: an unversioned Provides never satisfies a versioned dependency.
                    (Some(_), None) => false,
                    (Some((op, want)), Some((_, provided))) => op.holds(provided, want),
                }
        })
    }

    /// Installable packages that satisfy `dep`: real ones first (best version), then providers.
    fn candidates_for(&self, dep: &Dependency) -> Vec<&'a PackageEntry> {
        let mut out: Vec<&PackageEntry> = self
            .by_name
            .get(dep.name.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| Self::satisfies(p, dep))
            .take(1)
            .collect();
        out.extend(
            self.providers
                .get(dep.name.as_str())
                .into_iter()
                .flatten()
                .copied()
                .filter(|p| Self::satisfies(p, dep)),
        );
        out
    }
}

fn group_text(group: &[Dependency]) -> String {
    group
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Resolves the variant's base set plus the requested names to a closed set, sorted by name.
pub fn resolve<'a>(
    universe: &Universe<'a>,
    variant: Variant,
    requested: &[String],
) -> Result<Vec<&'a PackageEntry>, ResolveError> {
    let mut selected: BTreeMap<&'a str, &'a PackageEntry> = BTreeMap::new();
    let mut seeds: BTreeSet<&str> = BTreeSet::new();
    for candidates in universe.by_name.values() {
        let best = candidates[0];
        let wanted = best.essential || (variant == Variant::Minbase && best.priority == "required");
        if wanted {
            seeds.insert(&best.name);
        }
    }
    if variant == Variant::Minbase {
        seeds.insert("apt");
    }
    for name in requested {
        seeds.insert(name.as_str());
    }
    for name in seeds {
        let p = universe
            .candidate(name)
            .ok_or_else(|| ResolveError::UnknownPackage(name.to_string()))?;
        selected.insert(&p.name, p);
    }

    loop {
        close_unambiguous(universe, &mut selected)?;
        if !choose_one_alternative(universe, &mut selected)? {
            break;
        }
    }
    check_conflicts(&selected)?;
    Ok(selected.into_values().collect())
}

fn dependency_groups(p: &PackageEntry) -> impl Iterator<Item = (&'static str, &Vec<Dependency>)> {
    p.pre_depends
        .iter()
        .map(|g| ("Pre-Depends", g))
        .chain(p.depends.iter().map(|g| ("Depends", g)))
}

fn satisfied_by_selection(selected: &BTreeMap<&str, &PackageEntry>, group: &[Dependency]) -> bool {
    group.iter().any(|dep| {
        selected
            .get(dep.name.as_str())
            .is_some_and(|p| Universe::satisfies(p, dep))
            || selected.values().any(|p| {
                p.name != dep.name
                    && p.provides.iter().any(|prov| prov.name == dep.name)
                    && Universe::satisfies(p, dep)
            })
    })
}

/// Adds the only possible choice of every single-alternative group until nothing changes.
fn close_unambiguous<'a>(
    universe: &Universe<'a>,
    selected: &mut BTreeMap<&'a str, &'a PackageEntry>,
) -> Result<(), ResolveError> {
    loop {
        let mut additions = Vec::new();
        for p in selected.values() {
            for (field, group) in dependency_groups(p) {
                if satisfied_by_selection(selected, group) {
                    continue;
                }
                let options: Vec<&PackageEntry> = group
                    .iter()
                    .flat_map(|d| universe.candidates_for(d))
                    .collect();
                match options.as_slice() {
                    [] => {
                        return Err(ResolveError::Unsatisfiable {
                            package: p.name.clone(),
                            version: p.version.to_string(),
                            field,
                            relation: group_text(group),
                        })
                    }
                    [only] => additions.push(*only),
                    _ => {}
                }
            }
        }
        if additions.is_empty() {
            return Ok(());
        }
        for a in additions {
            selected.entry(&a.name).or_insert(a);
        }
    }
}

/// Settles the first open or-group (in name order) by apt's rule; false when none is open.
fn choose_one_alternative<'a>(
    universe: &Universe<'a>,
    selected: &mut BTreeMap<&'a str, &'a PackageEntry>,
) -> Result<bool, ResolveError> {
    for p in selected.values() {
        for (_, group) in dependency_groups(p) {
            if satisfied_by_selection(selected, group) {
                continue;
            }
            if let Some(choice) = group
                .iter()
                .find_map(|d| universe.candidates_for(d).into_iter().next())
            {
                selected.insert(&choice.name, choice);
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn check_conflicts(selected: &BTreeMap<&str, &PackageEntry>) -> Result<(), ResolveError> {
    for p in selected.values() {
        let fields = p
            .conflicts
            .iter()
            .map(|g| ("Conflicts", g))
            .chain(p.breaks.iter().map(|g| ("Breaks", g)));
        for (field, group) in fields {
            for dep in group {
                // A package never conflicts with itself, nor with what it provides (Policy 7.6.2).
                let hit = selected
                    .values()
                    .find(|o| o.name != p.name && Universe::satisfies(o, dep));
                if let Some(other) = hit {
                    return Err(ResolveError::Conflict {
                        package: p.name.clone(),
                        field,
                        relation: dep.to_string(),
                        other: other.name.clone(),
                        other_version: other.version.to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::archive::parse_packages;

    fn index(text: &str) -> Vec<PackageEntry> {
        let mut full = String::new();
        for (i, para) in text.trim().split("\n\n").enumerate() {
            full.push_str(para.trim());
            full.push_str(&format!(
                "\nFilename: pool/p{i}.deb\nSize: 1\nSHA256: {}\n\n",
                "0".repeat(64)
            ));
        }
        parse_packages(&full).unwrap()
    }

    fn names(v: &[&PackageEntry]) -> Vec<String> {
        v.iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect()
    }

    const ARCH: &str = "arm64";

    #[test]
    fn essential_required_apt_and_their_closure() {
        let pkgs = index(
            "Package: base\nVersion: 1\nArchitecture: arm64\nEssential: yes\nPriority: required\nPre-Depends: libc6 (>= 2.36)\n\n\
             Package: libc6\nVersion: 2.36-9\nArchitecture: arm64\nPriority: optional\n\n\
             Package: libc6\nVersion: 2.35-1\nArchitecture: arm64\nPriority: optional\n\n\
             Package: apt\nVersion: 2.6\nArchitecture: arm64\nPriority: important\nDepends: gpgv | gpgv2, awk:any\n\n\
             Package: gpgv\nVersion: 1:2.2~rc1\nArchitecture: arm64\nPriority: important\n\n\
             Package: gpgv2\nVersion: 2\nArchitecture: arm64\nPriority: important\n\n\
             Package: mawk\nVersion: 1.3\nArchitecture: arm64\nPriority: required\nProvides: awk\n\n\
             Package: unrelated\nVersion: 1\nArchitecture: all\nPriority: optional\n",
        );
        let u = Universe::new(&pkgs, ARCH);
        let set = resolve(&u, Variant::Minbase, &[]).unwrap();
        assert_eq!(
            names(&set),
            [
                "apt=2.6",
                "base=1",
                "gpgv=1:2.2~rc1",
                "libc6=2.36-9",
                "mawk=1.3"
            ]
        );
        let set = resolve(&u, Variant::Essential, &[]).unwrap();
        assert_eq!(names(&set), ["base=1", "libc6=2.36-9"]);
    }

    #[test]
    fn satisfied_alternative_is_not_replaced() {
        let pkgs = index(
            "Package: pa\nVersion: 1\nArchitecture: all\nDepends: px | py\n\n\
             Package: pb\nVersion: 1\nArchitecture: all\nDepends: py\n\n\
             Package: px\nVersion: 1\nArchitecture: all\n\n\
             Package: py\nVersion: 1\nArchitecture: all\n",
        );
        let u = Universe::new(&pkgs, ARCH);
        let set = resolve(&u, Variant::Essential, &["pa".into(), "pb".into()]).unwrap();
        assert_eq!(names(&set), ["pa=1", "pb=1", "py=1"]);
    }

    #[test]
    fn versioned_relations_and_provides() {
        let pkgs = index(
            "Package: pa\nVersion: 1\nArchitecture: all\nDepends: pv (>= 2)\n\n\
             Package: old\nVersion: 1\nArchitecture: all\nProvides: pv\n\n\
             Package: new\nVersion: 1\nArchitecture: all\nProvides: pv (= 3)\n",
        );
        let u = Universe::new(&pkgs, ARCH);
        let set = resolve(&u, Variant::Essential, &["pa".into()]).unwrap();
        assert_eq!(names(&set), ["new=1", "pa=1"]);
    }

    #[test]
    fn foreign_arch_is_ignored_and_errors_are_named() {
        let pkgs = index(
            "Package: pa\nVersion: 1\nArchitecture: arm64\nDepends: pb (>= 2)\n\n\
             Package: pb\nVersion: 1\nArchitecture: arm64\n\n\
             Package: pb\nVersion: 3\nArchitecture: amd64\n",
        );
        let u = Universe::new(&pkgs, ARCH);
        let err = resolve(&u, Variant::Essential, &["pa".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pa 1: Depends 'pb (>= 2)' cannot be satisfied by any package of the archive"
        );
        let err = resolve(&u, Variant::Essential, &["nope".into()]).unwrap_err();
        assert!(matches!(err, ResolveError::UnknownPackage(n) if n == "nope"));
    }

    #[test]
    fn conflicts_are_reported() {
        let pkgs = index(
            "Package: pa\nVersion: 1\nArchitecture: all\nConflicts: pb (<< 2)\n\n\
             Package: pb\nVersion: 1\nArchitecture: all\n",
        );
        let u = Universe::new(&pkgs, ARCH);
        let err = resolve(&u, Variant::Essential, &["pa".into(), "pb".into()]).unwrap_err();
        assert!(matches!(err, ResolveError::Conflict { .. }), "{err}");
    }
}
