//! File changes between two images, read only from the layers that differ: the layers OLD has
//! and NEW has not, stacked in order, against NEW's layers OLD has not. A layer both have (the
//! same digest) is never opened: its files are the same on both sides. Each path is compared
//! by type, mode, owner, size and content (SHA-256); enabled systemd units (the
//! `/etc/systemd/system/*.wants/` links `systemctl enable` makes) are compared as well.
//!
//! What the report cannot see, by design: a path a differing layer adds that an unchanged
//! layer below already had is reported as added (it was replaced), and one it stops shipping
//! while an unchanged layer still has it as removed. kiln's layers rarely overlap (one layer
//! per daemon, under its own prefix), and the packages section names the package behind it.

use super::DiffError;
use crate::image::{ImageTree, Kind};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// One path's state on one side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileState {
    /// "dir", "file", "symlink" or "special".
    pub kind: &'static str,
    /// The symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Permission bits, octal as text.
    pub mode: String,
    /// Owner uid:gid.
    pub owner: String,
    /// Size in bytes (files).
    pub size: u64,
    /// SHA-256 of the content (files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// One path's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// The path in the image.
    pub path: String,
    /// "added", "removed", or what differs: "type", "content", "mode", "owner", "size".
    pub changes: Vec<&'static str>,
    /// OLD's state.
    pub old: Option<FileState>,
    /// NEW's state.
    pub new: Option<FileState>,
}

/// The file and unit changes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileDiff {
    /// By path.
    pub changes: Vec<FileChange>,
    /// Units enabled in NEW and not in OLD (`TARGET.wants/UNIT`).
    pub units_enabled: Vec<String>,
    /// Units enabled in OLD and not in NEW.
    pub units_disabled: Vec<String>,
    /// How many layers were opened (OLD's and NEW's differing ones).
    pub layers_read: usize,
}

fn state(tree: &ImageTree, path: &str) -> Result<FileState, DiffError> {
    let node = tree.get(path).ok_or_else(|| DiffError {
        path: tree.source.clone().into(),
        reason: format!("{path} vanished while being read"),
    })?;
    let (kind, target) = match &node.kind {
        Kind::Dir => ("dir", None),
        Kind::File => ("file", None),
        Kind::Symlink(t) => ("symlink", Some(t.clone())),
        Kind::Special => ("special", None),
    };
    let (size, sha256) = if node.kind == Kind::File {
        let data = tree.read(path).map_err(|e| DiffError {
            path: tree.source.clone().into(),
            reason: format!("{path}: {e}"),
        })?;
        (data.len() as u64, Some(crate::digest::sha256_hex(&data)))
    } else {
        (0, None)
    };
    Ok(FileState {
        kind,
        target,
        mode: format!("{:04o}", node.mode),
        owner: format!("{}:{}", node.uid, node.gid),
        size,
        sha256,
    })
}

/// Enabled units: the links under `/etc/systemd/system/*.wants/`.
fn enabled_units(tree: &ImageTree) -> BTreeSet<String> {
    tree.iter()
        .filter(|(_, n)| matches!(n.kind, Kind::Symlink(_)))
        .filter_map(|(p, _)| p.strip_prefix("/etc/systemd/system/"))
        .filter(|rest| {
            rest.split_once('/')
                .is_some_and(|(dir, unit)| dir.ends_with(".wants") && !unit.contains('/'))
        })
        .map(str::to_string)
        .collect()
}

/// Compares the files of the layers OLD's layout has and NEW's has not (`old_only`) with
/// NEW's that OLD has not (`new_only`).
pub fn compare(
    old_layout: &Path,
    new_layout: &Path,
    old_only: &BTreeSet<String>,
    new_only: &BTreeSet<String>,
) -> Result<FileDiff, DiffError> {
    let tree = |layout: &Path, keep: &BTreeSet<String>| {
        ImageTree::from_oci_layers(layout, &|d| keep.contains(d)).map_err(|e| DiffError {
            path: layout.to_path_buf(),
            reason: e.to_string(),
        })
    };
    let (old, new) = (tree(old_layout, old_only)?, tree(new_layout, new_only)?);
    let paths: BTreeSet<&String> = old
        .iter()
        .map(|(p, _)| p)
        .chain(new.iter().map(|(p, _)| p))
        .filter(|p| p.as_str() != "/")
        .collect();
    let mut changes = Vec::new();
    for path in paths {
        let (o, n) = (old.get(path).is_some(), new.get(path).is_some());
        let o = if o { Some(state(&old, path)?) } else { None };
        let n = if n { Some(state(&new, path)?) } else { None };
        let what: Vec<&'static str> = match (&o, &n) {
            (None, Some(_)) => vec!["added"],
            (Some(_), None) => vec!["removed"],
            (Some(a), Some(b)) => {
                let mut w = Vec::new();
                if a.kind != b.kind || a.target != b.target {
                    w.push("type");
                }
                if a.sha256 != b.sha256 {
                    w.push("content");
                }
                if a.mode != b.mode {
                    w.push("mode");
                }
                if a.owner != b.owner {
                    w.push("owner");
                }
                if a.size != b.size {
                    w.push("size");
                }
                w
            }
            (None, None) => Vec::new(),
        };
        if !what.is_empty() {
            changes.push(FileChange {
                path: path.clone(),
                changes: what,
                old: o,
                new: n,
            });
        }
    }
    let (uo, un) = (enabled_units(&old), enabled_units(&new));
    Ok(FileDiff {
        changes,
        units_enabled: un.difference(&uo).cloned().collect(),
        units_disabled: uo.difference(&un).cloned().collect(),
        layers_read: old_only.len() + new_only.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(links: &[(&str, &str)]) -> ImageTree {
        let mut b = tar::Builder::new(Vec::new());
        for (path, target) in links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, path, target).unwrap();
        }
        ImageTree::from_tar_bytes(&b.into_inner().unwrap(), "test").unwrap()
    }

    #[test]
    fn enabled_units_are_the_wants_links() {
        let t = tree(&[
            (
                "etc/systemd/system/multi-user.target.wants/beacon.service",
                "/lib/systemd/system/beacon.service",
            ),
            ("etc/systemd/system/beacon.service", "/dev/null"),
            ("etc/systemd/system/a.wants/sub/x.service", "/x"),
        ]);
        assert_eq!(
            enabled_units(&t).into_iter().collect::<Vec<_>>(),
            ["multi-user.target.wants/beacon.service"]
        );
    }
}
