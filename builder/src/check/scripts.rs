//! The `script-interp` check: an executable file starting with `#!` runs only if the kernel can
//! read the whole interpreter line (BINPRM_BUF_SIZE: 256 bytes since Linux 5.1, 128 before) and
//! the interpreter exists and is executable in the image; `#!/usr/bin/env NAME` also needs
//! NAME on the default PATH (or, when NAME is a path, NAME itself).
//!
//! Severity follows what runs: a script the image never runs is reported for the record only
//! ([`not_run_because`]): documentation examples (Debian Policy 12.6: `/usr/share/doc` must
//! not be needed for a program to work), service files of an init system the image does
//! not have (openssh-server ships runit's `/etc/sv/ssh/run` to every image), and modules of an
//! installed Python's standard library: `/usr/lib/python3.11/cgi.py` keeps upstream's
//! `#! /usr/local/bin/python` and its executable bit, but Python imports it (or runs it with
//! `python3 -m`, which reads no `#!` line); nothing in Debian execs a stdlib file by its path.

use super::findings::{Check, Finding, Severity};
use crate::image::{ImageTree, Kind};
use std::collections::BTreeMap;

/// Bytes of a file's start the check reads (one more than the kernel's buffer).
pub const HEAD: usize = 257;

/// Linux's BINPRM_BUF_SIZE since 5.1: the `#!` line must fit in it.
pub const KERNEL_LIMIT: usize = 256;

/// The PATH a daemon gets from systemd (and `env` searches).
const DEFAULT_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

fn is_executable(image: &ImageTree, path: &str) -> Result<(), String> {
    match image.lookup(path) {
        None => Err("is not in the image".into()),
        Some((resolved, node)) if node.kind != Kind::File => Err(format!(
            "resolves to {resolved}, which is not a regular file"
        )),
        Some((resolved, node)) if node.mode & 0o111 == 0 => Err(format!(
            "resolves to {resolved}, which is not executable (mode {:o})",
            node.mode
        )),
        Some(_) => Ok(()),
    }
}

/// Init systems whose service files packages ship whatever the init: (where their files live,
/// the program that would run them, the init's name).
const OTHER_INITS: &[(&str, &str, &str)] = &[
    ("/etc/sv/", "/usr/bin/runsv", "runit"),
    ("/etc/runit/", "/usr/bin/runsv", "runit"),
    ("/etc/init/", "/sbin/initctl", "upstart"),
];

/// Why the image never runs the script at `path`, if it never does.
pub fn not_run_because(path: &str, image: &ImageTree) -> Option<String> {
    if path.starts_with("/usr/share/doc/") {
        return Some("a documentation example (/usr/share/doc), never run by the image".into());
    }
    if let Some(interpreter) = stdlib_of(path) {
        if image.lookup(&interpreter).is_some() {
            return Some(format!(
                "a module of {interpreter}'s standard library, imported, never run by its path"
            ));
        }
    }
    OTHER_INITS.iter().find_map(|(dir, runner, init)| {
        (path.starts_with(dir) && image.lookup(runner).is_none())
            .then(|| format!("a service file for {init}, an init system the image does not have"))
    })
}

/// The interpreter whose standard library holds `path`, for a `.py` file under
/// `/usr/lib/pythonX.Y/` (Debian's stdlib directory; packages' modules live in
/// `/usr/lib/python3/dist-packages`, which is not matched).
fn stdlib_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/usr/lib/python")?;
    let (version, module) = rest.split_once('/')?;
    let (major, minor) = version.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(major)
        && digits(minor)
        && module.ends_with(".py")
        && !module.starts_with("dist-packages/"))
    .then(|| format!("/usr/bin/python{version}"))
}

/// Checks one executable file whose first bytes are `head`. `pending` holds the alternatives
/// links that postinsts not yet run will create (link -> package).
pub fn check_script(
    path: &str,
    head: &[u8],
    image: &ImageTree,
    pending: &BTreeMap<String, String>,
    out: &mut Vec<Finding>,
) {
    let mut found = Vec::new();
    check_interpreter_line(path, head, image, pending, &mut found);
    if let Some(why) = not_run_because(path, image) {
        for f in &mut found {
            f.message.push_str(&format!(" ({why})"));
            f.severity = Severity::Info;
        }
    }
    out.extend(found);
}

fn check_interpreter_line(
    path: &str,
    head: &[u8],
    image: &ImageTree,
    pending: &BTreeMap<String, String>,
    out: &mut Vec<Finding>,
) {
    let Some(rest) = head.strip_prefix(b"#!") else {
        return;
    };
    let line_end = rest.iter().position(|&b| b == b'\n');
    let line = &rest[..line_end.unwrap_or(rest.len())];
    if line_end.is_none() && head.len() >= HEAD || line.len() + 2 > KERNEL_LIMIT {
        out.push(Finding::new(
            Check::ScriptInterp,
            path,
            format!("the #! line is longer than the kernel's {KERNEL_LIMIT}-byte limit"),
        ));
        return;
    }
    let line = String::from_utf8_lossy(line);
    let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
    let Some(interp) = words.next() else {
        out.push(Finding::new(
            Check::ScriptInterp,
            path,
            "#! names no interpreter",
        ));
        return;
    };
    let interp = interp.trim_end_matches('\r');
    if !interp.starts_with('/') {
        out.push(Finding::new(
            Check::ScriptInterp,
            path,
            format!("interpreter '{interp}' is a relative path (resolved against the working directory)"),
        ));
        return;
    }
    if let Err(why) = is_executable(image, interp) {
        if let Some(pkg) = pending.get(interp) {
            out.push(
                Finding::new(
                    Check::ScriptInterp,
                    path,
                    format!("interpreter {interp} {why} yet: {pkg}'s postinst makes it (update-alternatives) when the image is configured"),
                )
                .severity(Severity::Info),
            );
            return;
        }
        out.push(Finding::new(
            Check::ScriptInterp,
            path,
            format!("interpreter {interp} {why}"),
        ));
        return;
    }
    if interp.ends_with("/env") {
        let Some(name) = words.next() else { return };
        if name.starts_with('-') || name.contains('=') {
            return;
        }
        let found = if name.starts_with('/') {
            // `env /abs/path` runs that path: no PATH lookup.
            if let Err(why) = is_executable(image, name) {
                out.push(Finding::new(
                    Check::ScriptInterp,
                    path,
                    format!("'{interp} {name}': {name} {why}"),
                ));
            }
            true
        } else if name.contains('/') {
            is_executable(image, name).is_ok()
        } else {
            DEFAULT_PATH
                .iter()
                .any(|d| is_executable(image, &format!("{d}/{name}")).is_ok())
        };
        if !found {
            out.push(
                Finding::new(
                    Check::ScriptInterp,
                    path,
                    format!("'{interp} {name}': {name} is not on the default PATH in the image"),
                )
                .evidence([format!("PATH {}", DEFAULT_PATH.join(":"))]),
            );
        }
    }
    if line.len() + 2 > 128 {
        out.push(
            Finding::new(
                Check::ScriptInterp,
                path,
                "the #! line is longer than 128 bytes, the limit of kernels before 5.1",
            )
            .severity(Severity::Warning),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::stdlib_of;

    #[test]
    fn stdlib_modules_are_known_by_their_directory() {
        let of = |p| stdlib_of(p);
        assert_eq!(
            of("/usr/lib/python3.11/cgi.py").as_deref(),
            Some("/usr/bin/python3.11")
        );
        assert_eq!(
            of("/usr/lib/python2.7/lib2to3/pgen2/token.py").as_deref(),
            Some("/usr/bin/python2.7")
        );
        for not in [
            "/usr/lib/python3/dist-packages/yaml/__init__.py",
            "/usr/lib/python2.7/dist-packages/foo.py",
            "/usr/lib/python3.11/runme.sh",
            "/usr/lib/python3.x/cgi.py",
            "/usr/lib/python3.11",
            "/usr/lib/python.11/cgi.py",
            "/opt/env/lib/python3.11/cgi.py",
        ] {
            assert_eq!(of(not), None, "{not}");
        }
    }
}
