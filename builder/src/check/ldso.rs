//! Library resolution the way glibc's dynamic loader does it, inside an image instead of the
//! running system (glibc `elf/dl-load.c`, `_dl_map_object`, and ld.so(8)):
//!
//! 1. a needed name with a `/` is a path, used as is;
//! 2. DT_RPATH of the object, then of its loaders up to the executable, but only when the object
//!    has no DT_RUNPATH (and only from loaders without one);
//! 3. (LD_LIBRARY_PATH: nothing on a booted robot sets it);
//! 4. the object's own DT_RUNPATH (not inherited by what it loads);
//! 5. /etc/ld.so.cache, the cache ldconfig built from /etc/ld.so.conf, unless DF_1_NODEFLIB:
//!    kiln reads the image's own cache file ([`parse_ld_so_cache`]), so a library added after
//!    ldconfig last ran is not found there, exactly as on the robot;
//! 6. the default directories, unless DF_1_NODEFLIB: on Debian's multiarch glibc
//!    /lib/TRIPLET, /usr/lib/TRIPLET, /lib, /usr/lib.
//!
//! A candidate is taken only when it is an ELF shared object of the loader's class, byte order,
//! machine and (ARM) float ABI; otherwise the search goes on, as glibc's `open_verify` does.
//! `$ORIGIN`, `$LIB` and `$PLATFORM` are expanded (also as `${...}`); in a setuid, setgid or
//! capability program the loader ignores relative entries and entries with `$ORIGIN` anywhere
//! but at the start (secure mode).
//!
//! Hand-written because no crate models glibc's rules against an image that is not the host.

use super::elf::{ElfFacts, ET_DYN};
use crate::arch::DebianArch;
use crate::image::{parent, ImageTree, Kind};
use std::collections::BTreeSet;

/// The `/etc/ld.so.conf` directories, in order, with includes and globs expanded.
pub fn ld_so_conf_dirs(image: &ImageTree) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut visited = BTreeSet::new();
    read_conf(image, "/etc/ld.so.conf", &mut dirs, &mut visited, 0);
    let mut seen = BTreeSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

fn read_conf(
    image: &ImageTree,
    path: &str,
    dirs: &mut Vec<String>,
    visited: &mut BTreeSet<String>,
    depth: usize,
) {
    if depth > 16 {
        return;
    }
    let Some((resolved, node)) = image.lookup(path) else {
        return;
    };
    if node.kind != Kind::File || !visited.insert(resolved.clone()) {
        return;
    }
    let Ok(bytes) = image.read(&resolved) else {
        return;
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    for entry in parse_ld_so_conf(&text) {
        match entry {
            ConfEntry::Include(pattern) => {
                let pattern = if pattern.starts_with('/') {
                    pattern
                } else {
                    format!("{}/{pattern}", parent(path))
                };
                for file in glob_image(image, &pattern) {
                    read_conf(image, &file, dirs, visited, depth + 1);
                }
            }
            ConfEntry::Dir(d) => dirs.push(d),
        }
    }
}

/// One meaningful line of an ld.so.conf file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfEntry {
    /// `include PATTERN`: more configuration files, a glob.
    Include(String),
    /// A library directory.
    Dir(String),
}

/// Parses ld.so.conf text as ldconfig does (`parse_conf` in glibc `elf/ldconfig.c`): `#` starts
/// a comment, `include` takes one or more glob patterns, `hwcap` lines are obsolete and skipped,
/// anything else names a directory (an `=TYPE` suffix from libc5 days is dropped, as are
/// trailing slashes).
pub fn parse_ld_so_conf(text: &str) -> Vec<ConfEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("include") => {
                out.extend(words.map(|w| ConfEntry::Include(w.to_string())));
            }
            Some("hwcap") => {}
            _ => {
                for dir in line.split([' ', '\t', ',', ':']).filter(|d| !d.is_empty()) {
                    let dir = dir.split('=').next().unwrap_or(dir);
                    let trimmed = dir.trim_end_matches('/');
                    let dir = if trimmed.is_empty() { "/" } else { trimmed };
                    out.push(ConfEntry::Dir(dir.to_string()));
                }
            }
        }
    }
    out
}

/// Expands a glob pattern against the image (sorted, as glob(3) returns it).
fn glob_image(image: &ImageTree, pattern: &str) -> Vec<String> {
    let mut current = vec!["/".to_string()];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        let is_glob = comp.contains(['*', '?', '[']);
        let matcher = glob::Pattern::new(comp).ok();
        for base in &current {
            let Some(dir) = image.resolve(base) else {
                continue;
            };
            if is_glob {
                let Some(m) = &matcher else { continue };
                for child in image.children(&dir) {
                    if !child.starts_with('.') && m.matches(child) {
                        next.push(join2(base, child));
                    }
                }
            } else {
                next.push(join2(base, comp));
            }
        }
        next.sort();
        current = next;
    }
    current
        .into_iter()
        .filter(|p| image.lookup(p).is_some())
        .collect()
}

fn join2(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// One entry of ld.so.cache: a soname and the path ldconfig found it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// ldconfig's flags: the ELF type and the architecture (`FLAG_*` in glibc's dl-cache.h).
    pub flags: i32,
    /// The soname.
    pub key: String,
    /// The library's path.
    pub value: String,
}

const CACHE_MAGIC_OLD: &[u8] = b"ld.so-1.7.0";
const CACHE_MAGIC_NEW: &[u8] = b"glibc-ld.so.cache1.1";

/// Parses ld.so.cache (glibc `elf/dl-cache.c`): the new format ("glibc-ld.so.cache1.1", a
/// 48-byte header, 24-byte entries, string offsets from the header's start), alone or after the
/// old libc5-compatible table that glibc before 2.32 wrote first.
pub fn parse_ld_so_cache(data: &[u8]) -> Result<Vec<CacheEntry>, String> {
    let u32_at = |off: usize| -> Result<u32, String> {
        data.get(off..off + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| format!("truncated at byte {off}"))
    };
    let mut start = 0usize;
    if data.starts_with(CACHE_MAGIC_OLD) {
        // Old header: magic (11 bytes) + nlibs (u32, aligned to 12), entries of 12 bytes.
        let nlibs = u32_at(12)? as usize;
        let end = nlibs
            .checked_mul(12)
            .and_then(|n| n.checked_add(16))
            .ok_or("old table size overflows")?;
        start = end.checked_add(7).ok_or("old table size overflows")? & !7;
        if data.get(start..start + CACHE_MAGIC_NEW.len()) != Some(CACHE_MAGIC_NEW) {
            start = end;
        }
    }
    if data.get(start..start + CACHE_MAGIC_NEW.len()) != Some(CACHE_MAGIC_NEW) {
        return Err("not a glibc ld.so.cache (no glibc-ld.so.cache1.1 table)".into());
    }
    let nlibs = u32_at(start + 20)? as usize;
    let table = start + 48;
    let mut out = Vec::with_capacity(nlibs.min(65_536));
    let string = |off: u32| -> Result<String, String> {
        let from = start
            .checked_add(off as usize)
            .ok_or("string offset overflows")?;
        let rest = data
            .get(from..)
            .ok_or_else(|| format!("string at {from} is outside the file"))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or("unterminated string")?;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    for i in 0..nlibs {
        let at = i
            .checked_mul(24)
            .and_then(|o| o.checked_add(table))
            .ok_or("entry offset overflows")?;
        let flags = u32_at(at)? as i32;
        let key = string(u32_at(at + 4)?)?;
        let value = string(u32_at(at + 8)?)?;
        out.push(CacheEntry { flags, key, value });
    }
    Ok(out)
}

/// The `flags` ld.so accepts from cache entries on an architecture: FLAG_ELF_LIBC6 (3) plus
/// the architecture's required flag (`_DL_CACHE_DEFAULT_ID` in glibc's sysdeps).
pub fn cache_flags(arch: DebianArch) -> i32 {
    3 | match arch {
        DebianArch::Amd64 => 0x0300,
        DebianArch::Armhf => 0x0900,
        DebianArch::Arm64 => 0x0a00,
        DebianArch::Armel => 0x0b00,
    }
}

/// What the loader's expectations are, from the board's architecture.
#[derive(Debug, Clone)]
pub struct LoaderRules {
    /// The architecture.
    pub arch: DebianArch,
    /// The image's /etc/ld.so.cache entries for the architecture (soname, path), in file order;
    /// None when the image has no readable cache.
    pub cache: Option<Vec<(String, String)>>,
    /// Why the cache could not be used, when the image has one.
    pub cache_problem: Option<String>,
    /// The /etc/ld.so.conf directories, includes and globs expanded: what ldconfig caches.
    pub conf_dirs: Vec<String>,
}

impl LoaderRules {
    /// The rules for `arch` inside `image`.
    pub fn new(image: &ImageTree, arch: DebianArch) -> LoaderRules {
        let mut rules = LoaderRules {
            arch,
            cache: None,
            cache_problem: None,
            conf_dirs: ld_so_conf_dirs(image),
        };
        let Some((path, _)) = image.lookup("/etc/ld.so.cache") else {
            return rules;
        };
        let parsed = image
            .read(&path)
            .map_err(|e| e.to_string())
            .and_then(|d| parse_ld_so_cache(&d));
        match parsed {
            Ok(entries) => {
                let want = cache_flags(arch);
                rules.cache = Some(
                    entries
                        .into_iter()
                        .filter(|e| e.flags == want)
                        .map(|e| (e.key, e.value))
                        .collect(),
                );
            }
            Err(e) => rules.cache_problem = Some(e),
        }
        rules
    }

    /// Debian's default search directories (glibc built with multiarch slibdir/libdir).
    pub fn default_dirs(&self) -> Vec<String> {
        let t = self.arch.multiarch_triplet();
        vec![
            format!("/lib/{t}"),
            format!("/usr/lib/{t}"),
            "/lib".into(),
            "/usr/lib".into(),
        ]
    }

    /// What `$LIB` expands to: Debian's glibc sets it to the multiarch library directory.
    pub fn dst_lib(&self) -> String {
        format!("lib/{}", self.arch.multiarch_triplet())
    }

    /// What `$PLATFORM` (AT_PLATFORM from the kernel) is on the board.
    pub fn dst_platform(&self) -> &'static str {
        match self.arch {
            DebianArch::Arm64 => "aarch64",
            DebianArch::Armhf => "v7l",
            DebianArch::Armel => "v5l",
            DebianArch::Amd64 => "x86_64",
        }
    }

    /// Why the loader would skip `facts` as a library for this board, or None when it fits.
    pub fn mismatch(&self, facts: &ElfFacts) -> Option<String> {
        let want = self.arch.elf_identity();
        if facts.is_64 != want.is_64 {
            return Some(format!(
                "wrong ELF class ({}-bit)",
                if facts.is_64 { 64 } else { 32 }
            ));
        }
        if facts.little_endian != want.little_endian {
            return Some("wrong byte order".into());
        }
        if facts.machine != want.machine {
            return Some(format!("wrong machine (e_machine {})", facts.machine));
        }
        if facts.e_type != ET_DYN {
            return Some("not a shared object".into());
        }
        if let Some(abi) = super::machine::arm_float_abi(facts) {
            if abi.conflicts_with(self.arch.float_abi()) {
                return Some(format!("wrong float ABI ({})", abi.describe()));
            }
        }
        None
    }
}

/// One object as the loader sees it while searching: where it was loaded from and its facts.
#[derive(Debug, Clone, Copy)]
pub struct Loaded<'a> {
    /// The path it was found at (not symlink-resolved, as glibc keeps it for `$ORIGIN` of
    /// libraries; the executable's is resolved like /proc/self/exe).
    pub path: &'a str,
    /// Its facts.
    pub facts: &'a ElfFacts,
}

/// One step of a search, for the evidence in a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Where the directory came from: "RPATH of /x", "RUNPATH", "ld.so.conf", "default".
    pub from: String,
    /// The candidate path tried.
    pub candidate: String,
    /// What happened: "found", "missing", or why it was skipped.
    pub outcome: String,
}

/// The result of searching one needed name.
#[derive(Debug, Clone)]
pub struct Search {
    /// The path found (as found, and resolved), if any.
    pub found: Option<(String, String)>,
    /// Every directory tried, in order.
    pub trace: Vec<Step>,
}

impl Search {
    /// The trace as one line.
    pub fn trace_line(&self) -> String {
        self.trace
            .iter()
            .map(|s| format!("{} [{}]: {}", s.candidate, s.from, s.outcome))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Expands the dynamic string tokens of one RPATH/RUNPATH entry, or None when the loader
/// ignores the entry (secure mode rules, unknown token).
pub fn expand_entry(
    entry: &str,
    origin: &str,
    rules: &LoaderRules,
    secure: bool,
) -> Result<String, String> {
    if secure {
        if !entry.starts_with('/')
            && !entry.starts_with("$ORIGIN")
            && !entry.starts_with("${ORIGIN}")
        {
            return Err("relative entry ignored in a setuid/setgid/capability program".into());
        }
        let origin_later = entry
            .match_indices("$ORIGIN")
            .chain(entry.match_indices("${ORIGIN}"))
            .any(|(i, _)| i != 0);
        if origin_later {
            return Err(
                "$ORIGIN not at the start is ignored in a setuid/setgid/capability program".into(),
            );
        }
    }
    let mut out = entry.to_string();
    for (token, value) in [
        ("ORIGIN", origin.to_string()),
        ("LIB", rules.dst_lib()),
        ("PLATFORM", rules.dst_platform().to_string()),
    ] {
        out = out
            .replace(&format!("${{{token}}}"), &value)
            .replace(&format!("${token}"), &value);
    }
    if out.contains('$') {
        return Err(format!("unknown dynamic string token in '{entry}'"));
    }
    Ok(out)
}

/// Splits an RPATH/RUNPATH value into entries as the loader does (`:` separated; an empty
/// entry means the current directory).
pub fn split_path_list(value: &str) -> Vec<&str> {
    value.split(':').collect()
}

/// Searches `name` needed by `object`, loaded by `chain` (nearest loader first, executable
/// last). `facts_of` parses a candidate file of the image (None when it is not ELF or broken).
pub fn search<'a>(
    image: &ImageTree,
    rules: &LoaderRules,
    object: Loaded<'a>,
    chain: &[Loaded<'a>],
    name: &str,
    secure: bool,
    facts_of: &dyn Fn(&str) -> Option<std::sync::Arc<ElfFacts>>,
) -> Search {
    let mut trace = Vec::new();
    let try_candidate =
        |from: &str, candidate: String, trace: &mut Vec<Step>| -> Option<(String, String)> {
            let outcome;
            let found = match image.lookup(&candidate) {
                None => {
                    outcome = "missing".to_string();
                    None
                }
                Some((resolved, node)) if node.kind == Kind::File => match facts_of(&resolved) {
                    None => {
                        outcome = "skipped: not a valid ELF file".into();
                        None
                    }
                    Some(f) => match rules.mismatch(&f) {
                        Some(why) => {
                            outcome = format!("skipped: {why}");
                            None
                        }
                        None => {
                            outcome = if resolved == candidate {
                                "found".into()
                            } else {
                                format!("found ({resolved})")
                            };
                            Some((candidate.clone(), resolved))
                        }
                    },
                },
                Some(_) => {
                    outcome = "skipped: not a regular file".into();
                    None
                }
            };
            trace.push(Step {
                from: from.to_string(),
                candidate,
                outcome,
            });
            found
        };

    if name.contains('/') {
        let found = if name.starts_with('/') {
            try_candidate("path in DT_NEEDED", name.to_string(), &mut trace)
        } else {
            trace.push(Step {
                from: "path in DT_NEEDED".into(),
                candidate: name.into(),
                outcome: "relative to the working directory: cannot be known".into(),
            });
            None
        };
        return Search { found, trace };
    }

    let mut path_lists: Vec<(String, &str, String)> = Vec::new();
    if object.facts.runpath.is_none() {
        for l in std::iter::once(&object).chain(chain.iter()) {
            if l.facts.runpath.is_some() {
                continue;
            }
            if let Some(rp) = &l.facts.rpath {
                path_lists.push((
                    format!("RPATH of {}", l.path),
                    rp.as_str(),
                    parent(l.path).to_string(),
                ));
            }
        }
    }
    if let Some(rp) = &object.facts.runpath {
        path_lists.push((
            "RUNPATH".to_string(),
            rp.as_str(),
            parent(object.path).to_string(),
        ));
    }
    for (from, list, origin) in &path_lists {
        for entry in split_path_list(list) {
            if entry.is_empty() {
                trace.push(Step {
                    from: from.clone(),
                    candidate: format!("./{name}"),
                    outcome: "empty entry means the working directory: cannot be known".into(),
                });
                continue;
            }
            match expand_entry(entry, origin, rules, secure) {
                Err(why) => trace.push(Step {
                    from: from.clone(),
                    candidate: format!("{entry}/{name}"),
                    outcome: format!("skipped: {why}"),
                }),
                Ok(dir) if !dir.starts_with('/') => trace.push(Step {
                    from: from.clone(),
                    candidate: format!("{dir}/{name}"),
                    outcome: "relative to the working directory: cannot be known".into(),
                }),
                Ok(dir) => {
                    if let Some(f) =
                        try_candidate(from, join2(dir.trim_end_matches('/'), name), &mut trace)
                    {
                        return Search {
                            found: Some(f),
                            trace,
                        };
                    }
                }
            }
        }
    }
    if !object.facts.nodeflib {
        match &rules.cache {
            Some(entries) => {
                for (_, value) in entries.iter().filter(|(k, _)| k == name) {
                    if let Some(f) = try_candidate("ld.so.cache", value.clone(), &mut trace) {
                        return Search {
                            found: Some(f),
                            trace,
                        };
                    }
                }
            }
            None => trace.push(Step {
                from: "ld.so.cache".into(),
                candidate: "/etc/ld.so.cache".into(),
                outcome: rules
                    .cache_problem
                    .clone()
                    .unwrap_or_else(|| "not in the image".into()),
            }),
        }
        // What ldconfig would cache but has not: the loader will not look there.
        for dir in &rules.conf_dirs {
            let candidate = join2(dir, name);
            let cached = rules
                .cache
                .as_ref()
                .is_some_and(|c| c.iter().any(|(k, v)| k == name && *v == candidate));
            if !cached && image.lookup(&candidate).is_some() {
                trace.push(Step {
                    from: "ld.so.conf".into(),
                    candidate,
                    outcome: "present but not in ld.so.cache (run ldconfig): the loader does not look here".into(),
                });
            }
        }
        for dir in rules.default_dirs() {
            if let Some(f) = try_candidate("default", join2(&dir, name), &mut trace) {
                return Search {
                    found: Some(f),
                    trace,
                };
            }
        }
    }
    Search { found: None, trace }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ld_so_conf_lines() {
        let text = "# comment\ninclude /etc/ld.so.conf.d/*.conf\n/usr/local/lib/ # trailing\nhwcap 1 x\n/opt/a:/opt/b\n";
        assert_eq!(
            parse_ld_so_conf(text),
            vec![
                ConfEntry::Include("/etc/ld.so.conf.d/*.conf".into()),
                ConfEntry::Dir("/usr/local/lib".into()),
                ConfEntry::Dir("/opt/a".into()),
                ConfEntry::Dir("/opt/b".into()),
            ]
        );
    }

    #[test]
    fn the_host_ld_so_cache_parses() {
        let Ok(data) = std::fs::read("/etc/ld.so.cache") else {
            return;
        };
        let entries = parse_ld_so_cache(&data).expect("host cache parses");
        assert!(!entries.is_empty());
        assert!(entries
            .iter()
            .all(|e| e.value.starts_with('/') && e.value.ends_with(&e.key)
                || e.value.starts_with('/')));
        #[cfg(target_arch = "x86_64")]
        assert!(entries
            .iter()
            .any(|e| e.key == "libc.so.6" && e.flags == cache_flags(DebianArch::Amd64)));
        for n in 0..data.len().min(200) {
            let _ = parse_ld_so_cache(&data[..n]);
        }
    }

    #[test]
    fn tokens_expand_and_secure_mode_ignores_what_glibc_ignores() {
        let image = ImageTree::default();
        let rules = LoaderRules {
            arch: DebianArch::Arm64,
            cache: None,
            cache_problem: None,
            conf_dirs: Vec::new(),
        };
        let _ = &image;
        assert_eq!(
            expand_entry("$ORIGIN/../lib", "/opt/x/bin", &rules, false).as_deref(),
            Ok("/opt/x/bin/../lib")
        );
        assert_eq!(
            expand_entry("/usr/${LIB}/x", "/", &rules, false).as_deref(),
            Ok("/usr/lib/aarch64-linux-gnu/x")
        );
        assert!(expand_entry("lib", "/", &rules, true).is_err());
        assert!(expand_entry("/opt/$ORIGIN", "/", &rules, true).is_err());
        assert!(expand_entry("$ORIGIN/lib", "/", &rules, true).is_ok());
        assert!(expand_entry("$FOO/lib", "/", &rules, false).is_err());
    }
}
