//! The checks of what an ELF file is built for: `arch` (machine, class, byte order, with
//! firmware and coprocessor images told apart), `arm-float` (EABI version and float ABI of
//! 32-bit ARM) and `interp` (PT_INTERP is the board's loader and resolves to it).

use super::elf::{
    ElfFacts, EF_ARM_ABI_FLOAT_HARD, EF_ARM_ABI_FLOAT_SOFT, EM_AARCH64, EM_ARM, EM_BPF, EM_NONE,
    EM_X86_64, ET_REL,
};
use super::findings::{Check, Finding, Severity};
use crate::arch::{DebianArch, FloatAbi};
use crate::image::{ImageTree, Kind};
use std::sync::Arc;

/// A decided ARM float ABI and what it was decided from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmAbi {
    /// Hard or soft.
    pub abi: FloatAbi,
    /// "e_flags", ".ARM.attributes Tag_ABI_VFP_args" or "PT_INTERP".
    pub source: &'static str,
}

impl ArmAbi {
    /// True when an object of this ABI cannot run in a userland of `board`.
    pub fn conflicts_with(self, board: FloatAbi) -> bool {
        matches!(
            (self.abi, board),
            (FloatAbi::Hard, FloatAbi::Soft) | (FloatAbi::Soft, FloatAbi::Hard)
        )
    }

    /// "hard-float (from e_flags)".
    pub fn describe(self) -> String {
        let name = match self.abi {
            FloatAbi::Hard => "hard-float",
            FloatAbi::Soft => "soft-float",
            FloatAbi::NotApplicable => "no float ABI",
        };
        format!("{name}, from {}", self.source)
    }
}

/// The float ABI of a 32-bit ARM object: EF_ARM_ABI_FLOAT_HARD/SOFT in e_flags when set,
/// otherwise Tag_ABI_VFP_args from `.ARM.attributes` (1 = VFP registers, 0 = base AAPCS),
/// otherwise the loader it asks for. None when not ARM or undecidable.
pub fn arm_float_abi(facts: &ElfFacts) -> Option<ArmAbi> {
    if facts.machine != EM_ARM {
        return None;
    }
    if facts.flags & EF_ARM_ABI_FLOAT_HARD != 0 {
        return Some(ArmAbi {
            abi: FloatAbi::Hard,
            source: "e_flags",
        });
    }
    if facts.flags & EF_ARM_ABI_FLOAT_SOFT != 0 {
        return Some(ArmAbi {
            abi: FloatAbi::Soft,
            source: "e_flags",
        });
    }
    let source = ".ARM.attributes Tag_ABI_VFP_args";
    match facts.vfp_args {
        Some(1) => {
            return Some(ArmAbi {
                abi: FloatAbi::Hard,
                source,
            })
        }
        Some(0) => {
            return Some(ArmAbi {
                abi: FloatAbi::Soft,
                source,
            })
        }
        _ => {}
    }
    match facts.interp.as_deref() {
        Some(i) if i.ends_with("ld-linux-armhf.so.3") => Some(ArmAbi {
            abi: FloatAbi::Hard,
            source: "PT_INTERP",
        }),
        Some(i) if i.ends_with("ld-linux.so.3") => Some(ArmAbi {
            abi: FloatAbi::Soft,
            source: "PT_INTERP",
        }),
        _ => None,
    }
}

fn machine_name(m: u16) -> String {
    match m {
        EM_ARM => "ARM (EM_ARM)".into(),
        EM_AARCH64 => "AArch64 (EM_AARCH64)".into(),
        EM_X86_64 => "x86-64 (EM_X86_64)".into(),
        3 => "i386 (EM_386)".into(),
        EM_BPF => "eBPF (EM_BPF)".into(),
        EM_NONE => "none (EM_NONE)".into(),
        8 => "MIPS (EM_MIPS)".into(),
        243 => "RISC-V (EM_RISCV)".into(),
        other => format!("e_machine {other}"),
    }
}

/// Describes an ELF identity: "ARM (EM_ARM), 32-bit, little-endian".
pub fn identity(facts: &ElfFacts) -> String {
    format!(
        "{}, {}-bit, {}-endian",
        machine_name(facts.machine),
        if facts.is_64 { 64 } else { 32 },
        if facts.little_endian { "little" } else { "big" }
    )
}

/// Why a file is firmware or another non-userland object, or None when it is userland code.
/// Firmware and coprocessor images: under a firmware directory, eBPF or EM_NONE objects, kernel
/// modules, and bare-metal executables (no PT_INTERP, no PT_DYNAMIC and no PT_GNU_STACK, which
/// every Linux toolchain emits, static executables included).
pub fn non_userland(path: &str, facts: &ElfFacts) -> Option<&'static str> {
    if path.starts_with("/lib/firmware/") || path.starts_with("/usr/lib/firmware/") {
        return Some("firmware (in a firmware directory)");
    }
    if facts.machine == EM_BPF {
        return Some("eBPF object");
    }
    if facts.machine == EM_NONE {
        return Some("object for no machine (EM_NONE)");
    }
    if facts.kernel_module {
        return Some("kernel module");
    }
    if facts.e_type == ET_REL {
        return Some("relocatable object (not loaded by ld.so)");
    }
    if facts.interp.is_none() && !facts.dynamic && facts.gnu_stack_exec.is_none() {
        return Some("bare-metal image (no PT_INTERP, PT_DYNAMIC or PT_GNU_STACK)");
    }
    None
}

/// `arch`: the identity equals the board's. Returns false when the file is not for the board
/// (the caller then skips the checks that assume it is).
pub fn check_arch(path: &str, facts: &ElfFacts, arch: DebianArch, out: &mut Vec<Finding>) -> bool {
    let want = arch.elf_identity();
    let fits = facts.machine == want.machine
        && facts.is_64 == want.is_64
        && facts.little_endian == want.little_endian;
    if let Some(kind) = non_userland(path, facts) {
        if !fits && facts.e_type != ET_REL {
            out.push(
                Finding::new(
                    Check::Arch,
                    path,
                    format!("{kind}: {}, not checked as board userland", identity(facts)),
                )
                .severity(Severity::Info),
            );
        }
        return false;
    }
    if !fits {
        let board = ElfFacts {
            machine: want.machine,
            is_64: want.is_64,
            little_endian: want.little_endian,
            ..ElfFacts::default()
        };
        out.push(
            Finding::new(
                Check::Arch,
                path,
                format!(
                    "built for {}; the board ({arch}) needs {}",
                    identity(facts),
                    identity(&board)
                ),
            )
            .evidence([
                format!("e_machine {} (board {})", facts.machine, want.machine),
                format!(
                    "class {} (board {})",
                    if facts.is_64 { "ELF64" } else { "ELF32" },
                    if want.is_64 { "ELF64" } else { "ELF32" }
                ),
            ]),
        );
    }
    fits
}

/// `arm-float`: EABI version 5 and the board's float ABI.
pub fn check_arm_float(path: &str, facts: &ElfFacts, arch: DebianArch, out: &mut Vec<Finding>) {
    if facts.machine != EM_ARM || arch.float_abi() == FloatAbi::NotApplicable {
        return;
    }
    let eabi = facts.flags >> 24;
    if eabi != 5 {
        out.push(
            Finding::new(
                Check::ArmFloat,
                path,
                format!("ARM EABI version {eabi}; Debian's {arch} userland is EABI version 5"),
            )
            .evidence([format!("e_flags {:#010x}", facts.flags)]),
        );
    }
    if let Some(abi) = arm_float_abi(facts) {
        if abi.conflicts_with(arch.float_abi()) {
            let board = if arch.float_abi() == FloatAbi::Hard {
                "hard-float (armhf)"
            } else {
                "soft-float (armel)"
            };
            out.push(
                Finding::new(
                    Check::ArmFloat,
                    path,
                    format!("{} object in a {board} userland", abi.describe()),
                )
                .evidence([
                    format!("e_flags {:#010x}", facts.flags),
                    match facts.vfp_args {
                        Some(v) => format!("Tag_ABI_VFP_args {v}"),
                        None => "no Tag_ABI_VFP_args".into(),
                    },
                ]),
            );
        }
    }
}

/// `interp`: PT_INTERP names the board's loader (or a path that resolves to the same file in
/// the image, such as /usr/lib/... on merged-/usr) and resolves to an ELF of the board's
/// identity.
pub fn check_interp(
    path: &str,
    facts: &ElfFacts,
    image: &ImageTree,
    arch: DebianArch,
    facts_of: &dyn Fn(&str) -> Option<Arc<ElfFacts>>,
    out: &mut Vec<Finding>,
) {
    let Some(interp) = &facts.interp else {
        return;
    };
    let want = arch.dynamic_loader();
    let resolved = image.resolve(interp);
    if interp != want {
        let same = resolved.is_some() && resolved == image.resolve(want);
        if !same {
            out.push(
                Finding::new(
                    Check::Interp,
                    path,
                    format!("PT_INTERP is {interp}; the board's loader is {want}"),
                )
                .evidence([format!(
                    "resolves in the image to {}",
                    resolved.as_deref().unwrap_or("nothing")
                )]),
            );
            return;
        }
    }
    let Some(resolved) = resolved else {
        out.push(Finding::new(
            Check::Interp,
            path,
            format!("PT_INTERP {interp} is not in the image"),
        ));
        return;
    };
    let is_file = image.get(&resolved).is_some_and(|n| n.kind == Kind::File);
    let loader = if is_file { facts_of(&resolved) } else { None };
    match loader {
        None => out.push(Finding::new(
            Check::Interp,
            path,
            format!("PT_INTERP {interp} resolves to {resolved}, which is not an ELF file"),
        )),
        Some(l) => {
            let want_id = arch.elf_identity();
            if l.machine != want_id.machine || l.is_64 != want_id.is_64 {
                out.push(Finding::new(
                    Check::Interp,
                    path,
                    format!(
                        "PT_INTERP {interp} resolves to {resolved}, built for {}",
                        identity(&l)
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(flags: u32, vfp: Option<u64>, interp: Option<&str>) -> ElfFacts {
        ElfFacts {
            machine: EM_ARM,
            flags,
            vfp_args: vfp,
            interp: interp.map(str::to_string),
            ..ElfFacts::default()
        }
    }

    #[test]
    fn float_abi_is_decided_from_flags_then_attributes_then_interp() {
        assert_eq!(
            arm_float_abi(&arm(0x0500_0400, Some(0), None)).map(|a| a.abi),
            Some(FloatAbi::Hard)
        );
        assert_eq!(
            arm_float_abi(&arm(0x0500_0200, None, None)).map(|a| a.abi),
            Some(FloatAbi::Soft)
        );
        assert_eq!(
            arm_float_abi(&arm(0x0500_0000, Some(1), None)).map(|a| a.abi),
            Some(FloatAbi::Hard)
        );
        assert_eq!(
            arm_float_abi(&arm(0x0500_0000, None, Some("/lib/ld-linux.so.3"))).map(|a| a.abi),
            Some(FloatAbi::Soft)
        );
        assert_eq!(arm_float_abi(&arm(0x0500_0000, Some(3), None)), None);
    }
}
