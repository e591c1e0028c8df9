//! The configure stage: turns the natively unpacked staging root into a configured Debian system
//! by running the maintainer scripts under qemu-user in a [`Sandbox`].
//!
//! What runs emulated is only what must: each package's `preinst install` (in dependency order,
//! base-passwd first because it creates /etc/passwd and /etc/group that later scripts use), then
//! the target's own `dpkg --configure -a`, which runs the postinsts in dpkg's order and processes
//! triggers. Unpacking stays native (the compose stage). During the run services are kept from
//! starting (`policy-rc.d` answers 101; `start-stop-daemon` is swapped for a no-op and restored);
//! afterwards everything that differs from run to run is removed or normalised
//! ([`RUN_TO_RUN_DEBRIS`]), so the layer is reproducible.

use crate::compose::unpack::{member_components, Root, MISSING};
use crate::compose::Composed;
use crate::control::parse_relations;
use crate::sandbox::{self, Ran, Sandbox, SandboxError};
use crate::spec::Board;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why configuring failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// Target code cannot run here.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A maintainer script (or dpkg) failed.
    #[error("{package}: {script} failed ({status}); last output: {tail}")]
    Script {
        /// The package.
        package: String,
        /// `preinst` or `postinst`.
        script: String,
        /// Exit status.
        status: String,
        /// Its last output lines, joined with " | ".
        tail: String,
    },
    /// The staging root could not be prepared or cleaned.
    #[error("configure: {path}: {reason}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Paths (relative to the root) that hold run-to-run debris and are removed after configuring.
/// Logs and caches record build times or host facts; `*-old` files are dpkg's and debconf's
/// backups of the state before this very build.
pub const RUN_TO_RUN_DEBRIS: &[&str] = &[
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
    "var/cache/ldconfig/aux-cache",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/statoverride-old",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/cache/debconf/passwords.dat-old",
    "var/lib/dbus/machine-id",
    "usr/sbin/policy-rc.d",
];

/// Files emptied rather than removed: systemd expects an empty /etc/machine-id in an image and
/// generates the id on first boot.
pub const EMPTIED: &[&str] = &["etc/machine-id"];

/// Options for configuring.
#[derive(Debug, Clone)]
pub struct ConfigureOptions {
    /// SOURCE_DATE_EPOCH handed to the scripts (shadow's lastchg, for example, honours it).
    pub source_date_epoch: u64,
    /// Print how the time was spent to stderr.
    pub timings: bool,
    /// debconf answers (`owner question type value`) set before any script runs.
    pub debconf: Vec<String>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ConfigureError {
    ConfigureError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Host path of an image path, resolving symlinks inside the image only and creating missing
/// parent directories.
fn inside(root: &Path, path: &str) -> Result<PathBuf, ConfigureError> {
    lookup(root, path, true)?.ok_or_else(|| io_err(Path::new(path), MISSING))
}

/// Host path of an image path whose parent exists, or None.
fn existing(root: &Path, path: &str) -> Result<Option<PathBuf>, ConfigureError> {
    lookup(root, path, false)
}

fn lookup(
    root: &Path,
    path: &str,
    create_missing: bool,
) -> Result<Option<PathBuf>, ConfigureError> {
    let comps = member_components(path.trim_start_matches('/').as_bytes())
        .map_err(|e| io_err(Path::new(path), e))?;
    match (Root {
        path: root,
        create_missing,
    })
    .resolve_parent(&comps)
    {
        Ok(r) => Ok(Some(r.parent.join(std::ffi::OsStr::from_bytes(&r.name)))),
        Err(e) if e == MISSING => Ok(None),
        Err(e) => Err(io_err(Path::new(path), e)),
    }
}

fn write_executable(path: &Path, text: &str) -> Result<(), ConfigureError> {
    let _ = fs::remove_file(path);
    fs::write(path, text).map_err(|e| io_err(path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(|e| io_err(path, e))
}

/// Packages in the order their preinsts run: base-passwd first, then every package after its
/// Pre-Depends and Depends (cycles broken by name order).
fn preinst_order(composed: &Composed) -> Vec<usize> {
    let by_name: BTreeMap<&str, usize> = composed
        .packages
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let mut done = BTreeSet::new();
    let mut order = Vec::new();
    fn visit(
        i: usize,
        composed: &Composed,
        by_name: &BTreeMap<&str, usize>,
        done: &mut BTreeSet<usize>,
        active: &mut BTreeSet<usize>,
        order: &mut Vec<usize>,
    ) {
        if done.contains(&i) || !active.insert(i) {
            return;
        }
        let c = &composed.packages[i].control.control;
        for field in ["Pre-Depends", "Depends"] {
            let groups = parse_relations(c.get(field).unwrap_or("")).unwrap_or_default();
            for group in groups {
                if let Some(&dep) = group.iter().find_map(|d| by_name.get(d.name.as_str())) {
                    visit(dep, composed, by_name, done, active, order);
                }
            }
        }
        active.remove(&i);
        if done.insert(i) {
            order.push(i);
        }
    }
    let mut active = BTreeSet::new();
    if let Some(&bp) = by_name.get("base-passwd") {
        visit(bp, composed, &by_name, &mut done, &mut active, &mut order);
    }
    for &i in by_name.values() {
        visit(i, composed, &by_name, &mut done, &mut active, &mut order);
    }
    order
}

/// The last few non-empty lines of `lines`, joined for a one-line report.
fn tail(lines: &[&str]) -> String {
    let lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(6);
    lines[start..].join(" | ")
}

fn tail_of(out: &Ran) -> String {
    let text = String::from_utf8_lossy(&out.output);
    tail(&text.lines().collect::<Vec<_>>())
}

/// Reads a failed `dpkg --configure -a` run: which package, which script and exit status, and
/// what that script printed (the lines between dpkg's "Setting up PKG" and its error report).
fn dpkg_failure(out: &Ran) -> ConfigureError {
    let text = String::from_utf8_lossy(&out.output);
    let lines: Vec<&str> = text.lines().collect();
    let error_at = lines
        .iter()
        .position(|l| l.starts_with("dpkg: error processing package "));
    let package = error_at.and_then(|i| {
        lines[i]
            .trim_start_matches("dpkg: error processing package ")
            .split_whitespace()
            .next()
            .map(str::to_string)
    });
    let Some((i, package)) = error_at.zip(package) else {
        return ConfigureError::Script {
            package: "dpkg".into(),
            script: "dpkg --configure -a".into(),
            status: out.status.to_string(),
            tail: tail_of(out),
        };
    };
    let plain = package.split(':').next().unwrap_or(&package).to_string();
    let start = lines[..i]
        .iter()
        .rposition(|l| l.starts_with(&format!("Setting up {plain}")))
        .map(|s| s + 1)
        .unwrap_or(0);
    // dpkg's explanation follows: " installed PKG package post-installation script subprocess
    // returned error exit status N".
    let why = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
    let status = why
        .split_once("returned error ")
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| why.to_string());
    let script = if why.contains("post-installation") {
        "postinst"
    } else {
        "maintainer script"
    };
    ConfigureError::Script {
        package,
        script: script.into(),
        status,
        tail: tail(&lines[start..i]),
    }
}

/// Configures every unpacked package of `composed` inside its root.
pub fn configure(
    composed: &Composed,
    board: &Board,
    opts: &ConfigureOptions,
) -> Result<(), ConfigureError> {
    sandbox::check_emulation(board.arch)?;
    let root = &composed.root;
    let sandbox = Sandbox::new(root, sandbox::base_environment(opts.source_date_epoch));

    // Keep services from starting while scripts run (invoke-rc.d asks policy-rc.d).
    let policy = inside(root, "/usr/sbin/policy-rc.d")?;
    write_executable(&policy, "#!/bin/sh\nexit 101\n")?;
    let mut swapped = Vec::new();
    for ssd in ["/sbin/start-stop-daemon", "/usr/sbin/start-stop-daemon"] {
        let Some(host) = existing(root, ssd)? else {
            continue;
        };
        if fs::symlink_metadata(&host).is_ok_and(|m| m.is_file()) && !swapped.contains(&host) {
            let real = host.with_extension("REAL");
            fs::rename(&host, &real).map_err(|e| io_err(&host, e))?;
            write_executable(
                &host,
                "#!/bin/sh\necho 'kiln: start-stop-daemon does nothing while the image is built' >&2\nexit 0\n",
            )?;
            swapped.push(host);
        }
    }

    let result = preseed(&sandbox, &opts.debconf)
        .and_then(|()| run_scripts(composed, &sandbox, opts.timings));

    for host in swapped {
        let real = host.with_extension("REAL");
        fs::rename(&real, &host).map_err(|e| io_err(&host, e))?;
    }
    result?;
    clean(root)?;
    write_apt_sources(root, board)?;
    Ok(())
}

/// Feeds the recipe's debconf answers to the target's own `debconf-set-selections`, so the
/// postinsts that ask find them and nothing prompts.
fn preseed(sandbox: &Sandbox, answers: &[String]) -> Result<(), ConfigureError> {
    if answers.is_empty() {
        return Ok(());
    }
    let mut input = answers.join("\n");
    input.push('\n');
    let out = sandbox.run_with_input(
        "/usr/bin/debconf-set-selections",
        &[],
        &[],
        input.as_bytes(),
    )?;
    if !out.status.success() {
        return Err(ConfigureError::Script {
            package: "debconf".into(),
            script: "debconf-set-selections (the recipe's base.debconf answers)".into(),
            status: out.status.to_string(),
            tail: tail_of(&out),
        });
    }
    Ok(())
}

fn run_scripts(
    composed: &Composed,
    sandbox: &Sandbox,
    timings: bool,
) -> Result<(), ConfigureError> {
    let started = std::time::Instant::now();
    let mut preinsts = 0;
    let dpkg_version = composed
        .packages
        .iter()
        .find(|p| p.name == "dpkg")
        .and_then(|p| p.control.control.get("Version").map(str::to_string))
        .unwrap_or_default();
    for i in preinst_order(composed) {
        let pkg = &composed.packages[i];
        if !pkg.control.files.contains_key("preinst") {
            continue;
        }
        // dpkg runs a new package's preinst from the extracted control archive in
        // /var/lib/dpkg/tmp.ci (debconf derives the owning package from that location).
        let tmp_ci = sandbox.root().join("var/lib/dpkg/tmp.ci");
        let _ = fs::remove_dir_all(&tmp_ci);
        fs::create_dir_all(&tmp_ci).map_err(|e| io_err(&tmp_ci, e))?;
        fs::write(tmp_ci.join("control"), pkg.control.control.to_string())
            .map_err(|e| io_err(&tmp_ci, e))?;
        for (name, file) in &pkg.control.files {
            let path = tmp_ci.join(name);
            fs::write(&path, &file.data).map_err(|e| io_err(&path, e))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(file.mode & 0o777))
                .map_err(|e| io_err(&path, e))?;
        }
        let out = sandbox.run(
            "/var/lib/dpkg/tmp.ci/preinst",
            &["install"],
            &[
                ("DPKG_MAINTSCRIPT_PACKAGE", pkg.name.as_str()),
                ("DPKG_MAINTSCRIPT_ARCH", pkg.arch.as_str()),
                ("DPKG_MAINTSCRIPT_NAME", "preinst"),
                ("DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT", "1"),
                ("DPKG_RUNNING_VERSION", dpkg_version.as_str()),
                ("DPKG_ADMINDIR", "/var/lib/dpkg"),
                ("DPKG_ROOT", ""),
            ],
        )?;
        fs::remove_dir_all(&tmp_ci).map_err(|e| io_err(&tmp_ci, e))?;
        preinsts += 1;
        if !out.status.success() {
            return Err(ConfigureError::Script {
                package: pkg.name.clone(),
                script: "preinst".into(),
                status: out.status.to_string(),
                tail: tail_of(&out),
            });
        }
    }
    if timings {
        eprintln!(
            "kiln:   {preinsts} preinst scripts {:>7.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    let started = std::time::Instant::now();
    let out = sandbox.run("/usr/bin/dpkg", &["--configure", "-a"], &[])?;
    if timings {
        eprintln!(
            "kiln:   dpkg --configure -a {:>7.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    if !out.status.success() {
        return Err(dpkg_failure(&out));
    }
    Ok(())
}

/// Removes [`RUN_TO_RUN_DEBRIS`], empties [`EMPTIED`], and drops `__pycache__` directories that
/// build-time runs of Python left (their bytes depend on the run).
fn clean(root: &Path) -> Result<(), ConfigureError> {
    for p in RUN_TO_RUN_DEBRIS {
        let Some(host) = existing(root, p)? else {
            continue;
        };
        match fs::remove_file(&host) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&host, e)),
        }
    }
    for p in EMPTIED {
        let Some(host) = existing(root, p)? else {
            continue;
        };
        if fs::symlink_metadata(&host).is_ok_and(|m| m.is_file()) {
            fs::write(&host, b"").map_err(|e| io_err(&host, e))?;
        }
    }
    remove_pycache(&root.join("usr/lib"))?;
    Ok(())
}

fn remove_pycache(dir: &Path) -> Result<(), ConfigureError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let e = e.map_err(|e| io_err(dir, e))?;
        let ft = e.file_type().map_err(|e| io_err(dir, e))?;
        if ft.is_dir() {
            if e.file_name() == "__pycache__" {
                fs::remove_dir_all(e.path()).map_err(|err| io_err(&e.path(), err))?;
            } else {
                remove_pycache(&e.path())?;
            }
        }
    }
    Ok(())
}

/// Writes /etc/apt/sources.list for the board's archive, as debootstrap and mmdebstrap do, so
/// `apt-get` on a dev unit knows where its packages came from.
fn write_apt_sources(root: &Path, board: &Board) -> Result<(), ConfigureError> {
    let Some(dir) = existing(root, "/etc/apt")? else {
        return Ok(());
    };
    if !dir.is_dir() {
        return Ok(());
    }
    let path = dir.join("sources.list");
    let line = format!(
        "deb {} {} {}\n",
        board.mirror,
        board.suite,
        board.components.join(" ")
    );
    fs::write(&path, line).map_err(|e| io_err(&path, e))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).map_err(|e| io_err(&path, e))
}
