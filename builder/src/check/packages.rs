//! Which Debian package installed a path, from the image's own dpkg database
//! (`/var/lib/dpkg/info/*.list`), so a finding names the .deb to fix. Listed paths are
//! matched by their resolved directory, since on merged-/usr a package lists /bin/ls and the
//! file is at /usr/bin/ls.

use super::image::{file_name, parent, ImageTree, Kind};
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
