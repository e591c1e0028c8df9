//! Building a wheel from a source distribution when no wheel fits the target: under qemu, with
//! the image's own interpreter, in a chroot of the overlay's view, through the sdist's PEP 517
//! build backend, into a content-addressed wheel cache so that each sdist is built once per
//! target (the key: the sdist's sha256, the build requirements' lock, the interpreter version,
//! the machine and glibc).
//!
//! The backend comes from `pyproject.toml`'s `[build-system]` (`build-backend`, `backend-path`
//! for in-tree backends; setuptools' legacy backend when there is no pyproject.toml, PEP 517).
//! Its `requires` must all be named in the overlay's `build-requirements` lock (hashed wheels,
//! installed for the build only, never into the env): kiln builds nothing from an unpinned
//! dependency, unlike pip's build isolation. The build runs in kiln's staging directory of the
//! view (TMPDIR and HOME there too), which is removed afterwards and never part of the layer.
//! An sdist with C code needs a compiler in the image the build runs in; the base images kiln
//! makes for robots have none, so such a build fails with the backend's own message.

use super::files::{root_owned, STAGING};
use super::wheelinstall;
use super::wheels::Fetched;
use super::OverlayError;
use crate::digest::sha256_hex;
use crate::pipeline::fetch::Cache;
use crate::pyenv::EnvLayout;
use crate::recipe::requirements::normalize_name;
use std::path::{Path, PathBuf};

/// What a build needs besides the sdist.
pub struct SdistBuild<'a> {
    /// The overlay's view (the chroot).
    pub root: &'a Path,
    /// The board's architecture (what runs the build backend).
    pub arch: crate::arch::DebianArch,
    /// The overlay, for messages.
    pub overlay: &'a str,
    /// `3.11`.
    pub version: &'a str,
    /// Interpreter version, machine and glibc: the part of the cache key that names the target.
    pub target_key: String,
    /// The build requirements, fetched (wheels), and the digest of their lock.
    pub build_wheels: &'a [Fetched],
    /// The build requirements lock's sha256 (empty when none).
    pub build_lock_digest: String,
    /// The cache.
    pub cache: &'a Cache,
    /// SOURCE_DATE_EPOCH.
    pub sde: u64,
}

fn fail(overlay: &str, reason: impl std::fmt::Display) -> OverlayError {
    OverlayError::Python {
        overlay: overlay.to_string(),
        reason: reason.to_string(),
    }
}

/// The build script, for Python 2.7 and 3.x: imports the backend as PEP 517 says (the object
/// path after `:`), calls `build_wheel`, prints the wheel's name after a marker.
const BUILD: &str = r#"import json, os, sys
cfg = json.loads(sys.argv[1])
os.chdir(cfg['src'])
sys.path[:0] = cfg['backend_path'] + [cfg['buildenv']]
import importlib
module, _, obj = cfg['backend'].partition(':')
backend = importlib.import_module(module)
for part in [p for p in obj.split('.') if p]:
    backend = getattr(backend, part)
name = backend.build_wheel(cfg['out'])
print('KILN-WHEEL ' + name)
"#;

/// `(backend, backend-path, requires)` of an unpacked sdist.
fn build_system(src: &Path) -> Result<(String, Vec<String>, Vec<String>), String> {
    let path = src.join("pyproject.toml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok((
            "setuptools.build_meta:__legacy__".into(),
            Vec::new(),
            vec!["setuptools".into()],
        ));
    };
    let doc: toml::Table = text.parse().map_err(|e| format!("pyproject.toml: {e}"))?;
    let Some(bs) = doc.get("build-system").and_then(|b| b.as_table()) else {
        return Ok((
            "setuptools.build_meta:__legacy__".into(),
            Vec::new(),
            vec!["setuptools".into()],
        ));
    };
    let strings = |key: &str| -> Vec<String> {
        bs.get(key)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let backend = bs
        .get("build-backend")
        .and_then(|b| b.as_str())
        .unwrap_or("setuptools.build_meta:__legacy__")
        .to_string();
    let backend_path = strings("backend-path");
    for p in &backend_path {
        if p.starts_with('/') || p.split('/').any(|c| c == "..") {
            return Err(format!(
                "backend-path '{p}' leaves the source tree (PEP 517 forbids it)"
            ));
        }
    }
    Ok((backend, backend_path, strings("requires")))
}

/// The distribution name a PEP 508 requirement string names (`setuptools>=61` → `setuptools`).
fn requirement_name(spec: &str) -> String {
    let end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .unwrap_or(spec.len());
    normalize_name(&spec[..end])
}

impl SdistBuild<'_> {
    /// The wheel built from `sdist` (from the cache when built before): its path and file name.
    pub fn wheel(&self, sdist: &Fetched) -> Result<(PathBuf, String), OverlayError> {
        let name = self.overlay;
        let key = sha256_hex(
            format!(
                "sdist {}\nbuild-requirements {}\ntarget {}\n",
                sdist.sha256, self.build_lock_digest, self.target_key
            )
            .as_bytes(),
        );
        let built = self.cache.root().join("built-wheels").join(&key);
        if let Some(found) = single_wheel(&built) {
            return Ok(found);
        }
        let staging = crate::inroot::ImageRoot::open(self.root)
            .and_then(|view| {
                // Fresh and empty: nothing the image shipped there is built on or followed.
                view.remove_all(format!("{STAGING}/sdist"))?;
                view.host_dir(format!("{STAGING}/sdist"))
            })
            .map_err(|e| fail(self.overlay, e.to_string()))?;
        let result = self.build(sdist, &staging, &built);
        if let Ok(view) = crate::inroot::ImageRoot::open(self.root) {
            let _ = view.remove_all(format!("{STAGING}/sdist"));
            let _ = view.remove_empty_dir(STAGING);
        }
        result?;
        single_wheel(&built)
            .ok_or_else(|| fail(name, format!("{}: the build stored no wheel", sdist.file)))
    }

    fn build(&self, sdist: &Fetched, staging: &Path, built: &Path) -> Result<(), OverlayError> {
        let name = self.overlay;
        let io = |what: &Path, e: std::io::Error| fail(name, format!("{}: {e}", what.display()));
        let src_root = staging.join("src");
        std::fs::create_dir_all(&src_root).map_err(|e| io(&src_root, e))?;
        for d in ["out", "tmp"] {
            std::fs::create_dir_all(staging.join(d)).map_err(|e| io(staging, e))?;
        }
        let file = std::fs::File::open(&sdist.path).map_err(|e| io(&sdist.path, e))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        archive.set_preserve_permissions(false);
        archive.set_overwrite(false);
        for entry in archive
            .entries()
            .map_err(|e| fail(name, format!("{}: {e}", sdist.file)))?
        {
            let mut entry = entry.map_err(|e| fail(name, format!("{}: {e}", sdist.file)))?;
            let kind = entry.header().entry_type();
            if !(kind.is_file() || kind.is_dir()) {
                // Links in a source tree are how an archive writes outside it; sdists need none.
                let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                return Err(fail(
                    name,
                    format!("{}: entry {path} is a link or special file", sdist.file),
                ));
            }
            // unpack_in refuses paths that leave the directory.
            let inside = entry
                .unpack_in(&src_root)
                .map_err(|e| fail(name, format!("{}: {e}", sdist.file)))?;
            if !inside {
                return Err(fail(
                    name,
                    format!("{}: an entry leaves the source tree", sdist.file),
                ));
            }
        }
        // An sdist holds one directory, `{name}-{version}` (PEP 625).
        let tops: Vec<PathBuf> = std::fs::read_dir(&src_root)
            .map_err(|e| io(&src_root, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        let [src] = tops.as_slice() else {
            return Err(fail(name, format!("{}: not one top directory", sdist.file)));
        };
        let (backend, backend_path, requires) =
            build_system(src).map_err(|e| fail(name, format!("{}: {e}", sdist.file)))?;
        let have: Vec<String> = self.build_wheels.iter().map(|w| w.name.clone()).collect();
        let missing: Vec<&String> = requires
            .iter()
            .filter(|r| !have.contains(&requirement_name(r)))
            .collect();
        if !missing.is_empty() {
            return Err(fail(
                name,
                format!(
                    "{} needs {} to build: pin {} with hashes in the overlay's build-requirements lock",
                    sdist.file,
                    requires.join(", "),
                    missing
                        .iter()
                        .map(|m| requirement_name(m))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let image = |p: &Path| format!("/{}", p.strip_prefix(self.root).unwrap_or(p).display());
        let buildenv = EnvLayout {
            prefix: format!("{}/buildenv", image(staging)),
            version: self.version.to_string(),
        };
        for w in self.build_wheels {
            for f in
                wheelinstall::wheel_files(&w.path, &w.file, &buildenv).map_err(|e| fail(name, e))?
            {
                let mode = if f.executable { 0o755 } else { 0o644 };
                super::files::put_file(
                    self.root,
                    &f.path,
                    &f.content,
                    root_owned(mode, self.sde),
                    name,
                )?;
            }
        }
        let src_image = image(src);
        let cfg = serde_json::json!({
            "src": src_image,
            "backend": backend,
            "backend_path": backend_path.iter().map(|p| format!("{src_image}/{p}")).collect::<Vec<_>>(),
            "buildenv": buildenv.site_packages(),
            "out": image(&staging.join("out")),
        })
        .to_string();
        let tmp = image(&staging.join("tmp"));
        let sandbox = crate::sandbox::Sandbox::for_target(self.root, self.arch, self.sde)?
            .with_env("HOME", tmp.clone())
            .with_env("TMPDIR", tmp)
            .with_env("PYTHONDONTWRITEBYTECODE", "1")
            .with_env("PYTHONHASHSEED", "0");
        let python = format!("/usr/bin/python{}", self.version);
        let ran = sandbox.run(&python, &["-c", BUILD, &cfg], &[])?;
        let text = String::from_utf8_lossy(&ran.output);
        let wheel = text
            .lines()
            .find_map(|l| l.strip_prefix("KILN-WHEEL "))
            .filter(|_| ran.status.success())
            .map(|w| w.trim().to_string())
            .ok_or_else(|| {
                let tail: Vec<&str> = text.lines().rev().take(4).collect();
                fail(
                    name,
                    format!(
                        "building {} under emulation failed ({}): {}",
                        sdist.file,
                        crate::pipeline::configure::exit_description(ran.status),
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                )
            })?;
        if wheel.contains('/') || !wheel.ends_with(".whl") {
            return Err(fail(name, format!("the backend named no wheel: '{wheel}'")));
        }
        let made = staging.join("out").join(&wheel);
        // Into the cache: a temporary directory renamed into place (atomic), so a crash leaves
        // no half entry.
        let parent = built.parent().unwrap_or(built);
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        let tmp = tempfile::tempdir_in(parent).map_err(|e| io(parent, e))?;
        std::fs::copy(&made, tmp.path().join(&wheel)).map_err(|e| io(&made, e))?;
        let tmp = tmp.keep();
        if let Err(e) = std::fs::rename(&tmp, built) {
            let _ = std::fs::remove_dir_all(&tmp);
            if single_wheel(built).is_none() {
                return Err(io(built, e));
            }
        }
        Ok(())
    }
}

/// The one wheel in a cache entry, if the entry is complete.
fn single_wheel(dir: &Path) -> Option<(PathBuf, String)> {
    let mut wheels: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    if wheels.len() != 1 {
        return None;
    }
    let path = wheels.pop()?;
    let file = path.file_name()?.to_string_lossy().into_owned();
    Some((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_system_is_read_as_pep_517_says() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            build_system(d.path()).unwrap(),
            (
                "setuptools.build_meta:__legacy__".to_string(),
                vec![],
                vec!["setuptools".to_string()]
            )
        );
        std::fs::write(
            d.path().join("pyproject.toml"),
            "[build-system]\nrequires = [\"flit_core >=3.2,<4\"]\nbuild-backend = \"flit_core.buildapi\"\n",
        )
        .unwrap();
        let (backend, path, requires) = build_system(d.path()).unwrap();
        assert_eq!(backend, "flit_core.buildapi");
        assert!(path.is_empty());
        assert_eq!(requirement_name(&requires[0]), "flit-core");
        std::fs::write(
            d.path().join("pyproject.toml"),
            "[build-system]\nrequires = []\nbuild-backend = \"b\"\nbackend-path = [\"../x\"]\n",
        )
        .unwrap();
        assert!(build_system(d.path()).unwrap_err().contains("leaves"));
    }
}
