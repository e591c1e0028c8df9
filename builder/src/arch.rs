//! Debian architectures and everything that follows from one: the OCI platform, the GNU multiarch
//! triplet, the ELF identity a binary must have and the dynamic loader path. Boards name only
//! the Debian architecture; nothing here is ever typed twice in a recipe.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A Debian architecture kiln can build for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DebianArch {
    /// 64-bit ARM.
    Arm64,
    /// 32-bit ARMv7 with hardware floating point (EABI hard-float).
    Armhf,
    /// 32-bit ARM, soft-float EABI (ARMv5TE and up).
    Armel,
    /// x86-64, for host-speed tests.
    Amd64,
}

/// ELF header identity expected from every executable or shared object for an architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfIdentity {
    /// `e_machine` (EM_AARCH64 = 183, EM_ARM = 40, EM_X86_64 = 62).
    pub machine: u16,
    /// True for ELFCLASS64.
    pub is_64: bool,
    /// True for little-endian (every architecture kiln supports).
    pub little_endian: bool,
}

/// The float ABI of 32-bit ARM userlands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatAbi {
    /// VFP registers carry float arguments (armhf).
    Hard,
    /// Floats in integer registers (armel).
    Soft,
    /// Not an ARM-32 architecture.
    NotApplicable,
}

impl DebianArch {
    /// Every supported architecture.
    pub const ALL: [DebianArch; 4] = [
        DebianArch::Arm64,
        DebianArch::Armhf,
        DebianArch::Armel,
        DebianArch::Amd64,
    ];

    /// Parses a Debian architecture name.
    pub fn parse(name: &str) -> Option<DebianArch> {
        DebianArch::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The Debian name, as in `dpkg --print-architecture`.
    pub fn as_str(self) -> &'static str {
        match self {
            DebianArch::Arm64 => "arm64",
            DebianArch::Armhf => "armhf",
            DebianArch::Armel => "armel",
            DebianArch::Amd64 => "amd64",
        }
    }

    /// OCI `platform.architecture` (GOARCH spelling).
    pub fn oci_architecture(self) -> &'static str {
        match self {
            DebianArch::Arm64 => "arm64",
            DebianArch::Armhf | DebianArch::Armel => "arm",
            DebianArch::Amd64 => "amd64",
        }
    }

    /// OCI `platform.variant`: armhf is ARMv7, armel ARMv5 (Debian's baseline), arm64 v8.
    pub fn oci_variant(self) -> Option<&'static str> {
        match self {
            DebianArch::Arm64 => Some("v8"),
            DebianArch::Armhf => Some("v7"),
            DebianArch::Armel => Some("v5"),
            DebianArch::Amd64 => None,
        }
    }

    /// The GNU multiarch triplet used in `/usr/lib/<triplet>`.
    pub fn multiarch_triplet(self) -> &'static str {
        match self {
            DebianArch::Arm64 => "aarch64-linux-gnu",
            DebianArch::Armhf => "arm-linux-gnueabihf",
            DebianArch::Armel => "arm-linux-gnueabi",
            DebianArch::Amd64 => "x86_64-linux-gnu",
        }
    }

    /// The ELF identity of the architecture's binaries.
    pub fn elf_identity(self) -> ElfIdentity {
        let (machine, is_64) = match self {
            DebianArch::Arm64 => (183, true),
            DebianArch::Armhf | DebianArch::Armel => (40, false),
            DebianArch::Amd64 => (62, true),
        };
        ElfIdentity {
            machine,
            is_64,
            little_endian: true,
        }
    }

    /// The float ABI of the userland.
    pub fn float_abi(self) -> FloatAbi {
        match self {
            DebianArch::Armhf => FloatAbi::Hard,
            DebianArch::Armel => FloatAbi::Soft,
            _ => FloatAbi::NotApplicable,
        }
    }

    /// The glibc dynamic loader, as `PT_INTERP` names it.
    pub fn dynamic_loader(self) -> &'static str {
        match self {
            DebianArch::Arm64 => "/lib/ld-linux-aarch64.so.1",
            DebianArch::Armhf => "/lib/ld-linux-armhf.so.3",
            DebianArch::Armel => "/lib/ld-linux.so.3",
            DebianArch::Amd64 => "/lib64/ld-linux-x86-64.so.2",
        }
    }

    /// The binfmt_misc handler name Debian's qemu-user-static registers for this architecture,
    /// or None when the host runs it natively.
    pub fn qemu_binfmt_name(self) -> Option<&'static str> {
        match self {
            DebianArch::Arm64 => Some("qemu-aarch64"),
            DebianArch::Armhf | DebianArch::Armel => Some("qemu-arm"),
            DebianArch::Amd64 => None,
        }
    }
}

impl DebianArch {
    /// True for the architecture kiln itself runs on (its programs run without emulation).
    pub fn is_host(self) -> bool {
        match self {
            DebianArch::Amd64 => cfg!(target_arch = "x86_64"),
            DebianArch::Arm64 => cfg!(target_arch = "aarch64"),
            DebianArch::Armhf | DebianArch::Armel => cfg!(target_arch = "arm"),
        }
    }
}

impl fmt::Display for DebianArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        for a in DebianArch::ALL {
            assert_eq!(DebianArch::parse(a.as_str()), Some(a));
        }
        assert_eq!(DebianArch::parse("i386"), None);
    }

    #[test]
    fn arm_flavours_share_machine_but_not_abi() {
        assert_eq!(
            DebianArch::Armhf.elf_identity(),
            DebianArch::Armel.elf_identity()
        );
        assert_ne!(DebianArch::Armhf.float_abi(), DebianArch::Armel.float_abi());
        assert_ne!(
            DebianArch::Armhf.dynamic_loader(),
            DebianArch::Armel.dynamic_loader()
        );
    }
}
