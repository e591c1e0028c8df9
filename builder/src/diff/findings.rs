//! ELF findings of two releases: new, resolved, newly waived and no longer waived. Each side's
//! findings are those `kiln build` recorded for the whole image as built, with the waivers of
//! its own recipe and board ([`crate::check::report::RECORD_FILE`]); an image without that
//! record (a layout from elsewhere) is checked here, every layer stacked, against the
//! architecture its config names and with no waivers (the report says so).

use crate::arch::DebianArch;
use crate::check::{check_image, CheckOptions};
use crate::image::ImageTree;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The largest check record read.
const MAX_RECORD: u64 = 64 << 20;

/// One finding as recorded (the `kiln check --format json` line, evidence left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedFinding {
    /// Check id.
    pub check: String,
    /// `error`, `warning` or `info`.
    pub severity: String,
    /// Image path.
    pub path: String,
    /// The package that installed the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The reason of the waiver that accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waived: Option<String>,
}

impl RecordedFinding {
    fn key(&self) -> (&str, &str, &str) {
        (&self.check, &self.path, &self.message)
    }
}

/// Where a side's findings came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingsSource {
    /// The build's record, with its waivers.
    Recorded,
    /// Checked by `kiln diff`, without waivers (none were recorded).
    CheckedWithoutWaivers,
}

/// A side's findings.
#[derive(Debug, Clone)]
pub struct SideFindings {
    /// The findings.
    pub findings: Vec<RecordedFinding>,
    /// Where they came from.
    pub source: FindingsSource,
}

/// Reads the record a build left beside its layout (`out/check.json`), or checks the image
/// in `layout` when there is none.
pub fn read(out: &Path, layout: &Path, config: &[u8]) -> Result<SideFindings, String> {
    let record = out.join(crate::check::report::RECORD_FILE);
    if out != layout && record.symlink_metadata().is_ok() {
        let bytes = read_bounded(&record)?;
        let text =
            String::from_utf8(bytes).map_err(|_| format!("{}: is not UTF-8", record.display()))?;
        let findings = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| {
                serde_json::from_str::<RecordedFinding>(l)
                    .map_err(|e| format!("{}:{}: {e}", record.display(), n + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(SideFindings {
            findings,
            source: FindingsSource::Recorded,
        });
    }
    let arch = arch_of_config(config).ok_or_else(|| {
        format!(
            "{}: the image config names no architecture kiln checks (and no {} was recorded)",
            layout.display(),
            crate::check::report::RECORD_FILE
        )
    })?;
    let tree = ImageTree::open(layout).map_err(|e| format!("{}: {e}", layout.display()))?;
    let report = check_image(&tree, &CheckOptions::new(arch));
    let findings = report
        .findings
        .iter()
        .map(|f| RecordedFinding {
            check: f.check.to_string(),
            severity: f.severity.to_string(),
            path: f.path.clone(),
            package: f.package.clone(),
            message: f.message.clone(),
            waived: f.waived.clone(),
        })
        .collect();
    Ok(SideFindings {
        findings,
        source: FindingsSource::CheckedWithoutWaivers,
    })
}

/// Reads a regular file of at most [`MAX_RECORD`] bytes (a symlink or FIFO is refused).
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(&e))?;
    if !file.metadata().map_err(|e| fail(&e))?.is_file() {
        return Err(fail(&"is not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_RECORD + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(&e))?;
    if bytes.len() as u64 > MAX_RECORD {
        return Err(fail(&format!("is larger than {MAX_RECORD} bytes")));
    }
    Ok(bytes)
}

/// The Debian architecture of an OCI image config (`architecture` and `variant`).
fn arch_of_config(config: &[u8]) -> Option<DebianArch> {
    let v: serde_json::Value = serde_json::from_slice(config).ok()?;
    let arch = v.get("architecture")?.as_str()?;
    let variant = v.get("variant").and_then(|x| x.as_str());
    DebianArch::ALL
        .into_iter()
        .find(|a| a.oci_architecture() == arch && (variant.is_none() || a.oci_variant() == variant))
}

/// How a finding moved between the releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FindingChange {
    /// `new` (in NEW, unwaived; OLD lacked it), `resolved` (OLD had it unwaived, NEW does not
    /// have it), `waived` (a waiver of NEW accepts it; OLD lacked it or counted it) or
    /// `unwaived` (OLD waived it, NEW counts it: a waiver removed or expired).
    pub status: &'static str,
    /// The finding (NEW's, or OLD's for a resolved one).
    pub finding: RecordedFinding,
}

/// The findings that changed, and how many stayed as they were.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FindingDiff {
    /// Changes: errors first, then warnings, then info; by path within.
    pub changes: Vec<FindingChange>,
    /// Findings both sides have alike.
    pub unchanged: usize,
    /// Sides checked by `kiln diff` itself, without their waivers.
    pub checked_without_waivers: Vec<String>,
}

impl FindingDiff {
    /// How many changes have `status`.
    pub fn count(&self, status: &str) -> usize {
        self.changes.iter().filter(|c| c.status == status).count()
    }
}

fn severity_rank(s: &str) -> u8 {
    match s {
        "error" => 0,
        "warning" => 1,
        _ => 2,
    }
}

/// Compares two sides' findings by check, path and message.
pub fn compare(old: &[RecordedFinding], new: &[RecordedFinding]) -> FindingDiff {
    let old_by: BTreeMap<_, &RecordedFinding> = old.iter().map(|f| (f.key(), f)).collect();
    let new_by: BTreeMap<_, &RecordedFinding> = new.iter().map(|f| (f.key(), f)).collect();
    let mut diff = FindingDiff::default();
    for (key, f) in &new_by {
        let status = match (old_by.get(key), f.waived.is_some()) {
            (None, false) => Some("new"),
            (None, true) => Some("waived"),
            (Some(o), true) if o.waived.is_none() => Some("waived"),
            (Some(o), false) if o.waived.is_some() => Some("unwaived"),
            _ => None,
        };
        match status {
            Some(status) => diff.changes.push(FindingChange {
                status,
                finding: (*f).clone(),
            }),
            None => diff.unchanged += 1,
        }
    }
    for (key, f) in &old_by {
        if !new_by.contains_key(key) && f.waived.is_none() {
            diff.changes.push(FindingChange {
                status: "resolved",
                finding: (*f).clone(),
            });
        }
    }
    diff.changes.sort_by(|a, b| {
        (
            severity_rank(&a.finding.severity),
            &a.finding.path,
            a.status,
        )
            .cmp(&(
                severity_rank(&b.finding.severity),
                &b.finding.path,
                b.status,
            ))
    });
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(check: &str, severity: &str, path: &str, waived: Option<&str>) -> RecordedFinding {
        RecordedFinding {
            check: check.into(),
            severity: severity.into(),
            path: path.into(),
            package: None,
            message: format!("{check} on {path}"),
            waived: waived.map(String::from),
        }
    }

    #[test]
    fn findings_are_new_resolved_waived_or_unwaived_errors_first() {
        let old = vec![
            f("needed", "error", "/usr/bin/a", None),
            f("hardening", "info", "/usr/bin/b", None),
            f("rpath-redundant", "warning", "/usr/bin/c", Some("known")),
            f("script-interp", "info", "/x.py", None),
            f("textrel", "warning", "/same", None),
            f("pyext", "error", "/gone-but-waived", Some("ok")),
        ];
        let new = vec![
            f(
                "hardening",
                "info",
                "/usr/bin/b",
                Some("Debian builds it so"),
            ),
            f("rpath-redundant", "warning", "/usr/bin/c", None),
            f("script-interp", "info", "/x.py", None),
            f("textrel", "warning", "/same", None),
            f("arch", "error", "/opt/new", None),
            f("execstack", "warning", "/opt/w", Some("vendor blob")),
        ];
        let d = compare(&old, &new);
        let got: Vec<(&str, &str)> = d
            .changes
            .iter()
            .map(|c| (c.status, c.finding.path.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("new", "/opt/new"),
                ("resolved", "/usr/bin/a"),
                ("waived", "/opt/w"),
                ("unwaived", "/usr/bin/c"),
                ("waived", "/usr/bin/b"),
            ]
        );
        assert_eq!(d.unchanged, 2);
        assert_eq!((d.count("new"), d.count("waived")), (1, 2));
    }

    #[test]
    fn a_record_that_is_a_symlink_a_fifo_or_not_json_is_refused_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        let layout = out.join("oci");
        let record = out.join(crate::check::report::RECORD_FILE);
        std::os::unix::fs::symlink("/etc/passwd", &record).unwrap();
        let err = read(out, &layout, b"{}").unwrap_err();
        assert!(err.contains("check.json"), "{err}");
        std::fs::remove_file(&record).unwrap();
        let fifo = std::ffi::CString::new(record.to_str().unwrap()).unwrap();
        // SAFETY: a plain mkfifo(3) call on a path this test owns.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let err = read(out, &layout, b"{}").unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_file(&record).unwrap();
        std::fs::write(&record, "{\"check\": 1}\n").unwrap();
        let err = read(out, &layout, b"{}").unwrap_err();
        assert!(err.contains("check.json:1"), "{err}");
    }

    #[test]
    fn the_architecture_comes_from_the_config() {
        assert_eq!(
            arch_of_config(br#"{"architecture":"arm","variant":"v7"}"#),
            Some(DebianArch::Armhf)
        );
        assert_eq!(
            arch_of_config(br#"{"architecture":"arm64"}"#),
            Some(DebianArch::Arm64)
        );
        assert_eq!(arch_of_config(br#"{"architecture":"s390x"}"#), None);
        assert_eq!(arch_of_config(b"not json"), None);
    }
}
