//! The image tree `kiln check` and `kiln export` look at, whatever it came as: a directory, a
//! tar, or an OCI image layout (every layer applied in order, whiteouts honoured). Paths are absolute image paths
//! ("/usr/bin/env"); symlinks are resolved inside the image only, the way the device will see
//! them; hard links are grouped so each file is judged once.
//!
//! Reading writes nothing: a directory is read in place, archives are read into memory.
//! [`materialise`] is the one way back to a directory, used by overlay, check and export.

pub mod layout;
pub mod materialise;
pub mod oci;
pub mod pack;
pub mod provenance;

use crate::decompress::Compression;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ImageError {
    /// The file or blob at fault.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl From<layout::LayoutError> for ImageError {
    fn from(e: layout::LayoutError) -> Self {
        image_err(e.path.display(), e.reason)
    }
}

fn image_err(path: impl std::fmt::Display, reason: impl std::fmt::Display) -> ImageError {
    ImageError {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link and its target as written.
    Symlink(String),
    /// A device node, fifo or socket.
    Special,
}

/// Where a regular file's bytes are.
#[derive(Debug, Clone)]
enum Content {
    None,
    /// A file of a directory input, opened through the root at each read (never a host path
    /// joined and followed: see `inroot`).
    InRoot(Arc<crate::inroot::ImageRoot>, String),
    Memory(Arc<[u8]>),
    /// A span of the tree's spool file (offset, length): layers read without holding them.
    Spooled(Arc<fs::File>, u64, u64),
}

/// Where a spooling tree puts file contents: one unlinked temporary file, appended to.
#[derive(Debug)]
struct Spool {
    file: Arc<fs::File>,
    end: u64,
}

/// Opens the regular file `path` of `root` for reading, inside the root (no final symlink).
fn open_in_root(root: &crate::inroot::ImageRoot, path: &str) -> io::Result<fs::File> {
    let not_found = || io::Error::from(io::ErrorKind::NotFound);
    let (dir, name) = root
        .parent(path, false)
        .map_err(|e| io::Error::other(e.to_string()))?
        .ok_or_else(not_found)?;
    let (file, _) = dir
        .open_read(&name)
        .map_err(|e| io::Error::other(e.reason))?
        .ok_or_else(not_found)?;
    Ok(file)
}

/// One path of the image.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its type.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Carries a `security.capability` extended attribute (file capabilities).
    pub capabilities: bool,
    /// For the second and later names of a hard-linked file: the first name.
    pub alias_of: Option<String>,
    /// Modification time (seconds since the epoch) as recorded.
    pub mtime: u64,
    /// For a device node or FIFO: which one (None for everything else).
    pub device: Option<Device>,
    content: Content,
    /// A directory no input named, made because something inside it was named.
    implied: bool,
}

/// A device node or FIFO, as a layer records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    /// Character device, block device or FIFO.
    pub kind: DeviceKind,
    /// Major number (0 for a FIFO).
    pub major: u32,
    /// Minor number (0 for a FIFO).
    pub minor: u32,
}

/// The kinds of special file an image may hold (sockets are never stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
}

impl Node {
    fn new(kind: Kind, mode: u32) -> Node {
        Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
            capabilities: false,
            alias_of: None,
            mtime: 0,
            device: None,
            content: Content::None,
            implied: false,
        }
    }

    /// Whether this is a directory no input named, only made to hold what was named inside
    /// it (a layer or a path filter may leave a parent out).
    pub fn is_implied(&self) -> bool {
        self.implied
    }

    /// setuid, setgid, or file capabilities: the loader runs it in secure mode. (For a
    /// directory input the capability attribute is read here, only for files that ask.)
    pub fn is_privileged(&self) -> bool {
        if self.mode & 0o6000 != 0 || self.capabilities {
            return true;
        }
        match &self.content {
            Content::InRoot(root, path) => has_capability_xattr(root, path),
            _ => false,
        }
    }
}

/// A regular file's bytes: shared from memory (archives) or mapped (directories).
pub enum FileData {
    /// Held in memory.
    Shared(Arc<[u8]>),
    /// A read-only map of a file on disk.
    Mapped(memmap2::Mmap),
}

impl AsRef<[u8]> for FileData {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// A span of the spool, read with positional reads (several may read the one file).
struct SpanReader<'a> {
    file: &'a fs::File,
    pos: u64,
    end: u64,
}

impl Read for SpanReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the spool ends before the file",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::ops::Deref for FileData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileData::Shared(b) => b,
            FileData::Mapped(m) => m,
        }
    }
}

/// Maximum symlinks followed while resolving one path (Linux's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// A whole image tree.
#[derive(Debug, Default)]
pub struct ImageTree {
    nodes: BTreeMap<String, Node>,
    /// Where the tree came from, for reports.
    pub source: String,
    /// For an OCI layout: the image manifest it was read from.
    pub manifest: Option<ManifestInfo>,
    /// Set while file contents go to a spool file instead of memory.
    spool: Option<Spool>,
    /// Every path a layer's whiteout removed.
    whiteouts: BTreeSet<String>,
    /// Every directory a layer made opaque (what lower layers had inside it is hidden).
    opaque_dirs: BTreeSet<String>,
}

/// What [`ImageTree::from_oci_layers_matching`] reads of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerRead {
    /// Nothing: the layer is not opened.
    Skip,
    /// Its whiteouts, and the entries whose path the filter accepts.
    Matching,
}

/// The image manifest an OCI-layout tree was read from (its digest was verified).
#[derive(Debug, Clone, Default)]
pub struct ManifestInfo {
    /// `sha256:` digest of the image manifest.
    pub digest: String,
    /// The manifest's annotations (version, board, compatible, created, ...).
    pub annotations: BTreeMap<String, String>,
}

/// The one image manifest a layout's index lists (a layout holding several images is refused:
/// say which one by giving a layout with one), its descriptor and its verified contents.
fn one_image(
    layout: &layout::Layout,
    dir: &Path,
) -> Result<(oci_spec::image::Descriptor, oci_spec::image::ImageManifest), ImageError> {
    let index = layout.index()?;
    let manifests: Vec<&oci_spec::image::Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| layout::entry_kind(d) == layout::EntryKind::Image)
        .collect();
    let desc = match manifests.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(image_err(
                dir.join("index.json").display(),
                "lists no image manifest",
            ))
        }
        _ => {
            return Err(image_err(
                dir.join("index.json").display(),
                format!(
                    "lists {} image manifests; check one image at a time",
                    manifests.len()
                ),
            ))
        }
    };
    let (_, manifest) = layout.manifest(&desc)?;
    Ok((desc, manifest))
}

/// Splits an image path into its non-empty components.
fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// Joins components into an absolute image path.
fn join(parts: &[&str]) -> String {
    if parts.is_empty() {
        return "/".into();
    }
    let mut s = String::new();
    for p in parts {
        s.push('/');
        s.push_str(p);
    }
    s
}

/// The normal absolute form of an archive member name ("./usr/bin/" -> "/usr/bin"), or None
/// for a name with `..` (never part of a well-formed image; refused by the compose stage).
fn normal_name(name: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in components(name) {
        match c {
            "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(join(&parts))
}

/// The directory part of an image path ("/" for top-level names).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of an image path.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Opens a file given on the command line (a tar given to `kiln check`), refusing a FIFO or
/// device without waiting on it.
fn open_regular_file(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("is not a regular file"));
    }
    Ok(file)
}

/// The compression a stream's first bytes announce (gzip, zstd, xz), or none: a plain tar.
fn sniff_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else {
        Compression::None
    }
}

impl ImageTree {
    /// Reads PATH as whatever it is: a directory, an OCI image layout (a directory holding
    /// `oci-layout`; read spooled, see [`ImageTree::from_oci_layout_spooled`]), or a tar file
    /// (optionally gzip/zstd/xz compressed).
    pub fn open(path: &Path) -> Result<ImageTree, ImageError> {
        let meta = fs::metadata(path).map_err(|e| image_err(path.display(), e))?;
        if meta.is_dir() {
            if path.join("oci-layout").is_file() {
                // File contents to an unlinked temporary file, not memory: a robot's image is
                // larger than what a CI runner should hold.
                let spool = tempfile::tempfile().map_err(|e| image_err(path.display(), e))?;
                return ImageTree::from_oci_layout_spooled(path, spool);
            }
            return ImageTree::from_dir(path);
        }
        // A tar streams through its decompressor, file contents to an unlinked temporary
        // file: a robot's rootfs tarball is never held whole.
        let label = path.display().to_string();
        let fail = |e: io::Error| image_err(&label, e);
        let mut file = io::BufReader::new(open_regular_file(path).map_err(fail)?);
        let head = io::BufRead::fill_buf(&mut file).map_err(fail)?;
        let compression = sniff_compression(head);
        let spool = tempfile::tempfile().map_err(fail)?;
        let mut tree = ImageTree {
            source: label.clone(),
            spool: Some(Spool {
                file: Arc::new(spool),
                end: 0,
            }),
            ..ImageTree::default()
        };
        tree.add_root();
        let decoder = compression.decoder(file).map_err(fail)?;
        tree.apply_tar_from(decoder, &label, false)?;
        Ok(tree)
    }

    /// Reads a tar (optionally gzip/zstd/xz compressed) held in memory; `label` names it in
    /// errors.
    pub fn from_tar_bytes(data: &[u8], label: &str) -> Result<ImageTree, ImageError> {
        let mut tree = ImageTree {
            source: label.to_string(),
            ..ImageTree::default()
        };
        tree.add_root();
        tree.apply_tar(data, label, false)?;
        Ok(tree)
    }

    fn add_root(&mut self) {
        self.nodes.insert("/".into(), Node::new(Kind::Dir, 0o755));
    }

    /// Reads a directory tree in place (file contents are read when asked for). Directories
    /// are listed by a worker per core: an image is thousands of small directories.
    pub fn from_dir(dir: &Path) -> Result<ImageTree, ImageError> {
        let meta = fs::symlink_metadata(dir).map_err(|e| image_err(dir.display(), e))?;
        let mut root = Node::new(Kind::Dir, meta.mode() & 0o7777);
        root.uid = meta.uid().into();
        root.gid = meta.gid().into();
        // Every entry is listed, stat'ed and later read through the root (openat2 inside it),
        // never through a joined host path that a swapped directory could redirect.
        let image =
            Arc::new(crate::inroot::ImageRoot::open(dir).map_err(|e| image_err(dir.display(), e))?);
        let top = image.root_dir().map_err(|e| image_err(dir.display(), e))?;
        let walk = DirWalk {
            queue: std::sync::Mutex::new((vec![(top, String::new())], 0)),
            more: std::sync::Condvar::new(),
            image: image.clone(),
        };
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8);
        let parts: Vec<Result<WalkPart, ImageError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers).map(|_| s.spawn(|| walk.work())).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(image_err(dir.display(), "a directory reader panicked"))
                    })
                })
                .collect()
        });
        let mut tree = ImageTree {
            source: dir.display().to_string(),
            ..ImageTree::default()
        };
        tree.nodes.insert("/".into(), root);
        let mut inodes: Vec<((u64, u64), String)> = Vec::new();
        for part in parts {
            let part = part?;
            tree.nodes.extend(part.nodes);
            inodes.extend(part.inodes);
        }
        // Hard links: the first name in path order is the file, the others its aliases.
        inodes.sort_by(|a, b| a.1.cmp(&b.1));
        let mut first: BTreeMap<(u64, u64), String> = BTreeMap::new();
        for (key, path) in inodes {
            match first.get(&key) {
                Some(f) => {
                    if let Some(n) = tree.nodes.get_mut(&path) {
                        n.alias_of = Some(f.clone());
                    }
                }
                None => {
                    first.insert(key, path);
                }
            }
        }
        Ok(tree)
    }

    /// Reads an OCI image layout: the one image manifest of its index (a layout holding several
    /// images is refused: say which one by giving a layout with one), each layer verified
    /// against its digest and applied in order.
    pub fn from_oci_layout(dir: &Path) -> Result<ImageTree, ImageError> {
        Self::from_oci_layers(dir, &|_| true, None)
    }

    /// The tree of only those layers of the layout's image whose digest `keep` accepts, in
    /// order (what `kiln diff` reads: the layers one side has and the other has not); file
    /// contents go to `spool` (an unlinked file) when given, else to memory.
    pub fn from_oci_layers(
        dir: &Path,
        keep: &dyn Fn(&str) -> bool,
        spool: Option<fs::File>,
    ) -> Result<ImageTree, ImageError> {
        Self::read_oci(dir, keep, spool, None)
    }

    /// The tree of the layout's image with, of each layer `layers` says to read, its
    /// whiteouts and only the entries whose path `paths` accepts (each layer streamed and
    /// verified; what `kiln diff` reads of the layers both sides share: the few paths the
    /// differing layers touch). A hard link whose target `paths` refused reads the layer
    /// again with the target, so a kept link always has its content.
    pub fn from_oci_layers_matching(
        dir: &Path,
        layers: &dyn Fn(&str) -> LayerRead,
        paths: &dyn Fn(&str) -> bool,
        spool: Option<fs::File>,
    ) -> Result<ImageTree, ImageError> {
        Self::read_oci(dir, &|d| layers(d) != LayerRead::Skip, spool, Some(paths))
    }

    /// The paths whiteouts removed, over the layers read.
    pub fn whiteouts(&self) -> &BTreeSet<String> {
        &self.whiteouts
    }

    /// The directories layers made opaque, over the layers read.
    pub fn opaque_dirs(&self) -> &BTreeSet<String> {
        &self.opaque_dirs
    }

    /// The whole image of an OCI layout with every layer streamed (and verified while it
    /// streams) and file contents written to `spool`, an unlinked temporary file, instead of
    /// memory: what `kiln build` checks, however large the image, within bounded memory.
    pub fn from_oci_layout_spooled(dir: &Path, spool: fs::File) -> Result<ImageTree, ImageError> {
        Self::read_oci(dir, &|_| true, Some(spool), None)
    }

    /// A copy of this tree to go on from (more layers applied to it), its further file
    /// contents going to `spool` (an unlinked file) or memory, never to this tree's spool:
    /// what `kiln diff` keeps of a side's lowest differing layers, to stack other layers on
    /// without reading those again.
    pub fn fork(&self, spool: Option<fs::File>) -> ImageTree {
        ImageTree {
            nodes: self.nodes.clone(),
            source: self.source.clone(),
            manifest: self.manifest.clone(),
            spool: spool.map(|file| Spool {
                file: Arc::new(file),
                end: 0,
            }),
            whiteouts: self.whiteouts.clone(),
            opaque_dirs: self.opaque_dirs.clone(),
        }
    }

    /// Applies to this tree, in order, the layers of the layout's image that `layers` selects
    /// by position (bottom first, from 0) and digest: their whiteouts and the entries whose
    /// path `paths` accepts, each layer streamed and verified. The layout must hold the image
    /// this tree was read from (the manifest digest is compared).
    pub fn apply_oci_layers_matching(
        &mut self,
        dir: &Path,
        layers: &dyn Fn(usize, &str) -> LayerRead,
        paths: &dyn Fn(&str) -> bool,
    ) -> Result<(), ImageError> {
        let layout = layout::Layout::open(dir)?;
        let (desc, manifest) = one_image(&layout, dir)?;
        let ours = self.manifest.as_ref().map(|m| m.digest.as_str());
        if ours != Some(desc.digest().to_string().as_str()) {
            return Err(image_err(
                dir.join("index.json").display(),
                format!(
                    "holds image {}, not {} whose layers are being stacked",
                    desc.digest(),
                    ours.unwrap_or("the one read")
                ),
            ));
        }
        self.apply_manifest_layers(
            &layout,
            &manifest,
            &|i, d| layers(i, d) != LayerRead::Skip,
            Some(paths),
        )
    }

    fn read_oci(
        dir: &Path,
        keep: &dyn Fn(&str) -> bool,
        spool: Option<fs::File>,
        paths: Option<&dyn Fn(&str) -> bool>,
    ) -> Result<ImageTree, ImageError> {
        // Every file of the layout is read inside it, once, as a regular file of bounded size:
        // a FIFO, device or symlink out of the layout is refused, never waited on.
        let layout = layout::Layout::open(dir)?;
        let (manifest_desc, manifest) = one_image(&layout, dir)?;
        let annotations = manifest
            .annotations()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut tree = ImageTree {
            source: dir.display().to_string(),
            manifest: Some(ManifestInfo {
                digest: manifest_desc.digest().to_string(),
                annotations,
            }),
            spool: spool.map(|file| Spool {
                file: Arc::new(file),
                end: 0,
            }),
            ..ImageTree::default()
        };
        tree.add_root();
        tree.apply_manifest_layers(&layout, &manifest, &|_, d| keep(d), paths)?;
        Ok(tree)
    }

    /// Applies the layers of `manifest` that `keep` selects (by position and digest), with
    /// only the entries `paths` accepts when given.
    fn apply_manifest_layers(
        &mut self,
        layout: &layout::Layout,
        manifest: &oci_spec::image::ImageManifest,
        keep: &dyn Fn(usize, &str) -> bool,
        paths: Option<&dyn Fn(&str) -> bool>,
    ) -> Result<(), ImageError> {
        for (position, layer) in manifest.layers().iter().enumerate() {
            let digest = layer.digest().to_string();
            if !keep(position, &digest) {
                continue;
            }
            let media = layer.media_type().to_string();
            let compression = if media.ends_with("+zstd") {
                Compression::Zstd
            } else if media.ends_with("+gzip") {
                Compression::Gzip
            } else {
                Compression::None
            };
            if let Some(paths) = paths {
                // Hard-link targets the filter refused, read on a second pass.
                let mut targets: BTreeSet<String> = BTreeSet::new();
                loop {
                    let accept = |p: &str| paths(p) || targets.contains(p);
                    let missing = self.apply_layer_stream(layout, layer, compression, &accept)?;
                    if missing.is_empty() {
                        break;
                    }
                    if missing.iter().all(|m| targets.contains(m)) {
                        return Err(image_err(
                            &digest,
                            format!("hard link target '{}' is not in the layer", missing[0]),
                        ));
                    }
                    targets.extend(missing);
                }
                continue;
            }
            if self.spool.is_some() {
                self.apply_layer_stream(layout, layer, compression, &|_| true)?;
                continue;
            }
            let bytes = layout.blob(layer, u64::MAX)?;
            let mut raw = Vec::new();
            compression
                .decoder(bytes.as_slice())
                .and_then(|mut d| d.read_to_end(&mut raw))
                .map_err(|e| image_err(&digest, e))?;
            self.apply_tar(&raw, &digest, true)?;
        }
        Ok(())
    }

    /// Applies one layer streamed from its blob (verified as it streams; an altered blob is
    /// named as such, also when its damage broke the decompression first), entries `accept`
    /// refuses left out. Returns the hard-link targets `accept` refused that a kept link
    /// needs (nothing applied then).
    fn apply_layer_stream(
        &mut self,
        layout: &layout::Layout,
        layer: &oci_spec::image::Descriptor,
        compression: Compression,
        accept: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>, ImageError> {
        let digest = layer.digest().to_string();
        let file = layout.blob_file(&digest, layer.size())?;
        let mut hashing = crate::digest::HashingReader::new(file);
        let applied = compression
            .decoder(&mut hashing)
            .map_err(|e| image_err(&digest, e))
            .and_then(|decoder| self.apply_tar_matching(decoder, &digest, true, accept));
        let (hex, _) = hashing.finish().map_err(|e| image_err(&digest, e))?;
        if format!("sha256:{hex}") != digest {
            let rel = layout::blob_rel(&digest).unwrap_or_else(|| digest.clone());
            return Err(layout.err(&rel, "content does not match its digest").into());
        }
        applied
    }

    /// Applies one tar (a layer when `whiteouts`) on top of the tree.
    fn apply_tar(&mut self, data: &[u8], label: &str, whiteouts: bool) -> Result<(), ImageError> {
        let data = decompress_if_needed(data).map_err(|e| image_err(label, e))?;
        self.apply_tar_from(&data[..], label, whiteouts)
    }

    /// Applies one tar read from `reader` (file contents to the spool when there is one).
    fn apply_tar_from(
        &mut self,
        reader: impl Read,
        label: &str,
        whiteouts: bool,
    ) -> Result<(), ImageError> {
        self.apply_tar_matching(reader, label, whiteouts, &|_| true)
            .map(|_| ())
    }

    /// Applies the entries of one tar whose path `accept` takes (whiteouts always); returns
    /// the hard-link targets `accept` refused that a kept link needs, applying nothing then.
    fn apply_tar_matching(
        &mut self,
        reader: impl Read,
        label: &str,
        whiteouts: bool,
        accept: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>, ImageError> {
        let mut archive = tar::Archive::new(reader);
        let mut added: Vec<(String, Node, Option<String>)> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        let mut opaque: Vec<String> = Vec::new();
        let mut refused_links: BTreeMap<String, String> = BTreeMap::new();
        for entry in archive.entries().map_err(|e| image_err(label, e))? {
            let mut entry = entry.map_err(|e| image_err(label, e))?;
            let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(name) = normal_name(&raw_name) else {
                return Err(image_err(
                    label,
                    format!("member '{raw_name}' contains '..'"),
                ));
            };
            if whiteouts {
                let base = file_name(&name);
                if base == ".wh..wh..opq" {
                    opaque.push(parent(&name).to_string());
                    continue;
                }
                if let Some(hidden) = base.strip_prefix(".wh.") {
                    let dir = parent(&name);
                    removed.push(if dir == "/" {
                        format!("/{hidden}")
                    } else {
                        format!("{dir}/{hidden}")
                    });
                    continue;
                }
            }
            if !accept(&name) {
                // A refused hard link is remembered, so a kept link's chain of targets is
                // known in one pass (a hostile layer's long chain costs one more read, not one
                // per link).
                if entry.header().entry_type().is_hard_link() {
                    if let Some(target) = entry
                        .link_name_bytes()
                        .and_then(|b| normal_name(&String::from_utf8_lossy(&b)))
                    {
                        refused_links.insert(name, target);
                    }
                }
                continue;
            }
            let header = entry.header().clone();
            let mode = header.mode().unwrap_or(0o644) & 0o7777;
            let mut caps = false;
            if let Ok(Some(pax)) = entry.pax_extensions() {
                for ext in pax.flatten() {
                    if ext.key_bytes() == b"SCHILY.xattr.security.capability" {
                        caps = true;
                    }
                }
            }
            let et = header.entry_type();
            let mut link = None;
            let mut node = if et.is_dir() {
                Node::new(Kind::Dir, mode)
            } else if et.is_symlink() {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                Node::new(Kind::Symlink(target), mode)
            } else if et.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                link = Some(normal_name(&target).ok_or_else(|| {
                    image_err(
                        label,
                        format!("hard link '{raw_name}' points at '{target}'"),
                    )
                })?);
                Node::new(Kind::File, mode)
            } else if et.is_file() || et == tar::EntryType::Continuous {
                let mut n = Node::new(Kind::File, mode);
                let fail = |e: io::Error| image_err(format!("{label}: {raw_name}"), e);
                if let Some(spool) = &mut self.spool {
                    let len = io::copy(&mut entry, &mut &*spool.file).map_err(fail)?;
                    n.content = Content::Spooled(spool.file.clone(), spool.end, len);
                    spool.end += len;
                } else {
                    let mut bytes = Vec::with_capacity(entry.size() as usize);
                    entry.read_to_end(&mut bytes).map_err(fail)?;
                    n.content = Content::Memory(bytes.into());
                }
                n
            } else if et.is_pax_global_extensions() || et.is_pax_local_extensions() {
                continue;
            } else {
                let mut n = Node::new(Kind::Special, mode);
                let kind = match et {
                    tar::EntryType::Char => Some(DeviceKind::Char),
                    tar::EntryType::Block => Some(DeviceKind::Block),
                    tar::EntryType::Fifo => Some(DeviceKind::Fifo),
                    _ => None,
                };
                n.device = kind.map(|kind| Device {
                    kind,
                    major: header.device_major().ok().flatten().unwrap_or(0),
                    minor: header.device_minor().ok().flatten().unwrap_or(0),
                });
                n
            };
            node.mtime = header.mtime().unwrap_or(0);
            node.uid = header.uid().unwrap_or(0);
            node.gid = header.gid().unwrap_or(0);
            node.capabilities = caps;
            added.push((name, node, link));
        }
        let kept: BTreeSet<&str> = added.iter().map(|(n, _, _)| n.as_str()).collect();
        let mut refused_targets: BTreeSet<String> = BTreeSet::new();
        for link in added.iter().filter_map(|(_, _, link)| link.as_deref()) {
            let mut target = Some(link);
            while let Some(t) = target {
                if kept.contains(t)
                    || self.nodes.contains_key(t)
                    || accept(t)
                    || !refused_targets.insert(t.to_string())
                {
                    break;
                }
                target = refused_links.get(t).map(String::as_str);
            }
        }
        let refused_targets: Vec<String> = refused_targets.into_iter().collect();
        if !refused_targets.is_empty() {
            return Ok(refused_targets);
        }
        self.opaque_dirs.extend(opaque.iter().cloned());
        self.whiteouts.extend(removed.iter().cloned());
        for dir in opaque {
            let prefix = if dir == "/" {
                "/".to_string()
            } else {
                format!("{dir}/")
            };
            let doomed: Vec<String> = self
                .nodes
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .filter(|k| k != "/")
                .collect();
            for k in doomed {
                self.nodes.remove(&k);
            }
        }
        for path in removed {
            self.remove_subtree(&path);
        }
        for (name, mut node, link) in added {
            if let Some(target) = link {
                let Some(t) = self.nodes.get(&target) else {
                    return Err(image_err(
                        label,
                        format!(
                            "hard link '{name}' points at '{target}', which is not in the image"
                        ),
                    ));
                };
                node.content = t.content.clone();
                node.alias_of = Some(t.alias_of.clone().unwrap_or(target));
            }
            if node.kind != Kind::Dir {
                self.remove_subtree(&name);
            }
            self.ensure_parents(&name);
            self.nodes.insert(name, node);
        }
        Ok(Vec::new())
    }

    fn remove_subtree(&mut self, path: &str) {
        self.nodes.remove(path);
        let prefix = format!("{path}/");
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    fn ensure_parents(&mut self, path: &str) {
        let mut p = parent(path).to_string();
        let mut missing = Vec::new();
        while p != "/" && !self.nodes.contains_key(&p) {
            missing.push(p.clone());
            p = parent(&p).to_string();
        }
        for m in missing {
            let mut dir = Node::new(Kind::Dir, 0o755);
            dir.implied = true;
            self.nodes.insert(m, dir);
        }
    }

    /// Every path and its node, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    /// The node at exactly `path` (not following a final symlink).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True for an image with nothing but its root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// The bytes of the regular file at `path` (hard-link aliases share them). Files of a
    /// directory input are mapped, not copied: ELF files are most of an image's bytes.
    pub fn read(&self, path: &str) -> io::Result<FileData> {
        let node = self
            .nodes
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        match &node.content {
            Content::Memory(b) => Ok(FileData::Shared(b.clone())),
            Content::Spooled(_, _, 0) => Ok(FileData::Shared(Arc::from(&[][..]))),
            Content::Spooled(file, offset, len) => {
                let len = usize::try_from(*len).map_err(io::Error::other)?;
                // SAFETY: the spool is kiln's own unlinked file, only appended to while the
                // tree is read and never again after; the span mapped is written in full.
                let map = unsafe {
                    memmap2::MmapOptions::new()
                        .offset(*offset)
                        .len(len)
                        .map(&**file)?
                };
                Ok(FileData::Mapped(map))
            }
            Content::InRoot(root, p) => {
                let file = open_in_root(root, p)?;
                if file.metadata()?.len() == 0 {
                    return Ok(FileData::Shared(Arc::from(&[][..])));
                }
                // SAFETY: the map is read-only and private; kiln checks trees it does not
                // modify, and a file changed underneath by someone else yields wrong findings
                // about that file, not unsoundness in what kiln writes.
                let map = unsafe { memmap2::Mmap::map(&file)? };
                Ok(FileData::Mapped(map))
            }
            Content::None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )),
        }
    }

    /// The regular file at `path` as a stream, with its length: what writes a file out whole
    /// (a tar member, a file system's file) without holding or mapping all of it.
    pub fn reader(&self, path: &str) -> io::Result<(Box<dyn Read + '_>, u64)> {
        let node = self
            .nodes
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if let Content::Spooled(file, offset, len) = &node.content {
            return Ok((
                Box::new(SpanReader {
                    file,
                    pos: *offset,
                    end: offset + len,
                }),
                *len,
            ));
        }
        let data = self.read(path)?;
        let len = data.len() as u64;
        Ok((Box::new(io::Cursor::new(data)), len))
    }

    /// The first name of the hard-linked file at `path`, when `path` is a second name of a file
    /// whose first name is still in the tree with the same content (a later layer may have
    /// replaced the first name; then `path` stands alone).
    pub fn hard_link_leader(&self, path: &str) -> Option<&str> {
        let node = self.nodes.get(path)?;
        let leader = node.alias_of.as_deref()?;
        let first = self.nodes.get(leader)?;
        let same = match (&node.content, &first.content) {
            (Content::Memory(a), Content::Memory(b)) => Arc::ptr_eq(a, b),
            (Content::InRoot(ra, a), Content::InRoot(rb, b)) => Arc::ptr_eq(ra, rb) && a == b,
            (Content::Spooled(fa, a, _), Content::Spooled(fb, b, _)) => {
                Arc::ptr_eq(fa, fb) && a == b
            }
            _ => false,
        };
        (same && first.kind == Kind::File && first.alias_of.is_none()).then_some(leader)
    }

    /// The first `n` bytes of a regular file (fewer when it is shorter).
    pub fn read_head(&self, path: &str, n: usize) -> io::Result<Vec<u8>> {
        let node = self
            .nodes
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        match &node.content {
            Content::Memory(b) => Ok(b[..n.min(b.len())].to_vec()),
            Content::Spooled(file, offset, len) => {
                use std::os::unix::fs::FileExt;
                let want = (n as u64).min(*len) as usize;
                let mut buf = vec![0; want];
                file.read_exact_at(&mut buf, *offset)?;
                Ok(buf)
            }
            Content::InRoot(root, p) => {
                let mut buf = Vec::with_capacity(n);
                open_in_root(root, p)?
                    .take(n as u64)
                    .read_to_end(&mut buf)?;
                Ok(buf)
            }
            Content::None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )),
        }
    }

    /// Resolves `path` inside the image, following every symlink (also a final one) the way
    /// the kernel would in a chroot of the image: absolute targets restart at the image root
    /// and `..` stops at it. None when a component is missing, a loop, or not a directory.
    pub fn resolve(&self, path: &str) -> Option<String> {
        self.resolve_from("/", path)
    }

    /// Like [`ImageTree::resolve`], with a relative `path` taken from directory `base`.
    pub fn resolve_from(&self, base: &str, path: &str) -> Option<String> {
        let mut todo: Vec<String> = components(path).rev().map(str::to_string).collect();
        let mut cur: Vec<String> = if path.starts_with('/') {
            Vec::new()
        } else {
            components(base).map(str::to_string).collect()
        };
        let mut links = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            let parent_path = join(&cur.iter().map(String::as_str).collect::<Vec<_>>());
            if self.nodes.get(&parent_path).map(|n| &n.kind) != Some(&Kind::Dir) {
                return None;
            }
            cur.push(c);
            let here = join(&cur.iter().map(String::as_str).collect::<Vec<_>>());
            let node = self.nodes.get(&here)?;
            if let Kind::Symlink(target) = &node.kind {
                links += 1;
                if links > MAX_SYMLINKS {
                    return None;
                }
                cur.pop();
                if target.starts_with('/') {
                    cur.clear();
                }
                todo.extend(components(target).rev().map(str::to_string));
            }
        }
        Some(join(&cur.iter().map(String::as_str).collect::<Vec<_>>()))
    }

    /// The resolved node of `path`, following symlinks inside the image.
    pub fn lookup(&self, path: &str) -> Option<(String, &Node)> {
        let resolved = self.resolve(path)?;
        let node = self.nodes.get(&resolved)?;
        Some((resolved, node))
    }

    /// Names of the entries directly inside directory `dir` (an exact, resolved path).
    pub fn children(&self, dir: &str) -> Vec<&str> {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| {
                let rest = &k[prefix.len()..];
                (!rest.is_empty() && !rest.contains('/')).then_some(rest)
            })
            .collect()
    }
}

/// The shared state of a parallel directory walk: directories still to list, and how many
/// workers are listing one (the walk ends when both are zero).
struct DirWalk {
    queue: std::sync::Mutex<(Vec<(crate::inroot::Dir, String)>, usize)>,
    more: std::sync::Condvar,
    image: Arc<crate::inroot::ImageRoot>,
}

/// What one worker of a [`DirWalk`] found.
#[derive(Default)]
struct WalkPart {
    nodes: Vec<(String, Node)>,
    inodes: Vec<((u64, u64), String)>,
}

impl DirWalk {
    fn next(&self) -> Option<(crate::inroot::Dir, String)> {
        let mut q = self.queue.lock().ok()?;
        loop {
            if let Some(d) = q.0.pop() {
                q.1 += 1;
                return Some(d);
            }
            if q.1 == 0 {
                return None;
            }
            q = self.more.wait(q).ok()?;
        }
    }

    fn done(&self, found: Vec<(crate::inroot::Dir, String)>) {
        if let Ok(mut q) = self.queue.lock() {
            q.0.extend(found);
            q.1 -= 1;
        }
        self.more.notify_all();
    }

    fn work(&self) -> Result<WalkPart, ImageError> {
        let mut part = WalkPart::default();
        while let Some((dir, image)) = self.next() {
            let mut subdirs = Vec::new();
            let listed = list_dir(&self.image, &dir, &image, &mut part, &mut subdirs);
            self.done(subdirs);
            listed?;
        }
        Ok(part)
    }
}

fn list_dir(
    root: &Arc<crate::inroot::ImageRoot>,
    dir: &crate::inroot::Dir,
    image: &str,
    part: &mut WalkPart,
    subdirs: &mut Vec<(crate::inroot::Dir, String)>,
) -> Result<(), ImageError> {
    use crate::inroot::Kind as On;
    let fail = |path: &str, e: crate::inroot::InRootError| {
        image_err(
            root.host().join(path.trim_start_matches('/')).display(),
            e.reason,
        )
    };
    for name in dir.entries().map_err(|e| fail(image, e))? {
        let image_path = format!("{image}/{}", name.to_string_lossy());
        // Relative to the open directory (fstatat), not a walk of the whole path again.
        let Some(meta) = dir.metadata(&name).map_err(|e| fail(&image_path, e))? else {
            continue; // removed while listed
        };
        let perm = meta.mode & 0o7777;
        let mut node = match meta.kind {
            On::Dir => {
                if let Some(sub) = dir.sub(&name).map_err(|e| fail(&image_path, e))? {
                    subdirs.push((sub, image_path.clone()));
                }
                Node::new(Kind::Dir, perm)
            }
            On::Symlink => {
                let target = dir.read_link(&name).map_err(|e| fail(&image_path, e))?;
                Node::new(Kind::Symlink(target.to_string_lossy().into_owned()), perm)
            }
            On::File => {
                let mut n = Node::new(Kind::File, perm);
                if meta.nlink > 1 {
                    part.inodes.push((meta.identity, image_path.clone()));
                }
                n.content = Content::InRoot(root.clone(), image_path.clone());
                n
            }
            On::Special => {
                let mut n = Node::new(Kind::Special, perm);
                let kind = match meta.mode & libc::S_IFMT {
                    libc::S_IFCHR => Some(DeviceKind::Char),
                    libc::S_IFBLK => Some(DeviceKind::Block),
                    libc::S_IFIFO => Some(DeviceKind::Fifo),
                    _ => None,
                };
                n.device = kind.map(|kind| Device {
                    kind,
                    major: libc::major(meta.rdev),
                    minor: libc::minor(meta.rdev),
                });
                n
            }
        };
        node.uid = meta.uid.into();
        node.gid = meta.gid.into();
        node.mtime = meta.mtime.max(0) as u64;
        part.nodes.push((image_path, node));
    }
    Ok(())
}

fn has_capability_xattr(root: &crate::inroot::ImageRoot, path: &str) -> bool {
    let Ok(Some((dir, name))) = root.parent(path, false) else {
        return false;
    };
    dir.file_xattr(&name, c"security.capability")
        .is_ok_and(|v| v.is_some_and(|v| !v.is_empty()))
}

/// Undoes gzip/zstd/xz around a tar given to `kiln check`, recognised by magic bytes.
fn decompress_if_needed(data: &[u8]) -> io::Result<std::borrow::Cow<'_, [u8]>> {
    let compression = sniff_compression(data);
    if compression == Compression::None {
        return Ok(std::borrow::Cow::Borrowed(data));
    }
    let mut out = Vec::new();
    compression.decoder(data)?.read_to_end(&mut out)?;
    Ok(std::borrow::Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(entries: &[(&str, Kind)]) -> ImageTree {
        let mut t = ImageTree::default();
        t.add_root();
        for (p, k) in entries {
            t.ensure_parents(p);
            t.nodes.insert(p.to_string(), Node::new(k.clone(), 0o755));
        }
        t
    }

    #[test]
    fn resolves_inside_the_image_only() {
        let t = tree(&[
            ("/usr/lib", Kind::Dir),
            ("/usr/lib/libc.so.6", Kind::File),
            ("/lib", Kind::Symlink("usr/lib".into())),
            (
                "/usr/lib/up",
                Kind::Symlink("../../../../lib/libc.so.6".into()),
            ),
            ("/usr/lib/abs", Kind::Symlink("/lib/libc.so.6".into())),
            ("/loop", Kind::Symlink("loop".into())),
        ]);
        assert_eq!(
            t.resolve("/lib/libc.so.6").as_deref(),
            Some("/usr/lib/libc.so.6")
        );
        assert_eq!(
            t.resolve("/usr/lib/up").as_deref(),
            Some("/usr/lib/libc.so.6")
        );
        assert_eq!(
            t.resolve("/usr/lib/abs").as_deref(),
            Some("/usr/lib/libc.so.6")
        );
        assert_eq!(t.resolve("/loop"), None);
        assert_eq!(t.resolve("/usr/lib/libc.so.6/x"), None);
        assert_eq!(t.resolve("/nope"), None);
        assert_eq!(t.children("/usr"), vec!["lib"]);
    }

    /// An OCI layout at `dir` of one uncompressed layer holding `tar`.
    fn one_layer_layout(dir: &Path, tar: &[u8]) {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let digest = crate::digest::sha256_hex(tar);
        fs::write(blobs.join(&digest), tar).unwrap();
        let layer = pack::Layer {
            digest: digest.clone(),
            size: tar.len() as u64,
            diff_id: digest,
            media_type: "application/vnd.oci.image.layer.v1.tar",
            entries: 0,
        };
        oci::write_layout(dir, &[layer], &oci::test_meta(1)).unwrap();
    }

    /// Reading only some paths of a layer: a kept hard link gets its content through a chain
    /// of refused links (however long, as a hostile layer makes it), and a link whose chain
    /// ends nowhere, or at itself, is refused naming it instead of being read forever.
    #[test]
    fn matching_reads_keep_hard_links_whole_and_refuse_broken_chains() {
        let chain = |links: &[(&str, &str)]| {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(7);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, "file", &b"content"[..]).unwrap();
            for (name, target) in links {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                h.set_mode(0o644);
                b.append_link(&mut h, name, target).unwrap();
            }
            b.into_inner().unwrap()
        };
        let work = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..300).map(|i| format!("l{i}")).collect();
        let mut links: Vec<(&str, &str)> = vec![(names[0].as_str(), "file")];
        for i in 1..names.len() {
            links.push((names[i].as_str(), names[i - 1].as_str()));
        }
        one_layer_layout(&work.path().join("chain"), &chain(&links));
        let t = ImageTree::from_oci_layers_matching(
            &work.path().join("chain"),
            &|_| LayerRead::Matching,
            &|p| p == "/l299",
            Some(tempfile::tempfile().unwrap()),
        )
        .unwrap();
        assert_eq!(&*t.read("/l299").unwrap(), b"content");

        for (name, links) in [
            ("dangling", vec![("a", "missing"), ("kept", "a")]),
            ("itself", vec![("kept", "kept")]),
            ("cycle", vec![("a", "b"), ("b", "a"), ("kept", "a")]),
        ] {
            let dir = work.path().join(name);
            one_layer_layout(&dir, &chain(&links));
            let e = ImageTree::from_oci_layers_matching(
                &dir,
                &|_| LayerRead::Matching,
                &|p| p == "/kept",
                None,
            )
            .err()
            .unwrap_or_else(|| panic!("{name}: accepted"));
            assert!(e.to_string().contains("hard link"), "{name}: {e}");
        }
    }

    #[test]
    fn layers_apply_with_whiteouts() {
        fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
            let mut b = tar::Builder::new(Vec::new());
            for (name, data) in entries {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, name, *data).expect("append");
            }
            b.into_inner().expect("finish")
        }
        let mut t = ImageTree::default();
        t.add_root();
        t.apply_tar(
            &layer(&[("a/x", b"1"), ("a/y", b"2"), ("b/z", b"3")]),
            "l1",
            true,
        )
        .expect("layer 1");
        t.apply_tar(
            &layer(&[("a/.wh.x", b""), ("b/.wh..wh..opq", b""), ("b/w", b"4")]),
            "l2",
            true,
        )
        .expect("layer 2");
        assert!(t.get("/a/x").is_none());
        assert!(t.get("/a/y").is_some());
        assert!(t.get("/b/z").is_none());
        assert_eq!(&*t.read("/b/w").expect("w"), b"4");
    }
}

#[cfg(test)]
mod directory_input_tests {
    use super::*;

    /// A directory input is read inside its root: a directory swapped for a symlink out of the
    /// tree after the walk (or a file swapped for a symlink) is never followed to the host.
    #[test]
    fn files_of_a_directory_input_are_read_inside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(outside.join("etc")).unwrap();
        fs::write(root.join("etc/hostname"), b"inside\n").unwrap();
        fs::write(root.join("etc/motd"), b"motd\n").unwrap();
        fs::write(outside.join("etc/hostname"), b"HOST SECRET\n").unwrap();
        fs::hard_link(root.join("etc/motd"), root.join("etc/motd2")).unwrap();
        std::os::unix::fs::symlink("../outside/etc", root.join("link")).unwrap();

        let tree = ImageTree::from_dir(&root).unwrap();
        assert_eq!(&tree.read("/etc/hostname").unwrap()[..], b"inside\n");
        assert_eq!(
            tree.nodes
                .get("/etc/motd2")
                .and_then(|n| n.alias_of.as_deref()),
            Some("/etc/motd")
        );
        assert!(matches!(
            tree.nodes.get("/link").map(|n| &n.kind),
            Some(Kind::Symlink(t)) if t == "../outside/etc"
        ));

        // Swapped after the walk: etc becomes a symlink to the host's copy.
        fs::rename(root.join("etc"), tmp.path().join("etc-moved")).unwrap();
        std::os::unix::fs::symlink(outside.join("etc"), root.join("etc")).unwrap();
        match tree.read("/etc/hostname") {
            Ok(data) => assert_ne!(&data[..], b"HOST SECRET\n", "followed a symlink out"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}"),
        }
        // A file swapped for a symlink is refused, not followed.
        fs::remove_file(root.join("etc")).unwrap();
        fs::create_dir(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.join("etc/hostname"), root.join("etc/hostname"))
            .unwrap();
        assert!(tree.read("/etc/hostname").is_err());
        assert!(tree.read_head("/etc/hostname", 4).is_err());
    }
}
