//! The `python-venv` overlay kind: an environment for the image's own interpreter, built fast
//! on the host and finished under emulation.
//!
//! 1. Ask the image's interpreter, under qemu, what it is (version, glibc, ABI): the target of
//!    wheel selection and the values of the lock's markers.
//! 2. Choose each requirement's file by kiln's own tag rules ([`super::wheeltags`]), get it
//!    from the wheelhouse, pip's find-links, the cache or pip's index ([`super::wheels`]),
//!    verified against the lock's sha256.
//! 3. Write the environment natively: pyvenv.cfg (PEP 405, `include-system-site-packages =
//!    false`), the interpreter links (`bin/pythonX.Y` → `/usr/bin/pythonX.Y`, the one link that
//!    may leave the env), every wheel unpacked ([`super::wheelinstall`]).
//! 4. Under qemu in the overlay's view: byte-compile with the target interpreter (hash-based
//!    pycs, PEP 552, so the result does not depend on file times; PYTHONHASHSEED=0 for stable
//!    marshal output), then prove the isolation: `envrun run NAME pythonX.Y` with a clean
//!    environment must have only the standard library and the env's site-packages on sys.path
//!    (check id `venv-sys-path`).
//!
//! A requirement with no fitting wheel but an allowed sdist is built into a wheel first, under
//! qemu, once per target ([`super::sdist`]).
//!
//! Python 2.7 ignores pyvenv.cfg (PEP 405 is Python 3.3+): its interpreter takes sys.prefix
//! from its own location, after resolving symlinks (Modules/getpath.c), so a link would give
//! the system's prefix and its dist-packages. A 2.7 env therefore holds a copy of the
//! interpreter, the prefix landmarks getpath looks for (`lib/python2.7/os.py`, copied, and an
//! empty `lib/python2.7/lib-dynload`) and kiln's own `site.py` (`py2site.py`, the way
//! virtualenv does it), which points sys.path back at the image's standard library and adds
//! only the env's site-packages. pyvenv.cfg is written all the same: that site.py reads it.
//! sdists are not built for 2.7 (PEP 517 front ends need Python 3).

use super::files::{put_dir, put_file, put_symlink, root_owned};
use super::markers::{self, MarkerEnv};
use super::sdist::SdistBuild;
use super::wheelinstall;
use super::wheels::{Fetched, PipConfig, WheelSources};
use super::wheeltags::{select, PythonTarget};
use super::{OverlayError, StageInput};
use crate::arch::DebianArch;
use crate::pyenv::{env_sys_path, foreign_sys_path, marked_line, EnvLayout};
use crate::recipe::overlay::{Kind, Overlay};
use crate::recipe::requirements::{Requirement, RequirementsLock};
use std::path::Path;

/// What the image's interpreter said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// `3.11`.
    pub version: String,
    /// `3.11.2`.
    pub full_version: String,
    /// glibc (2, 36).
    pub glibc: (u32, u32),
    /// `os.uname().release` under emulation (the host kernel's), for markers.
    pub release: String,
}

/// A wheel installed into the env, for the SBOM and the build log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledWheel {
    /// Distribution (normalised).
    pub name: String,
    /// Version.
    pub version: String,
    /// The wheel's file name.
    pub file: String,
    /// Its sha256.
    pub sha256: String,
}

fn fail(overlay: &str, reason: impl std::fmt::Display) -> OverlayError {
    OverlayError::Python {
        overlay: overlay.to_string(),
        reason: reason.to_string(),
    }
}

/// The environment of kiln's own interpreter runs: no pycs written for the image's stdlib (a
/// change outside the overlay), and a fixed hash seed so marshal writes the same pycs each run.
fn python_sandbox(
    root: &Path,
    arch: DebianArch,
    sde: u64,
) -> Result<crate::sandbox::Sandbox, crate::sandbox::SandboxError> {
    Ok(crate::sandbox::Sandbox::for_target(root, arch, sde)?
        .with_env("PYTHONDONTWRITEBYTECODE", "1")
        .with_env("PYTHONHASHSEED", "0"))
}

/// The interpreter probe: runs on 2.7 and 3.x alike, prints one marked JSON line. Python 2.7's
/// os.confstr does not know CS_GNU_LIBC_VERSION; there glibc answers through ctypes.
const PROBE: &str = "import json, os, platform, sys\nv = sys.version_info\ntry:\n    glibc = os.confstr('CS_GNU_LIBC_VERSION')\nexcept ValueError:\n    import ctypes\n    f = ctypes.CDLL(None).gnu_get_libc_version\n    f.restype = ctypes.c_char_p\n    glibc = 'glibc ' + f().decode('ascii')\nprint('KILN-PROBE ' + json.dumps({'version': '%d.%d' % (v[0], v[1]), 'full': '%d.%d.%d' % (v[0], v[1], v[2]), 'glibc': glibc, 'release': platform.release()}))\n";

/// Runs the image's `python` under qemu in `root` and reads what it is.
pub fn probe(
    root: &Path,
    arch: DebianArch,
    overlay: &str,
    python: &str,
    sde: u64,
) -> Result<Interpreter, OverlayError> {
    let exe = format!("/usr/bin/{python}");
    let present = crate::inroot::ImageRoot::open(root)
        .and_then(|image| image.kind(&exe))
        .is_ok_and(|k| k.is_some());
    if !present {
        return Err(fail(
            overlay,
            format!("the image has no {exe}: add the interpreter's package (python3) to [base] packages"),
        ));
    }
    let sandbox = python_sandbox(root, arch, sde)?;
    let ran = sandbox.run(&exe, &["-c", PROBE], &[])?;
    let line = marked_line(&ran, "KILN-PROBE ").map_err(|text| {
        fail(
            overlay,
            format!("{exe} did not start under emulation: {text}"),
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| fail(overlay, format!("{exe} probe: {e}")))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let glibc = s("glibc")
        .strip_prefix("glibc ")
        .and_then(|g| g.split_once('.'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| fail(overlay, format!("{exe} reports no glibc version")))?;
    Ok(Interpreter {
        version: s("version"),
        full_version: s("full"),
        glibc,
        release: s("release"),
    })
}

/// The marker values of the target (PEP 508's table).
pub fn marker_env(interp: &Interpreter, machine: &str) -> MarkerEnv {
    let mut env = MarkerEnv::default();
    for (k, v) in [
        ("os_name", "posix"),
        ("sys_platform", "linux"),
        ("platform_system", "Linux"),
        ("platform_machine", machine),
        ("platform_release", &interp.release),
        ("platform_python_implementation", "CPython"),
        ("implementation_name", "cpython"),
        ("implementation_version", &interp.full_version),
        ("python_version", &interp.version),
        ("python_full_version", &interp.full_version),
    ] {
        env.values.insert(k.to_string(), v.to_string());
    }
    env
}

/// Steps 1–3: the env's files in `root` (the overlay's view). Returns the env's layout and
/// the wheels installed.
pub fn install(
    overlay: &Overlay,
    root: &Path,
    arch: DebianArch,
    input: &StageInput,
) -> Result<(EnvLayout, Vec<InstalledWheel>), OverlayError> {
    let (cache, sde) = (input.cache, input.sde);
    let name = overlay.name.as_str();
    let Kind::PythonVenv {
        python,
        requirements: lock,
        wheelhouse,
        build_requirements,
    } = &overlay.kind
    else {
        return Err(fail(name, "not a python-venv overlay"));
    };
    let prefix = overlay
        .prefix
        .clone()
        .ok_or_else(|| fail(name, "no prefix"))?;
    let interp = probe(root, arch, name, python, sde)?;
    let machine = PythonTarget::machine_of(arch).to_string();
    let (major, minor) = interp
        .version
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| fail(name, format!("odd version '{}'", interp.version)))?;
    let target = PythonTarget {
        version: (major, minor),
        machine: machine.clone(),
        glibc: interp.glibc,
    };
    let menv = marker_env(&interp, &machine);
    let reqs = read_lock(overlay, lock, &menv)?;
    let mut pip = PipConfig::from_host();
    if input.offline {
        pip.indexes.clear();
    }
    let mut sources =
        WheelSources::new(wheelhouse.as_deref(), pip, cache).map_err(|e| fail(name, e))?;
    // The wheels sdist builds need (fetched only when some requirement is an sdist).
    let mut build_wheels: Option<Vec<Fetched>> = None;
    let env = EnvLayout {
        prefix: prefix.clone(),
        version: interp.version.clone(),
    };
    let owner = |mode: u32| root_owned(mode, sde);
    let mut installed = Vec::new();
    let mut written: std::collections::BTreeMap<String, String> = Default::default();
    for (req, at) in &reqs {
        let fetched = sources.fetch(req, &target, at).map_err(|e| fail(name, e))?;
        let (wheel_path, wheel_file) = if fetched.sdist {
            if major < 3 {
                return Err(fail(
                    name,
                    format!("{at}: {} is an sdist and no wheel fits Python {}; kiln builds sdists only for Python 3 (PEP 517), so put a built wheel in the wheelhouse", fetched.file, interp.version),
                ));
            }
            if build_wheels.is_none() {
                let mut wheels = Vec::new();
                if let Some(build_lock) = build_requirements {
                    for (breq, bat) in read_lock(overlay, build_lock, &menv)? {
                        let w = sources
                            .fetch(&breq, &target, &bat)
                            .map_err(|e| fail(name, e))?;
                        if w.sdist {
                            return Err(fail(
                                name,
                                format!(
                                    "{bat}: build requirements must be wheels; {} is an sdist",
                                    w.file
                                ),
                            ));
                        }
                        wheels.push(w);
                    }
                }
                build_wheels = Some(wheels);
            }
            let build = SdistBuild {
                root,
                arch,
                overlay: name,
                version: &interp.version,
                target_key: format!(
                    "python {} machine {machine} glibc {}.{}",
                    interp.full_version, interp.glibc.0, interp.glibc.1
                ),
                build_wheels: build_wheels.as_deref().unwrap_or_default(),
                build_lock_digest: build_requirements
                    .as_ref()
                    .map(|l| l.sha256.clone())
                    .unwrap_or_default(),
                cache,
                sde,
            };
            let (path, file) = build.wheel(&fetched)?;
            if select(
                &target,
                &req.name,
                &req.version,
                std::slice::from_ref(&file),
            )
            .is_err()
            {
                return Err(fail(
                    name,
                    format!("{at}: the wheel built from {} is {file}, which does not fit the image's Python", fetched.file),
                ));
            }
            (path, file)
        } else {
            (fetched.path.clone(), fetched.file.clone())
        };
        let files =
            wheelinstall::wheel_files(&wheel_path, &wheel_file, &env).map_err(|e| fail(name, e))?;
        for f in files {
            if let Some(other) = written.insert(f.path.clone(), fetched.file.clone()) {
                return Err(fail(
                    name,
                    format!(
                        "{} is installed by both {other} and {}",
                        f.path, fetched.file
                    ),
                ));
            }
            let mode = if f.executable { 0o755 } else { 0o644 };
            put_file(root, &f.path, &f.content, owner(mode), name)?;
        }
        installed.push(InstalledWheel {
            name: fetched.name,
            version: fetched.version,
            file: fetched.file,
            sha256: fetched.sha256,
        });
    }
    let cfg = format!(
        "home = /usr/bin\ninclude-system-site-packages = false\nversion = {}\nexecutable = /usr/bin/python{}\ncommand = kiln overlay {name}\n",
        interp.full_version, interp.version
    );
    put_file(
        root,
        &format!("{prefix}/pyvenv.cfg"),
        cfg.as_bytes(),
        owner(0o644),
        name,
    )?;
    let versioned = format!("python{}", interp.version);
    if major < 3 {
        write_python2_layout(root, &env, name, sde)?;
    } else {
        put_symlink(
            root,
            &format!("{prefix}/bin/{versioned}"),
            &format!("/usr/bin/{versioned}"),
            name,
        )?;
    }
    for alias in [format!("python{major}"), "python".to_string()] {
        put_symlink(root, &format!("{prefix}/bin/{alias}"), &versioned, name)?;
    }
    crate::inroot::ImageRoot::open(root)
        .and_then(|image| image.make_dir_all(env.site_packages()))
        .map_err(|e| fail(name, e.to_string()))?;
    Ok((env, installed))
}

/// kiln's site module for Python 2.7 envs (see the module doc).
const PYTHON2_SITE: &str = include_str!("py2site.py");

/// Reads a regular file of the image: its directories resolved inside the root (a symlinked
/// /usr/lib/python2.7 must not make kiln copy a file of the build host), the file itself not a
/// symlink (a copy must be the file).
fn image_file(root: &Path, path: &str, overlay: &str) -> Result<Vec<u8>, OverlayError> {
    let image = crate::inroot::ImageRoot::open(root).map_err(|e| fail(overlay, e.to_string()))?;
    image
        .read(path, MAX_IMAGE_FILE)
        .map_err(|e| {
            fail(
                overlay,
                format!("{path} is not a regular file in the image ({e})"),
            )
        })?
        .ok_or_else(|| fail(overlay, format!("{path}: missing in the image")))
}

/// Largest image file copied into an env (an interpreter is a few MB).
const MAX_IMAGE_FILE: u64 = 256 << 20;

/// The parts of a Python 2.7 env that make the interpreter take the env as its prefix: a copy
/// of the interpreter, the landmarks getpath looks for and kiln's site.py.
fn write_python2_layout(
    root: &Path,
    env: &EnvLayout,
    overlay: &str,
    sde: u64,
) -> Result<(), OverlayError> {
    let v = &env.version;
    let lib = format!("{}/lib/python{v}", env.prefix);
    let interpreter = image_file(root, &format!("/usr/bin/python{v}"), overlay)?;
    put_file(
        root,
        &env.interpreter(),
        &interpreter,
        root_owned(0o755, sde),
        overlay,
    )?;
    let os_py = image_file(root, &format!("/usr/lib/python{v}/os.py"), overlay)?;
    put_file(
        root,
        &format!("{lib}/os.py"),
        &os_py,
        root_owned(0o644, sde),
        overlay,
    )?;
    put_file(
        root,
        &format!("{lib}/site.py"),
        PYTHON2_SITE.as_bytes(),
        root_owned(0o644, sde),
        overlay,
    )?;
    put_dir(
        root,
        &format!("{lib}/lib-dynload"),
        root_owned(0o755, sde),
        overlay,
    )
}

/// The lines of a requirements lock whose markers hold for the target, each with its
/// `file:line` for messages.
fn read_lock(
    overlay: &Overlay,
    lock: &RequirementsLock,
    menv: &MarkerEnv,
) -> Result<Vec<(Requirement, String)>, OverlayError> {
    let name = overlay.name.as_str();
    let mut out = Vec::new();
    for req in &lock.requirements {
        let at = format!("{}:{}", lock.label, req.line);
        if let Some(m) = &req.marker {
            if !markers::evaluate(m, menv).map_err(|e| fail(name, format!("{at}: {e}")))? {
                continue;
            }
        }
        out.push((req.clone(), at));
    }
    Ok(out)
}

/// Step 4: byte-compile under qemu and prove sys.path holds only the stdlib and the env.
/// Runs after the launcher registry is written (the check goes through envrun, as a unit does).
pub fn finish(
    overlay: &Overlay,
    env: &EnvLayout,
    root: &Path,
    arch: DebianArch,
    sde: u64,
) -> Result<(), OverlayError> {
    let name = overlay.name.as_str();
    let python = format!("/usr/bin/python{}", env.version);
    let sandbox = python_sandbox(root, arch, sde)?;
    let site = env.site_packages();
    // A 2.7 env's own site.py and os.py are imported at every start: compiled too.
    let compiled = if env.version.starts_with("2.") {
        format!("{}/lib/python{}", env.prefix, env.version)
    } else {
        site.clone()
    };
    let mut args = vec!["-m", "compileall", "-q", "-f"];
    // Hash-based pycs exist from 3.7 (PEP 552); before, a pyc records its source's mtime,
    // which the layer fixes at SOURCE_DATE_EPOCH like every other file's.
    let hash_based = env
        .version
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .is_some_and(|v| v >= (3, 7));
    if hash_based {
        args.extend(["--invalidation-mode", "checked-hash"]);
    }
    args.push(&compiled);
    let ran = sandbox.run(&python, &args, &[])?;
    if !ran.status.success() {
        let text = String::from_utf8_lossy(&ran.output);
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        return Err(fail(
            name,
            format!(
                "byte-compiling {compiled} failed: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
        ));
    }
    // envrun scrubs PYTHON* itself; the check must see what a unit sees.
    let python = format!("python{}", env.version);
    let paths =
        env_sys_path(&sandbox, &["/usr/bin/envrun", "run", name, &python]).map_err(|text| {
            fail(
                name,
                format!(
                    "venv-sys-path: the env's interpreter did not start through envrun: {text}"
                ),
            )
        })?;
    let foreign = foreign_sys_path(&paths, env);
    if !foreign.is_empty() {
        return Err(OverlayError::Check {
            overlay: name.to_string(),
            errors: foreign.len(),
            first: format!(
                "venv-sys-path {}: sys.path holds {} besides the standard library and the env",
                env.prefix,
                foreign.join(", ")
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_files_are_read_inside_the_root() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("os.py"), "host file").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/lib")).unwrap();
        // The image's stdlib directory is a symlink to an absolute path that exists on the host.
        std::os::unix::fs::symlink(host.path(), root.path().join("usr/lib/python2.7")).unwrap();
        let e = image_file(root.path(), "/usr/lib/python2.7/os.py", "t").unwrap_err();
        assert!(e.to_string().contains("/usr/lib/python2.7/os.py"), "{e}");
        // Resolved inside the root, the same link works.
        let inside = root.path().join(host.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("os.py"), "image file").unwrap();
        assert_eq!(
            image_file(root.path(), "/usr/lib/python2.7/os.py", "t").unwrap(),
            b"image file"
        );
        std::os::unix::fs::symlink("os.py", inside.join("link.py")).unwrap();
        assert!(image_file(root.path(), "/usr/lib/python2.7/link.py", "t").is_err());
    }
}
