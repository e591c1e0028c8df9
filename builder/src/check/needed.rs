//! The `needed` and `symbol-versions` checks: every DT_NEEDED resolves inside the image the way
//! glibc's loader resolves it ([`super::ldso`]), and every symbol version an object needs is
//! defined by the library that resolves.
//!
//! Each executable's whole dependency tree is loaded breadth-first, as ld.so does, so a library
//! found through the executable's RPATH (the loader chain) or already loaded under its soname
//! counts as found. A library that no executable loads is resolved on its own.

use super::elf::{ElfFacts, ET_DYN, ET_EXEC};
use super::findings::{Check, Finding, Severity};
use super::ldso::{search, Loaded, LoaderRules, Search};
use crate::image::{file_name, ImageTree};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The objects of the board's userland: image path -> facts.
pub type Objects = BTreeMap<String, Arc<ElfFacts>>;

/// Where each (object, needed name) resolved, and where it did not.
#[derive(Debug, Default)]
pub struct Resolutions {
    /// (object, name) -> the resolved library path.
    pub found: BTreeMap<(String, String), String>,
    /// (object, name) -> the failed search, and the executable whose load it was part of.
    pub failed: BTreeMap<(String, String), (Search, Option<String>)>,
}

struct Node {
    found_as: String,
    resolved: String,
    facts: Arc<ElfFacts>,
    loader: Option<usize>,
}

/// Resolves every executable's dependency tree and every library's own needs.
pub fn resolve_all(
    image: &ImageTree,
    rules: &LoaderRules,
    objects: &Objects,
    privileged: &dyn Fn(&str) -> bool,
    facts_of: &dyn Fn(&str) -> Option<Arc<ElfFacts>>,
) -> Resolutions {
    let mut res = Resolutions::default();
    let mut loaded_somewhere: BTreeSet<String> = BTreeSet::new();
    let loader_path = image.resolve(rules.arch.dynamic_loader());
    for (exe, facts) in objects {
        if facts.interp.is_none() || !(facts.e_type == ET_EXEC || facts.e_type == ET_DYN) {
            continue;
        }
        // Secure mode changes only how RPATH/RUNPATH entries expand.
        let secure = (facts.rpath.is_some() || facts.runpath.is_some()) && privileged(exe);
        let mut nodes: Vec<Node> = vec![Node {
            found_as: exe.clone(),
            resolved: exe.clone(),
            facts: facts.clone(),
            loader: None,
        }];
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        if let (Some(lp), Some(lf)) = (&loader_path, loader_path.as_deref().and_then(facts_of)) {
            // The loader is loaded before anything else and answers to its soname.
            nodes.push(Node {
                found_as: lp.clone(),
                resolved: lp.clone(),
                facts: lf.clone(),
                loader: None,
            });
            by_name.insert(file_name(rules.arch.dynamic_loader()).to_string(), 1);
            if let Some(s) = &lf.soname {
                by_name.insert(s.clone(), 1);
            }
        }
        let mut i = 0;
        while i < nodes.len() {
            if i == 1 && loader_path.is_some() {
                i += 1;
                continue;
            }
            let needed = nodes[i].facts.needed.clone();
            for name in needed {
                let key = (nodes[i].resolved.clone(), name.clone());
                if let Some(&j) = by_name.get(&name) {
                    res.found
                        .entry(key)
                        .or_insert_with(|| nodes[j].resolved.clone());
                    continue;
                }
                let mut chain_idx = Vec::new();
                let mut l = nodes[i].loader;
                while let Some(k) = l {
                    chain_idx.push(k);
                    l = nodes[k].loader;
                }
                let chain: Vec<Loaded> = chain_idx
                    .iter()
                    .map(|&k| Loaded {
                        path: &nodes[k].found_as,
                        facts: &nodes[k].facts,
                    })
                    .collect();
                let object = Loaded {
                    path: &nodes[i].found_as,
                    facts: &nodes[i].facts,
                };
                let s = search(image, rules, object, &chain, &name, secure, facts_of);
                match &s.found {
                    Some((found_as, resolved)) => {
                        let Some(f) = facts_of(resolved) else {
                            continue;
                        };
                        // Already loaded under another name (same file): reuse it.
                        let existing = nodes.iter().position(|n| n.resolved == *resolved);
                        let j = match existing {
                            Some(j) => j,
                            None => {
                                nodes.push(Node {
                                    found_as: found_as.clone(),
                                    resolved: resolved.clone(),
                                    facts: f.clone(),
                                    loader: Some(i),
                                });
                                nodes.len() - 1
                            }
                        };
                        by_name.insert(name.clone(), j);
                        if let Some(so) = &f.soname {
                            by_name.entry(so.clone()).or_insert(j);
                        }
                        res.found.entry(key).or_insert_with(|| resolved.clone());
                    }
                    None => {
                        res.failed.entry(key).or_insert((s, Some(exe.clone())));
                    }
                }
            }
            i += 1;
        }
        for n in nodes.iter().skip(1) {
            loaded_somewhere.insert(n.resolved.clone());
        }
    }
    // Libraries on their own: whatever no executable's load already settled.
    for (lib, facts) in objects {
        if facts.interp.is_some() || facts.e_type != ET_DYN {
            continue;
        }
        for name in &facts.needed {
            let key = (lib.clone(), name.clone());
            if res.found.contains_key(&key) || res.failed.contains_key(&key) {
                continue;
            }
            let object = Loaded { path: lib, facts };
            let secure = (facts.rpath.is_some() || facts.runpath.is_some()) && privileged(lib);
            let s = search(image, rules, object, &[], name, secure, facts_of);
            match &s.found {
                Some((_, resolved)) => {
                    res.found.insert(key, resolved.clone());
                }
                None if !loaded_somewhere.contains(lib) => {
                    res.failed.insert(key, (s, None));
                }
                None => {}
            }
        }
    }
    // A failure in one context with a success for the same object elsewhere stays a failure
    // only when it came from a real executable's load.
    res.failed
        .retain(|k, (_, ctx)| ctx.is_some() || !res.found.contains_key(k));
    res
}

/// Turns failed resolutions into `needed` findings. A shared object that no executable loads
/// and that lies outside the loader's default directories is a plugin (tc's `q_atm.so`, a
/// PAM or NSS module): it is loaded only when a program asks for it by path, so its missing
/// library is a warning, with `provider` saying which package would bring the library.
pub fn needed_findings(
    res: &Resolutions,
    default_dirs: &[String],
    provider: &dyn Fn(&str, &str) -> String,
    out: &mut Vec<Finding>,
) {
    for ((object, name), (s, ctx)) in &res.failed {
        let mut message = format!("needs {name}, which does not resolve");
        if let Some(exe) = ctx {
            if exe != object {
                message.push_str(&format!(" when {exe} loads it"));
            }
        }
        let dir = crate::image::parent(object);
        let plugin = ctx.is_none() && !default_dirs.iter().any(|d| d == dir);
        let mut finding = Finding::new(Check::Needed, object, message)
            .evidence([format!("search: {}", s.trace_line())]);
        if plugin {
            finding.message.push_str(&format!(
                "; no executable links it and it is outside the library directories, so it is a plugin loaded only when asked for: {}",
                provider(object, name)
            ));
            finding = finding.severity(Severity::Warning);
        }
        out.push(finding);
    }
}

/// Orders glibc-style version names (`GLIBC_2.28` < `GLIBC_2.34`).
pub fn version_key(v: &str) -> Vec<u64> {
    v.rsplit('_')
        .next()
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// The newest `GLIBC_*` version among `defined`.
pub fn newest_glibc(defined: &[String]) -> Option<&str> {
    defined
        .iter()
        .filter(|v| v.starts_with("GLIBC_2"))
        .max_by_key(|v| version_key(v))
        .map(String::as_str)
}

/// `symbol-versions`: every version in an object's SHT_GNU_verneed is defined by the library
/// its DT_NEEDED resolved to.
pub fn symbol_version_findings(
    objects: &Objects,
    res: &Resolutions,
    facts_of: &dyn Fn(&str) -> Option<Arc<ElfFacts>>,
    out: &mut Vec<Finding>,
) {
    for (object, facts) in objects {
        for nv in &facts.needed_versions {
            let key = (object.clone(), nv.file.clone());
            let Some(lib) = res.found.get(&key) else {
                continue;
            };
            let Some(lf) = facts_of(lib) else { continue };
            if lf.defined_versions.contains(&nv.version) {
                continue;
            }
            let (file, lib_path) = (nv.file.clone(), lib.clone());
            let provided = if lf.defined_versions.is_empty() {
                "defines no symbol versions".to_string()
            } else if nv.version.starts_with("GLIBC_") {
                format!(
                    "provides up to {}",
                    newest_glibc(&lf.defined_versions).unwrap_or("none")
                )
            } else {
                format!("defines {}", lf.defined_versions.join(", "))
            };
            let mut f = Finding::new(
                Check::SymbolVersions,
                object,
                format!(
                    "needs {} from {file}, but {lib_path} {provided}",
                    nv.version
                ),
            );
            if nv.weak || lf.defined_versions.is_empty() {
                // glibc only warns ("no version information available") in these cases.
                f = f.severity(Severity::Warning);
            }
            out.push(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_versions_order_numerically() {
        let v: Vec<String> = [
            "GLIBC_2.4",
            "GLIBC_2.17",
            "GLIBC_2.34",
            "GLIBC_PRIVATE",
            "GLIBC_2.2.5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(newest_glibc(&v), Some("GLIBC_2.34"));
        assert!(version_key("GLIBC_2.24") < version_key("GLIBC_2.28"));
    }
}
