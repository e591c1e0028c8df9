//! The overlay stage: every daemon's environment as an OCI layer of its own, on top of the
//! configured base and the envrun layer.
//!
//! Each overlay is built on an overlayfs view of base + envrun (the lower, materialised once
//! per build, read-only), so its build writes only to its own upper directory; the layer is that
//! upper directory's real changes ([`super::capture`]). A change outside the overlay's declared
//! paths is refused, listing the paths: that is how an overlay that writes to
//! /usr/lib/python3/dist-packages, or a daemon package that edits /etc/passwd undeclared, is
//! caught before anything ships. Every overlay sees only the base (never another overlay), so
//! changing one overlay rebuilds only its layer: the layer cache key is the base layer's
//! diff_id, envrun's hash and the overlay directory's contents.
//!
//! After the layer is packed, the overlay's `smoke` command runs in a chroot of the view under
//! qemu-user; only an overlay whose smoke command exits 0 is stored and goes into the image
//! ("installs but does not start" fails here, not on a robot).

use super::capture::{self, Change};
use super::error::io_err;
use super::files::{put_dir, put_file, put_symlink, root_owned, STAGING};
use super::{OverlayError, StageInput};
use crate::arch::DebianArch;
use crate::check::CheckOptions;
use crate::digest::sha256_hex;
use crate::image::pack;
use crate::image::{ImageTree, Kind as NodeKind};
use crate::inroot::{ImageRoot, Owner};
use crate::pipeline::layercache;
use crate::recipe::overlay::{Kind, Overlay};
use crate::recipe::Recipe;
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// One layer the stage adds, with its history line.
#[derive(Debug, Clone)]
pub struct AddedLayer {
    /// The packed layer (its blob is in the layout's blobs).
    pub layer: pack::Layer,
    /// The image history line.
    pub history: String,
    /// Which overlay (or "envrun").
    pub name: String,
    /// Taken from the layer cache.
    pub reused: bool,
    /// The .debs the layer installed, for the SBOM.
    pub debs: Vec<crate::pipeline::sbom::SbomPackage>,
    /// SHA-256 (hex) of the one input file the layer holds as is (envrun's binary).
    pub file_sha256: Option<String>,
}

/// Finds the envrun binary for `arch`: `$KILN_ENVRUN` (a file), else `envrun-<arch>` beside
/// the kiln binary (ci/envrun-cross puts them there), else, for the build host's own
/// architecture, `envrun` beside it (cargo builds it with kiln).
pub fn locate_envrun(arch: DebianArch) -> Result<PathBuf, OverlayError> {
    let err = |reason: String| OverlayError::Envrun {
        arch: arch.to_string(),
        reason,
    };
    if let Some(p) = std::env::var_os("KILN_ENVRUN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(err(format!("KILN_ENVRUN={} is not a file", p.display())))
        };
    }
    let exe = std::env::current_exe().map_err(|e| err(e.to_string()))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mut candidates = vec![dir.join(format!("envrun-{arch}"))];
    if arch.is_host() {
        candidates.push(dir.join("envrun"));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        err(format!(
            "build it with `ci/envrun-cross` (it puts envrun-{arch} beside kiln in {}), or set KILN_ENVRUN",
            dir.display()
        ))
    })
}

/// A hash of everything in an overlay's directory (names, modes and contents, sorted): the
/// overlay's part of its layer cache key.
fn directory_digest(dir: &Path) -> std::io::Result<String> {
    let mut entries = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let meta = std::fs::symlink_metadata(e.path())?;
            if meta.is_dir() {
                stack.push(e.path());
            }
            entries.push((e.path(), meta));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut text = String::new();
    for (p, meta) in entries {
        use std::os::unix::fs::PermissionsExt;
        let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
        let what = if meta.is_file() {
            sha256_hex(&std::fs::read(&p)?)
        } else if meta.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&p)?.display())
        } else {
            "dir".into()
        };
        text.push_str(&format!(
            "{rel} {:o} {what}\n",
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(sha256_hex(text.as_bytes()))
}

/// An overlayfs mount, unmounted when dropped.
struct OverlayMount {
    merged: PathBuf,
}

impl OverlayMount {
    fn new(
        lower: &Path,
        dir: &Path,
        overlay: &str,
    ) -> Result<(OverlayMount, PathBuf), OverlayError> {
        let upper = dir.join("upper");
        let work = dir.join("work");
        let merged = dir.join("merged");
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).map_err(|e| io_err(overlay, d, e))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let data = CString::new(opts.as_bytes()).map_err(|e| io_err(overlay, &merged, e))?;
        // kiln build runs in a private mount namespace, so the mount never reaches the host's
        // mount table.
        let mounted = rustix::mount::mount(
            "overlay",
            &merged,
            "overlay",
            rustix::mount::MountFlags::empty(),
            data.as_c_str(),
        );
        if let Err(e) = mounted {
            return Err(io_err(
                overlay,
                &merged,
                format!("cannot mount overlayfs ({e}); overlays need root and overlayfs"),
            ));
        }
        Ok((OverlayMount { merged }, upper))
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        // A failure leaves a mount that dies with the namespace.
        let _ = rustix::mount::unmount(&self.merged, rustix::mount::UnmountFlags::DETACH);
    }
}

/// The systemd unit of an overlay's service.
pub fn unit_text(overlay: &Overlay) -> Option<String> {
    let s = overlay.service.as_ref()?;
    let user = s
        .user
        .as_ref()
        .map(|u| format!("User={u}\n"))
        .unwrap_or_default();
    Some(format!(
        "# Written by kiln for overlay {name}.\n[Unit]\nDescription={name} (kiln overlay)\nAfter=network.target\n\n[Service]\nExecStart=/usr/bin/envrun run {name} {exec}\n{user}Restart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n",
        name = overlay.name,
        exec = s.exec
    ))
}

/// Runs the stage: the envrun layer and one layer per overlay.
pub fn build_overlays(input: &StageInput) -> Result<Vec<AddedLayer>, OverlayError> {
    if input.overlays.is_empty() {
        return Ok(Vec::new());
    }
    let arch = input.recipe.board.arch;
    let envrun = locate_envrun(arch)?;
    let envrun_bytes = std::fs::read(&envrun).map_err(|e| io_err("envrun", &envrun, e))?;
    let envrun_sha = sha256_hex(&envrun_bytes);
    let media = input.compression.media_type();
    let sde = input.sde;
    let root_owner = |mode: u32| root_owned(mode, sde);
    let mut added = Vec::new();

    // The envrun layer: /usr/bin/envrun for the board.
    let envrun_key = layercache::key(&[
        "envrun",
        &envrun_sha,
        &format!("source-date-epoch={sde}"),
        media,
    ]);
    let envrun_layer = match layercache::restore(input.cache, &envrun_key, input.blobs)
        .map_err(|e| io_err("envrun", input.blobs, e))?
    {
        Some((layer, _)) => (layer, true),
        None => {
            let dir = input.work.join("envrun-layer");
            std::fs::create_dir_all(&dir).map_err(|e| io_err("envrun", &dir, e))?;
            put_file(
                &dir,
                "/usr/bin/envrun",
                &envrun_bytes,
                root_owner(0o755),
                "envrun",
            )?;
            for d in ["/usr/bin", "/usr"] {
                put_dir(&dir, d, root_owner(0o755), "envrun")?;
            }
            let layer = pack::pack_layer(&dir, input.blobs, sde, input.compression)
                .map_err(|e| io_err("envrun", &dir, e))?;
            layercache::store(input.cache, &envrun_key, &layer, &[], input.blobs)
                .map_err(|e| io_err("envrun", input.blobs, e))?;
            (layer, false)
        }
    };
    added.push(AddedLayer {
        layer: envrun_layer.0,
        history: format!("kiln envrun: /usr/bin/envrun (sha256:{envrun_sha})"),
        name: "envrun".into(),
        reused: envrun_layer.1,
        debs: Vec::new(),
        file_sha256: Some(envrun_sha.clone()),
    });

    let debs: Vec<&str> = input
        .overlays
        .iter()
        .filter(|o| matches!(o.kind, Kind::Debs { .. }))
        .map(|o| o.name.as_str())
        .collect();
    if let [first, second, ..] = debs.as_slice() {
        return Err(OverlayError::DebsTwice {
            first: first.to_string(),
            second: second.to_string(),
        });
    }
    let mut lower: Option<PathBuf> = None;
    for overlay in input.overlays {
        let name = overlay.name.as_str();
        let digest = directory_digest(&overlay.dir).map_err(|e| io_err(name, &overlay.dir, e))?;
        let key = layercache::key(&[
            "overlay",
            name,
            input.base_diff_id,
            &envrun_sha,
            &digest,
            &format!("source-date-epoch={sde}"),
            media,
        ]);
        let history = format!("kiln overlay {name} ({})", kind_name(&overlay.kind));
        if let Some((layer, debs)) = layercache::restore(input.cache, &key, input.blobs)
            .map_err(|e| io_err(name, input.blobs, e))?
        {
            added.push(AddedLayer {
                layer,
                history,
                name: name.to_string(),
                reused: true,
                debs,
                file_sha256: None,
            });
            continue;
        }
        let lower_dir = match &lower {
            Some(l) => l.clone(),
            None => {
                let l = materialise_lower(input, &envrun_bytes)?;
                lower = Some(l.clone());
                l
            }
        };
        let (layer, debs) = build_one(input, overlay, &lower_dir, arch)?;
        layercache::store(input.cache, &key, &layer, &debs, input.blobs)
            .map_err(|e| io_err(name, input.blobs, e))?;
        added.push(AddedLayer {
            layer,
            history,
            name: name.to_string(),
            reused: false,
            debs,
            file_sha256: None,
        });
    }
    Ok(added)
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::PythonVenv { .. } => "python-venv",
        Kind::Debs { .. } => "debs",
        Kind::Files => "files",
    }
}

/// The read-only lower of every overlay: the base layer and envrun, as a directory tree.
fn materialise_lower(input: &StageInput, envrun: &[u8]) -> Result<PathBuf, OverlayError> {
    let lower = input.work.join("lower");
    std::fs::create_dir_all(&lower).map_err(|e| io_err("base", &lower, e))?;
    let bytes = std::fs::read(input.base_blob).map_err(|e| io_err("base", input.base_blob, e))?;
    let tree = ImageTree::from_tar_bytes(&bytes, "base layer")
        .map_err(|e| io_err("base", input.base_blob, e))?;
    crate::image::materialise::materialise(&tree, &lower, input.sde)
        .map_err(|e| io_err("base", &lower, e))?;
    put_file(
        &lower,
        "/usr/bin/envrun",
        envrun,
        root_owned(0o755, input.sde),
        "envrun",
    )?;
    Ok(lower)
}

fn build_one(
    input: &StageInput,
    overlay: &Overlay,
    lower: &Path,
    arch: DebianArch,
) -> Result<(pack::Layer, Vec<crate::pipeline::sbom::SbomPackage>), OverlayError> {
    let name = overlay.name.as_str();
    let dir = input.work.join(format!("overlay-{name}"));
    let (mount, upper) = OverlayMount::new(lower, &dir, name)?;
    let merged = mount.merged.clone();
    // What installing the daemon's packages may change besides its declared paths: the files
    // the packages ship and dpkg's own records of them.
    let mut package_paths: Vec<String> = Vec::new();
    let mut sbom_debs = Vec::new();
    if let Kind::Debs { debs } = &overlay.kind {
        (package_paths, sbom_debs) = install_debs(input, overlay, debs, &merged, arch)?;
    }
    let mut venv_env = None;
    if let Kind::PythonVenv { .. } = &overlay.kind {
        let (env, wheels) = super::venv::install(overlay, &merged, arch, input)?;
        // The SBOM's entry of a wheel: `source` is its file name, `arch` the env it is in.
        sbom_debs.extend(
            wheels
                .into_iter()
                .map(|w| crate::pipeline::sbom::SbomPackage {
                    ecosystem: crate::pipeline::sbom::Ecosystem::PyPI,
                    name: w.name,
                    version: w.version,
                    arch: format!("{}:{name}", arch),
                    sha256: w.sha256,
                    source: w.file,
                    licenses: Vec::new(),
                }),
        );
        venv_env = Some(env);
    }

    for f in &overlay.files {
        let content = std::fs::read(&f.source).map_err(|e| io_err(name, &f.source, e))?;
        put_file(
            &merged,
            &f.dest,
            &content,
            Owner {
                uid: f.uid,
                gid: f.gid,
                mode: f.mode,
                mtime: input.sde as i64,
            },
            name,
        )?;
    }
    let owner = root_owned(0o644, input.sde);
    if let Some(prefix) = overlay.env_prefix() {
        put_file(
            &merged,
            &format!("/etc/envrun.d/{name}.env"),
            format!("# Written by kiln for overlay {name}.\nprefix={prefix}\n").as_bytes(),
            owner,
            name,
        )?;
    }
    if let Some(unit) = unit_text(overlay) {
        let path = format!("/etc/systemd/system/{name}.service");
        put_file(&merged, &path, unit.as_bytes(), owner, name)?;
        // What `systemctl enable` makes for WantedBy=multi-user.target.
        put_symlink(
            &merged,
            &format!("/etc/systemd/system/multi-user.target.wants/{name}.service"),
            &path,
            name,
        )?;
    }

    if let Some(env) = &venv_env {
        super::venv::finish(overlay, env, &merged, arch, input.sde)?;
    }

    // Capture: the real changes, each inside what the overlay may change.
    let mut changes = capture::changes(&upper, lower).map_err(|e| io_err(name, &upper, e))?;
    // dpkg's and the tools' run-to-run debris is not part of any layer (configure removes the
    // same from the base).
    for debris in crate::pipeline::configure::RUN_TO_RUN_DEBRIS {
        changes.changed.remove(&format!("/{debris}"));
    }
    changes.changed.retain(|p, _| !p.starts_with(STAGING));
    let mut owned = overlay.clone();
    owned.allowed.extend(package_paths);
    let outside = outside_paths(&owned, &changes, &upper);
    if !outside.is_empty() {
        let mut paths = outside
            .iter()
            .take(10)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if outside.len() > 10 {
            paths.push_str(&format!(" (and {} more)", outside.len() - 10));
        }
        return Err(OverlayError::Outside {
            overlay: name.to_string(),
            allowed: overlay.allowed.join(", "),
            paths,
        });
    }
    let tree = ImageTree::from_dir(&merged).map_err(|e| io_err(name, &merged, e))?;
    if let Some(prefix) = overlay.env_prefix() {
        for (path, _) in changes.changed.iter() {
            if !path.starts_with(&format!("{prefix}/")) {
                continue;
            }
            if let Some(node) = tree.get(path) {
                if let NodeKind::Symlink(target) = &node.kind {
                    let is_dir = tree
                        .resolve(path)
                        .and_then(|r| tree.get(&r).map(|n| n.kind == NodeKind::Dir))
                        .unwrap_or(false);
                    if is_dir {
                        return Err(OverlayError::DirectorySymlink {
                            overlay: name.to_string(),
                            path: path.clone(),
                            target: target.clone(),
                        });
                    }
                }
            }
        }
    }
    check_overlay(input.recipe, name, &tree, &changes)?;

    let layer_dir = dir.join("layer");
    std::fs::create_dir_all(&layer_dir).map_err(|e| io_err(name, &layer_dir, e))?;
    capture::layer_dir(&upper, &changes, &layer_dir, input.sde)
        .map_err(|e| io_err(name, &layer_dir, e))?;
    let layer = pack::pack_layer(&layer_dir, input.blobs, input.sde, input.compression)
        .map_err(|e| io_err(name, &layer_dir, e))?;

    // Prove it starts: the smoke command in a chroot of base + this overlay, with the
    // environment envrun gives the daemon (its bin first in PATH, no PYTHONPATH/PYTHONHOME),
    // under coreutils' timeout: a daemon that never returns fails too.
    if let Some(smoke) = &overlay.smoke {
        let mut sandbox = crate::sandbox::Sandbox::for_target(&merged, arch, input.sde)?;
        if let Some(prefix) = overlay.env_prefix() {
            sandbox = sandbox.with_path_first(&format!("{prefix}/bin"));
        }
        let secs = overlay.smoke_timeout.to_string();
        let ran = sandbox.run(
            "/usr/bin/timeout",
            &["-k", "5", &secs, "/bin/sh", "-c", smoke],
            &[],
        )?;
        if !ran.status.success() {
            let text = String::from_utf8_lossy(&ran.output);
            let tail: Vec<&str> = text.lines().rev().take(3).collect();
            let status = if ran.status.code() == Some(124) {
                format!("timed out after {secs} s")
            } else {
                crate::pipeline::configure::exit_description(ran.status)
            };
            return Err(OverlayError::Smoke {
                overlay: name.to_string(),
                command: smoke.clone(),
                status,
                output: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            });
        }
    }
    drop(mount);
    Ok((layer, sbom_debs))
}

/// The changed paths an overlay does not own: not one of its allowed paths or inside one, and
/// not a directory on the way to one (overlayfs copies those up when a child is written).
pub fn outside_paths<'c>(
    overlay: &Overlay,
    changes: &'c capture::Changes,
    upper: &Path,
) -> Vec<&'c str> {
    let upper = crate::inroot::ImageRoot::open(upper).ok();
    let is_dir = |p: &str| {
        upper
            .as_ref()
            .is_some_and(|u| u.kind(p).ok().flatten() == Some(crate::inroot::Kind::Dir))
    };
    changes
        .changed
        .iter()
        .filter(|(p, c)| {
            let on_the_way = **c != Change::Deleted
                && is_dir(p)
                && overlay
                    .allowed
                    .iter()
                    .any(|a| a.starts_with(&format!("{p}/")));
            !overlay.may_change(p) && !on_the_way
        })
        .map(|(p, _)| p.as_str())
        .collect()
}

/// dpkg's records of an installed package (dpkg(1), FILES; the triggers directory changes when
/// a package activates or interests triggers).
fn dpkg_record_paths(package: &str) -> Vec<String> {
    vec![
        "/var/lib/dpkg/status".into(),
        "/var/lib/dpkg/triggers".into(),
        "/var/lib/dpkg/updates".into(),
        // ldconfig's trigger rewrites the cache when a package ships a library.
        "/etc/ld.so.cache".into(),
        format!("/var/lib/dpkg/info/{package}.list"),
        format!("/var/lib/dpkg/info/{package}.md5sums"),
        format!("/var/lib/dpkg/info/{package}.conffiles"),
        format!("/var/lib/dpkg/info/{package}.preinst"),
        format!("/var/lib/dpkg/info/{package}.postinst"),
        format!("/var/lib/dpkg/info/{package}.prerm"),
        format!("/var/lib/dpkg/info/{package}.postrm"),
        format!("/var/lib/dpkg/info/{package}.triggers"),
        format!("/var/lib/dpkg/info/{package}.shlibs"),
        format!("/var/lib/dpkg/info/{package}.symbols"),
        format!("/var/lib/dpkg/info/{package}.templates"),
        format!("/var/lib/dpkg/info/{package}.config"),
    ]
}

/// Installs the overlay's .debs with the target's dpkg in a chroot of the view (services kept
/// from starting, as in the configure stage); returns the paths the packages own.
fn install_debs(
    input: &StageInput,
    overlay: &Overlay,
    debs: &[PathBuf],
    merged: &Path,
    arch: DebianArch,
) -> Result<(Vec<String>, Vec<crate::pipeline::sbom::SbomPackage>), OverlayError> {
    let name = overlay.name.as_str();
    let mut owned = Vec::new();
    let mut in_view = Vec::new();
    let mut entries = Vec::new();
    for deb in debs {
        let deb = &PathBuf::from(
            deb.to_string_lossy()
                .replace(crate::recipe::overlay::ARCH_PLACEHOLDER, arch.as_str()),
        );
        if !deb.is_file() {
            return Err(OverlayError::Deb {
                overlay: name.to_string(),
                reason: format!("{}: no such file for a {arch} board", deb.display()),
            });
        }
        let label = deb.display().to_string();
        let (package, files, mut entry) =
            crate::debian::deb::read_deb(deb, &label, |control, data| {
                let field = |f: &str| control.control.get(f).unwrap_or("").trim().to_string();
                let package = field("Package");
                let entry = crate::pipeline::sbom::SbomPackage {
                    ecosystem: crate::pipeline::sbom::Ecosystem::Debian,
                    name: package.clone(),
                    version: field("Version"),
                    arch: field("Architecture"),
                    sha256: String::new(),
                    source: control
                        .control
                        .get("Source")
                        .and_then(|s| s.split_whitespace().next())
                        .unwrap_or(&package)
                        .to_string(),
                    licenses: Vec::new(),
                };
                let mut files = Vec::new();
                let mut tar = tar::Archive::new(data);
                for entry in tar.entries().map_err(|e| deb_err(&label, e))? {
                    let entry = entry.map_err(|e| deb_err(&label, e))?;
                    let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                    let path = format!("/{}", path.trim_start_matches("./").trim_end_matches('/'));
                    if path != "/" {
                        files.push(path);
                    }
                }
                Ok::<_, crate::debian::deb::DebError>((package, files, entry))
            })
            .map_err(|e| OverlayError::Deb {
                overlay: name.to_string(),
                reason: e.to_string(),
            })?;
        if !crate::recipe::is_package_name(&package) {
            return Err(OverlayError::Deb {
                overlay: name.to_string(),
                reason: format!("{label}: no valid Package field"),
            });
        }
        // Only what the package ships, not the shared directories on the way (/usr, /etc).
        let merged_root = ImageRoot::open(merged).map_err(|e| io_err(name, merged, e))?;
        owned.extend(files.into_iter().filter(|f| {
            merged_root.kind(f.as_str()).ok().flatten() != Some(crate::inroot::Kind::Dir)
        }));
        owned.extend(dpkg_record_paths(&package));
        owned.extend(dpkg_record_paths(&format!("{package}:{arch}")));
        let file_name = deb
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{package}.deb"));
        let dest = format!("{STAGING}/{file_name}");
        let bytes = std::fs::read(deb).map_err(|e| io_err(name, deb, e))?;
        entry.sha256 = sha256_hex(&bytes);
        entries.push(entry);
        put_file(merged, &dest, &bytes, root_owned(0o644, input.sde), name)?;
        in_view.push(dest);
    }
    put_file(
        merged,
        "/usr/sbin/policy-rc.d",
        b"#!/bin/sh\n# kiln: no service starts while an image is built\nexit 101\n",
        root_owned(0o755, input.sde),
        name,
    )?;
    let sandbox = crate::sandbox::Sandbox::for_target(merged, arch, input.sde)?;
    let mut args = vec!["--install", "--force-confold"];
    args.extend(in_view.iter().map(String::as_str));
    let ran = sandbox.run("/usr/bin/dpkg", &args, &[])?;
    if let Ok(view) = ImageRoot::open(merged) {
        let _ = view.remove_file("/usr/sbin/policy-rc.d");
        let _ = view.remove_all(STAGING);
    }
    if !ran.status.success() {
        let text = String::from_utf8_lossy(&ran.output);
        let tail: Vec<&str> = text.lines().rev().take(4).collect();
        return Err(OverlayError::Install {
            overlay: name.to_string(),
            status: crate::pipeline::configure::exit_description(ran.status),
            output: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        });
    }
    for e in &mut entries {
        e.licenses = crate::pipeline::sbom::installed_licenses(merged, &e.name);
    }
    Ok((owned, entries))
}

fn deb_err(label: &str, e: impl std::fmt::Display) -> crate::debian::deb::DebError {
    crate::debian::deb::DebError {
        package: label.to_string(),
        member: "data.tar".into(),
        reason: e.to_string(),
    }
}

/// `kiln check` of the overlay's files in the context of the whole view (libraries resolve
/// against the base); findings about base paths are the base layer's business.
fn check_overlay(
    recipe: &Recipe,
    name: &str,
    tree: &ImageTree,
    changes: &capture::Changes,
) -> Result<(), OverlayError> {
    let mut opts = CheckOptions::new(recipe.board.arch);
    opts.waivers = recipe.all_waivers();
    match crate::check::gate(tree, &opts, |f| changes.changed.contains_key(&f.path)) {
        Ok(_) => Ok(()),
        Err(blocked) => Err(OverlayError::Check {
            overlay: name.to_string(),
            errors: blocked.errors,
            first: blocked.first,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_outside_the_overlay_are_listed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("telemetry");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("r.lock"), "").unwrap();
        std::fs::write(
            dir.join("overlay.toml"),
            "kind = \"python-venv\"\nrequirements = \"r.lock\"\n",
        )
        .unwrap();
        let overlay = Overlay::load(&dir).unwrap();
        let upper = d.path().join("upper");
        for p in [
            "var/lib/python3/envs/telemetry/bin",
            "usr/lib/python3/dist-packages",
        ] {
            std::fs::create_dir_all(upper.join(p)).unwrap();
        }
        let mut changes = capture::Changes::default();
        for (p, c) in [
            ("/var/lib/python3", Change::Written),
            ("/var/lib/python3/envs", Change::Written),
            ("/var/lib/python3/envs/telemetry", Change::Written),
            ("/var/lib/python3/envs/telemetry/bin", Change::Written),
            ("/etc/envrun.d/telemetry.env", Change::Written),
            ("/usr/lib/python3/dist-packages", Change::Written),
            ("/usr/lib/python3/dist-packages/evil.py", Change::Written),
            ("/etc/passwd", Change::Deleted),
        ] {
            changes.changed.insert(p.to_string(), c);
        }
        assert_eq!(
            outside_paths(&overlay, &changes, &upper),
            [
                "/etc/passwd",
                "/usr/lib/python3/dist-packages",
                "/usr/lib/python3/dist-packages/evil.py"
            ]
        );
    }
}
