//! Code-quality checks on dynamic objects: `textrel` and `execstack` (warnings: text
//! relocations make pages writable+executable and defeat sharing; an executable stack turns
//! overflows into code execution), `no-gnu-hash` (warning: slower symbol lookup, and the sign of
//! an ancient or hand-rolled link), and `hardening` (info: not PIE, no RELRO).

use super::elf::{ElfFacts, ET_EXEC};
use super::findings::{Check, Finding};

/// Runs the checks on one object of the board's userland.
pub fn check_hardening(path: &str, facts: &ElfFacts, out: &mut Vec<Finding>) {
    if facts.textrel {
        out.push(Finding::new(
            Check::Textrel,
            path,
            "has text relocations (DT_TEXTREL)",
        ));
    }
    if facts.gnu_stack_exec == Some(true) {
        out.push(Finding::new(
            Check::Execstack,
            path,
            "asks for an executable stack (PT_GNU_STACK RWE)",
        ));
    }
    if facts.dynamic && facts.sysv_hash && !facts.gnu_hash {
        out.push(Finding::new(
            Check::NoGnuHash,
            path,
            "has DT_HASH but no DT_GNU_HASH",
        ));
    }
    if facts.interp.is_some() && facts.e_type == ET_EXEC {
        out.push(Finding::new(
            Check::Hardening,
            path,
            "executable is not position-independent (ET_EXEC)",
        ));
    }
    if facts.dynamic && !facts.relro {
        out.push(Finding::new(
            Check::Hardening,
            path,
            "no RELRO (PT_GNU_RELRO)",
        ));
    }
}
