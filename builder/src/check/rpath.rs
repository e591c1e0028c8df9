//! The RPATH/RUNPATH checks: where an object tells the loader to look first. An entry that
//! points at a build directory, the working directory, a world-writable place, or out of the
//! daemon prefix the object lives in is how an image loads the wrong library on a robot (or
//! lets someone else choose it).
//!
//! One finding per entry and check, so a waiver can accept exactly one of them.

use super::elf::ElfFacts;
use super::findings::{Check, Finding};
use super::ldso::{expand_entry, split_path_list, LoaderRules};
use crate::image::{parent, ImageTree, Kind};

/// Path prefixes that are build directories on CI runners and developer machines, never on a
/// robot: home and root's home, Debian's buildd and sbuild trees, Yocto/Buildroot work trees,
/// GitHub and GitLab runners' checkouts, Jenkins workspaces, /usr/src.
pub const BUILD_DIR_PREFIXES: &[&str] = &[
    "/home/",
    "/root/",
    "/build/",
    "/builds/",
    "/tmp/",
    "/var/tmp/",
    "/usr/src/",
    "/workspace/",
    "/work/",
    "/__w/",
    "/var/lib/jenkins/",
    "/srv/jenkins/",
    "/sbuild/",
    "/opt/buildagent/",
];

/// Path components that mark a build tree anywhere in a path.
pub const BUILD_DIR_MARKERS: &[&str] = &[
    "/build/",
    "/_build/",
    "/tmp/work/",
    "/builddir/",
    "/.cache/",
];

/// Directories whose contents anyone can replace.
pub const UNSAFE_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];

/// Daemon prefixes, as glob-like patterns where `*` is one path component: an object inside
/// one must not reach outside it, except into the system library directories.
pub const DEFAULT_DAEMON_PREFIXES: &[&str] = &["/opt/envs/*", "/var/lib/python3/envs/*"];

/// The daemon prefix `path` lives in, if any.
pub fn daemon_prefix(path: &str, patterns: &[String]) -> Option<String> {
    for pattern in patterns {
        let pat: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        if comps.len() <= pat.len() {
            continue;
        }
        if pat.iter().zip(&comps).all(|(p, c)| *p == "*" || p == c) {
            return Some(format!("/{}", comps[..pat.len()].join("/")));
        }
    }
    None
}

/// Normalises `..` and `.` lexically (for comparing an expanded entry with a prefix).
fn lexical(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

fn under(path: &str, dir: &str) -> bool {
    path == dir || path.starts_with(&format!("{}/", dir.trim_end_matches('/')))
}

/// Runs every rpath-* check on one object.
#[allow(clippy::too_many_arguments)]
pub fn check_rpaths(
    path: &str,
    facts: &ElfFacts,
    privileged: bool,
    image: &ImageTree,
    rules: &LoaderRules,
    prefixes: &[String],
    out: &mut Vec<Finding>,
) {
    let defaults = rules.default_dirs();
    let prefix = daemon_prefix(path, prefixes);
    for (tag, value) in [("RPATH", &facts.rpath), ("RUNPATH", &facts.runpath)] {
        let Some(value) = value else { continue };
        let evidence = format!("{tag} '{value}'");
        let entries = split_path_list(value);
        let mut seen: Vec<String> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let finding = |check: Check, what: String| {
                Finding::new(check, path, format!("{tag} entry {} {what}", i + 1))
                    .evidence([evidence.clone()])
            };
            if entry.is_empty() {
                let place = if i == 0 {
                    "leading ':'"
                } else if i == entries.len() - 1 {
                    "trailing ':'"
                } else {
                    "'::'"
                };
                out.push(finding(
                    Check::RpathEmpty,
                    format!("is empty ({place}): the loader searches the working directory"),
                ));
                if privileged {
                    out.push(finding(
                        Check::RpathSetuid,
                        "is empty in a setuid/setgid/capability file".into(),
                    ));
                }
                continue;
            }
            let has_origin = entry.contains("$ORIGIN") || entry.contains("${ORIGIN}");
            let starts_origin = entry.starts_with("$ORIGIN") || entry.starts_with("${ORIGIN}");
            if !entry.starts_with('/') && !starts_origin && !entry.starts_with('$') {
                out.push(finding(
                    Check::RpathRelative,
                    format!("'{entry}' is relative to the working directory"),
                ));
            }
            if privileged {
                let why = if !entry.starts_with('/') && !starts_origin {
                    Some("is relative")
                } else if has_origin && !starts_origin {
                    Some("has $ORIGIN not at its start")
                } else if has_origin {
                    Some("uses $ORIGIN, which the loader ignores in secure mode")
                } else {
                    None
                };
                if let Some(why) = why {
                    out.push(finding(
                        Check::RpathSetuid,
                        format!("'{entry}' {why} in a setuid/setgid/capability file"),
                    ));
                }
            }
            let Ok(expanded) = expand_entry(entry, parent(path), rules, false) else {
                continue;
            };
            if !expanded.starts_with('/') {
                continue;
            }
            let norm = lexical(&expanded);
            if !has_origin {
                let builddir = BUILD_DIR_PREFIXES
                    .iter()
                    .any(|p| under(&norm, p.trim_end_matches('/')))
                    || BUILD_DIR_MARKERS
                        .iter()
                        .any(|m| format!("{norm}/").contains(m));
                if builddir {
                    out.push(finding(
                        Check::RpathBuilddir,
                        format!("'{entry}' points at a build directory"),
                    ));
                }
            }
            let resolved = image.resolve(&expanded);
            let unsafe_place = UNSAFE_DIRS.iter().any(|d| under(&norm, d));
            let world_writable = resolved
                .as_deref()
                .and_then(|r| image.get(r))
                .is_some_and(|n| n.kind == Kind::Dir && n.mode & 0o002 != 0);
            if unsafe_place || world_writable {
                out.push(finding(
                    Check::RpathUnsafeDir,
                    format!("'{entry}' is a world-writable or temporary directory"),
                ));
            }
            if let Some(prefix) = &prefix {
                let inside = under(&norm, prefix);
                let system = defaults.contains(&norm);
                if !inside && !system {
                    out.push(finding(
                        Check::RpathOutsidePrefix,
                        format!("'{entry}' ({norm}) leaves the daemon prefix {prefix}"),
                    ));
                }
            }
            let key = resolved.clone().unwrap_or_else(|| norm.clone());
            let is_default = defaults
                .iter()
                .any(|d| image.resolve(d).as_deref() == Some(key.as_str()) || *d == norm);
            if is_default {
                out.push(finding(
                    Check::RpathRedundant,
                    format!("'{entry}' is a default library directory"),
                ));
            } else if seen.contains(&key) {
                out.push(finding(
                    Check::RpathRedundant,
                    format!("'{entry}' repeats an earlier entry"),
                ));
            }
            seen.push(key);
            let is_dir = resolved
                .as_deref()
                .and_then(|r| image.get(r))
                .is_some_and(|n| n.kind == Kind::Dir);
            if !is_dir {
                out.push(finding(
                    Check::RpathMissingDir,
                    format!("'{entry}' ({norm}) is not a directory in the image"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_prefixes_match_one_component_per_star() {
        let p: Vec<String> = DEFAULT_DAEMON_PREFIXES
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            daemon_prefix("/var/lib/python3/envs/nav/lib/x.so", &p).as_deref(),
            Some("/var/lib/python3/envs/nav")
        );
        assert_eq!(
            daemon_prefix("/opt/envs/a/bin/a", &p).as_deref(),
            Some("/opt/envs/a")
        );
        assert_eq!(daemon_prefix("/opt/envs", &p), None);
        assert_eq!(daemon_prefix("/usr/lib/x.so", &p), None);
    }

    #[test]
    fn lexical_normalisation() {
        assert_eq!(lexical("/opt/x/bin/../lib/"), "/opt/x/lib");
        assert_eq!(lexical("/../../a"), "/a");
    }
}
