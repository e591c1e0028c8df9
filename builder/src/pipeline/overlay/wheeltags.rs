//! Which wheels fit the image's Python: the compatibility tags (PEP 425) of the target
//! interpreter in pip's order of preference, the manylinux rules (PEP 600: `manylinux_X_Y` runs
//! on glibc X.Y or newer; the legacy aliases manylinux1 = 2_5, manylinux2010 = 2_12,
//! manylinux2014 = 2_17, which PEP 599 defines only for some architectures), and the choice of
//! the best wheel of a requirement among the files at hand.
//!
//! kiln computes this itself instead of asking the target's pip: stretch's pip 9 knows no
//! manylinux2014 tags, and the build host's pip answers for the host, not the robot. The order
//! follows `packaging.tags.sys_tags()` for CPython: the interpreter's own ABI, then abi3, then
//! `none`, each over the platforms from the most specific (newest glibc) to plain `linux_*`;
//! then the pure-Python `pyXY`/`pyX` tags, `any` last.

/// One compatibility tag (PEP 425): the Python implementation and version, the ABI and the
/// platform a wheel runs on; displayed `python-abi-platform` as in a wheel's file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WheelTag {
    /// `cp35`, `py3`.
    pub python: String,
    /// `cp35m`, `abi3`, `none`.
    pub abi: String,
    /// `manylinux_2_24_armv7l`, `linux_aarch64`, `any`.
    pub platform: String,
}

impl WheelTag {
    fn new(python: &str, abi: &str, platform: &str) -> WheelTag {
        WheelTag {
            python: python.to_string(),
            abi: abi.to_string(),
            platform: platform.to_string(),
        }
    }
}

impl std::fmt::Display for WheelTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.python, self.abi, self.platform)
    }
}

/// The interpreter and machine an environment is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonTarget {
    /// Major and minor version (3, 5).
    pub version: (u32, u32),
    /// The machine as wheels name it: `armv7l`, `aarch64`, `armv5tel`, `x86_64`.
    pub machine: String,
    /// The image's glibc (2, 24).
    pub glibc: (u32, u32),
}

impl PythonTarget {
    /// The wheel machine name of a Debian architecture.
    pub fn machine_of(arch: crate::arch::DebianArch) -> &'static str {
        match arch {
            crate::arch::DebianArch::Arm64 => "aarch64",
            crate::arch::DebianArch::Armhf => "armv7l",
            crate::arch::DebianArch::Armel => "armv5tel",
            crate::arch::DebianArch::Amd64 => "x86_64",
        }
    }

    /// The CPython ABI tag: `cp35m` before 3.8 (pymalloc builds), `cp27mu` for Debian's
    /// wide-unicode 2.7, `cp38` onwards without a suffix.
    pub fn abi(&self) -> String {
        let (major, minor) = self.version;
        match (major, minor) {
            (2, _) => format!("cp{major}{minor}mu"),
            (3, m) if m < 8 => format!("cp{major}{minor}m"),
            _ => format!("cp{major}{minor}"),
        }
    }

    /// Platform tags, most specific first.
    pub fn platforms(&self) -> Vec<String> {
        let m = &self.machine;
        let mut out = Vec::new();
        // manylinux exists for these machines (PEP 600 names any; PyPI accepts these).
        let manylinux = [
            "x86_64", "i686", "aarch64", "armv7l", "ppc64le", "s390x", "ppc64",
        ]
        .contains(&m.as_str());
        if manylinux && self.glibc.0 == 2 {
            // manylinux_2_17 is the oldest for the architectures beyond x86 (PEP 599).
            let oldest = if m == "x86_64" || m == "i686" { 5 } else { 17 };
            for minor in (oldest..=self.glibc.1).rev() {
                out.push(format!("manylinux_2_{minor}_{m}"));
                let legacy = match minor {
                    17 => Some("manylinux2014"),
                    12 if m == "x86_64" || m == "i686" => Some("manylinux2010"),
                    5 if m == "x86_64" || m == "i686" => Some("manylinux1"),
                    _ => None,
                };
                if let Some(l) = legacy {
                    out.push(format!("{l}_{m}"));
                }
            }
        }
        out.push(format!("linux_{m}"));
        out
    }

    /// Every tag the interpreter accepts, best first.
    pub fn tags(&self) -> Vec<WheelTag> {
        let (major, minor) = self.version;
        let cp = format!("cp{major}{minor}");
        let platforms = self.platforms();
        let mut out = Vec::new();
        for p in &platforms {
            out.push(WheelTag::new(&cp, &self.abi(), p));
        }
        if major == 3 {
            // abi3 wheels built for this or any earlier 3.x (cp32 was the first).
            for m in (2..=minor).rev() {
                for p in &platforms {
                    out.push(WheelTag::new(&format!("cp3{m}"), "abi3", p));
                }
            }
        }
        for p in &platforms {
            out.push(WheelTag::new(&cp, "none", p));
        }
        // Pure-Python tags, possibly platform-specific, then `any`.
        let mut pys = vec![format!("py{major}{minor}"), format!("py{major}")];
        for m in (0..minor).rev() {
            pys.push(format!("py{major}{m}"));
        }
        for py in &pys {
            for p in &platforms {
                out.push(WheelTag::new(py, "none", p));
            }
        }
        out.push(WheelTag::new(&cp, "none", "any"));
        for py in &pys {
            out.push(WheelTag::new(py, "none", "any"));
        }
        out
    }
}

/// A wheel file name, split (PEP 427: `{dist}-{version}(-{build})?-{py}-{abi}-{platform}.whl`,
/// each tag possibly a `.`-separated set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelName {
    /// The file name.
    pub file: String,
    /// Distribution, normalised.
    pub name: String,
    /// Version.
    pub version: String,
    /// Every tag the file's compressed tag sets expand to.
    pub tags: Vec<WheelTag>,
}

impl WheelName {
    /// Parses a wheel file name; None when it is not one.
    pub fn parse(file: &str) -> Option<WheelName> {
        let stem = file.strip_suffix(".whl")?;
        let parts: Vec<&str> = stem.split('-').collect();
        let (name, version, py, abi, plat) = match parts.as_slice() {
            [n, v, py, abi, plat] => (n, v, py, abi, plat),
            [n, v, _build, py, abi, plat] => (n, v, py, abi, plat),
            _ => return None,
        };
        if name.is_empty() || version.is_empty() {
            return None;
        }
        let mut tags = Vec::new();
        for p in py.split('.') {
            for a in abi.split('.') {
                for pl in plat.split('.') {
                    if p.is_empty() || a.is_empty() || pl.is_empty() {
                        return None;
                    }
                    tags.push(WheelTag::new(p, a, pl));
                }
            }
        }
        Some(WheelName {
            file: file.to_string(),
            name: crate::recipe::requirements::normalize_name(name),
            version: version.to_string(),
            tags,
        })
    }
}

/// Why no wheel fits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no wheel of {name} {version} fits {target}: {found}")]
pub struct NoWheel {
    /// The requirement.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The best tag the target accepts, for the message.
    pub target: String,
    /// What was found instead.
    pub found: String,
}

/// Picks the best wheel of `name==version` for `target` among `files` (file names): the one
/// whose best tag comes first in the target's order.
pub fn select<'a>(
    target: &PythonTarget,
    name: &str,
    version: &str,
    files: &'a [String],
) -> Result<&'a str, NoWheel> {
    let order = target.tags();
    let rank = |w: &WheelName| -> Option<usize> {
        w.tags
            .iter()
            .filter_map(|t| order.iter().position(|o| o == t))
            .min()
    };
    let candidates: Vec<(usize, &'a str)> = files
        .iter()
        .filter_map(|f| {
            let w = WheelName::parse(f)?;
            (w.name == name && w.version == version).then_some((w, f.as_str()))
        })
        .filter_map(|(w, f)| rank(&w).map(|r| (r, f)))
        .collect();
    if let Some((_, best)) = candidates.into_iter().min_by_key(|(r, f)| (*r, *f)) {
        return Ok(best);
    }
    let same: Vec<&str> = files
        .iter()
        .filter(|f| WheelName::parse(f).is_some_and(|w| w.name == name && w.version == version))
        .map(String::as_str)
        .collect();
    let best = order.first().map(WheelTag::to_string).unwrap_or_default();
    Err(NoWheel {
        name: name.to_string(),
        version: version.to_string(),
        target: best,
        found: if same.is_empty() {
            "no wheel of that version at all".to_string()
        } else {
            format!("only {}", same.join(", "))
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stretch_armhf() -> PythonTarget {
        PythonTarget {
            version: (3, 5),
            machine: "armv7l".into(),
            glibc: (2, 24),
        }
    }

    #[test]
    fn stretch_armhf_accepts_manylinux_up_to_glibc_2_24() {
        let t = stretch_armhf();
        let p = t.platforms();
        assert_eq!(p.first().unwrap(), "manylinux_2_24_armv7l");
        assert!(p.contains(&"manylinux2014_armv7l".to_string()));
        assert!(!p.iter().any(|x| x.contains("2_28")));
        assert!(!p.iter().any(|x| x.contains("manylinux1")));
        assert_eq!(p.last().unwrap(), "linux_armv7l");
        let tags = t.tags();
        assert_eq!(tags[0].to_string(), "cp35-cp35m-manylinux_2_24_armv7l");
        assert_eq!(tags.last().unwrap().platform, "any");
    }

    #[test]
    fn selects_the_most_specific_fitting_wheel() {
        let t = stretch_armhf();
        let files: Vec<String> = [
            "msgpack-1.0.2-cp35-cp35m-manylinux2014_armv7l.whl",
            "msgpack-1.0.2-cp35-cp35m-manylinux_2_28_armv7l.whl", // needs glibc 2.28
            "msgpack-1.0.2-cp35-cp35m-manylinux2014_x86_64.whl",
            "msgpack-1.0.2-py2.py3-none-any.whl",
            "msgpack-1.0.1-cp35-cp35m-manylinux_2_24_armv7l.whl", // other version
            "not-a-wheel.tar.gz",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            select(&t, "msgpack", "1.0.2", &files).unwrap(),
            "msgpack-1.0.2-cp35-cp35m-manylinux2014_armv7l.whl"
        );
        // Without the ARM wheel, the pure-Python one.
        let rest: Vec<String> = files[1..].to_vec();
        assert_eq!(
            select(&t, "msgpack", "1.0.2", &rest).unwrap(),
            "msgpack-1.0.2-py2.py3-none-any.whl"
        );
        // An x86_64 wheel is never taken for armhf.
        let x86 = vec!["msgpack-1.0.2-cp35-cp35m-manylinux2014_x86_64.whl".to_string()];
        let e = select(&t, "msgpack", "1.0.2", &x86).unwrap_err();
        assert!(
            e.to_string()
                .contains("only msgpack-1.0.2-cp35-cp35m-manylinux2014_x86_64.whl"),
            "{e}"
        );
        assert!(
            e.to_string().contains("cp35-cp35m-manylinux_2_24_armv7l"),
            "{e}"
        );
    }

    #[test]
    fn abi3_and_python2() {
        let bookworm = PythonTarget {
            version: (3, 11),
            machine: "aarch64".into(),
            glibc: (2, 36),
        };
        let files = vec!["cryptography-41.0.7-cp37-abi3-manylinux_2_28_aarch64.whl".to_string()];
        assert!(select(&bookworm, "cryptography", "41.0.7", &files).is_ok());
        let py27 = PythonTarget {
            version: (2, 7),
            machine: "armv7l".into(),
            glibc: (2, 24),
        };
        assert_eq!(py27.abi(), "cp27mu");
        let files = vec!["six-1.16.0-py2.py3-none-any.whl".to_string()];
        assert!(select(&py27, "six", "1.16.0", &files).is_ok());
        let files = vec!["x-1.0-cp35-cp35m-linux_armv7l.whl".to_string()];
        assert!(select(&py27, "x", "1.0", &files).is_err());
    }

    #[test]
    fn parses_build_tags_and_compressed_sets() {
        let w = WheelName::parse("Foo_Bar-2.0-1-py2.py3-none-any.whl").unwrap();
        assert_eq!(w.name, "foo-bar");
        assert_eq!(w.tags.len(), 2);
        assert!(WheelName::parse("foo-1.0.whl").is_none());
        assert!(WheelName::parse("foo-1.0-py3--any.whl").is_none());
    }
}
