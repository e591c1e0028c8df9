//! Which Debian package installed a path, from the image's own dpkg database
//! (`/var/lib/dpkg/info/*.list`), so a finding names the .deb to fix. Listed paths are
//! matched by their resolved directory, since on merged-/usr a package lists /bin/ls and the
//! file is at /usr/bin/ls.

use crate::image::{file_name, parent, ImageTree, Kind};
use std::collections::BTreeMap;

/// Path -> package.
#[derive(Debug, Default)]
pub struct Owners {
    by_path: BTreeMap<String, String>,
}

impl Owners {
    /// Reads every `.list` file of the image's dpkg database.
    pub fn read(image: &ImageTree) -> Owners {
        let mut by_path = BTreeMap::new();
        let Some(info) = image.resolve("/var/lib/dpkg/info") else {
            return Owners { by_path };
        };
        let mut dir_cache: BTreeMap<String, Option<String>> = BTreeMap::new();
        for name in image.children(&info) {
            let Some(pkg) = name.strip_suffix(".list") else {
                continue;
            };
            let pkg = pkg.split(':').next().unwrap_or(pkg).to_string();
            let list_path = format!("{info}/{name}");
            if image.get(&list_path).map(|n| &n.kind) != Some(&Kind::File) {
                continue;
            }
            let Ok(bytes) = image.read(&list_path) else {
                continue;
            };
            for line in String::from_utf8_lossy(&bytes).lines() {
                if line.is_empty() || line == "/." {
                    continue;
                }
                let dir = parent(line).to_string();
                let resolved_dir = dir_cache
                    .entry(dir.clone())
                    .or_insert_with(|| image.resolve(&dir))
                    .clone();
                let Some(rd) = resolved_dir else { continue };
                let full = if rd == "/" {
                    format!("/{}", file_name(line))
                } else {
                    format!("{rd}/{}", file_name(line))
                };
                by_path.entry(full).or_insert_with(|| pkg.clone());
            }
        }
        Owners { by_path }
    }

    /// The package that installed `path`.
    pub fn owner(&self, path: &str) -> Option<&str> {
        self.by_path.get(path).map(String::as_str)
    }
}

/// Links that `update-alternatives --install` (and its `--slave`s) in the postinst of a package
/// that is unpacked but not configured will create, with that package: in an image built with
/// `configure = false` (configured on the device), /usr/bin/awk does not exist yet, and a
/// script starting `#!/usr/bin/awk` is not broken.
pub fn pending_alternatives(image: &ImageTree) -> BTreeMap<String, String> {
    let mut links = BTreeMap::new();
    let Some(info) = image.resolve("/var/lib/dpkg/info") else {
        return links;
    };
    let Ok(status) = image.read("/var/lib/dpkg/status") else {
        return links;
    };
    let status = String::from_utf8_lossy(&status);
    let mut unconfigured = Vec::new();
    for para in status.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name).map(str::trim))
                .unwrap_or("")
        };
        let state = field("Status:");
        if state.ends_with(" unpacked") || state.ends_with(" half-configured") {
            unconfigured.push(field("Package:").to_string());
        }
    }
    for name in image.children(&info) {
        let Some(stem) = name.strip_suffix(".postinst") else {
            continue;
        };
        let pkg = stem.split(':').next().unwrap_or(stem);
        if !unconfigured.iter().any(|u| u == pkg) {
            continue;
        }
        let Ok(text) = image.read(&format!("{info}/{name}")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&text);
        let words: Vec<&str> = text.split_whitespace().collect();
        for pair in words.windows(2) {
            if matches!(pair[0], "--install" | "--slave") && pair[1].starts_with('/') {
                links
                    .entry(pair[1].to_string())
                    .or_insert_with(|| pkg.to_string());
            }
        }
    }
    links
}

/// The Recommends and Suggests of each installed package, from the image's dpkg status (the
/// fields as the archive's Packages index gave them), to tell a team whether a missing library
/// is one its packages merely recommend.
#[derive(Debug, Default)]
pub struct Relations {
    by_package: BTreeMap<String, (Vec<String>, Vec<String>)>,
}

/// The names a relation field lists (`a (>= 1) | b:any, c` -> a, b, c).
fn relation_names(field: &str) -> Vec<String> {
    field
        .split([',', '|'])
        .filter_map(|alt| {
            let name = alt.split(['(', '[', '<']).next()?.trim();
            let name = name.split(':').next()?.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// The binary package that ships a library by Debian's naming rule for shared libraries
/// (Debian Policy 8.1: `libfoo.so.1` is in `libfoo1`, `libfoo2.so.3` in `libfoo2-3`,
/// lower case with `_` as `-`).
pub fn library_package(soname: &str) -> String {
    let (name, version) = match soname.split_once(".so") {
        Some((name, rest)) => (name, rest.trim_start_matches('.')),
        None => (soname, ""),
    };
    let name = name.to_lowercase().replace('_', "-");
    match version {
        "" => name,
        v if name.ends_with(|c: char| c.is_ascii_digit()) => format!("{name}-{v}"),
        v => format!("{name}{v}"),
    }
}

impl Relations {
    /// Reads /var/lib/dpkg/status.
    pub fn read(image: &ImageTree) -> Relations {
        let mut by_package = BTreeMap::new();
        let Ok(status) = image.read("/var/lib/dpkg/status") else {
            return Relations { by_package };
        };
        for para in String::from_utf8_lossy(&status).split("\n\n") {
            let field = |name: &str| {
                para.lines()
                    .find_map(|l| l.strip_prefix(name).map(str::trim))
                    .unwrap_or("")
            };
            let package = field("Package:");
            if !package.is_empty() {
                by_package.insert(
                    package.to_string(),
                    (
                        relation_names(field("Recommends:")),
                        relation_names(field("Suggests:")),
                    ),
                );
            }
        }
        Relations { by_package }
    }

    /// One phrase on which package would bring `soname` and how `owner` relates to it.
    pub fn provider_note(&self, owner: Option<&str>, soname: &str) -> String {
        let package = library_package(soname);
        let installed = self.by_package.contains_key(&package);
        let relation = owner.and_then(|o| {
            let (recommends, suggests) = self.by_package.get(o)?;
            if recommends.contains(&package) {
                Some(format!("a Recommends of {o}"))
            } else if suggests.contains(&package) {
                Some(format!("a Suggests of {o}"))
            } else {
                None
            }
        });
        match (relation, owner) {
            (Some(r), _) => format!(
                "{soname} is in {package} (Debian's library naming), {r}{}",
                if installed { "" } else { ", not installed" }
            ),
            (None, Some(o)) => format!(
                "{soname} would be in {package} (Debian's library naming), which {o} neither recommends nor suggests"
            ),
            (None, None) => format!("{soname} would be in {package} (Debian's library naming)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_packages_by_debian_policy() {
        assert_eq!(library_package("libatm.so.1"), "libatm1");
        assert_eq!(library_package("libfoo2.so.3"), "libfoo2-3");
        assert_eq!(library_package("libgtk-3.so.0"), "libgtk-3-0");
        assert_eq!(library_package("libSDL2-2.0.so.0"), "libsdl2-2.0-0");
        assert_eq!(library_package("libdb-5.3.so"), "libdb-5.3");
        assert_eq!(library_package("libxml_2.so.2"), "libxml-2-2");
    }

    #[test]
    fn relation_fields_name_every_alternative() {
        assert_eq!(
            relation_names("libatm1 (>= 2.5.1), libelf1 | libbpf1:any [arm64], foo <!nocheck>"),
            ["libatm1", "libelf1", "libbpf1", "foo"]
        );
    }
}
