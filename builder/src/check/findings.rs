//! What a check reports: the check ids (stable, documented in the README, used by waivers and
//! CI dashboards), their default severities, and one finding with its evidence.

use serde::Serialize;
use std::fmt;

/// How bad a finding is. Errors fail `kiln check` (exit 1) and `kiln build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The image will not work, or is unsafe, on the device.
    Error,
    /// Probably wrong or weak; does not fail the build.
    Warning,
    /// For the record (classification, hardening facts).
    Info,
}

impl Severity {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! checks {
    ($( $variant:ident => $id:literal, $sev:ident, $doc:literal; )*) => {
        /// Every check `kiln check` runs, by stable id.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Check {
            $( #[doc = $doc] $variant, )*
        }

        impl Check {
            /// Every check.
            pub const ALL: &'static [Check] = &[$(Check::$variant),*];

            /// The stable id.
            pub fn id(self) -> &'static str {
                match self { $(Check::$variant => $id,)* }
            }

            /// The severity a finding has unless the check says otherwise.
            pub fn default_severity(self) -> Severity {
                match self { $(Check::$variant => Severity::$sev,)* }
            }

            /// One line on what the check looks for.
            pub fn description(self) -> &'static str {
                match self { $(Check::$variant => $doc,)* }
            }

            /// The check with this id.
            pub fn from_id(id: &str) -> Option<Check> {
                Check::ALL.iter().copied().find(|c| c.id() == id)
            }
        }
    };
}

checks! {
    ElfCorrupt => "elf-corrupt", Error, "ELF magic but a header or offset that does not hold together";
    Arch => "arch", Error, "ELF machine, class or byte order differs from the board's";
    ArmFloat => "arm-float", Error, "32-bit ARM EABI version or float ABI differs from the board's";
    Interp => "interp", Error, "PT_INTERP is not the board's loader or does not resolve to it";
    Needed => "needed", Error, "a DT_NEEDED library does not resolve the way glibc's loader searches";
    SymbolVersions => "symbol-versions", Error, "a needed symbol version (GLIBC_2.x, ...) is not provided";
    RpathBuilddir => "rpath-builddir", Error, "RPATH/RUNPATH points at a build directory";
    RpathEmpty => "rpath-empty", Error, "RPATH/RUNPATH has an empty entry (the current directory)";
    RpathRelative => "rpath-relative", Error, "RPATH/RUNPATH has a relative entry (relative to the working directory)";
    RpathSetuid => "rpath-setuid", Error, "a privileged file has an RPATH the loader ignores or that is unsafe";
    RpathUnsafeDir => "rpath-unsafe-dir", Error, "RPATH/RUNPATH entry in a world-writable or temporary directory";
    RpathOutsidePrefix => "rpath-outside-prefix", Error, "an object inside a daemon prefix has an RPATH/RUNPATH leaving it";
    RpathRedundant => "rpath-redundant", Warning, "RPATH/RUNPATH entry repeats a default directory or an earlier entry";
    RpathMissingDir => "rpath-missing-dir", Warning, "RPATH/RUNPATH entry names a directory the image does not have";
    Pyext => "pyext", Error, "a Python extension module's tag does not match the image's Python or the arch";
    ScriptInterp => "script-interp", Error, "an executable script's interpreter is missing, not executable or too long";
    VenvConfig => "venv-config", Error, "a Python env's pyvenv.cfg lets the system's site-packages in, or has no usable home";
    VenvShebang => "venv-shebang", Error, "a script in a Python env's bin/ starts an interpreter outside the env";
    VenvPth => "venv-pth", Warning, "a .pth file in a Python env runs an import at every interpreter start";
    VenvHostPath => "venv-host-path", Error, "a file of a Python env names a path of the build host";
    VenvDirSymlink => "venv-dir-symlink", Error, "a symlink inside a Python env resolves to a directory";
    VenvSysPath => "venv-sys-path", Error, "a Python env's interpreter, started under qemu, has more than the stdlib and the env on sys.path";
    BakedSecret => "baked-secret", Error, "private key material (PEM, OpenSSH, OpenPGP, WireGuard) in the image: every unit flashed from it shares the key";
    Textrel => "textrel", Warning, "text relocations (DT_TEXTREL)";
    Execstack => "execstack", Warning, "asks for an executable stack (PT_GNU_STACK with X)";
    NoGnuHash => "no-gnu-hash", Warning, "dynamic symbols without DT_GNU_HASH";
    Hardening => "hardening", Info, "not PIE, or no RELRO";
    Waiver => "waiver", Warning, "a waiver that expired or matched nothing";
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// One thing a check found about one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check.
    pub check: Check,
    /// Its severity (the check's default unless it decided otherwise).
    pub severity: Severity,
    /// The image path.
    pub path: String,
    /// Other names of the same file (hard links).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The Debian package (or overlay) that installed it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// What is wrong, in one line.
    pub message: String,
    /// The facts behind it (expected/actual values, a search trace).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// The waiver that accepted it, when one did (it then does not count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waived: Option<String>,
}

impl Finding {
    /// A finding at the check's default severity.
    pub fn new(check: Check, path: &str, message: impl Into<String>) -> Finding {
        Finding {
            check,
            severity: check.default_severity(),
            path: path.to_string(),
            aliases: Vec::new(),
            package: None,
            message: message.into(),
            evidence: Vec::new(),
            waived: None,
        }
    }

    /// With another severity.
    pub fn severity(mut self, s: Severity) -> Finding {
        self.severity = s;
        self
    }

    /// With evidence lines.
    pub fn evidence(mut self, lines: impl IntoIterator<Item = String>) -> Finding {
        self.evidence.extend(lines);
        self
    }
}
