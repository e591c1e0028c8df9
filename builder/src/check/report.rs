//! The report of `kiln check` in the four forms its readers want: a terminal table for people
//! (grouped by severity and package), JSON lines for scripts (one finding per line, in a
//! deterministic order), JUnit XML for CI dashboards, and SARIF 2.1.0 for code-scanning tools.

use super::findings::{Check, Finding, Severity};
use super::Report;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The file beside a build's layout (`OUT/check.json`) that records the whole image's findings
/// as built, in the JSON-lines format, waived ones included.
pub const RECORD_FILE: &str = "check.json";

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Terminal table.
    Table,
    /// One JSON object per finding per line.
    Json,
    /// JUnit XML.
    Junit,
    /// SARIF 2.1.0.
    Sarif,
}

/// Renders the report.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Table => table(report),
        Format::Json => json_lines(report),
        Format::Junit => junit(report),
        Format::Sarif => sarif(report),
    }
}

/// The one-line summary CI shows.
pub fn summary(report: &Report) -> String {
    let count = |s: Severity| {
        report
            .findings
            .iter()
            .filter(|f| f.severity == s && f.waived.is_none())
            .count()
    };
    let waived = report
        .findings
        .iter()
        .filter(|f| f.waived.is_some())
        .count();
    format!(
        "{}: {} files, {} ELF objects ({}): {} errors, {} warnings, {} info, {} waived",
        report.source,
        report.files,
        report.elf_objects,
        report.arch,
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Info),
        waived
    )
}

fn table(report: &Report) -> String {
    let mut out = String::new();
    for sev in [Severity::Error, Severity::Warning] {
        let mut by_pkg: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
        for f in report
            .findings
            .iter()
            .filter(|f| f.severity == sev && f.waived.is_none())
        {
            by_pkg
                .entry(f.package.as_deref().unwrap_or("(no package)"))
                .or_default()
                .push(f);
        }
        if by_pkg.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{}S", sev.as_str().to_uppercase());
        for (pkg, fs) in by_pkg {
            let _ = writeln!(out, "  {pkg}");
            for f in fs {
                let _ = writeln!(out, "    {:<22} {}  {}", f.check.id(), f.path, f.message);
                for a in &f.aliases {
                    let _ = writeln!(out, "    {:<22}   also {a}", "");
                }
                for e in &f.evidence {
                    let _ = writeln!(out, "    {:<22}   {e}", "");
                }
            }
        }
    }
    let mut info: BTreeMap<&str, usize> = BTreeMap::new();
    for f in report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Info && f.waived.is_none())
    {
        *info.entry(f.check.id()).or_default() += 1;
    }
    if !info.is_empty() {
        let list: Vec<String> = info.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        let _ = writeln!(out, "INFO (see --format json): {}", list.join(", "));
    }
    let waived: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.waived.is_some())
        .collect();
    if !waived.is_empty() {
        let _ = writeln!(out, "WAIVED");
        for f in waived {
            let _ = writeln!(
                out,
                "    {:<22} {}  {} [{}]",
                f.check.id(),
                f.path,
                f.message,
                f.waived.as_deref().unwrap_or("")
            );
        }
    }
    let _ = writeln!(out, "{}", summary(report));
    out
}

fn json_lines(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        // Serialising plain strings and vectors cannot fail.
        if let Ok(line) = serde_json::to_string(f) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Escapes text for XML and HTML content and attribute values (control characters, which XML
/// 1.0 forbids, become spaces).
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn junit(report: &Report) -> String {
    let mut cases = String::new();
    let mut tests = 0;
    let mut failures = 0;
    for check in Check::ALL {
        let errors: Vec<&Finding> = report
            .findings
            .iter()
            .filter(|f| f.check == *check && f.severity == Severity::Error && f.waived.is_none())
            .collect();
        if errors.is_empty() {
            tests += 1;
            let _ = writeln!(
                cases,
                "    <testcase classname=\"kiln.check\" name=\"{}\"/>",
                check.id()
            );
            continue;
        }
        for f in errors {
            tests += 1;
            failures += 1;
            let mut body = f.message.clone();
            for e in &f.evidence {
                body.push('\n');
                body.push_str(e);
            }
            let _ = writeln!(
                cases,
                "    <testcase classname=\"kiln.check.{}\" name=\"{}\">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>",
                check.id(),
                xml_escape(&f.path),
                check.id(),
                xml_escape(&f.message),
                xml_escape(&body)
            );
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite name=\"kiln check {}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\">\n{cases}  </testsuite>\n</testsuites>\n",
        xml_escape(&report.source)
    )
}

fn sarif(report: &Report) -> String {
    let rules: Vec<serde_json::Value> = Check::ALL
        .iter()
        .map(|c| {
            json!({
                "id": c.id(),
                "shortDescription": {"text": c.description()},
                "defaultConfiguration": {"level": level(c.default_severity())},
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = report
        .findings
        .iter()
        .map(|f| {
            let mut r = json!({
                "ruleId": f.check.id(),
                "level": level(f.severity),
                "message": {"text": if f.evidence.is_empty() { f.message.clone() } else { format!("{} ({})", f.message, f.evidence.join("; ")) }},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": f.path.trim_start_matches('/')}}}],
            });
            if let Some(w) = &f.waived {
                r["suppressions"] = json!([{"kind": "external", "justification": w}]);
            }
            r
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "kiln", "version": env!("CARGO_PKG_VERSION"), "rules": rules}},
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}
