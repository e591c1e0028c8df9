//! `venv-sys-path` at check time (`kiln check --run-envs`): every Python env of the image is
//! started as the robot starts it, under qemu-user in a chroot of the image, with a clean
//! environment, and its `sys.path` must hold only the standard library and the env itself.
//!
//! The static venv checks read files; this one catches what only the interpreter knows: a
//! `.pth` line adding the system's dist-packages, a site.py or sitecustomize that changes the
//! path, an interpreter link that resolves to another prefix. It needs root (chroot) and
//! qemu-user through binfmt_misc, so it runs only when asked; `kiln build` runs the same check
//! on each overlay it builds.
//!
//! An env registered with envrun (`/etc/envrun.d/NAME.env`) is started through
//! `/usr/bin/envrun run NAME pythonX.Y`, as a unit starts it; any other env by its own
//! `bin/pythonX.Y`.

use super::findings::{Check, Finding};
use crate::arch::DebianArch;
use crate::image::{parent, ImageTree, Kind};
use crate::pyenv::{env_sys_path, foreign_sys_path, EnvLayout};
use std::collections::BTreeMap;
use std::path::Path;

/// Materialises `image` under `scratch` and checks the `sys.path` of each of its envs.
pub fn check_sys_paths(
    image: &ImageTree,
    scratch: &Path,
    arch: DebianArch,
    out: &mut Vec<Finding>,
) {
    let envs: Vec<(String, String)> = image
        .iter()
        .filter(|(p, n)| n.kind == Kind::File && p.ends_with("/pyvenv.cfg"))
        .map(|(p, _)| {
            let prefix = parent(p).to_string();
            let version = super::env_python_version(image, &prefix).unwrap_or_else(|| "3".into());
            (prefix, version)
        })
        .collect();
    if envs.is_empty() {
        return;
    }
    let cannot_run = |out: &mut Vec<Finding>, why: String| {
        for (prefix, _) in &envs {
            out.push(Finding::new(
                Check::VenvSysPath,
                prefix,
                format!("could not start the env to read its sys.path: {why}"),
            ));
        }
    };
    let root = scratch.join("rootfs");
    let sandbox = match crate::sandbox::Sandbox::for_target(&root, arch, 0) {
        Ok(sandbox) => sandbox.with_env("PYTHONDONTWRITEBYTECODE", "1"),
        Err(e) => return cannot_run(out, e.to_string()),
    };
    if !rustix::process::geteuid().is_root() {
        return cannot_run(out, "needs root (a chroot of the image)".to_string());
    }
    let made = std::fs::create_dir(&root)
        .map_err(|e| format!("{}: {e}", root.display()))
        .and_then(|()| {
            crate::image::materialise::materialise(image, &root, 0).map_err(|e| e.to_string())
        });
    if let Err(e) = made {
        return cannot_run(out, e);
    }
    let names = registered_envs(image);
    let has_envrun = image.get("/usr/bin/envrun").is_some();
    for (prefix, version) in envs {
        let python = format!("python{version}");
        let interpreter = format!("{prefix}/bin/{python}");
        let launched = match names.get(&prefix) {
            Some(name) if has_envrun => {
                env_sys_path(&sandbox, &["/usr/bin/envrun", "run", name, &python])
            }
            _ => env_sys_path(&sandbox, &[&interpreter]),
        };
        let paths = match launched {
            Ok(paths) => paths,
            Err(text) => {
                out.push(Finding::new(
                    Check::VenvSysPath,
                    &interpreter,
                    format!(
                        "did not start with a clean environment: {}",
                        text.trim().lines().last().unwrap_or("no output")
                    ),
                ));
                continue;
            }
        };
        let layout = EnvLayout {
            prefix: prefix.clone(),
            version,
        };
        let foreign = foreign_sys_path(&paths, &layout);
        if !foreign.is_empty() {
            out.push(Finding::new(
                Check::VenvSysPath,
                &interpreter,
                format!(
                    "sys.path holds {} besides the standard library and the env",
                    foreign.join(", ")
                ),
            ));
        }
    }
}

/// envrun's registry of the image: env prefix → name (`/etc/envrun.d/NAME.env`, `prefix=`).
fn registered_envs(image: &ImageTree) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for child in image.children("/etc/envrun.d") {
        let Some(name) = child.strip_suffix(".env") else {
            continue;
        };
        let Ok(data) = image.read(&format!("/etc/envrun.d/{child}")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&data);
        if let Some(prefix) = text.lines().find_map(|l| l.trim().strip_prefix("prefix=")) {
            names.insert(
                prefix.trim().trim_end_matches('/').to_string(),
                name.to_string(),
            );
        }
    }
    names
}
