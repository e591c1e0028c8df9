//! Installing a wheel into an environment natively on the build host (PEP 427, the binary
//! distribution format; PEP 376/627 for the installed metadata): a wheel is a zip whose files
//! are copied into place, so no interpreter, and no emulation, is needed for this part.
//!
//! `NAME.data/purelib|platlib` and the wheel's root go to site-packages, `scripts` to bin/ (a
//! `#!python` first line becomes the env's interpreter), `headers` to include/site/, `data`
//! to the env's root. `[console_scripts]`/`[gui_scripts]` entry points become launchers in
//! bin/ with pip's template and a shebang to the env's interpreter. RECORD is rewritten with
//! the installed paths (relative to site-packages, as pip writes them) and INSTALLER says kiln.
//! An entry whose path leaves its directory, a symlink entry, or a shebang longer than the
//! 127 bytes Linux 4.9 (stretch) reads is refused.

use crate::pyenv::EnvLayout;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Why a wheel could not be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{wheel}: {reason}")]
pub struct InstallError {
    /// The wheel's file name.
    pub wheel: String,
    /// Why.
    pub reason: String,
}

/// One file to write, as an image path with its content and whether it is executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    /// Image path.
    pub path: String,
    /// Content.
    pub content: Vec<u8>,
    /// 0755 rather than 0644.
    pub executable: bool,
}

/// The longest `#!` line Linux 4.9 reads (BINPRM_BUF_SIZE 128, with the newline).
pub const MAX_SHEBANG: usize = 127;

fn record_hash(content: &[u8]) -> String {
    let digest = Sha256::digest(content);
    format!(
        "sha256={}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// pip's launcher for an entry point `module:attr`.
fn launcher(interpreter: &str, module: &str, attr: &str) -> String {
    let head = attr.split('.').next().unwrap_or(attr);
    format!(
        "#!{interpreter}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom {module} import {head}\nif __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit({attr}())\n"
    )
}

/// `(name, module, attr)` of the console and gui scripts of an entry_points.txt.
fn entry_points(text: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut out = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if t.starts_with('[') {
            section = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            continue;
        }
        if section != "console_scripts" && section != "gui_scripts" {
            continue;
        }
        let (name, value) = t
            .split_once('=')
            .ok_or_else(|| format!("entry point line '{t}' has no '='"))?;
        // `module:attr [extra]`: extras do not change the launcher.
        let value = value.split('[').next().unwrap_or("").trim();
        let (module, attr) = value
            .split_once(':')
            .ok_or_else(|| format!("entry point '{t}' is not module:attr"))?;
        let name = name.trim();
        let ident = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|p| {
                    !p.is_empty()
                        && p.chars().all(|c| c.is_alphanumeric() || c == '_')
                        && !p.starts_with(|c: char| c.is_ascii_digit())
                })
        };
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(format!("entry point name '{name}' is not a file name"));
        }
        if !ident(module.trim()) || !ident(attr.trim()) {
            return Err(format!("entry point '{t}' is not module:attr"));
        }
        out.push((
            name.to_string(),
            module.trim().to_string(),
            attr.trim().to_string(),
        ));
    }
    Ok(out)
}

/// The files the wheel at `wheel` (file name `name`: the cache stores wheels by hash) installs
/// into `env`, RECORD and INSTALLER included, sorted by path.
pub fn wheel_files(
    wheel: &Path,
    name: &str,
    env: &EnvLayout,
) -> Result<Vec<EnvFile>, InstallError> {
    let name = name.to_string();
    let fail = |reason: String| InstallError {
        wheel: name.clone(),
        reason,
    };
    let file = std::fs::File::open(wheel).map_err(|e| fail(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| fail(format!("not a zip: {e}")))?;
    // The .dist-info directory: `{distribution}-{version}.dist-info` at the root (PEP 427).
    let dist_info = (0..zip.len())
        .filter_map(|i| {
            let n = zip.name_for_index(i)?;
            let top = n.split('/').next()?;
            top.ends_with(".dist-info").then(|| top.to_string())
        })
        .min()
        .ok_or_else(|| fail("no .dist-info directory".into()))?;
    let data_dir = format!("{}.data", dist_info.trim_end_matches(".dist-info"));
    let dist = dist_info
        .trim_end_matches(".dist-info")
        .split('-')
        .next()
        .unwrap_or("")
        .to_string();
    let site = env.site_packages();
    let interpreter = env.interpreter();
    if interpreter.len() + 2 > MAX_SHEBANG {
        return Err(fail(format!(
            "the env's interpreter path {interpreter} makes a shebang longer than {MAX_SHEBANG} bytes, which Linux 4.9 truncates; choose a shorter prefix"
        )));
    }
    let mut files: Vec<EnvFile> = Vec::new();
    let mut wheel_meta = None;
    let mut entry_text = None;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| fail(e.to_string()))?;
        let raw = entry.name().to_string();
        if entry.is_dir() {
            continue;
        }
        let Some(rel) = entry
            .enclosed_name()
            .and_then(|p| p.to_str().map(str::to_string))
        else {
            return Err(fail(format!("entry '{raw}' leaves the wheel's directory")));
        };
        if entry.unix_mode().is_some_and(|m| m & 0o170000 == 0o120000) {
            return Err(fail(format!("entry '{raw}' is a symlink")));
        }
        let executable = entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
        let mut content = Vec::new();
        entry
            .read_to_end(&mut content)
            .map_err(|e| fail(format!("{raw}: {e}")))?;
        if rel == format!("{dist_info}/RECORD")
            || rel == format!("{dist_info}/RECORD.jws")
            || rel == format!("{dist_info}/RECORD.p7s")
            || rel == format!("{dist_info}/INSTALLER")
        {
            continue;
        }
        if rel == format!("{dist_info}/WHEEL") {
            wheel_meta = Some(String::from_utf8_lossy(&content).into_owned());
        }
        if rel == format!("{dist_info}/entry_points.txt") {
            entry_text = Some(String::from_utf8_lossy(&content).into_owned());
        }
        let (path, executable, content) = match rel.strip_prefix(&format!("{data_dir}/")) {
            None => (format!("{site}/{rel}"), executable, content),
            Some(data) => {
                let (scheme, rest) = data
                    .split_once('/')
                    .ok_or_else(|| fail(format!("entry '{raw}' names no scheme")))?;
                match scheme {
                    "purelib" | "platlib" => (format!("{site}/{rest}"), executable, content),
                    "scripts" => {
                        // `#!python` (or `#!pythonw`) means "the interpreter installing this".
                        let content = if content.starts_with(b"#!python") {
                            let end = content
                                .iter()
                                .position(|&b| b == b'\n')
                                .unwrap_or(content.len());
                            let mut c = format!("#!{interpreter}").into_bytes();
                            c.extend_from_slice(&content[end..]);
                            c
                        } else {
                            content
                        };
                        (format!("{}/bin/{rest}", env.prefix), true, content)
                    }
                    "headers" => (
                        format!(
                            "{}/include/site/python{}/{dist}/{rest}",
                            env.prefix, env.version
                        ),
                        false,
                        content,
                    ),
                    "data" => (format!("{}/{rest}", env.prefix), executable, content),
                    other => return Err(fail(format!("entry '{raw}': unknown scheme '{other}'"))),
                }
            }
        };
        files.push(EnvFile {
            path,
            content,
            executable,
        });
    }
    let meta = wheel_meta.ok_or_else(|| fail(format!("no {dist_info}/WHEEL")))?;
    let version = meta
        .lines()
        .find_map(|l| l.strip_prefix("Wheel-Version:"))
        .map(str::trim)
        .unwrap_or("");
    if version.split('.').next() != Some("1") {
        return Err(fail(format!(
            "Wheel-Version '{version}' is not 1.x (PEP 427)"
        )));
    }
    // A wheel renamed to claim another platform still says what it is in its WHEEL file.
    // Tag lines may hold compressed sets too (maturin writes `cp311-cp311-manylinux_2_17_x.manylinux2014_x`).
    let declared: Vec<String> = meta
        .lines()
        .filter_map(|l| l.strip_prefix("Tag:"))
        .flat_map(|t| {
            let parts: Vec<&str> = t.trim().splitn(3, '-').collect();
            let mut out = Vec::new();
            if let [py, abi, plat] = parts.as_slice() {
                for p in py.split('.') {
                    for a in abi.split('.') {
                        for pl in plat.split('.') {
                            out.push(format!("{p}-{a}-{pl}"));
                        }
                    }
                }
            }
            out
        })
        .collect();
    if let Some(named) = super::wheeltags::WheelName::parse(&name) {
        let named: Vec<String> = named.tags.iter().map(ToString::to_string).collect();
        if !declared.is_empty() && !named.iter().any(|t| declared.contains(t)) {
            return Err(fail(format!(
                "its WHEEL metadata says {}, its file name says {} (a renamed wheel)",
                declared.join(", "),
                named.join(", ")
            )));
        }
    }
    if let Some(text) = entry_text {
        for (script, module, attr) in entry_points(&text).map_err(fail)? {
            files.push(EnvFile {
                path: format!("{}/bin/{script}", env.prefix),
                content: launcher(&interpreter, &module, &attr).into_bytes(),
                executable: true,
            });
        }
    }
    files.push(EnvFile {
        path: format!("{site}/{dist_info}/INSTALLER"),
        content: b"kiln\n".to_vec(),
        executable: false,
    });
    files.sort_by(|a, b| a.path.cmp(&b.path));
    for pair in files.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(fail(format!("{} is installed twice", pair[0].path)));
        }
    }
    // RECORD: paths relative to site-packages (`../../../bin/x` for the env's bin/).
    let up = "../".repeat(site.trim_start_matches(&env.prefix).matches('/').count());
    let mut record = String::new();
    for f in &files {
        let rel = match f.path.strip_prefix(&format!("{site}/")) {
            Some(r) => r.to_string(),
            None => format!(
                "{up}{}",
                f.path.trim_start_matches(&format!("{}/", env.prefix))
            ),
        };
        record.push_str(&format!(
            "{},{},{}\n",
            csv_field(&rel),
            record_hash(&f.content),
            f.content.len()
        ));
    }
    record.push_str(&format!("{dist_info}/RECORD,,\n"));
    files.push(EnvFile {
        path: format!("{site}/{dist_info}/RECORD"),
        content: record.into_bytes(),
        executable: false,
    });
    Ok(files)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A wheel with these `(name, content, unix mode)` entries.
    pub(crate) fn make_wheel(path: &Path, entries: &[(&str, &[u8], u32)]) {
        let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        for (name, content, mode) in entries {
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(*mode);
            if mode & 0o170000 == 0o120000 {
                let target = std::str::from_utf8(content).unwrap();
                z.add_symlink(*name, target, opts).unwrap();
                continue;
            }
            z.start_file(*name, opts).unwrap();
            z.write_all(content).unwrap();
        }
        z.finish().unwrap();
    }

    fn file_name(p: &Path) -> String {
        p.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn env() -> EnvLayout {
        EnvLayout {
            prefix: "/var/lib/python3/envs/t".into(),
            version: "3.11".into(),
        }
    }

    #[test]
    fn a_wheel_lands_in_site_packages_with_launchers_and_a_record() {
        let d = tempfile::tempdir().unwrap();
        let w = d.path().join("demo-1.0-py3-none-any.whl");
        make_wheel(
            &w,
            &[
                ("demo/__init__.py", b"def main():\n    return 0\n", 0o644),
                (
                    "demo-1.0.dist-info/WHEEL",
                    b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n",
                    0o644,
                ),
                (
                    "demo-1.0.dist-info/METADATA",
                    b"Name: demo\nVersion: 1.0\n",
                    0o644,
                ),
                (
                    "demo-1.0.dist-info/entry_points.txt",
                    b"[console_scripts]\ndemo = demo:main\n",
                    0o644,
                ),
                ("demo-1.0.dist-info/RECORD", b"ignored", 0o644),
                ("demo-1.0.data/scripts/tool", b"#!python\nprint(1)\n", 0o644),
                ("demo-1.0.data/data/share/demo.conf", b"x=1\n", 0o644),
            ],
        );
        let files = wheel_files(&w, &file_name(&w), &env()).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let site = "/var/lib/python3/envs/t/lib/python3.11/site-packages";
        assert!(
            paths.contains(&format!("{site}/demo/__init__.py").as_str()),
            "{paths:?}"
        );
        let launcher = files
            .iter()
            .find(|f| f.path.ends_with("/bin/demo"))
            .unwrap();
        assert!(launcher.executable);
        assert!(launcher
            .content
            .starts_with(b"#!/var/lib/python3/envs/t/bin/python3.11\n"));
        assert!(String::from_utf8_lossy(&launcher.content).contains("from demo import main"));
        let tool = files
            .iter()
            .find(|f| f.path.ends_with("/bin/tool"))
            .unwrap();
        assert_eq!(
            tool.content,
            b"#!/var/lib/python3/envs/t/bin/python3.11\nprint(1)\n"
        );
        assert!(paths.contains(&"/var/lib/python3/envs/t/share/demo.conf"));
        let record = files.iter().find(|f| f.path.ends_with("RECORD")).unwrap();
        let text = String::from_utf8_lossy(&record.content);
        assert!(text.contains("../../../bin/demo,sha256="), "{text}");
        assert!(text.contains("demo/__init__.py,sha256="), "{text}");
        assert!(text.ends_with("demo-1.0.dist-info/RECORD,,\n"));
    }

    #[test]
    fn hostile_wheels_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let meta: (&str, &[u8], u32) = ("x-1.dist-info/WHEEL", b"Wheel-Version: 1.0\n", 0o644);
        for (entries, why) in [
            (vec![meta, ("../../etc/passwd", &b"x"[..], 0o644)], "leaves"),
            (vec![meta, ("x/link", &b"/etc"[..], 0o120777)], "symlink"),
            (
                vec![("x-1.dist-info/WHEEL", &b"Wheel-Version: 2.0\n"[..], 0o644)],
                "Wheel-Version",
            ),
            (
                vec![meta, ("x-1.data/weird/f", &b""[..], 0o644)],
                "unknown scheme",
            ),
            (vec![("x/__init__.py", &b""[..], 0o644)], "no .dist-info"),
        ] {
            let w = d.path().join("x-1-py3-none-any.whl");
            make_wheel(&w, &entries);
            let err = wheel_files(&w, &file_name(&w), &env()).unwrap_err();
            assert!(err.reason.contains(why), "{why}: {err}");
        }
        let long = EnvLayout {
            prefix: format!("/opt/{}", "a".repeat(120)),
            version: "3.11".into(),
        };
        let w = d.path().join("x-1-py3-none-any.whl");
        make_wheel(&w, &[meta]);
        assert!(wheel_files(&w, &file_name(&w), &long)
            .unwrap_err()
            .reason
            .contains("127"));
        let renamed = d.path().join("x-1-cp311-cp311-linux_armv7l.whl");
        make_wheel(
            &renamed,
            &[(
                "x-1.dist-info/WHEEL",
                b"Wheel-Version: 1.0\nTag: cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64\n",
                0o644,
            )],
        );
        let err = wheel_files(&renamed, &file_name(&renamed), &env()).unwrap_err();
        assert!(err.reason.contains("renamed"), "{err}");
        // The same metadata under its own (compressed) name is fine.
        let own = d
            .path()
            .join("x-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl");
        std::fs::rename(&renamed, &own).unwrap();
        assert!(wheel_files(&own, &file_name(&own), &env()).is_ok());
    }
}
