//! envrun: the on-device launcher of per-daemon environments.
//!
//! kiln installs every daemon's environment in a fixed place of its own (for Python,
//! `/var/lib/python3/envs/NAME`) and registers it as `/etc/envrun.d/NAME.env`. `envrun run NAME
//! EXE ARGS…` replaces itself (execve) with the environment's `EXE`, so no launcher process stays
//! in the tree and systemd supervises the daemon itself; the daemon's own arguments pass through
//! untouched, and the Python variables that would pull in another environment's modules
//! (PYTHONPATH, PYTHONHOME) are removed.
//!
//! It works from a systemd `ExecStart=` and from a shebang: Linux passes everything after the
//! interpreter path as one argument, so `#!/usr/bin/envrun run NAME python3` arrives as
//! `envrun "run NAME python3" SCRIPT ARGS…` (stretch's coreutils `env` has no `-S` to split it).
//!
//! Registry file format (one `key=value` per line, `#` comments):
//! ```text
//! prefix=/var/lib/python3/envs/telemetry   # absolute; required
//! bin=bin                                  # executables' directory inside prefix (default bin)
//! ```

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the registry lives on the device.
pub const DEFAULT_REGISTRY: &str = "/etc/envrun.d";

/// Environment variables removed before the exec: they would make the interpreter load
/// modules from outside the environment.
pub const SCRUBBED: &[&str] = &["PYTHONPATH", "PYTHONHOME"];

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// `envrun list`
    List,
    /// `envrun which NAME EXE`
    Which {
        /// Environment name.
        env: String,
        /// Executable name.
        exe: String,
    },
    /// `envrun run NAME EXE [ARGS…]`
    Run {
        /// Environment name.
        env: String,
        /// Executable name.
        exe: String,
        /// Arguments passed to it untouched.
        args: Vec<OsString>,
    },
}

/// Why envrun cannot do what it was asked; the exit code follows the shell's convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// One line for stderr.
    pub message: String,
    /// 2 usage, 126 cannot execute, 127 not found.
    pub code: i32,
}

fn fail(code: i32, message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code,
    }
}

/// The usage text.
pub const USAGE: &str =
    "usage: envrun list | envrun which NAME EXE | envrun run NAME EXE [ARGS...]";

/// Parses the arguments after argv[0]. A first argument holding spaces is split into words:
/// that is how a shebang line's arguments arrive.
pub fn parse(args: &[OsString]) -> Result<Invocation, Failure> {
    let mut words: Vec<OsString> = Vec::new();
    let mut rest = args.iter();
    if let Some(first) = rest.next() {
        let bytes = first.as_bytes();
        if bytes.iter().any(|b| b.is_ascii_whitespace()) {
            words.extend(
                bytes
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|w| !w.is_empty())
                    .map(|w| OsStr::from_bytes(w).to_os_string()),
            );
        } else {
            words.push(first.clone());
        }
    }
    words.extend(rest.cloned());
    let text = |w: &OsString, what: &str| -> Result<String, Failure> {
        w.to_str()
            .map(str::to_string)
            .ok_or_else(|| fail(2, format!("{what} is not valid UTF-8")))
    };
    match words.first().and_then(|w| w.to_str()) {
        Some("list") if words.len() == 1 => Ok(Invocation::List),
        Some("which") if words.len() == 3 => Ok(Invocation::Which {
            env: text(&words[1], "the environment name")?,
            exe: text(&words[2], "the executable name")?,
        }),
        Some("run") if words.len() >= 3 => Ok(Invocation::Run {
            env: text(&words[1], "the environment name")?,
            exe: text(&words[2], "the executable name")?,
            args: words[3..].to_vec(),
        }),
        Some("-h") | Some("--help") | Some("help") => Err(fail(0, USAGE)),
        _ => Err(fail(2, USAGE)),
    }
}

/// One registered environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// Its name.
    pub name: String,
    /// Its prefix (absolute).
    pub prefix: PathBuf,
    /// Its executables' directory.
    pub bin: PathBuf,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The registry: a directory of `NAME.env` files.
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// The registry in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Registry {
        Registry { dir: dir.into() }
    }

    /// Every environment's name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let n = e.file_name().to_str()?.strip_suffix(".env")?.to_string();
                        valid_name(&n).then_some(n)
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Reads one environment's entry.
    pub fn get(&self, name: &str) -> Result<Env, Failure> {
        let unknown = || {
            let known = self.names();
            fail(
                127,
                format!(
                    "no environment '{name}' in {} (known: {})",
                    self.dir.display(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        };
        if !valid_name(name) {
            return Err(unknown());
        }
        let file = self.dir.join(format!("{name}.env"));
        let text = std::fs::read_to_string(&file).map_err(|_| unknown())?;
        let mut prefix = None;
        let mut bin = PathBuf::from("bin");
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: &str| fail(126, format!("{}:{}: {why}", file.display(), i + 1));
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| bad("expected key=value"))?;
            match key.trim() {
                "prefix" => {
                    let p = PathBuf::from(value.trim());
                    if !p.is_absolute() {
                        return Err(bad("prefix must be an absolute path"));
                    }
                    prefix = Some(p);
                }
                "bin" => {
                    let b = PathBuf::from(value.trim());
                    if b.is_absolute() || b.components().any(|c| c.as_os_str() == "..") {
                        return Err(bad("bin must be a directory inside the prefix"));
                    }
                    bin = b;
                }
                other => return Err(bad(&format!("unknown key '{other}'"))),
            }
        }
        let prefix =
            prefix.ok_or_else(|| fail(126, format!("{}: no prefix= line", file.display())))?;
        Ok(Env {
            name: name.to_string(),
            bin: prefix.join(bin),
            prefix,
        })
    }
}

impl Env {
    /// The path of executable `exe` of this environment, checked to exist and be executable.
    pub fn which(&self, exe: &str) -> Result<PathBuf, Failure> {
        if exe.is_empty() || exe.contains('/') || exe == "." || exe == ".." {
            return Err(fail(
                2,
                format!("'{exe}' is not an executable name (no paths: envrun runs what the environment provides)"),
            ));
        }
        let path = self.bin.join(exe);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(path),
            Ok(_) => Err(fail(
                126,
                format!("{} is not an executable file", path.display()),
            )),
            Err(_) => Err(fail(
                127,
                format!(
                    "environment '{}' has no executable '{exe}' (looked for {})",
                    self.name,
                    path.display()
                ),
            )),
        }
    }

    /// PATH for the daemon: the environment's executables first.
    pub fn path_var(&self, inherited: Option<&OsStr>) -> OsString {
        let mut p = self.bin.as_os_str().to_os_string();
        p.push(":");
        p.push(inherited.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin")));
        p
    }
}

/// The registry directory: `ENVRUN_REGISTRY` when set (tests, staging trees), else the default.
pub fn registry_dir() -> PathBuf {
    std::env::var_os("ENVRUN_REGISTRY")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(DEFAULT_REGISTRY).to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_commands_and_shebang_lines() {
        assert_eq!(parse(&os(&["list"])).unwrap(), Invocation::List);
        assert_eq!(
            parse(&os(&["which", "telemetry", "python3"])).unwrap(),
            Invocation::Which {
                env: "telemetry".into(),
                exe: "python3".into()
            }
        );
        // A daemon's own flags are never taken as envrun's.
        assert_eq!(
            parse(&os(&["run", "t", "python3", "--help", "-c", "a b"])).unwrap(),
            Invocation::Run {
                env: "t".into(),
                exe: "python3".into(),
                args: os(&["--help", "-c", "a b"]),
            }
        );
        // From `#!/usr/bin/envrun run t python3 -u`: one argument, then the script and its args.
        assert_eq!(
            parse(&os(&["run t python3 -u", "/opt/x.py", "two words"])).unwrap(),
            Invocation::Run {
                env: "t".into(),
                exe: "python3".into(),
                args: os(&["-u", "/opt/x.py", "two words"]),
            }
        );
        for bad in [&[][..], &["run", "t"], &["list", "x"], &["frobnicate"]] {
            assert_eq!(parse(&os(bad)).unwrap_err().code, 2, "{bad:?}");
        }
    }

    #[test]
    fn registry_entries_are_checked() {
        let dir = std::env::temp_dir().join(format!("envrun-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good.env"), "# an env\nprefix=/opt/good\n").unwrap();
        std::fs::write(dir.join("rel.env"), "prefix=opt/x\n").unwrap();
        std::fs::write(dir.join("esc.env"), "prefix=/opt/x\nbin=../../usr/bin\n").unwrap();
        let r = Registry::new(&dir);
        assert_eq!(r.names(), ["esc", "good", "rel"]);
        let good = r.get("good").unwrap();
        assert_eq!(good.bin, Path::new("/opt/good/bin"));
        assert!(r.get("rel").unwrap_err().message.contains("absolute"));
        assert!(r
            .get("esc")
            .unwrap_err()
            .message
            .contains("inside the prefix"));
        let e = r.get("nope").unwrap_err();
        assert_eq!(e.code, 127);
        assert!(e.message.contains("known: esc, good, rel"), "{}", e.message);
        assert_eq!(r.get("../good").unwrap_err().code, 127);
        assert_eq!(good.which("../sh").unwrap_err().code, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
