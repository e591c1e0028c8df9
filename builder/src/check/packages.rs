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
