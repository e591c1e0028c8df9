//! Applies the recipe's and the board's waivers to findings: a waived finding stays in the
//! report (marked, with the reason) but no longer fails anything. A waiver past its expiry date
//! no longer applies and is itself reported, as is one that matched nothing, so waivers cannot
//! silently outlive what they excused.

use super::findings::{Check, Finding, Severity};
use crate::spec::Waiver;

/// Marks the findings each live waiver accepts; adds findings for expired and unused waivers.
pub fn apply(findings: &mut Vec<Finding>, waivers: &[Waiver], today: i64) {
    let mut extra = Vec::new();
    for w in waivers {
        let Ok(pattern) = glob::Pattern::new(&w.path) else {
            continue;
        };
        let matches = |f: &Finding| {
            f.check.id() == w.check
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
                        w.check,
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
                    format!("waiver for {} matched nothing", w.check),
                )
                .severity(Severity::Warning)
                .evidence([format!("{}: {}", w.origin, w.reason)]),
            );
        }
    }
    findings.extend(extra);
}
