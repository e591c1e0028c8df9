//! Python bytecode for the system Python, made once and the same in every build.
//!
//! A robot's root filesystem is often read-only (squashfs, RAUC with verity): with no `.pyc`
//! beside the stdlib, every daemon start compiles every module it imports, every time. Debian's
//! packages byte-compile in their postinsts (python3.X's runs `py_compile.py` over the stdlib,
//! others call `py3compile`), but those pycs are timestamp-based and written by many processes
//! in whatever order the scripts ran; marshal's output depends on the process's history (which
//! objects are shared when a code object is written), so they differ from build to build.
//!
//! So while the scripts run, `py3compile`/`py3clean` and the stdlib's `py_compile.py` run as a
//! script are stand-ins that do nothing ([`hold`]; the directories `py3compile` was asked for
//! are noted), nothing is compiled twice, and afterwards [`compile`] byte-compiles under qemu:
//! every `/usr/lib/python3.X` with its own interpreter, `/usr/lib/python3/dist-packages` and the
//! noted private directories with each, one process per directory, the processes one after
//! another in a fixed order (stdlib first), files in sorted order, `PYTHONHASHSEED=0`
//! (frozenset constants are ordered by hash), hash-based pycs that check their source (PEP 552;
//! timestamp pycs before 3.7, whose source mtimes the layer keeps since they predate
//! SOURCE_DATE_EPOCH). Neither the partition nor the order depends on `-j`, so the bytes do
//! not either: a process run while another writes the stdlib's pycs would find some of them
//! and not others, and marshal's output depends on what the process holds. Python 2's pycs (beside their sources) are left as its postinst
//! wrote them.

use super::stubs::{self, Swapped};
use super::ConfigureError;
use crate::inroot::{ImageRoot, InRootError, Kind};
use crate::sandbox::Sandbox;
use std::collections::BTreeSet;

/// Where the `py3compile` stand-in notes the directories it was asked to compile.
const NOTED_DIRS: &str = "/var/lib/kiln-py3compile.dirs";

/// Shell stand-in for `py3compile`: absolute arguments are the directories to compile.
const PY3COMPILE_STAND_IN: &[u8] = b"#!/bin/sh\n\
# kiln: Python bytecode is compiled once, after every package is configured.\n\
for a in \"$@\"; do case \"$a\" in /*) echo \"$a\" >> /var/lib/kiln-py3compile.dirs;; esac; done\n\
exit 0\n";

/// Shell stand-in for `py3clean`: there is nothing to clean before anything is compiled.
const PY3CLEAN_STAND_IN: &[u8] = b"#!/bin/sh\n\
# kiln: Python bytecode is compiled once, after every package is configured.\n\
exit 0\n";

/// `py_compile.py` while the scripts run: run as a script (python3.X's postinst does so over
/// the stdlib) it does nothing; imported, it is the real module (Python 3.5 syntax: stretch).
const PY_COMPILE_STAND_IN: &[u8] =
    br#"# kiln: Python bytecode is compiled once, after every package is configured.
import sys
if __name__ == '__main__':
    sys.exit(0)
import os as _os
_real = _os.path.join(_os.path.dirname(__file__), 'py_compile.py.kiln-real')
with open(_real, encoding='utf-8') as _f:
    exec(compile(_f.read(), _real, 'exec'))
"#;

/// The compile step run by each interpreter: `argv[1]` is `hash` or `timestamp`, the rest are
/// directories. Prints one `kiln-pyc-failed:` line per file that does not compile (Python could
/// not import it either) and a final `kiln-pyc-compiled: N`.
const COMPILE_SCRIPT: &str = r#"
import os, sys, py_compile
kw = {}
if sys.argv[1] == 'hash':
    kw['invalidation_mode'] = py_compile.PycInvalidationMode.CHECKED_HASH
done = 0
for top in sys.argv[2:]:
    for here, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d != '__pycache__')
        for name in sorted(files):
            if not name.endswith('.py'):
                continue
            path = os.path.join(here, name)
            try:
                py_compile.compile(path, doraise=True, **kw)
                done += 1
            except (py_compile.PyCompileError, OSError, ValueError, SyntaxError) as e:
                why = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                print('kiln-pyc-failed: %s: %s' % (path, why), flush=True)
print('kiln-pyc-compiled: %d' % done, flush=True)
"#;

/// The stand-ins in place while the maintainer scripts run.
pub struct Held {
    swapped: Vec<Swapped>,
}

/// A Python 3 interpreter of the image: its version (`3.11`) and stdlib directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interpreter {
    /// `X.Y`.
    pub version: String,
    /// Whether its pycs can be hash-based (3.7 and later).
    pub hash_based: bool,
}

impl Interpreter {
    fn program(&self) -> String {
        format!("/usr/bin/python{}", self.version)
    }
}

/// The Python 3 interpreters in the image: `/usr/bin/python3.Y` (a file or link) with its
/// `/usr/lib/python3.Y`, sorted by version.
pub fn interpreters(image: &ImageRoot) -> Result<Vec<Interpreter>, InRootError> {
    let Some(bin) = image.dir("usr/bin")? else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for name in bin.entries()? {
        let name = name.to_string_lossy().into_owned();
        let Some(minor) = name.strip_prefix("python3.") else {
            continue;
        };
        let Ok(minor) = minor.parse::<u32>() else {
            continue;
        };
        if !matches!(bin.kind(&name)?, Some(Kind::File | Kind::Symlink)) {
            continue;
        }
        if image.kind(format!("usr/lib/python3.{minor}"))? != Some(Kind::Dir) {
            continue;
        }
        found.push((
            minor,
            Interpreter {
                version: format!("3.{minor}"),
                hash_based: minor >= 7,
            },
        ));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, i)| i).collect())
}

/// Puts the stand-ins in place (before any maintainer script runs).
pub fn hold(image: &ImageRoot) -> Result<Held, InRootError> {
    let mut swapped = stubs::swap(image, &["/usr/bin/py3compile"], PY3COMPILE_STAND_IN)?;
    swapped.extend(stubs::swap(
        image,
        &["/usr/bin/py3clean"],
        PY3CLEAN_STAND_IN,
    )?);
    for python in interpreters(image)? {
        let path = format!("/usr/lib/python{}/py_compile.py", python.version);
        swapped.extend(stubs::swap(image, &[path.as_str()], PY_COMPILE_STAND_IN)?);
    }
    Ok(Held { swapped })
}

/// Puts the real programs back.
pub fn release(held: Held) -> Result<(), InRootError> {
    stubs::restore(held.swapped)
}

/// What [`compile`] made for one interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// `X.Y`.
    pub version: String,
    /// Modules byte-compiled.
    pub modules: usize,
    /// Image directories compiled.
    pub dirs: Vec<String>,
    /// `path: reason` of each source that does not compile (so Python cannot import it either).
    pub failed: Vec<String>,
}

/// Removes every `__pycache__` below `dir` (what build-time runs of Python left behind).
fn remove_pycache(dir: &crate::inroot::Dir) -> Result<(), InRootError> {
    for name in dir.entries()? {
        if dir.kind(&name)? != Some(Kind::Dir) {
            continue;
        }
        if name == "__pycache__" {
            dir.remove_all(&name)?;
        } else if let Some(sub) = dir.sub(&name)? {
            remove_pycache(&sub)?;
        }
    }
    Ok(())
}

/// Whether `path` (absolute, plain) is a directory reached through directories only: then no
/// two accepted paths name one directory unless one string contains the other.
fn reached_without_links(image: &ImageRoot, path: &str) -> Result<bool, InRootError> {
    let mut at = image.root_dir()?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if at.kind(part)? != Some(Kind::Dir) {
            return Ok(false);
        }
        match at.sub(part)? {
            Some(sub) => at = sub,
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// The private directories `py3compile` was asked for (the note itself is removed): real
/// directories reached without symlinks, outside `/usr/lib/python*` (compiled anyway), none
/// inside another (each file is compiled by exactly one process), sorted.
fn noted_dirs(image: &ImageRoot) -> Result<Vec<String>, InRootError> {
    let noted = image.read(NOTED_DIRS, 1 << 20)?.unwrap_or_default();
    image.remove_file(NOTED_DIRS)?;
    let mut candidates = BTreeSet::new();
    for line in String::from_utf8_lossy(&noted).lines() {
        let dir = line.trim_end_matches('/');
        let plain = dir.starts_with('/')
            && !dir
                .split('/')
                .skip(1)
                .any(|c| c.is_empty() || c == ".." || c == ".");
        if plain && !dir.starts_with("/usr/lib/python") && reached_without_links(image, dir)? {
            candidates.insert(dir.to_string());
        }
    }
    let mut dirs: Vec<String> = Vec::new();
    for dir in candidates {
        let inside_previous = dirs
            .last()
            .is_some_and(|prev| dir.starts_with(&format!("{prev}/")));
        if !inside_previous {
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

/// Replaces whatever bytecode the build's Python runs left in `/usr/lib` and in the private
/// directories noted by the `py3compile` stand-in with freshly compiled, deterministic pycs
/// (see the module doc).
pub fn compile(sandbox: &Sandbox, image: &ImageRoot) -> Result<Vec<Compiled>, ConfigureError> {
    let noted = noted_dirs(image)?;
    if let Some(usr_lib) = image.dir("usr/lib")? {
        remove_pycache(&usr_lib)?;
    }
    for dir in &noted {
        if let Some(d) = image.dir(dir)? {
            remove_pycache(&d)?;
        }
    }
    let pythons = interpreters(image)?;
    let dist_packages = image.kind("usr/lib/python3/dist-packages")? == Some(Kind::Dir);
    // One process per (interpreter, directory), the same partition in every build.
    let mut work: Vec<(usize, String)> = Vec::new();
    for (k, python) in pythons.iter().enumerate() {
        work.push((k, format!("/usr/lib/python{}", python.version)));
        if dist_packages {
            work.push((k, "/usr/lib/python3/dist-packages".to_string()));
        }
        work.extend(noted.iter().map(|d| (k, d.clone())));
    }
    let env = [("PYTHONHASHSEED", "0"), ("PYTHONDONTWRITEBYTECODE", "1")];
    // One after another, in this order, whatever `-j` is: each process imports part of the
    // stdlib, and whether it finds the stdlib's new pycs already written changes the objects it
    // holds and so the bytes marshal writes for what it compiles.
    let mut compiled: Vec<Compiled> = pythons
        .iter()
        .map(|p| Compiled {
            version: p.version.clone(),
            modules: 0,
            dirs: Vec::new(),
            failed: Vec::new(),
        })
        .collect();
    for (k, dir) in &work {
        let python = &pythons[*k];
        let mode = if python.hash_based {
            "hash"
        } else {
            "timestamp"
        };
        let ran = sandbox.run(
            &python.program(),
            &["-S", "-c", COMPILE_SCRIPT, mode, dir],
            &env,
        )?;
        let text = String::from_utf8_lossy(&ran.output);
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("kiln-pyc-compiled: "))
            .and_then(|n| n.trim().parse::<usize>().ok());
        let (Some(count), true) = (count, ran.status.success()) else {
            return Err(ConfigureError::Script {
                package: format!("python{}", python.version),
                script: format!("byte-compiling {dir}"),
                status: super::exit_description(ran.status),
                tail: super::tail_of(&ran),
            });
        };
        let entry = &mut compiled[*k];
        entry.modules += count;
        entry.dirs.push(dir.clone());
        entry.failed.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("kiln-pyc-failed: "))
                .map(str::to_string),
        );
    }
    Ok(compiled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with_python(tmp: &std::path::Path) -> ImageRoot {
        let image = ImageRoot::open(tmp).unwrap();
        image.write("/usr/bin/python3.11", b"elf", 0o755).unwrap();
        image
            .write("/usr/bin/python3.11-config", b"sh", 0o755)
            .unwrap();
        image.write("/usr/bin/python3.5", b"elf", 0o755).unwrap();
        image
            .write("/usr/bin/python3.9", b"no stdlib", 0o755)
            .unwrap();
        image
            .write("/usr/lib/python3.11/py_compile.py", b"real 3.11", 0o644)
            .unwrap();
        image
            .write("/usr/lib/python3.5/py_compile.py", b"real 3.5", 0o644)
            .unwrap();
        image
            .write("/usr/bin/py3compile", b"#!/usr/bin/python3", 0o755)
            .unwrap();
        image
    }

    #[test]
    fn interpreters_need_a_program_and_a_stdlib() {
        let tmp = tempfile::tempdir().unwrap();
        let image = image_with_python(tmp.path());
        let found = interpreters(&image).unwrap();
        let versions: Vec<(&str, bool)> = found
            .iter()
            .map(|p| (p.version.as_str(), p.hash_based))
            .collect();
        assert_eq!(versions, [("3.5", false), ("3.11", true)]);
    }

    #[test]
    fn stand_ins_are_in_place_only_while_held() {
        let tmp = tempfile::tempdir().unwrap();
        let image = image_with_python(tmp.path());
        let held = hold(&image).unwrap();
        let stand_in = image
            .read("/usr/lib/python3.11/py_compile.py", 4096)
            .unwrap()
            .unwrap();
        assert!(stand_in.starts_with(b"# kiln:"));
        assert_eq!(
            image.read("/usr/bin/py3compile", 4096).unwrap().as_deref(),
            Some(PY3COMPILE_STAND_IN)
        );
        release(held).unwrap();
        assert_eq!(
            image
                .read("/usr/lib/python3.5/py_compile.py", 100)
                .unwrap()
                .as_deref(),
            Some(&b"real 3.5"[..])
        );
        assert_eq!(
            image.read("/usr/bin/py3compile", 100).unwrap().as_deref(),
            Some(&b"#!/usr/bin/python3"[..])
        );
    }

    /// The stand-in as Python runs it (the host's Python 3 and its real py_compile): as a
    /// script it does nothing and succeeds; imported, it is the real module.
    #[test]
    fn the_py_compile_stand_in_runs_and_imports() {
        let out = std::process::Command::new("python3")
            .args([
                "-S",
                "-c",
                "import py_compile, sys; sys.stdout.write(py_compile.__file__)",
            ])
            .output()
            .expect("the host's python3 (ci/setup installs it)");
        let real = std::fs::read(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("py_compile.py"), PY_COMPILE_STAND_IN).unwrap();
        std::fs::write(tmp.path().join("py_compile.py.kiln-real"), real).unwrap();
        std::fs::write(tmp.path().join("m.py"), "x = 1\n").unwrap();
        let ran = std::process::Command::new("python3")
            .arg("-S")
            .arg(tmp.path().join("py_compile.py"))
            .arg(tmp.path().join("m.py"))
            .output()
            .unwrap();
        assert!(
            ran.status.success(),
            "{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        assert!(
            !tmp.path().join("__pycache__").exists(),
            "run as a script, the stand-in compiled something"
        );
        let ran = std::process::Command::new("python3")
            .args(["-S", "-B", "-c"])
            .arg(format!(
                "import sys; sys.path.insert(0, {:?}); import py_compile; \
                 print(py_compile.PycInvalidationMode.CHECKED_HASH.name, py_compile.__file__)",
                tmp.path().to_str().unwrap()
            ))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&ran.stdout);
        assert!(
            ran.status.success(),
            "{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        assert!(out.starts_with("CHECKED_HASH "), "{out}");
        assert!(out.trim_end().ends_with("py_compile.py"), "{out}");
    }

    #[test]
    fn only_plain_existing_private_dirs_are_compiled() {
        let tmp = tempfile::tempdir().unwrap();
        let image = ImageRoot::open(tmp.path()).unwrap();
        image.make_dir_all("/usr/share/foo/sub").unwrap();
        image.make_dir_all("/usr/share/python3").unwrap();
        std::os::unix::fs::symlink("/", tmp.path().join("usr/share/link")).unwrap();
        image
            .write(
                NOTED_DIRS,
                b"/usr/share/python3/\n/usr/share/foo\n/usr/share/../../etc\n/usr/share/missing\n\
                  /usr/share/link\n/usr/share/link/usr/share/foo\n/usr/lib/python3/dist-packages\n\
                  /usr/share/foo\n/usr/share/foo/sub\n/usr/share/foo/sub\n",
                0o644,
            )
            .unwrap();
        let dirs = noted_dirs(&image).unwrap();
        assert_eq!(dirs, ["/usr/share/foo", "/usr/share/python3"]);
        assert!(image.kind(NOTED_DIRS).unwrap().is_none());
    }
}
