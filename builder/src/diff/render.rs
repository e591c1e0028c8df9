//! `kiln diff`'s output: a terminal table with the summary first, or one JSON document.

use super::packages::ChangeKind;
use super::Diff;
use std::fmt::Write as _;

/// The most file lines the table prints (JSON has them all).
const MAX_TABLE_FILES: usize = 200;

/// Bytes as people read them.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    &hex[..hex.len().min(12)]
}

/// A change kind as the reports name it.
pub fn kind_name(k: ChangeKind) -> &'static str {
    match k {
        ChangeKind::PointRelease => "point-release",
        ChangeKind::Upgraded => "upgraded",
        ChangeKind::Downgraded => "downgraded",
        ChangeKind::Rebuilt => "rebuilt",
        ChangeKind::Added => "added",
        ChangeKind::Removed => "removed",
    }
}

/// The one-line summary.
pub fn summary_line(d: &Diff) -> String {
    let count = |k: ChangeKind| d.packages.changes.iter().filter(|c| c.kind == k).count();
    let kinds: Vec<String> = [
        ChangeKind::PointRelease,
        ChangeKind::Upgraded,
        ChangeKind::Downgraded,
        ChangeKind::Rebuilt,
        ChangeKind::Added,
        ChangeKind::Removed,
    ]
    .into_iter()
    .filter(|k| count(*k) > 0)
    .map(|k| format!("{} {}", count(k), kind_name(k)))
    .collect();
    let packages = if !d.missing_sbom.is_empty() {
        format!(
            "packages unknown (no SBOM in {})",
            d.missing_sbom.join(", ")
        )
    } else if kinds.is_empty() {
        format!("no package changes ({} unchanged)", d.packages.unchanged)
    } else {
        format!(
            "{} package changes ({}), {} unchanged",
            d.packages.changes.len(),
            kinds.join(", "),
            d.packages.unchanged
        )
    };
    let mut licenses = Vec::new();
    licenses.extend(d.packages.licenses_added.iter().map(|l| format!("+{l}")));
    licenses.extend(d.packages.licenses_removed.iter().map(|l| format!("-{l}")));
    let findings = findings_summary(&d.findings);
    let new_layers = d.layers.iter().filter(|l| l.status == "new").count();
    let removed = d.layers.iter().filter(|l| l.status == "removed").count();
    let total = d.layers.len() - removed;
    let f = &d.files.changes;
    let count = |k: &str| f.iter().filter(|c| c.changes.first() == Some(&k)).count();
    let (added, gone) = (count("added"), count("removed"));
    let mut units = Vec::new();
    units.extend(d.files.units_enabled.iter().map(|u| format!("+{u}")));
    units.extend(d.files.units_disabled.iter().map(|u| format!("-{u}")));
    format!(
        "{packages}; licences {}; {findings}; files: {added} added, {gone} removed, {} changed; units {}; layers: {new_layers} of {total} new, {removed} removed; a device holding OLD downloads {} of {}",
        if licenses.is_empty() { "unchanged".to_string() } else { licenses.join(" ") },
        f.len() - added - gone,
        if units.is_empty() { "unchanged".to_string() } else { units.join(" ") },
        human_bytes(d.download_bytes),
        human_bytes(d.full_bytes)
    )
}

/// The findings part of the summary: `findings: 1 new, 0 resolved, 1 waived, 0 unwaived`.
pub fn findings_summary(f: &super::findings::FindingDiff) -> String {
    let counts = ["new", "resolved", "waived", "unwaived"]
        .map(|s| format!("{} {s}", f.count(s)))
        .join(", ");
    if f.checked_without_waivers.is_empty() {
        format!("findings: {counts}")
    } else {
        format!(
            "findings: {counts} (no waivers recorded for {})",
            f.checked_without_waivers.join(", ")
        )
    }
}

/// The terminal table: the two images, the summary, then packages and layers.
pub fn table(d: &Diff) -> String {
    let side = |s: &super::Summary| {
        format!(
            "{} (version {}, board {}, image {})",
            s.path.display(),
            s.version.as_deref().unwrap_or("?"),
            s.board.as_deref().unwrap_or("?"),
            short(&s.image)
        )
    };
    let mut out = String::new();
    let _ = writeln!(out, "OLD {}", side(&d.old));
    let _ = writeln!(out, "NEW {}", side(&d.new));
    if d.old.image == d.new.image {
        let _ = writeln!(out, "identical images");
        return out;
    }
    let _ = writeln!(out, "summary: {}", summary_line(d));
    if !d.packages.changes.is_empty() {
        let _ = writeln!(out, "\npackages");
        let width = d
            .packages
            .changes
            .iter()
            .map(|c| c.name.len() + c.arch.len() + 7)
            .max()
            .unwrap_or(0);
        for c in &d.packages.changes {
            let what = if c.arch.is_empty() {
                c.name.clone()
            } else if c.ecosystem == "pypi" {
                format!("{} (env {})", c.name, c.arch)
            } else {
                format!("{} ({})", c.name, c.arch)
            };
            let versions = match (&c.old, &c.new) {
                (Some(o), Some(n)) => format!("{o} -> {n}"),
                (None, Some(n)) => n.clone(),
                (Some(o), None) => o.clone(),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<13} {:<4} {what:<width$}  {versions}",
                kind_name(c.kind),
                c.ecosystem
            );
        }
    }
    if !d.findings.changes.is_empty() {
        let _ = writeln!(out, "\nfindings ({} unchanged)", d.findings.unchanged);
        for c in &d.findings.changes {
            let f = &c.finding;
            let why = match &f.waived {
                Some(reason) if c.status == "waived" => format!(" (waived: {reason})"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<9} {:<7} {:<16} {}: {}{why}",
                c.status, f.severity, f.check, f.path, f.message
            );
        }
    }
    if !d.files.changes.is_empty() {
        let _ = writeln!(
            out,
            "\nfiles (in the {} layers that differ)",
            d.files.layers_read
        );
        for c in d.files.changes.iter().take(MAX_TABLE_FILES) {
            let size = |s: &Option<super::files::FileState>| {
                s.as_ref().map_or(String::new(), |s| s.size.to_string())
            };
            let detail = match (&c.old, &c.new) {
                (Some(o), Some(n)) if o.size != n.size => {
                    format!("{} -> {} bytes", size(&c.old), size(&c.new))
                }
                (Some(o), Some(n)) if o.mode != n.mode => format!("mode {} -> {}", o.mode, n.mode),
                (Some(o), Some(n)) if o.owner != n.owner => {
                    format!("owner {} -> {}", o.owner, n.owner)
                }
                _ => String::new(),
            };
            let _ = writeln!(out, "  {:<22} {}  {detail}", c.changes.join(","), c.path);
        }
        if d.files.changes.len() > MAX_TABLE_FILES {
            let _ = writeln!(
                out,
                "  ... {} more (all of them with --format json)",
                d.files.changes.len() - MAX_TABLE_FILES
            );
        }
    }
    if !d.files.units_enabled.is_empty() || !d.files.units_disabled.is_empty() {
        let _ = writeln!(out, "\nsystemd units");
        for u in &d.files.units_enabled {
            let _ = writeln!(out, "  enabled  {u}");
        }
        for u in &d.files.units_disabled {
            let _ = writeln!(out, "  disabled {u}");
        }
    }
    let _ = writeln!(out, "\nlayers");
    for l in &d.layers {
        let _ = writeln!(
            out,
            "  #{:<2} {:<7} {}  {:>10}",
            l.index,
            l.status,
            short(&l.layer.digest),
            human_bytes(l.layer.size)
        );
    }
    out
}

/// The JSON document (`--format json`): everything, plus the summary line.
pub fn json(d: &Diff) -> String {
    let mut v = serde_json::to_value(d).unwrap_or_default();
    v["summary"] = serde_json::Value::String(summary_line(d));
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
