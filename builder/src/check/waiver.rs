//! Applies the recipe's and the board's waivers to findings: a waived finding stays in the
//! report (marked, with the reason) but no longer fails anything. A waiver past its expiry date
//! no longer applies and is itself reported, as is one that matched nothing, so waivers cannot
//! silently outlive what they excused.

use super::findings::{Check, Finding, Severity};

/// An accepted `kiln check` finding: which check, on which paths, why, and until when.
/// Expired waivers stop applying and are reported, so nothing is accepted forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiver {
    /// Glob over image paths (`*` also crosses `/`).
    pub path: String,
    /// The check it accepts.
    pub check: Check,
    /// Why the finding is acceptable.
    pub reason: String,
    /// Last day it applies, `YYYY-MM-DD`, and the same as days since 1970-01-01.
    pub expires: String,
    /// Days since 1970-01-01 of `expires`.
    pub expires_day: i64,
    /// Where it was written, `file:line`.
    pub origin: String,
}

/// Marks the findings each live waiver accepts; adds findings for expired and unused waivers.
pub fn apply(findings: &mut Vec<Finding>, waivers: &[Waiver], today: i64) {
    let mut extra = Vec::new();
    for w in waivers {
        let Ok(pattern) = glob::Pattern::new(&w.path) else {
            continue;
        };
        let matches = |f: &Finding| {
            f.check == w.check
                && (pattern.matches(&f.path) || f.aliases.iter().any(|a| pattern.matches(a)))
        };
        if w.expires_day < today {
            let hits = findings.iter().filter(|f| matches(f)).count();
            extra.push(
                Finding::new(
                    Check::Waiver,
                    &w.path,
                    format!(
                        "waiver for {} expired on {} ({} finding{} no longer waived)",
                        w.check.id(),
                        w.expires,
                        hits,
                        if hits == 1 { "" } else { "s" }
                    ),
                )
                .evidence([format!("{}: {}", w.origin, w.reason)]),
            );
            continue;
        }
        let mut used = false;
        for f in findings.iter_mut() {
            if f.waived.is_none() && matches(f) {
                f.waived = Some(format!("{} ({}, until {})", w.reason, w.origin, w.expires));
                used = true;
            }
        }
        if !used {
            extra.push(
                Finding::new(
                    Check::Waiver,
                    &w.path,
                    format!("waiver for {} matched nothing", w.check.id()),
                )
                .severity(Severity::Warning)
                .evidence([format!("{}: {}", w.origin, w.reason)]),
            );
        }
    }
    findings.extend(extra);
}
