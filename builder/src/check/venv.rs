//! Isolation of Python environments (every directory holding a `pyvenv.cfg`): what keeps a
//! daemon's env from mixing with the system's Python or with the machine that built it.
//!
//! - `venv-config`: pyvenv.cfg must say `include-system-site-packages = false` (PEP 405: true
//!   puts the system's site-packages on sys.path, the mix that crashes in hard-to-debug ways),
//!   and its `home` must be a directory of the image holding a python.
//! - `venv-shebang`: a script in the env's bin/ must start the env's own interpreter; a shebang
//!   to /usr/bin/python3 runs the daemon without its environment.
//! - `venv-pth`: a `.pth` file with an `import` line runs code at every interpreter start
//!   (site.py) — reported so it is a choice, not an accident.
//! - `venv-host-path`: a file of the env naming a build-host path (kiln's staging directories,
//!   pip's temporary build directories, a builder's home) points at nothing on the robot.
//! - `venv-dir-symlink`: a symlink inside an env that resolves to a directory: writing a layer or
//!   a package through it lands outside the env (how a venv layout change once overwrote a
//!   system's stdlib). Only the interpreter links in bin/ may point outside, and they are files.

use super::findings::{Check, Finding};
use crate::image::{parent, ImageTree, Kind};

/// Fragments of paths that exist only on a build host.
const HOST_PATH_MARKERS: &[&str] = &[
    "/.kiln-rootfs-",
    "/.kiln-overlays-",
    "/.kiln-export-",
    "/.kiln-staging-",
    "/tmp/pip-",
    "/root/.cache/",
    "/home/runner/",
    "/builds/",
];

/// Largest file searched for host paths (wheels' data files can be large; text is small).
const HOST_PATH_SCAN_LIMIT: usize = 4 << 20;

/// The value of `key` in a pyvenv.cfg (`key = value` lines).
fn cfg_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// Runs the checks on every environment of the image.
pub fn check_envs(image: &ImageTree, out: &mut Vec<Finding>) {
    let envs: Vec<String> = image
        .iter()
        .filter(|(p, n)| n.kind == Kind::File && p.ends_with("/pyvenv.cfg"))
        .map(|(p, _)| parent(p).to_string())
        .collect();
    for env in envs {
        check_env(image, &env, out);
    }
}

fn check_env(image: &ImageTree, env: &str, out: &mut Vec<Finding>) {
    let cfg_path = format!("{env}/pyvenv.cfg");
    let cfg = image
        .read(&cfg_path)
        .map(|d| String::from_utf8_lossy(&d).into_owned())
        .unwrap_or_default();
    match cfg_value(&cfg, "include-system-site-packages") {
        Some(v) if v.eq_ignore_ascii_case("false") => {}
        Some(v) => out.push(Finding::new(
            Check::VenvConfig,
            &cfg_path,
            format!("include-system-site-packages = {v}: the system's site-packages would be on the env's sys.path"),
        )),
        None => out.push(Finding::new(
            Check::VenvConfig,
            &cfg_path,
            "no include-system-site-packages line (say false explicitly)",
        )),
    }
    match cfg_value(&cfg, "home") {
        Some(home) => {
            let has_python = image.children(home).iter().any(|c| c.starts_with("python"));
            if image.resolve(home).is_none() || !has_python {
                out.push(Finding::new(
                    Check::VenvConfig,
                    &cfg_path,
                    format!("home = {home} is not a directory of the image holding a python"),
                ));
            }
        }
        None => out.push(Finding::new(
            Check::VenvConfig,
            &cfg_path,
            "no home line: the interpreter cannot find its standard library",
        )),
    }

    let inside = format!("{env}/");
    let bin = format!("{env}/bin/");
    let paths: Vec<(String, Kind)> = image
        .iter()
        .filter(|(p, _)| p.starts_with(&inside))
        .map(|(p, n)| (p.clone(), n.kind.clone()))
        .collect();
    for (path, kind) in paths {
        match kind {
            Kind::Symlink(target) => {
                let to_dir = image
                    .resolve(&path)
                    .and_then(|r| image.get(&r).map(|n| n.kind == Kind::Dir))
                    .unwrap_or(false);
                if to_dir {
                    out.push(Finding::new(
                        Check::VenvDirSymlink,
                        &path,
                        format!(
                            "symlink to a directory ({target}): a write through it leaves the env"
                        ),
                    ));
                }
            }
            Kind::File => {
                let Ok(data) = image.read(&path) else {
                    continue;
                };
                if path.starts_with(&bin) && data.starts_with(b"#!") {
                    let line_end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
                    let line = String::from_utf8_lossy(&data[2..line_end]);
                    let interp = line.split_whitespace().next().unwrap_or("");
                    let own = interp.starts_with(&bin)
                        || (interp == "/usr/bin/envrun" && line.contains(" run "));
                    if !own {
                        out.push(Finding::new(
                            Check::VenvShebang,
                            &path,
                            format!("#!{interp} runs it outside the env (use {bin}python3)"),
                        ));
                    }
                }
                if path.ends_with(".pth") {
                    let text = String::from_utf8_lossy(&data);
                    if let Some(l) = text
                        .lines()
                        .find(|l| l.starts_with("import ") || l.starts_with("import\t"))
                    {
                        out.push(Finding::new(
                            Check::VenvPth,
                            &path,
                            format!("runs code at every interpreter start: '{}'", l.trim()),
                        ));
                    }
                }
                // In an ELF object a build path is the compiler's record (DW_AT_comp_dir, a
                // manylinux wheel's /tmp/pip-req-build-…) that nothing opens; its RPATH and
                // RUNPATH, which the loader does use, are the rpath checks' business.
                if data.len() <= HOST_PATH_SCAN_LIMIT && !data.starts_with(b"\x7fELF") {
                    let text = String::from_utf8_lossy(&data);
                    if let Some(m) = HOST_PATH_MARKERS.iter().find(|m| text.contains(*m)) {
                        out.push(Finding::new(
                            Check::VenvHostPath,
                            &path,
                            format!("names a build-host path ('{m}…')"),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(entries: &[(&str, &str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            match link {
                Some(t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, t).unwrap();
                }
                None if path.ends_with('/') => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, path, std::io::empty()).unwrap();
                }
                None => {
                    h.set_size(content.len() as u64);
                    b.append_data(&mut h, path, content.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn findings(entries: &[(&str, &str, Option<&str>)]) -> Vec<(String, &'static str)> {
        let image = ImageTree::from_tar_bytes(&tar(entries), "t").unwrap();
        let mut out = Vec::new();
        check_envs(&image, &mut out);
        out.iter().map(|f| (f.path.clone(), f.check.id())).collect()
    }

    const E: &str = "var/lib/python3/envs/t";

    #[test]
    fn a_clean_env_passes() {
        let cfg = "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n";
        let f = findings(&[
            ("usr/bin/python3.11", "elf", None),
            (&format!("{E}/pyvenv.cfg"), cfg, None),
            (&format!("{E}/bin/python3"), "", Some("/usr/bin/python3.11")),
            (
                &format!("{E}/bin/tool"),
                &format!("#!/{E}/bin/python3\nimport x\n"),
                None,
            ),
            (
                &format!("{E}/lib/python3.11/site-packages/x.pth"),
                "/opt/extra\n",
                None,
            ),
        ]);
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn a_build_path_in_an_extension_modules_debug_info_is_not_a_leak() {
        let cfg = "home = /usr/bin\ninclude-system-site-packages = false\nversion = 2.7.18\n";
        let f = findings(&[
            ("usr/bin/python2.7", "elf", None),
            (&format!("{E}/pyvenv.cfg"), cfg, None),
            (
                &format!("{E}/lib/python2.7/site-packages/sj/_speedups.so"),
                "\x7fELF\x02\x01\x01\0/tmp/pip-req-build-AXKIC8\0",
                None,
            ),
        ]);
        assert!(f.is_empty(), "{f:?}");
        let f = findings(&[
            ("usr/bin/python2.7", "elf", None),
            (&format!("{E}/pyvenv.cfg"), cfg, None),
            (
                &format!("{E}/lib/python2.7/site-packages/sj/paths.txt"),
                "/tmp/pip-req-build-AXKIC8\n",
                None,
            ),
        ]);
        assert_eq!(f.len(), 1, "{f:?}");
    }

    #[test]
    fn each_leak_is_reported() {
        let cfg = "home = /opt/nowhere\ninclude-system-site-packages = true\n";
        let f = findings(&[
            ("usr/bin/python3.11", "elf", None),
            ("usr/lib/python3.11/", "", None),
            (&format!("{E}/pyvenv.cfg"), cfg, None),
            (&format!("{E}/bin/tool"), "#!/usr/bin/python3\n", None),
            (
                &format!("{E}/lib/python3.11/site-packages/evil.pth"),
                "import os; os.system('x')\n",
                None,
            ),
            (
                &format!("{E}/lib/python3.11/site-packages/m/RECORD"),
                "/tmp/pip-build-abc/m.py\n",
                None,
            ),
            (
                &format!("{E}/lib/python3.11/site-packages/stdlib"),
                "",
                Some("/usr/lib/python3.11"),
            ),
        ]);
        let ids: Vec<&str> = f.iter().map(|(_, id)| *id).collect();
        for want in [
            "venv-config",
            "venv-shebang",
            "venv-pth",
            "venv-host-path",
            "venv-dir-symlink",
        ] {
            assert!(ids.contains(&want), "{want} missing from {f:?}");
        }
        assert_eq!(
            ids.iter().filter(|i| **i == "venv-config").count(),
            2,
            "{f:?}"
        );
    }
}
