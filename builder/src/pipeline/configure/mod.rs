//! The configure stage: turns the natively unpacked staging root into a configured Debian system
//! by running the maintainer scripts under qemu-user in a [`Sandbox`].
//!
//! What runs emulated is only what must, and on every core:
//! 1. each package's `preinst install`, in [`configure_order`] (base-passwd first: it creates
//!    /etc/passwd and /etc/group that later scripts use), skipping those that provably do
//!    nothing on a fresh install ([`maintscript::preinst_is_noop_on_install`]);
//! 2. each `postinst configure`, as dpkg would run it, several at once where they touch
//!    disjoint state ([`maintscript`] reads what each script touches, [`schedule`] keeps the
//!    result that of a one-by-one run), with kiln writing the status file as dpkg would;
//!    `update-ca-certificates` made natively ([`cacerts`]) and loops that start a program per
//!    item (locales', ca-certificates') run in a faster form ([`rewrite`]), each only where it
//!    provably gives the same bytes;
//! 3. the target's own `dpkg --configure -a`, which incorporates and runs the triggers the
//!    scripts activated and finds nothing else to do;
//! 4. the system Python's bytecode, once, deterministically ([`bytecode`]).
//!
//! Unpacking stays native (the compose stage). During the run services are kept from starting
//! (`policy-rc.d` answers 101; `start-stop-daemon` is swapped for a no-op and restored, as are
//! the byte-compilers, see [`stubs`]);
//! afterwards everything that differs from run to run is removed or normalised
//! ([`RUN_TO_RUN_DEBRIS`]), so the layer is reproducible.

pub mod bytecode;
pub mod cacerts;
pub mod identity;
pub mod maintscript;
pub mod rewrite;
pub mod schedule;
pub mod stubs;

use crate::debian::control::parse_relations;
use crate::inroot::{self, ImageRoot, InRootError};
use crate::pipeline::compose::dpkgdb;
use crate::pipeline::compose::Composed;
use crate::recipe::Board;
use crate::sandbox::{Ran, Sandbox, SandboxError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

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
    /// A path inside the staging root was refused or failed.
    #[error("configure: {0}")]
    InRoot(#[from] InRootError),
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
    /// How many maintainer scripts may run at once (1: strictly one by one). The result is
    /// the same for every value; only the time differs.
    pub jobs: usize,
    /// Run every generator the scripts call under emulation, none natively ([`cacerts`]), and
    /// every script as shipped ([`rewrite`]): the tripwire build that proves the native and
    /// faster forms give the same image.
    pub emulate_all: bool,
}

/// Every package's dependencies ([`dependencies`], itself left out), plus the ones Debian
/// Policy lets a package leave undeclared: the Essential packages (Policy 3.8, "Essential
/// packages"). A package that neither is Essential nor is needed by one waits for every
/// Essential package, as in a dpkg/apt or mmdebstrap install, where the Essential set is
/// configured first: python3-minimal's postinst runs `which py3compile`, and `which` exists only
/// once debianutils' postinst has made its alternative.
fn dependency_sets(composed: &Composed) -> Vec<BTreeSet<usize>> {
    let provides = provider_index(composed);
    let mut deps: Vec<BTreeSet<usize>> = composed
        .packages
        .iter()
        .enumerate()
        .map(|(i, p)| {
            dependencies(p, &provides)
                .into_iter()
                .filter(|&d| d != i)
                .collect()
        })
        .collect();
    let essential: Vec<usize> = (0..composed.packages.len())
        .filter(|&i| composed.packages[i].control.control.get("Essential") == Some("yes"))
        .collect();
    // The Essential packages and everything they need: these keep their declared order.
    let mut needed = vec![false; composed.packages.len()];
    let mut stack = essential.clone();
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut needed[i], true) {
            stack.extend(deps[i].iter().copied());
        }
    }
    for (i, d) in deps.iter_mut().enumerate() {
        if !needed[i] {
            d.extend(essential.iter().copied());
        }
    }
    deps
}

/// Which package answers for a name: the package itself, or the one that `Provides` it.
fn provider_index(composed: &Composed) -> BTreeMap<String, usize> {
    let mut index = BTreeMap::new();
    for (i, p) in composed.packages.iter().enumerate() {
        let provides =
            parse_relations(p.control.control.get("Provides").unwrap_or("")).unwrap_or_default();
        for group in provides {
            for d in group {
                // A real package of that name wins; among providers, the first in lock order.
                index.entry(d.name).or_insert(i);
            }
        }
    }
    for (i, p) in composed.packages.iter().enumerate() {
        index.insert(p.name.clone(), i);
    }
    index
}

/// The packages `pkg` needs configured before it: for each Pre-Depends and Depends group, the
/// first alternative present in the image (by name or Provides).
fn dependencies(
    pkg: &crate::pipeline::compose::Unpacked,
    provides: &BTreeMap<String, usize>,
) -> Vec<usize> {
    let c = &pkg.control.control;
    let mut deps = Vec::new();
    for field in ["Pre-Depends", "Depends"] {
        for group in parse_relations(c.get(field).unwrap_or("")).unwrap_or_default() {
            if let Some(&dep) = group.iter().find_map(|d| provides.get(d.name.as_str())) {
                deps.push(dep);
            }
        }
    }
    deps
}

/// The order packages are configured in: every package after its Pre-Depends and Depends;
/// among those whose dependencies are all placed, base-passwd first (its preinst creates
/// /etc/passwd and /etc/group that later scripts use), then packages whose postinst can start
/// early before those that wait for everything before them (the readers of the dpkg database,
/// and those that must run alone: dash's, whose add-shell needs the awk alternative on
/// bullseye), then those more packages wait for (directly or through others), then by name:
/// the waiting scripts gather at the end and hold nothing up, and each chain of dependencies
/// starts as early as it can.
/// A dependency cycle is broken at the first package in that preference, as dpkg breaks it.
fn configure_order(
    composed: &Composed,
    deps: &[BTreeSet<usize>],
    profiles: &[maintscript::Profile],
) -> Vec<usize> {
    let n = composed.packages.len();
    // How many packages wait, directly or through others, for each one: among the ready of
    // one kind, the one that unblocks most goes first.
    let mut dependents = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let waiting: Vec<usize> = (0..n)
        .map(|v| {
            let mut seen = vec![false; n];
            let mut stack = dependents[v].clone();
            let mut count = 0;
            while let Some(u) = stack.pop() {
                if !std::mem::replace(&mut seen[u], true) && u != v {
                    count += 1;
                    stack.extend(dependents[u].iter().copied());
                }
            }
            count
        })
        .collect();
    let key = |i: usize| {
        let p = &composed.packages[i];
        let profile = profiles.get(i);
        (
            p.name != "base-passwd",
            profile.is_some_and(|p| p.reads_dpkg_database || p.runs_alone),
            std::cmp::Reverse(waiting[i]),
            p.name.as_str(),
            p.arch.as_str(),
        )
    };
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let unplaced = (0..n).filter(|&i| !placed[i]);
        let ready = unplaced
            .clone()
            .filter(|&i| deps[i].iter().all(|&d| placed[d]))
            .min_by_key(|&i| key(i));
        // Nothing is free of unplaced dependencies: every remaining package waits on a cycle.
        // Break one whose unplaced dependencies all lead back to it (it heads a cycle that
        // nothing else outside the cycle holds up).
        let in_cycle_only = |v: usize| {
            let mut seen = vec![false; n];
            let mut stack: Vec<usize> = deps[v].iter().copied().filter(|&d| !placed[d]).collect();
            let mut reaches = Vec::new();
            while let Some(u) = stack.pop() {
                if std::mem::replace(&mut seen[u], true) {
                    continue;
                }
                reaches.push(u);
                stack.extend(deps[u].iter().copied().filter(|&d| !placed[d]));
            }
            // v reaches u for every u in `reaches`; v heads the cycle if each of them reaches v.
            reaches.iter().all(|&u| {
                let mut seen = vec![false; n];
                let mut stack = vec![u];
                while let Some(w) = stack.pop() {
                    if w == v {
                        return true;
                    }
                    if !std::mem::replace(&mut seen[w], true) {
                        stack.extend(deps[w].iter().copied().filter(|&d| !placed[d]));
                    }
                }
                false
            })
        };
        let Some(next) = ready.or_else(|| {
            unplaced
                .filter(|&v| in_cycle_only(v))
                .min_by_key(|&i| key(i))
        }) else {
            break;
        };
        placed[next] = true;
        order.push(next);
    }
    order
}

/// How a script ended, in dpkg's words ("exit status 3", "killed by signal 9").
pub fn exit_description(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
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

pub(crate) fn tail_of(out: &Ran) -> String {
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
            status: exit_description(out.status),
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

/// Configures every unpacked package of `composed` inside its root; says what per-device
/// identity it removed, which first-boot units make it on the device, and what bytecode it
/// compiled.
pub fn configure(
    composed: &Composed,
    board: &Board,
    opts: &ConfigureOptions,
) -> Result<Configured, ConfigureError> {
    let root = &composed.root;
    let mut sandbox = Sandbox::for_target(root, board.arch, opts.source_date_epoch)?;
    let image = ImageRoot::open(root)?;
    // Keep services from starting while scripts run (invoke-rc.d asks policy-rc.d).
    image.write("/usr/sbin/policy-rc.d", b"#!/bin/sh\nexit 101\n", 0o755)?;
    // start-stop-daemon is replaced by a no-op; with merged /usr both paths are one file.
    let swapped = stubs::swap(
        &image,
        &["/sbin/start-stop-daemon", "/usr/sbin/start-stop-daemon"],
        b"#!/bin/sh\necho 'kiln: start-stop-daemon does nothing while the image is built' >&2\nexit 0\n",
    )?;
    let (ca_swapped, native_ca, _shared) = match native_ca_setup(composed, &image, opts)? {
        Some((swapped, shared, native)) => {
            sandbox = sandbox.share(shared.path());
            (swapped, Some(native), Some(shared))
        }
        None => (Vec::new(), None, None),
    };
    let swapped: Vec<stubs::Swapped> = swapped.into_iter().chain(ca_swapped).collect();
    let held = bytecode::hold(&image);
    let names = composed.packages.iter().map(|p| p.name.as_str());
    identity::hold_back(&image, names.clone())?;
    let result = held.map_err(ConfigureError::from).and_then(|held| {
        let ran = preseed(&sandbox, &opts.debconf)
            .and_then(|()| run_scripts(composed, &sandbox, opts, native_ca.clone()));
        let released = bytecode::release(held);
        ran.and(released.map_err(ConfigureError::from))
    });
    let restored = stubs::restore(swapped);
    result?;
    restored?;
    clean(&image)?;
    let started = std::time::Instant::now();
    let bytecode = bytecode::compile(&sandbox, &image)?;
    if opts.timings {
        for c in &bytecode {
            eprintln!(
                "kiln:   python{}: {} modules byte-compiled ({}) {:>7.2} s",
                c.version,
                c.modules,
                c.dirs.join(", "),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let identity = identity::remove_and_arrange(&image, names)?;
    write_apt_sources(&image, board)?;
    Ok(Configured { identity, bytecode })
}

/// What configuring did beyond running the scripts: the per-device identity it moved to first
/// boot, and the Python bytecode it compiled.
#[derive(Debug)]
pub struct Configured {
    /// Identity removed and the first-boot units that make it on the device.
    pub identity: identity::Arranged,
    /// Bytecode compiled, per Python 3 interpreter.
    pub bytecode: Vec<bytecode::Compiled>,
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
            status: exit_description(out.status),
            tail: tail_of(&out),
        });
    }
    Ok(())
}

fn run_scripts(
    composed: &Composed,
    sandbox: &Sandbox,
    opts: &ConfigureOptions,
    native_ca: Option<NativeCa>,
) -> Result<(), ConfigureError> {
    let profiles: Vec<maintscript::Profile> = composed
        .packages
        .iter()
        .map(|p| {
            p.control
                .files
                .get("postinst")
                .map(|f| maintscript::profile(&f.data))
                .unwrap_or_default()
        })
        .collect();
    let deps = dependency_sets(composed);
    let order = configure_order(composed, &deps, &profiles);
    let dpkg_version = composed
        .packages
        .iter()
        .find(|p| p.name == "dpkg")
        .and_then(|p| p.control.control.get("Version").map(str::to_string))
        .unwrap_or_default();
    let started = std::time::Instant::now();
    let mut preinsts = 0;
    let mut skipped = 0;
    for &i in &order {
        let pkg = &composed.packages[i];
        let Some(preinst) = pkg.control.files.get("preinst") else {
            continue;
        };
        if maintscript::preinst_is_noop_on_install(&preinst.data) {
            skipped += 1;
            continue;
        }
        run_preinst(sandbox, pkg, &dpkg_version)?;
        preinsts += 1;
    }
    if opts.timings {
        eprintln!(
            "kiln:   {preinsts} preinst scripts ({skipped} no-ops skipped) {:>7.2} s",
            started.elapsed().as_secs_f64()
        );
    }

    let started = std::time::Instant::now();
    let mut took = run_postinsts(
        composed,
        sandbox,
        &order,
        &deps,
        &profiles,
        &dpkg_version,
        RunWith {
            workers: opts.jobs,
            native_ca: native_ca.as_ref(),
            rewrites: !opts.emulate_all,
        },
    )?;
    if opts.timings {
        eprintln!(
            "kiln:   {} postinst scripts on {} workers {:>7.2} s",
            took.len(),
            opts.jobs.max(1),
            started.elapsed().as_secs_f64()
        );
        // The per-script table: every script of a second or more, slowest first, with when
        // it started and what it shares; then the sum of the rest and the workers' busy share.
        took.sort_by(|a, b| {
            b.secs
                .total_cmp(&a.secs)
                .then_with(|| a.package.cmp(&b.package))
        });
        let quick = took.iter().filter(|t| t.secs < 1.0).count();
        for t in took.iter().filter(|t| t.secs >= 1.0) {
            eprintln!(
                "kiln:     {:>7.2} s  {:<24} from {:>6.1} s  {}",
                t.secs, t.package, t.started_at, t.claims
            );
        }
        if quick > 0 {
            let sum: f64 = took.iter().filter(|t| t.secs < 1.0).map(|t| t.secs).sum();
            eprintln!("kiln:     {sum:>7.2} s  {quick} scripts of under a second each");
        }
        let busy: f64 = took.iter().map(|t| t.secs).sum();
        let wall = started.elapsed().as_secs_f64();
        if wall > 0.0 {
            eprintln!(
                "kiln:     {busy:>7.2} s  of scripts in all: the workers were busy {:.0}% of the time",
                100.0 * busy / (wall * opts.jobs.max(1) as f64)
            );
        }
    }

    // Everything is configured now; dpkg itself incorporates and runs the triggers the
    // scripts activated and those its own unpack would have (and would configure anything
    // left unconfigured).
    activate_unpack_triggers(sandbox.root(), composed)?;
    let started = std::time::Instant::now();
    let out = sandbox.run("/usr/bin/dpkg", &["--configure", "-a"], &[])?;
    if opts.timings {
        eprintln!(
            "kiln:   dpkg --configure -a (triggers) {:>7.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    if !out.status.success() {
        return Err(dpkg_failure(&out));
    }
    if let Some(native) = &native_ca {
        // The trigger's own call, made while dpkg ran it.
        native.carry_out(sandbox)?;
    }
    Ok(())
}

/// Sets up the native update-ca-certificates ([`cacerts`]) when the image's script is one kiln
/// reproduces and `emulate_all` is off: the stand-in swapped in, and the directory outside the
/// image (beside it) through which its requests reach kiln.
fn native_ca_setup(
    composed: &Composed,
    image: &ImageRoot,
    opts: &ConfigureOptions,
) -> Result<Option<(Vec<stubs::Swapped>, tempfile::TempDir, NativeCa)>, ConfigureError> {
    let Some(openssl) = composed.packages.iter().find(|p| p.name == "openssl") else {
        return Ok(None);
    };
    if opts.emulate_all {
        return Ok(None);
    }
    let Some(variant) = cacerts::known_variant(image)? else {
        return Ok(None);
    };
    let tools = cacerts::Tools {
        variant,
        rehash_sorts_names: cacerts::rehash_sorts_names(
            openssl.control.control.get("Version").unwrap_or_default(),
        ),
    };
    let root = &composed.root;
    let shared = tempfile::Builder::new()
        .prefix(".kiln-shared-")
        .tempdir_in(root.parent().unwrap_or(root))
        .map_err(|e| ConfigureError::Io {
            path: root.clone(),
            reason: format!("cannot make the sandbox's shared directory beside it: {e}"),
        })?;
    let swapped = stubs::swap(image, &[cacerts::PROGRAM], cacerts::STAND_IN)?;
    if swapped.is_empty() {
        return Ok(None);
    }
    let native = NativeCa {
        tools,
        report: opts.timings,
        shared: shared.path().to_path_buf(),
    };
    Ok(Some((swapped, shared, native)))
}

/// How the postinsts run: on how many workers, whether update-ca-certificates is made
/// natively, and whether the known slow loops run in their faster form ([`rewrite`]).
#[derive(Debug, Clone, Copy)]
struct RunWith<'a> {
    workers: usize,
    native_ca: Option<&'a NativeCa>,
    rewrites: bool,
}

/// update-ca-certificates made natively ([`cacerts`]), as the image's `tools` would;
/// `report`: say on stderr (with `--timings`) when a call is left to the real program;
/// `shared`: the host directory the stand-in writes its requests to.
#[derive(Debug, Clone)]
struct NativeCa {
    tools: cacerts::Tools,
    report: bool,
    shared: PathBuf,
}

impl NativeCa {
    /// Carries out the calls the stand-in recorded since the last time: natively where
    /// [`cacerts::update`] reproduces the script exactly, otherwise by the real program under
    /// qemu, at this same point.
    fn carry_out(&self, sandbox: &Sandbox) -> Result<(), ConfigureError> {
        let image = ImageRoot::open(sandbox.root())?;
        let shared = ImageRoot::open(&self.shared)?;
        for request in cacerts::take_requests(&shared)? {
            let started = std::time::Instant::now();
            let reason = match cacerts::update(&image, self.tools, request)? {
                cacerts::Outcome::Done { added, removed } => {
                    if self.report {
                        eprintln!(
                            "kiln:   update-ca-certificates {}natively: {added} added, {removed} removed {:>7.2} s",
                            if request.fresh { "--fresh " } else { "" },
                            started.elapsed().as_secs_f64()
                        );
                    }
                    continue;
                }
                cacerts::Outcome::Unsupported(reason) => reason,
            };
            if self.report {
                eprintln!("kiln:   update-ca-certificates runs under qemu: {reason}");
            }
            let real = format!("{}.kiln-real", cacerts::PROGRAM);
            let out = sandbox.run(&real, &request.args(), &[])?;
            if !out.status.success() {
                return Err(ConfigureError::Script {
                    package: "ca-certificates".into(),
                    script: format!("update-ca-certificates {}", request.args().join(" ")),
                    status: exit_description(out.status),
                    tail: tail_of(&out),
                });
            }
        }
        Ok(())
    }
}

/// Where dpkg-trigger records activations for dpkg to incorporate (lib/dpkg/trigdeferred.c).
const UNINCORP: &str = "var/lib/dpkg/triggers/Unincorp";

/// Adds the triggers dpkg's unpack would have activated ([`dpkgdb::unpack_activations`]) to
/// triggers/Unincorp, after what the postinsts' own `dpkg-trigger` calls wrote there. Each line
/// is `NAME AWAITER…` (src/trigger/main.c); kiln's awaiter is always `-` (none): every package
/// is configured already, and awaiting only orders configuration.
fn activate_unpack_triggers(
    root: &std::path::Path,
    composed: &Composed,
) -> Result<(), ConfigureError> {
    let image = ImageRoot::open(root)?;
    let existing = image.read(UNINCORP, 16 << 20)?.unwrap_or_default();
    let mut text = String::from_utf8_lossy(&existing).into_owned();
    let already: BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for name in dpkgdb::unpack_activations(&composed.packages) {
        if !already.contains(&name) {
            text.push_str(&format!("{name} -\n"));
        }
    }
    image.write(UNINCORP, text.as_bytes(), 0o644)?;
    Ok(())
}

/// The environment dpkg gives a maintainer script (dpkg(1), "ENVIRONMENT").
fn script_environment<'a>(
    pkg: &'a crate::pipeline::compose::Unpacked,
    script: &'a str,
    dpkg_version: &'a str,
) -> [(&'a str, &'a str); 7] {
    [
        ("DPKG_MAINTSCRIPT_PACKAGE", pkg.name.as_str()),
        ("DPKG_MAINTSCRIPT_ARCH", pkg.arch.as_str()),
        ("DPKG_MAINTSCRIPT_NAME", script),
        ("DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT", "1"),
        ("DPKG_RUNNING_VERSION", dpkg_version),
        ("DPKG_ADMINDIR", "/var/lib/dpkg"),
        ("DPKG_ROOT", ""),
    ]
}

/// Where dpkg extracts a package's control archive before running its preinst.
const TMP_CI: &str = "var/lib/dpkg/tmp.ci";

/// Runs one package's `preinst install` the way dpkg does: from the extracted control archive
/// in /var/lib/dpkg/tmp.ci (debconf derives the owning package from that location).
fn run_preinst(
    sandbox: &Sandbox,
    pkg: &crate::pipeline::compose::Unpacked,
    dpkg_version: &str,
) -> Result<(), ConfigureError> {
    let image = ImageRoot::open(sandbox.root())?;
    image.remove_all(TMP_CI)?;
    let tmp_ci = image.make_dir_all(TMP_CI)?;
    tmp_ci.write_file("control", pkg.control.control.to_string().as_bytes(), 0o644)?;
    for (name, file) in &pkg.control.files {
        tmp_ci.write_file(name, &file.data, file.mode & 0o777)?;
    }
    let out = sandbox.run(
        "/var/lib/dpkg/tmp.ci/preinst",
        &["install"],
        &script_environment(pkg, "preinst", dpkg_version),
    )?;
    image.remove_all(TMP_CI)?;
    script_outcome(pkg, "preinst", &out)
}

/// A maintainer script's run as the build sees it: fine, or the failure naming package,
/// script, exit status and last output lines.
fn script_outcome(
    pkg: &crate::pipeline::compose::Unpacked,
    script: &str,
    out: &Ran,
) -> Result<(), ConfigureError> {
    if out.status.success() {
        return Ok(());
    }
    Err(ConfigureError::Script {
        package: pkg.name.clone(),
        script: script.into(),
        status: exit_description(out.status),
        tail: tail_of(out),
    })
}

/// Runs `postinst configure ""` (a fresh install: no previously configured version) of every
/// package, in [`configure_order`], on `workers` cores (see [`schedule`] for why the result is
/// that of a one-by-one run). A script that reads the dpkg database starts after every script
/// before it and finds the status file rewritten with exactly those packages installed
/// (whatever ran after it meanwhile); at the end every package is installed. Returns the
/// seconds each script took.
fn run_postinsts(
    composed: &Composed,
    sandbox: &Sandbox,
    order: &[usize],
    deps: &[BTreeSet<usize>],
    profiles: &[maintscript::Profile],
    dpkg_version: &str,
    RunWith {
        workers,
        native_ca,
        rewrites,
    }: RunWith<'_>,
) -> Result<Vec<ScriptTime>, ConfigureError> {
    let position: BTreeMap<usize, usize> = order.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let jobs: Vec<schedule::Job> = order
        .iter()
        .map(|&i| schedule::Job {
            after: deps[i]
                .iter()
                .filter_map(|d| position.get(d).copied())
                .collect(),
            resources: profiles[i].resources.clone(),
            reads: profiles[i].reads.clone(),
            sees_all_earlier: profiles[i].reads_dpkg_database,
            runs_alone: profiles[i].runs_alone,
        })
        .collect();
    let took = std::sync::Mutex::new(Vec::new());
    let run_began = std::time::Instant::now();
    let image = ImageRoot::open(sandbox.root())?;
    // The control members that run in a faster, equivalent form while each postinst runs
    // (in `order`'s positions).
    let mut faster: Vec<Vec<(&str, Vec<u8>)>> = vec![Vec::new(); order.len()];
    if rewrites {
        for (k, &i) in order.iter().enumerate() {
            let pkg = &composed.packages[i];
            let member = |name: &str| pkg.control.files.get(name).map(|f| f.data.as_slice());
            faster[k] = rewrite::faster_members(&pkg.name, member, &image)?;
        }
    }
    let info_dir = image.dir("var/lib/dpkg/info")?.ok_or_else(|| InRootError {
        path: "/var/lib/dpkg/info".into(),
        reason: "is missing".into(),
    })?;
    let dpkg_dir = image.dir("var/lib/dpkg")?.ok_or_else(|| InRootError {
        path: "/var/lib/dpkg".into(),
        reason: "is missing".into(),
    })?;
    schedule::run_jobs(&jobs, workers, |k| {
        let pkg = &composed.packages[order[k]];
        if !pkg.control.files.contains_key("postinst") {
            return Ok(());
        }
        if jobs[k].sees_all_earlier || jobs[k].runs_alone {
            let installed: BTreeSet<usize> = order[..k].iter().copied().collect();
            write_status(&dpkg_dir, composed, &installed)?;
        }
        let info = dpkgdb::info_name(&pkg.control.control);
        let script = format!("/var/lib/dpkg/info/{info}.postinst");
        let began = std::time::Instant::now();
        // A faster form runs from the member's own path (debconf finds the config script
        // beside the postinst), and the shipped one is put back whatever the run gave.
        for (member, text) in &faster[k] {
            let mode = pkg.control.files.get(*member).map_or(0o755, |f| f.mode);
            info_dir.write_file(
                format!("{info}.{member}"),
                text,
                dpkgdb::info_file_mode(mode),
            )?;
        }
        let out = sandbox.run(
            &script,
            &["configure", ""],
            &script_environment(pkg, "postinst", dpkg_version),
        );
        for (member, _) in &faster[k] {
            if let Some(shipped) = pkg.control.files.get(*member) {
                info_dir.write_file(
                    format!("{info}.{member}"),
                    &shipped.data,
                    dpkgdb::info_file_mode(shipped.mode),
                )?;
            }
        }
        let out = out?;
        if let (Some(native), "ca-certificates") = (native_ca, pkg.name.as_str()) {
            if out.status.success() {
                native.carry_out(sandbox)?;
            }
        }
        if let Ok(mut took) = took.lock() {
            let mut claims: Vec<String> = jobs[k]
                .resources
                .iter()
                .map(|r| {
                    if jobs[k].reads.contains(r) {
                        format!("{r} (read)")
                    } else {
                        r.to_string()
                    }
                })
                .collect();
            if !faster[k].is_empty() {
                claims.push("faster form".into());
            }
            if jobs[k].runs_alone {
                claims.push("alone".into());
            } else if jobs[k].sees_all_earlier {
                claims.push("after every earlier script".into());
            }
            took.push(ScriptTime {
                secs: began.elapsed().as_secs_f64(),
                started_at: began.duration_since(run_began).as_secs_f64(),
                package: pkg.name.clone(),
                claims: claims.join(", "),
            });
        }
        script_outcome(pkg, "postinst", &out)
    })?;
    let everything: BTreeSet<usize> = order.iter().copied().collect();
    write_status(&dpkg_dir, composed, &everything)?;
    Ok(took.into_inner().unwrap_or_default())
}

/// One postinst's run, for `--timings`: how long it took, when it started (from the first
/// postinst), and what it waited for (its shared state, see [`maintscript`]), which is what
/// decides how the scripts overlap.
#[derive(Debug, Clone)]
struct ScriptTime {
    secs: f64,
    started_at: f64,
    package: String,
    claims: String,
}

/// Rewrites the dpkg status file with `installed` packages as "install ok installed" and the
/// rest still unpacked (written to a temporary file and renamed, as dpkg does, so a reader
/// never sees half a file).
fn write_status(
    dpkg_dir: &inroot::Dir,
    composed: &Composed,
    installed: &BTreeSet<usize>,
) -> Result<(), ConfigureError> {
    let mut sorted: Vec<(usize, &crate::pipeline::compose::Unpacked)> =
        composed.packages.iter().enumerate().collect();
    sorted.sort_by(|(_, a), (_, b)| a.name.cmp(&b.name).then_with(|| a.arch.cmp(&b.arch)));
    let mut text = String::new();
    for (i, pkg) in sorted {
        let state = if installed.contains(&i) {
            "installed"
        } else {
            "unpacked"
        };
        text.push_str(&dpkgdb::status_paragraph(pkg, state).to_string());
        text.push('\n');
    }
    dpkg_dir.write_file("status.kiln-new", text.as_bytes(), 0o644)?;
    Ok(dpkg_dir.rename("status.kiln-new", "status")?)
}

/// Removes [`RUN_TO_RUN_DEBRIS`] and empties [`EMPTIED`]. (Bytecode left by build-time runs
/// of Python is replaced by [`bytecode::compile`].)
fn clean(image: &ImageRoot) -> Result<(), ConfigureError> {
    for p in RUN_TO_RUN_DEBRIS {
        image.remove_file(p)?;
    }
    for p in EMPTIED {
        if let Some((dir, name)) = image.parent(p, false)? {
            if dir.kind(&name)? == Some(inroot::Kind::File) {
                dir.truncate(&name)?;
            }
        }
    }
    Ok(())
}

/// Writes /etc/apt/sources.list for the board's archive, as debootstrap and mmdebstrap do, so
/// `apt-get` on a dev unit knows where its packages came from.
fn write_apt_sources(image: &ImageRoot, board: &Board) -> Result<(), ConfigureError> {
    let Some(dir) = image.dir("/etc/apt")? else {
        return Ok(());
    };
    let line = format!(
        "deb {} {} {}\n",
        crate::transport::strip_userinfo(&board.mirror),
        board.suite,
        board.components.join(" ")
    );
    Ok(dir.write_file("sources.list", line.as_bytes(), 0o644)?)
}
