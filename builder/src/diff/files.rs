//! File changes between two images, read mostly from the layers that differ: the layers OLD
//! has and NEW has not, stacked in order, against NEW's layers OLD has not. A layer both have
//! (the same digest) holds the same files on both sides, so it is opened only for the paths
//! the differing layers touch, and only when it can change their answer: a shared layer above
//! a differing one (it may cover a path), or below one when a path is on one side only or a
//! whiteout removes it (it tells "added" from "replaced" and "removed" from "uncovered").
//! Each path is compared by type, mode, owner, size and content (SHA-256); enabled systemd
//! units (the `/etc/systemd/system/*.wants/` links `systemctl enable` makes) are compared as
//! well.

use super::DiffError;
use crate::image::{ImageTree, Kind, LayerRead};
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
    /// How many layers were opened: OLD's and NEW's differing ones, and the shared ones read
    /// for the paths those touch.
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

/// Whether `path` is the same on both sides: kind (and symlink target), mode, owner and
/// bytes. Equal bytes are found by comparing them, not hashing both: a changed base layer
/// puts thousands of unchanged files here, and only a changed one's digest is reported.
fn same(old: &ImageTree, new: &ImageTree, path: &str) -> Result<bool, DiffError> {
    let (Some(a), Some(b)) = (old.get(path), new.get(path)) else {
        return Ok(false);
    };
    if a.kind != b.kind || a.mode != b.mode || a.uid != b.uid || a.gid != b.gid {
        return Ok(false);
    }
    if a.kind != Kind::File {
        return Ok(true);
    }
    let read = |tree: &ImageTree| {
        tree.read(path).map_err(|e| DiffError {
            path: tree.source.clone().into(),
            reason: format!("{path}: {e}"),
        })
    };
    Ok(*read(old)? == *read(new)?)
}

/// `path` and each of its parents up to `/`.
fn ancestry(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |q| (*q != "/").then(|| crate::image::parent(q)))
}

/// Enabled units: the links under `/etc/systemd/system/*.wants/`, of the paths `keep` takes.
fn enabled_units(tree: &ImageTree, keep: &dyn Fn(&str) -> bool) -> BTreeSet<String> {
    tree.iter()
        .filter(|(p, n)| matches!(n.kind, Kind::Symlink(_)) && keep(p))
        .filter_map(|(p, _)| p.strip_prefix("/etc/systemd/system/"))
        .filter(|rest| {
            rest.split_once('/')
                .is_some_and(|(dir, unit)| dir.ends_with(".wants") && !unit.contains('/'))
        })
        .map(str::to_string)
        .collect()
}

/// An unlinked temporary file for layer contents: they go there, not to memory (a changed
/// base layer of a robot's image is larger than a reviewer's laptop or a CI runner should
/// hold).
fn spool(layout: &Path) -> Result<std::fs::File, DiffError> {
    tempfile::tempfile().map_err(|e| DiffError {
        path: layout.to_path_buf(),
        reason: format!("a temporary file to read the layers into: {e}"),
    })
}

fn unreadable(layout: &Path) -> impl Fn(crate::image::ImageError) -> DiffError + '_ {
    move |e| DiffError {
        path: layout.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Reads the layers `read` says to from the layout's image, keeping the paths `paths` wants.
fn read_layers(
    layout: &Path,
    read: &dyn Fn(&str) -> LayerRead,
    paths: &dyn Fn(&str) -> bool,
) -> Result<ImageTree, DiffError> {
    ImageTree::from_oci_layers_matching(layout, read, paths, Some(spool(layout)?))
        .map_err(unreadable(layout))
}

/// Reads exactly the layers in `these`, for the paths `paths` wants.
fn read_only(
    layout: &Path,
    these: &dyn Fn(&str) -> bool,
    paths: &dyn Fn(&str) -> bool,
) -> Result<ImageTree, DiffError> {
    let read = layers_where(|_, d| these(d));
    read_layers(layout, &|d| read(0, d), paths)
}

/// `LayerRead::Matching` for the layers `keep` takes (by position, bottom first, and digest),
/// the others skipped.
fn layers_where(keep: impl Fn(usize, &str) -> bool) -> impl Fn(usize, &str) -> LayerRead {
    move |i, d| {
        if keep(i, d) {
            LayerRead::Matching
        } else {
            LayerRead::Skip
        }
    }
}

/// One side's differing layers, read: all of them stacked (what they touch), and the lowest
/// run of them alone (usually the base: most of the bytes) when layers lie above it, so that
/// restacking with shared layers goes on from it instead of reading it again.
struct Side {
    /// The differing layers, stacked, every path.
    partial: ImageTree,
    /// The position of the lowest differing layer (the layer count if none differs).
    lowest: usize,
    /// Where the lowest run of differing layers ends (the first position above it).
    run_end: usize,
    /// That run alone, every path, when any layer lies above it.
    lowest_run: Option<ImageTree>,
}

impl Side {
    /// Reads the differing layers of `layers` (the image's, bottom first) from `layout`.
    fn read(layout: &Path, layers: &[String], shared: &BTreeSet<&str>) -> Result<Side, DiffError> {
        let differs = |d: &str| !shared.contains(d);
        let lowest = layers
            .iter()
            .position(|d| differs(d))
            .unwrap_or(layers.len());
        let run_end = lowest + layers[lowest..].iter().take_while(|d| differs(d)).count();
        let all = |_: &str| true;
        let mut partial = ImageTree::from_oci_layers(layout, &|_| false, Some(spool(layout)?))
            .map_err(unreadable(layout))?;
        partial
            .apply_oci_layers_matching(
                layout,
                &layers_where(|i, _| (lowest..run_end).contains(&i)),
                &all,
            )
            .map_err(unreadable(layout))?;
        let lowest_run = if run_end < layers.len() {
            Some(partial.fork(Some(spool(layout)?)))
        } else {
            None
        };
        partial
            .apply_oci_layers_matching(
                layout,
                &layers_where(|i, d| i >= run_end && differs(d)),
                &all,
            )
            .map_err(unreadable(layout))?;
        Ok(Side {
            partial,
            lowest,
            run_end,
            lowest_run,
        })
    }
}

/// What the two images share and where their differing layers reach: the plan that decides
/// which shared layers must be read, and for which paths.
struct Overlap<'a> {
    /// Layer digests on both sides.
    shared: BTreeSet<&'a str>,
    /// Paths the differing layers hold.
    touched: BTreeSet<String>,
    /// Paths the differing layers remove (whiteouts, opaque directories).
    removed: BTreeSet<String>,
    /// Shared layers above every differing one, the same in the same order on both sides.
    top: Vec<String>,
    /// Those top layers, read for the interesting paths.
    top_tree: Option<ImageTree>,
}

impl<'a> Overlap<'a> {
    /// Plans from the layers both sides have and the trees of the differing layers alone.
    fn new(
        shared: BTreeSet<&'a str>,
        old_layers: &[String],
        new_layers: &[String],
        old: &ImageTree,
        new: &ImageTree,
    ) -> Self {
        let touched = old
            .iter()
            .map(|(p, _)| p)
            .chain(new.iter().map(|(p, _)| p))
            .filter(|p| p.as_str() != "/")
            .cloned()
            .collect();
        let removed = [old, new]
            .iter()
            .flat_map(|t| t.whiteouts().iter().chain(t.opaque_dirs()))
            .cloned()
            .collect();
        let mut overlap = Overlap {
            shared,
            touched,
            removed,
            top: Vec::new(),
            top_tree: None,
        };
        let on_top = |layers: &[String]| {
            layers
                .iter()
                .rposition(|d| !overlap.is_shared(d))
                .map(|i| layers[i + 1..].to_vec())
        };
        if let (Some(a), Some(b)) = (on_top(old_layers), on_top(new_layers)) {
            if a == b {
                overlap.top = a;
            }
        }
        overlap
    }

    fn is_shared(&self, digest: &str) -> bool {
        self.shared.contains(digest)
    }

    /// A path the differing layers hold, or under one they remove.
    fn interesting(&self, path: &str) -> bool {
        self.touched.contains(path) || ancestry(path).any(|q| self.removed.contains(q))
    }

    /// Reads the shared layers on top of every differing one for the interesting paths: a
    /// path they hold or remove is the same whatever lies below, on both sides, and nothing
    /// below is read for it.
    fn settle_by_top(&mut self, layout: &Path) -> Result<(), DiffError> {
        if !self.top.is_empty() {
            let tree = read_only(layout, &|d| self.top.iter().any(|t| t == d), &|p| {
                self.interesting(p)
            })?;
            self.top_tree = Some(tree);
        }
        Ok(())
    }

    /// Whether the top layers settle `path`: they hold it, remove it or a parent, or make a
    /// parent opaque or not a directory.
    fn settled(&self, path: &str) -> bool {
        let Some(t) = &self.top_tree else {
            return false;
        };
        let real = |q: &str| t.get(q).filter(|n| !n.is_implied());
        real(path).is_some()
            || ancestry(path).any(|q| t.whiteouts().contains(q))
            || ancestry(path).skip(1).any(|q| {
                t.opaque_dirs().contains(q) || real(q).is_some_and(|n| n.kind != Kind::Dir)
            })
    }

    /// A path whose answer is still open: interesting and not settled by the top layers.
    fn open(&self, path: &str) -> bool {
        self.interesting(path) && !self.settled(path)
    }

    /// Whether an open path is on one side only, or a whiteout removes one: then the shared
    /// layers below tell "added" from "replaced" and "removed" from "uncovered".
    fn one_sided(&self, old: &ImageTree, new: &ImageTree) -> bool {
        self.removed.iter().any(|w| !self.settled(w))
            || self
                .touched
                .iter()
                .filter(|p| !self.settled(p))
                .any(|p| old.get(p).is_some() != new.get(p).is_some())
    }

    /// Whether a tree of shared layers, read for the open paths, has any of them, or a
    /// whiteout over one.
    fn covers(&self, t: &ImageTree) -> bool {
        t.iter().any(|(p, _)| p != "/")
            || t.whiteouts().iter().chain(t.opaque_dirs()).any(|w| {
                let below = format!("{w}/");
                self.open(w)
                    || self
                        .touched
                        .range(below.clone()..)
                        .next()
                        .is_some_and(|p| p.starts_with(&below))
            })
    }

    /// One side's tree for the open paths: `partial` (its differing layers) when no shared
    /// layer below the top can change an answer, else the layers again with those that can.
    /// The shared layers looked at are added to `shared_read`.
    fn restack(
        &self,
        layout: &Path,
        layers: &[String],
        side: Side,
        one_sided: bool,
        shared_read: &mut BTreeSet<String>,
    ) -> Result<ImageTree, DiffError> {
        let Side {
            partial,
            lowest,
            run_end,
            lowest_run,
        } = side;
        let shared_where = |keep: &dyn Fn(usize) -> bool| -> BTreeSet<&str> {
            layers
                .iter()
                .enumerate()
                .filter(|(i, d)| self.is_shared(d) && !self.top.contains(d) && keep(*i))
                .map(|(_, d)| d.as_str())
                .collect()
        };
        let mut needed = if one_sided {
            shared_where(&|i| i < lowest)
        } else {
            BTreeSet::new()
        };
        // Shared layers between differing ones may cover a path: a first look for the open
        // paths says whether they cover any.
        let between = shared_where(&|i| i > lowest);
        if !between.is_empty() {
            shared_read.extend(between.iter().map(|d| d.to_string()));
            let seen = read_only(layout, &|d| between.contains(d), &|p| self.open(p))?;
            if self.covers(&seen) {
                needed.extend(between);
            }
        }
        if needed.is_empty() {
            return Ok(partial);
        }
        drop(partial);
        shared_read.extend(needed.iter().map(|d| d.to_string()));
        // Every layer needed lies above the lowest differing run: go on from that run as read
        // (every path of it; only the open ones are compared) instead of reading it again.
        let needed_above_run = layers
            .iter()
            .enumerate()
            .filter(|(_, d)| needed.contains(d.as_str()))
            .all(|(i, _)| i >= run_end);
        if let (Some(mut tree), true) = (lowest_run, needed_above_run) {
            tree.apply_oci_layers_matching(
                layout,
                &layers_where(|i, d| i >= run_end && (!self.is_shared(d) || needed.contains(d))),
                &|p| self.open(p),
            )
            .map_err(unreadable(layout))?;
            return Ok(tree);
        }
        read_only(
            layout,
            &|d| !self.is_shared(d) || needed.contains(d),
            &|p| self.open(p),
        )
    }
}

/// Runs `a` on a thread of its own while this one runs `b`, and returns both results (a panic
/// in `a` goes on here).
fn both<A: Send, B>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B) -> (A, B) {
    std::thread::scope(|s| {
        let a = s.spawn(a);
        let b = b();
        let a = a
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (a, b)
    })
}

/// What differs between two states of a path.
fn what_changed(old: &Option<FileState>, new: &Option<FileState>) -> Vec<&'static str> {
    match (old, new) {
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
    }
}

/// Compares the files of OLD's and NEW's images, whose layers (digests, bottom first) are
/// `old_layers` and `new_layers`.
pub fn compare(
    old_layout: &Path,
    new_layout: &Path,
    old_layers: &[String],
    new_layers: &[String],
) -> Result<FileDiff, DiffError> {
    let old_set: BTreeSet<&str> = old_layers.iter().map(String::as_str).collect();
    let shared: BTreeSet<&str> = new_layers
        .iter()
        .map(String::as_str)
        .filter(|d| old_set.contains(d))
        .collect();
    // First the differing layers alone: the paths they touch. Each step reads the two sides
    // at once: a changed base layer is most of the work, and each side's is its own.
    let (old, new) = both(
        || Side::read(old_layout, old_layers, &shared),
        || Side::read(new_layout, new_layers, &shared),
    );
    let (old, new) = (old?, new?);
    let mut overlap = Overlap::new(shared, old_layers, new_layers, &old.partial, &new.partial);
    overlap.settle_by_top(new_layout)?;
    let one_sided = overlap.one_sided(&old.partial, &new.partial);

    // Then, where a shared layer below the top can change the answer, each side again with
    // those layers read for the open paths only.
    let mut shared_read: BTreeSet<String> = overlap.top.iter().cloned().collect();
    let (mut old_read, mut new_read) = (BTreeSet::new(), BTreeSet::new());
    let (old, new) = both(
        || overlap.restack(old_layout, old_layers, old, one_sided, &mut old_read),
        || overlap.restack(new_layout, new_layers, new, one_sided, &mut new_read),
    );
    let (old, new) = (old?, new?);
    shared_read.extend(old_read.into_iter().chain(new_read));
    let layers_read = old_layers.iter().filter(|d| !overlap.is_shared(d)).count()
        + new_layers.iter().filter(|d| !overlap.is_shared(d)).count()
        + shared_read.len();
    let paths: BTreeSet<&String> = old
        .iter()
        .map(|(p, _)| p)
        .chain(new.iter().map(|(p, _)| p))
        .filter(|p| p.as_str() != "/" && overlap.open(p))
        .collect();
    let mut changes = Vec::new();
    for path in paths {
        if same(&old, &new, path)? {
            continue;
        }
        let o = old.get(path).map(|_| state(&old, path)).transpose()?;
        let n = new.get(path).map(|_| state(&new, path)).transpose()?;
        let what = what_changed(&o, &n);
        if !what.is_empty() {
            changes.push(FileChange {
                path: path.clone(),
                changes: what,
                old: o,
                new: n,
            });
        }
    }
    let open = |p: &str| overlap.open(p);
    let (uo, un) = (enabled_units(&old, &open), enabled_units(&new, &open));
    Ok(FileDiff {
        changes,
        units_enabled: un.difference(&uo).cloned().collect(),
        units_disabled: uo.difference(&un).cloned().collect(),
        layers_read,
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

    /// What a layer holds: files (path, content), hard links (path, target), whiteouts.
    enum Entry<'a> {
        File(&'a str, &'a str),
        Link(&'a str, &'a str),
        Whiteout(&'a str),
    }

    /// Packs `entries` into a layer blob of `blobs`.
    fn layer(blobs: &Path, entries: &[Entry]) -> crate::image::pack::Layer {
        let root = tempfile::tempdir().unwrap();
        for e in entries {
            let (path, whiteout) = match e {
                Entry::File(p, _) | Entry::Link(p, _) => (p.to_string(), false),
                Entry::Whiteout(p) => (p.to_string(), true),
            };
            let path = if whiteout {
                let (dir, name) = path.rsplit_once('/').unwrap();
                format!("{dir}/.wh.{name}")
            } else {
                path
            };
            let host = root.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(host.parent().unwrap()).unwrap();
            match e {
                Entry::File(_, text) => std::fs::write(&host, text).unwrap(),
                Entry::Link(_, target) => {
                    std::fs::hard_link(root.path().join(target.trim_start_matches('/')), &host)
                        .unwrap()
                }
                Entry::Whiteout(_) => std::fs::write(&host, "").unwrap(),
            }
        }
        crate::image::pack::pack_layer(
            root.path(),
            blobs,
            0,
            crate::image::pack::LayerCompression::Gzip,
        )
        .unwrap()
    }

    /// An OCI layout of `layers` (packed into its blobs) at `dir`.
    fn layout(dir: &Path, layers: &[&[Entry]]) -> Vec<String> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let packed: Vec<_> = layers.iter().map(|l| layer(&blobs, l)).collect();
        let meta = crate::image::oci::test_meta(packed.len());
        crate::image::oci::write_layout(dir, &packed, &meta).unwrap();
        packed
            .iter()
            .map(|l| format!("sha256:{}", l.digest))
            .collect()
    }

    /// Compares an image of `old` layers with one of `new` layers (written under `work`,
    /// named by `case`): the diff and its (path, what changed) list.
    fn diff_of(
        work: &Path,
        case: &str,
        old: &[&[Entry]],
        new: &[&[Entry]],
    ) -> (FileDiff, Vec<(String, Vec<&'static str>)>) {
        let (old_dir, new_dir) = (
            work.join(format!("old{case}")),
            work.join(format!("new{case}")),
        );
        let (old_layers, new_layers) = (layout(&old_dir, old), layout(&new_dir, new));
        let d = compare(&old_dir, &new_dir, &old_layers, &new_layers).unwrap();
        let got = d
            .changes
            .iter()
            .map(|c| (c.path.clone(), c.changes.clone()))
            .collect();
        (d, got)
    }

    /// Layers both sides share are read for the paths the differing layers touch: a file the
    /// new layer rewrites over the shared base is "changed", not "added"; a whiteout of a
    /// base file is "removed"; a shared layer above covers a path both differing layers
    /// have; a hard link whose target no differing layer touches keeps its content.
    #[test]
    fn shared_layers_answer_for_the_paths_the_differing_ones_touch() {
        let work = tempfile::tempdir().unwrap();
        let base: &[Entry] = &[
            Entry::File("/etc/passwd", "root\n"),
            Entry::File("/etc/hostname", "robot\n"),
            Entry::File("/usr/bin/tool", "v1"),
            Entry::Link("/usr/bin/tool-alias", "/usr/bin/tool"),
            Entry::File("/opt/shared/cfg", "x"),
        ];
        let above: &[Entry] = &[
            Entry::File("/opt/app/run", "from the layer above"),
            Entry::File("/opt/shared/cfg", "y"),
        ];
        let old_top: &[Entry] = &[Entry::File("/opt/app/run", "1")];
        let new_top: &[Entry] = &[
            Entry::File("/opt/app/run", "2"),
            Entry::File("/etc/passwd", "root\nbeacon\n"),
            Entry::Whiteout("/etc/hostname"),
            Entry::File("/usr/bin/new", "n"),
            Entry::File("/usr/bin/tool-alias", "v2"),
        ];
        let n2: &[Entry] = &[Entry::File("/opt/app/run", "2")];
        let (d, got) = diff_of(
            work.path(),
            "1",
            &[base, old_top, above],
            &[base, new_top, above],
        );
        assert_eq!(
            got,
            vec![
                ("/etc/hostname".to_string(), vec!["removed"]),
                ("/etc/passwd".to_string(), vec!["content", "size"]),
                ("/usr/bin/new".to_string(), vec!["added"]),
                ("/usr/bin/tool-alias".to_string(), vec!["content"]),
            ]
        );
        // The two differing layers and the two shared ones.
        assert_eq!(d.layers_read, 4);

        // Only a differing layer with paths of its own, nothing shared below it: the shared
        // base is never opened (no path is on one side only).
        let (d, got) = diff_of(work.path(), "2", &[base, old_top], &[base, n2]);
        assert_eq!(got, [("/opt/app/run".to_string(), vec!["content"])]);
        assert_eq!(d.layers_read, 2);

        // A shared layer above that covers none of the paths: looked at once, and the
        // differing layers' answer stands.
        let unrelated: &[Entry] = &[Entry::File("/srv/other/data", "d")];
        let (d, got) = diff_of(
            work.path(),
            "3",
            &[base, old_top, unrelated],
            &[base, n2, unrelated],
        );
        assert_eq!(got, [("/opt/app/run".to_string(), vec!["content"])]);
        assert_eq!(d.layers_read, 3);

        // A shared layer between two differing ones covers the path the lower one changed:
        // the same on both sides; the upper differing layers' own change is reported.
        let mid: &[Entry] = &[Entry::File("/opt/app/run", "from the middle")];
        let (_, got) = diff_of(
            work.path(),
            "4",
            &[base, old_top, mid, &[Entry::File("/srv/b", "1")]],
            &[base, n2, mid, &[Entry::File("/srv/b", "22")]],
        );
        assert_eq!(got, [("/srv/b".to_string(), vec!["content", "size"])]);

        // A shared layer on top that removes what a differing layer changed: gone on both
        // sides, nothing to report.
        let gone: &[Entry] = &[Entry::Whiteout("/opt/app")];
        let (_, got) = diff_of(work.path(), "5", &[base, old_top, gone], &[base, n2, gone]);
        assert!(got.is_empty(), "{got:?}");

        // The base itself differs, and a shared layer between it and a differing top layer
        // covers some of what it changed: the restacked base (read once, not again) under the
        // shared layer gives "unchanged" for what that layer holds or removes, and the rest of
        // the base's and the top's changes stand.
        let new_base: &[Entry] = &[
            Entry::File(
                "/etc/passwd",
                "root
less
",
            ),
            Entry::File(
                "/etc/hostname",
                "robot-2
",
            ),
            Entry::File("/usr/bin/tool", "v1"),
            Entry::Link("/usr/bin/tool-alias", "/usr/bin/tool"),
            Entry::File("/usr/bin/less", "l"),
            Entry::File("/opt/shared/cfg", "x"),
        ];
        let covering: &[Entry] = &[
            Entry::File(
                "/etc/passwd",
                "from the shared layer
",
            ),
            Entry::Whiteout("/etc/hostname"),
        ];
        let (_, got) = diff_of(
            work.path(),
            "6",
            &[base, covering, old_top],
            &[new_base, covering, n2],
        );
        assert_eq!(
            got,
            vec![
                ("/opt/app/run".to_string(), vec!["content"]),
                ("/usr/bin/less".to_string(), vec!["added"]),
            ]
        );
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
            enabled_units(&t, &|_| true).into_iter().collect::<Vec<_>>(),
            ["multi-user.target.wants/beacon.service"]
        );
    }
}
