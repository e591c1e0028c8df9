//! Reads the facts `kiln check` judges from one ELF file: identity, program headers, the dynamic
//! section (as the loader reads it: through PT_DYNAMIC and the PT_LOAD mapping, so stripped
//! files without section headers are read too), symbol versions and the ARM attributes.
//!
//! Only facts here, no judgement. Every offset is bounds-checked by the `object` crate or by
//! [`slice_at`]; a file that does not hold together is an [`ElfError`], never a panic.

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, FileKind};

/// The four bytes every ELF file starts with.
pub const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// e_type values (ELF gABI).
pub const ET_REL: u16 = 1;
/// Executable.
pub const ET_EXEC: u16 = 2;
/// Shared object or position-independent executable.
pub const ET_DYN: u16 = 3;

/// e_machine values kiln names (ELF gABI registry).
pub const EM_NONE: u16 = 0;
/// 32-bit ARM.
pub const EM_ARM: u16 = 40;
/// x86-64.
pub const EM_X86_64: u16 = 62;
/// 64-bit ARM.
pub const EM_AARCH64: u16 = 183;
/// eBPF.
pub const EM_BPF: u16 = 247;

/// ARM e_flags: soft-float and hard-float procedure call standard (ARM ELF ABI, "ELF header").
pub const EF_ARM_ABI_FLOAT_SOFT: u32 = 0x200;
/// ARM e_flags: hard-float.
pub const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;

/// ARM build attribute Tag_ABI_VFP_args (ARM IHI 0045, "addenda to the ABI"): 0 base AAPCS
/// (soft), 1 VFP registers (hard), 2 toolchain-specific, 3 compatible with both.
pub const TAG_ABI_VFP_ARGS: u64 = 28;

/// One needed version (`vna_name`) of one needed file (`vn_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeededVersion {
    /// The library the version is needed from (its DT_NEEDED name).
    pub file: String,
    /// The version name, e.g. `GLIBC_2.34`.
    pub version: String,
    /// VER_FLG_WEAK: the loader only warns when it is missing.
    pub weak: bool,
}

/// What one ELF file says about itself.
#[derive(Debug, Clone, Default)]
pub struct ElfFacts {
    /// ELFCLASS64.
    pub is_64: bool,
    /// ELFDATA2LSB.
    pub little_endian: bool,
    /// e_type.
    pub e_type: u16,
    /// e_machine.
    pub machine: u16,
    /// e_flags.
    pub flags: u32,
    /// PT_INTERP, without its NUL.
    pub interp: Option<String>,
    /// Has PT_DYNAMIC.
    pub dynamic: bool,
    /// PT_GNU_STACK: Some(true) when it asks for an executable stack, None when absent.
    pub gnu_stack_exec: Option<bool>,
    /// Has PT_GNU_RELRO.
    pub relro: bool,
    /// DT_NEEDED entries in order.
    pub needed: Vec<String>,
    /// DT_RPATH.
    pub rpath: Option<String>,
    /// DT_RUNPATH.
    pub runpath: Option<String>,
    /// DT_SONAME.
    pub soname: Option<String>,
    /// DT_TEXTREL or DF_TEXTREL.
    pub textrel: bool,
    /// DT_BIND_NOW, DF_BIND_NOW or DF_1_NOW.
    pub bind_now: bool,
    /// DF_1_PIE.
    pub pie: bool,
    /// DF_1_NODEFLIB: the default directories are not searched for this object's needs.
    pub nodeflib: bool,
    /// Has DT_GNU_HASH.
    pub gnu_hash: bool,
    /// Has DT_HASH.
    pub sysv_hash: bool,
    /// Versions needed from other files (SHT_GNU_verneed).
    pub needed_versions: Vec<NeededVersion>,
    /// Versions this file defines (SHT_GNU_verdef), its own base name excluded.
    pub defined_versions: Vec<String>,
    /// Tag_ABI_VFP_args from `.ARM.attributes`, when present.
    pub vfp_args: Option<u64>,
    /// A section is named `.modinfo` (a Linux kernel module).
    pub kernel_module: bool,
}

/// An ELF file that does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ElfError(pub String);

/// Whether `data` starts like an ELF file (the magic only; [`parse`] decides the rest).
pub fn has_magic(data: &[u8]) -> bool {
    data.starts_with(ELF_MAGIC)
}

/// Reads the facts of an ELF file.
pub fn parse(data: &[u8]) -> Result<ElfFacts, ElfError> {
    match FileKind::parse(data) {
        Ok(FileKind::Elf32) => parse_as::<elf::FileHeader32<Endianness>>(data),
        Ok(FileKind::Elf64) => parse_as::<elf::FileHeader64<Endianness>>(data),
        Ok(_) => Err(ElfError("not an ELF file".into())),
        Err(e) => Err(ElfError(format!("invalid ELF header: {e}"))),
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> ElfError {
    ElfError(format!("{what}: {e}"))
}

/// `len` bytes at `offset`, or None when they are not all inside `data`.
pub fn slice_at(data: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end)
}

fn cstr_at(table: &[u8], offset: u64) -> Option<String> {
    let rest = table.get(usize::try_from(offset).ok()?..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

fn parse_as<H: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<ElfFacts, ElfError> {
    let header = H::parse(data).map_err(|e| err("ELF header", e))?;
    let endian = header.endian().map_err(|e| err("ELF header", e))?;
    let mut facts = ElfFacts {
        is_64: header.is_class_64(),
        little_endian: header.is_little_endian(),
        e_type: header.e_type(endian).0,
        machine: header.e_machine(endian).0,
        flags: header.e_flags(endian).0,
        ..ElfFacts::default()
    };
    let segments = header
        .program_headers(endian, data)
        .map_err(|e| err("program headers", e))?;
    let mut dynamic: Option<&[H::Dyn]> = None;
    for ph in segments {
        match ph.p_type(endian).0 {
            PT_INTERP => {
                let bytes = ph
                    .data(endian, data)
                    .map_err(|_| ElfError("PT_INTERP lies outside the file".into()))?;
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                facts.interp = Some(String::from_utf8_lossy(&bytes[..end]).into_owned());
            }
            PT_DYNAMIC => {
                facts.dynamic = true;
                dynamic = ph
                    .dynamic(endian, data)
                    .map_err(|_| ElfError("PT_DYNAMIC lies outside the file".into()))?;
            }
            PT_GNU_STACK => facts.gnu_stack_exec = Some(ph.p_flags(endian).0 & PF_X != 0),
            PT_GNU_RELRO => facts.relro = true,
            _ => {}
        }
    }
    if let Some(dyns) = dynamic {
        read_dynamic::<H>(&mut facts, endian, data, segments, dyns)?;
    }
    let sections = header
        .sections(endian, data)
        .map_err(|e| err("section headers", e))?;
    if let Some((verneed, link)) = sections
        .gnu_verneed(endian, data)
        .map_err(|e| err("version needs", e))?
    {
        let strings = sections
            .strings(endian, data, link)
            .map_err(|e| err("version needs", e))?;
        let mut iter = verneed;
        while let Some((vn, mut aux)) = iter.next().map_err(|e| err("version needs", e))? {
            let file = vn
                .file(endian, strings)
                .map_err(|e| err("version needs", e))?;
            let file = String::from_utf8_lossy(file).into_owned();
            while let Some(a) = aux.next().map_err(|e| err("version needs", e))? {
                let name = a
                    .name(endian, strings)
                    .map_err(|e| err("version needs", e))?;
                facts.needed_versions.push(NeededVersion {
                    file: file.clone(),
                    version: String::from_utf8_lossy(name).into_owned(),
                    weak: a.vna_flags.get(endian).0 & VER_FLG_WEAK != 0,
                });
            }
        }
    }
    if let Some((verdef, link)) = sections
        .gnu_verdef(endian, data)
        .map_err(|e| err("version definitions", e))?
    {
        let strings = sections
            .strings(endian, data, link)
            .map_err(|e| err("version definitions", e))?;
        let mut iter = verdef;
        while let Some((vd, mut aux)) = iter.next().map_err(|e| err("version definitions", e))? {
            let is_base = vd.vd_flags.get(endian).0 & VER_FLG_BASE != 0;
            // The first aux entry names the version itself; later ones are its parents.
            if let Some(a) = aux.next().map_err(|e| err("version definitions", e))? {
                if !is_base {
                    let name = a
                        .name(endian, strings)
                        .map_err(|e| err("version definitions", e))?;
                    facts
                        .defined_versions
                        .push(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
    }
    for section in sections.iter() {
        let name = sections.section_name(endian, section).unwrap_or_default();
        if name == b".modinfo" {
            facts.kernel_module = true;
        }
        if section.sh_type(endian).0 == SHT_ARM_ATTRIBUTES && facts.machine == EM_ARM {
            let bytes = section
                .data(endian, data)
                .map_err(|_| ElfError(".ARM.attributes lies outside the file".into()))?;
            facts.vfp_args = arm_vfp_args(bytes, endian);
        }
    }
    Ok(facts)
}

// Raw constant values (ELF gABI / GNU extensions), compared against object's newtypes' `.0`.
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_LOAD: u32 = 1;
const PT_GNU_STACK: u32 = 0x6474_e551;
const PT_GNU_RELRO: u32 = 0x6474_e552;
const PF_X: u32 = 1;
const SHT_ARM_ATTRIBUTES: u32 = 0x7000_0003;
const VER_FLG_BASE: u16 = 1;
const VER_FLG_WEAK: u16 = 2;
const DT_NEEDED: i64 = 1;
const DT_HASH: i64 = 4;
const DT_STRTAB: i64 = 5;
const DT_STRSZ: i64 = 10;
const DT_SONAME: i64 = 14;
const DT_RPATH: i64 = 15;
const DT_TEXTREL: i64 = 22;
const DT_BIND_NOW: i64 = 24;
const DT_RUNPATH: i64 = 29;
const DT_FLAGS: i64 = 30;
const DT_GNU_HASH: i64 = 0x6fff_fef5;
const DT_FLAGS_1: i64 = 0x6fff_fffb;
const DF_TEXTREL: u64 = 0x4;
const DF_BIND_NOW: u64 = 0x8;
const DF_1_NOW: u64 = 0x1;
const DF_1_NODEFLIB: u64 = 0x800;
const DF_1_PIE: u64 = 0x0800_0000;

/// Reads the dynamic entries the way ld.so does: the string table is found through DT_STRTAB,
/// a virtual address, mapped to the file through the PT_LOAD segments.
fn read_dynamic<H: FileHeader<Endian = Endianness>>(
    facts: &mut ElfFacts,
    endian: Endianness,
    data: &[u8],
    segments: &[H::ProgramHeader],
    dyns: &[H::Dyn],
) -> Result<(), ElfError> {
    let mut strtab = None;
    let mut strsz = None;
    let mut entries = Vec::new();
    for d in dyns {
        let tag = d.tag(endian).0;
        if tag == 0 {
            break;
        }
        let val = d.val(endian);
        match tag {
            DT_STRTAB => strtab = Some(val),
            DT_STRSZ => strsz = Some(val),
            DT_HASH => facts.sysv_hash = true,
            DT_GNU_HASH => facts.gnu_hash = true,
            DT_TEXTREL => facts.textrel = true,
            DT_BIND_NOW => facts.bind_now = true,
            DT_FLAGS => {
                facts.textrel |= val & DF_TEXTREL != 0;
                facts.bind_now |= val & DF_BIND_NOW != 0;
            }
            DT_FLAGS_1 => {
                facts.bind_now |= val & DF_1_NOW != 0;
                facts.pie = val & DF_1_PIE != 0;
                facts.nodeflib = val & DF_1_NODEFLIB != 0;
            }
            DT_NEEDED | DT_SONAME | DT_RPATH | DT_RUNPATH => entries.push((tag, val)),
            _ => {}
        }
    }
    if entries.is_empty() {
        return Ok(());
    }
    let (Some(strtab), Some(strsz)) = (strtab, strsz) else {
        return Err(ElfError(
            "dynamic section names libraries but has no DT_STRTAB/DT_STRSZ".into(),
        ));
    };
    let offset = segments
        .iter()
        .filter(|ph| ph.p_type(endian).0 == PT_LOAD)
        .find_map(|ph| {
            let vaddr: u64 = ph.p_vaddr(endian).into();
            let filesz: u64 = ph.p_filesz(endian).into();
            let off: u64 = ph.p_offset(endian).into();
            (strtab >= vaddr && strtab - vaddr < filesz).then(|| off + (strtab - vaddr))
        })
        .ok_or_else(|| ElfError(format!("DT_STRTAB {strtab:#x} is in no PT_LOAD segment")))?;
    let table = slice_at(data, offset, strsz)
        .ok_or_else(|| ElfError("the dynamic string table lies outside the file".into()))?;
    for (tag, val) in entries {
        let s = cstr_at(table, val).ok_or_else(|| {
            ElfError(format!(
                "dynamic entry {tag} points outside the string table"
            ))
        })?;
        match tag {
            DT_NEEDED => facts.needed.push(s),
            DT_SONAME => facts.soname = Some(s),
            DT_RPATH => facts.rpath = Some(s),
            _ => facts.runpath = Some(s),
        }
    }
    Ok(())
}

/// Tag_ABI_VFP_args of the "aeabi" vendor's file-scope attributes.
fn arm_vfp_args(bytes: &[u8], endian: Endianness) -> Option<u64> {
    let section =
        object::read::elf::AttributesSection::<elf::FileHeader32<Endianness>>::new(endian, bytes)
            .ok()?;
    let mut subsections = section.subsections().ok()?;
    while let Ok(Some(sub)) = subsections.next() {
        if sub.vendor() != b"aeabi" {
            continue;
        }
        let mut subsubs = sub.subsubsections();
        while let Ok(Some(subsub)) = subsubs.next() {
            // Tag_File (1): attributes of the whole file.
            if subsub.tag().0 != 1 {
                continue;
            }
            let mut attrs = subsub.attributes();
            while let Ok(Some(tag)) = attrs.read_tag() {
                // Tags 4, 5, 67 and odd tags above 32 carry NUL-terminated strings, the rest
                // ULEB128 integers (ARM IHI 0045, "Public ("aeabi") attribute tags").
                let is_string = tag == 4 || tag == 5 || tag == 67 || (tag > 32 && tag % 2 == 1);
                if is_string {
                    attrs.read_string().ok()?;
                } else {
                    let value = attrs.read_integer().ok()?;
                    if tag == TAG_ABI_VFP_ARGS {
                        return Some(value);
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_elf_and_truncated_input_is_an_error_not_a_panic() {
        assert!(parse(b"hello").is_err());
        let mut header = b"\x7fELF\x02\x01\x01".to_vec();
        header.resize(40, 0);
        assert!(parse(&header).is_err());
        for len in 0..64 {
            let _ = parse(&header[..len.min(header.len())]);
        }
    }

    #[test]
    fn the_running_test_binary_reads_as_itself() {
        let exe = std::fs::read("/proc/self/exe").expect("read own executable");
        let facts = parse(&exe).expect("own executable parses");
        assert!(facts.dynamic);
        assert!(facts.needed.iter().any(|n| n.starts_with("libc.so")));
        assert!(facts
            .needed_versions
            .iter()
            .any(|v| v.version.starts_with("GLIBC_2.")));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(facts.machine, EM_X86_64);
    }
}
