//! The check stage: `kiln check` and the checks `kiln build` runs before packing. It reads an
//! image tree ([`image`](crate::image)) and judges every ELF file against the board: architecture and float
//! ABI ([`machine`]), library resolution and symbol versions the way glibc's loader does it
//! ([`ldso`], [`needed`]), RPATH/RUNPATH policy ([`rpath`]), Python extension tags ([`pyext`]),
//! script interpreters ([`scripts`]) and code hardening ([`hardening`]). Expectations come from
//! the board's architecture and from the image itself (its libc, its Pythons, its
//! /etc/ld.so.conf), never typed twice. Files are only read, never modified.
//!
//! Findings ([`findings`]) name the package that installed the file ([`packages`]), waivers
//! from the recipe and board accept known ones ([`waiver`]), and [`report`] renders them.

pub mod elf;
pub mod findings;
pub mod hardening;
pub mod ldso;
pub mod machine;
pub mod needed;
pub mod packages;
pub mod pyext;
pub mod report;
pub mod rpath;
pub mod scripts;
pub mod secrets;
pub mod syspath;
pub mod venv;
pub mod waiver;

use crate::arch::DebianArch;
use crate::image::{ImageTree, Kind};
use elf::ElfFacts;
use findings::{Check, Finding, Severity};
use std::collections::BTreeMap;
use std::sync::Arc;
use waiver::Waiver;

/// What to check against.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The board's architecture.
    pub arch: DebianArch,
    /// Waivers of the recipe and board.
    pub waivers: Vec<Waiver>,
    /// Daemon prefixes (see [`rpath::DEFAULT_DAEMON_PREFIXES`]).
    pub daemon_prefixes: Vec<String>,
    /// Today, as days since 1970-01-01 (waiver expiry).
    pub today: i64,
    /// Start each Python env under qemu and check its sys.path ([`syspath`]), materialising
    /// the image in this private scratch directory; None: files only.
    pub run_envs: Option<std::path::PathBuf>,
}

impl CheckOptions {
    /// Options for `arch` with the default daemon prefixes, no waivers, today's date.
    pub fn new(arch: DebianArch) -> CheckOptions {
        CheckOptions {
            arch,
            waivers: Vec::new(),
            daemon_prefixes: rpath::DEFAULT_DAEMON_PREFIXES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            today: crate::timefmt::today(),
            run_envs: None,
        }
    }
}

/// The result of checking one image.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was checked.
    pub source: String,
    /// The board architecture.
    pub arch: DebianArch,
    /// Regular files looked at (hard links once).
    pub files: usize,
    /// ELF files among them.
    pub elf_objects: usize,
    /// The image's glibc, by its newest GLIBC_ version.
    pub glibc: Option<String>,
    /// Every finding, sorted by severity, path, check, message.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Findings at error severity that no waiver accepted.
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error && f.waived.is_none())
            .count()
    }
}

/// What stopped the build's check gate: how many unwaived errors block it, the first one in
/// one line (what firmware CI shows), and the whole report (what the terminal shows).
#[derive(Debug, Clone)]
pub struct Blocked {
    /// Unwaived errors that block.
    pub errors: usize,
    /// The first of them: `CHECK PATH: MESSAGE`.
    pub first: String,
    /// Everything the check found.
    pub report: Report,
}

/// The gate `kiln build` puts before a layer is packed, for the base and for each overlay
/// alike: checks `image` and refuses it while an unwaived error that `blocks` accepts remains
/// (the base: every one; an overlay: those on paths it changed, as the base's own findings
/// were judged with the base).
pub fn gate(
    image: &ImageTree,
    opts: &CheckOptions,
    blocks: impl Fn(&Finding) -> bool,
) -> Result<Report, Box<Blocked>> {
    let report = check_image(image, opts);
    let blocking: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error && f.waived.is_none() && blocks(f))
        .collect();
    let Some(first) = blocking.first() else {
        return Ok(report);
    };
    let (errors, first) = (
        blocking.len(),
        format!("{} {}: {}", first.check, first.path, first.message),
    );
    Err(Box::new(Blocked {
        errors,
        first,
        report,
    }))
}

/// What the first bytes of a file say it is.
enum Classified {
    Elf(Arc<ElfFacts>),
    Corrupt(String),
    Script(Vec<u8>),
    Other,
}

fn classify(image: &ImageTree, path: &str, executable: bool) -> (Classified, Option<String>) {
    let head = match image.read_head(path, scripts::HEAD) {
        Ok(h) => h,
        Err(e) => return (Classified::Corrupt(format!("cannot read: {e}")), None),
    };
    if elf::has_magic(&head) {
        let data = match image.read(path) {
            Ok(d) => d,
            Err(e) => return (Classified::Corrupt(format!("cannot read: {e}")), None),
        };
        return match elf::parse(&data) {
            Ok(f) => (Classified::Elf(Arc::new(f)), None),
            Err(e) => (Classified::Corrupt(e.0), None),
        };
    }
    let secret = image
        .read(path)
        .ok()
        .and_then(|data| secrets::private_key_in(&data));
    if executable && head.starts_with(b"#!") {
        return (Classified::Script(head), secret);
    }
    (Classified::Other, secret)
}

/// Checks a whole image.
pub fn check_image(image: &ImageTree, opts: &CheckOptions) -> Report {
    let arch = opts.arch;
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut files: Vec<(&str, bool)> = Vec::new();
    for (path, node) in image.iter() {
        if node.kind != Kind::File {
            continue;
        }
        match &node.alias_of {
            Some(first) => aliases.entry(first.clone()).or_default().push(path.clone()),
            None => files.push((path.as_str(), node.mode & 0o111 != 0)),
        }
    }

    // Reading and parsing is the expensive part: spread it over the cores.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let chunk = files.len().div_ceil(workers).max(1);
    let classified: Vec<(&str, (Classified, Option<String>))> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(p, x)| (*p, classify(image, p, *x)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });

    let mut findings = Vec::new();
    let mut all_elf: BTreeMap<String, Arc<ElfFacts>> = BTreeMap::new();
    let mut scripts_found = Vec::new();
    for (path, (c, secret)) in classified {
        if let Some(what) = secret {
            findings.push(Finding::new(
                Check::BakedSecret,
                path,
                format!("holds {what}: every unit flashed from this image would share it; make it on the device (first boot) or waive it by path with a reason"),
            ));
        }
        match c {
            Classified::Elf(f) => {
                all_elf.insert(path.to_string(), f);
            }
            Classified::Corrupt(why) => findings.push(Finding::new(Check::ElfCorrupt, path, why)),
            Classified::Script(head) => scripts_found.push((path, head)),
            Classified::Other => {}
        }
    }
    let facts_of = |p: &str| -> Option<Arc<ElfFacts>> {
        if let Some(f) = all_elf.get(p) {
            return Some(f.clone());
        }
        let first = image.get(p)?.alias_of.as_deref()?;
        all_elf.get(first).cloned()
    };
    let privileged = |p: &str| image.get(p).is_some_and(|n| n.is_privileged());

    let rules = ldso::LoaderRules::new(image, arch);
    let pythons = pyext::image_pythons(image);
    let mut userland: needed::Objects = BTreeMap::new();
    for (path, facts) in &all_elf {
        if !machine::check_arch(path, facts, arch, &mut findings) {
            continue;
        }
        machine::check_arm_float(path, facts, arch, &mut findings);
        machine::check_interp(path, facts, image, arch, &facts_of, &mut findings);
        let has_paths = facts.rpath.is_some() || facts.runpath.is_some();
        rpath::check_rpaths(
            path,
            facts,
            has_paths && privileged(path),
            image,
            &rules,
            &opts.daemon_prefixes,
            &mut findings,
        );
        hardening::check_hardening(path, facts, &mut findings);
        let env_python = rpath::daemon_prefix(path, &opts.daemon_prefixes)
            .and_then(|prefix| env_python_version(image, &prefix));
        pyext::check_pyext(path, arch, &pythons, env_python.as_deref(), &mut findings);
        userland.insert(path.clone(), facts.clone());
    }
    let res = needed::resolve_all(image, &rules, &userland, &privileged, &facts_of);
    let owners = packages::Owners::read(image);
    let relations = packages::Relations::read(image);
    let provider =
        |object: &str, soname: &str| relations.provider_note(owners.owner(object), soname);
    needed::needed_findings(&res, &rules.default_dirs(), &provider, &mut findings);
    needed::symbol_version_findings(&userland, &res, &facts_of, &mut findings);
    let pending = packages::pending_alternatives(image);
    for (path, head) in &scripts_found {
        scripts::check_script(path, head, image, &pending, &mut findings);
    }
    venv::check_envs(image, &mut findings);
    if let Some(scratch) = &opts.run_envs {
        syspath::check_sys_paths(image, scratch, arch, &mut findings);
    }

    let glibc = image_glibc(image, &rules, &facts_of);
    for f in &mut findings {
        f.package = owners.owner(&f.path).map(str::to_string);
        if let Some(a) = aliases.get(&f.path) {
            f.aliases = a.clone();
        }
    }
    waiver::apply(&mut findings, &opts.waivers, opts.today);
    findings.sort_by(|a, b| {
        (a.severity, &a.path, a.check, &a.message).cmp(&(b.severity, &b.path, b.check, &b.message))
    });
    findings.dedup();
    Report {
        source: image.source.clone(),
        arch,
        files: files.len(),
        elf_objects: all_elf.len(),
        glibc,
        findings,
    }
}

/// The `version` of a venv's pyvenv.cfg, as "3.5".
pub(crate) fn env_python_version(image: &ImageTree, prefix: &str) -> Option<String> {
    let cfg = image
        .read(&image.resolve(&format!("{prefix}/pyvenv.cfg"))?)
        .ok()?;
    let text = String::from_utf8_lossy(&cfg).into_owned();
    let line = text.lines().find(|l| {
        let k = l.split('=').next().unwrap_or("").trim();
        k == "version" || k == "version_info"
    })?;
    let v = line.split('=').nth(1)?.trim();
    let mut parts = v.split('.');
    Some(format!("{}.{}", parts.next()?, parts.next()?))
}

/// The image's glibc version: the newest GLIBC_2.x its libc.so.6 defines.
fn image_glibc(
    image: &ImageTree,
    rules: &ldso::LoaderRules,
    facts_of: &dyn Fn(&str) -> Option<Arc<ElfFacts>>,
) -> Option<String> {
    rules.default_dirs().iter().find_map(|d| {
        let p = image.resolve(&format!("{d}/libc.so.6"))?;
        let f = facts_of(&p)?;
        needed::newest_glibc(&f.defined_versions).map(str::to_string)
    })
}
