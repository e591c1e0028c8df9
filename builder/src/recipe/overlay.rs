//! `overlays/NAME/overlay.toml`: one daemon's environment, parsed and checked into a typed
//! model. Errors name the file, the line and the key, like the image recipe's.
//!
//! ```toml
//! kind = "python-venv"                       # python-venv | debs | files
//! python = "python3"                         # python-venv: the image's interpreter
//! prefix = "/var/lib/python3/envs/telemetry" # python-venv: default /var/lib/python3/envs/NAME
//!                                            #   (/var/lib/python2/envs/NAME for python2*)
//! requirements = "requirements.lock"         # python-venv: every line pinned and hashed
//! wheelhouse = "wheels"                      # python-venv: optional local wheel directory
//! build-requirements = "build.lock"          # python-venv: hashed wheels to build sdists with
//! debs = ["debs/telemetryd_1.2_armhf.deb"]   # debs: the daemon's own packages
//! prefixes = ["/opt/telemetryd"]             # debs, files: where the overlay may write
//! smoke = "python3 -c 'import msgpack'"      # run in the env at build time; must exit 0
//! smoke-timeout = 300                        # seconds (default 300)
//!
//! [[files]]                                  # any kind: plain files, modes and owners
//! source = "telemetry.conf"
//! dest = "/etc/telemetry/telemetry.conf"
//! mode = "0640"
//! owner = "0:0"
//!
//! [service]                                  # optional: a systemd unit, enabled
//! exec = "python3 -m telemetry --port 7000"  # run through envrun (NAME's executables)
//! user = "nobody"
//! ```

use super::requirements::RequirementsLock;
use super::{read, RecipeError, Source};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// What builds the overlay.
// A recipe holds a handful of overlays; boxing the parsed lock would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A Python environment for the image's interpreter from a hashed requirements lock.
    PythonVenv {
        /// The interpreter's name in the image (`python3`, `python3.5`, `python2.7`).
        python: String,
        /// The requirements lock, parsed.
        requirements: RequirementsLock,
        /// A directory of wheels to select from, besides pip's configured index.
        wheelhouse: Option<PathBuf>,
        /// A hashed lock of the wheels an sdist's build backend needs (PEP 517
        /// `build-system.requires`), installed only for the build.
        build_requirements: Option<RequirementsLock>,
    },
    /// The daemon's own prebuilt .deb files, installed with the target's dpkg.
    Debs {
        /// The .deb files (absolute paths on the build host).
        debs: Vec<PathBuf>,
    },
    /// Only the `[[files]]`.
    Files,
}

/// A file the overlay installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayFile {
    /// The file on the build host.
    pub source: PathBuf,
    /// Its absolute path in the image.
    pub dest: String,
    /// Permission bits.
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
}

/// The daemon's systemd service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The command: its first word is an executable of the overlay's environment.
    pub exec: String,
    /// The user it runs as (default root).
    pub user: Option<String>,
}

/// One overlay, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Its name (the directory's name): the env name, the unit name, the layer's label.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// How it is built.
    pub kind: Kind,
    /// Where the environment lives in the image (python-venv), or None.
    pub prefix: Option<String>,
    /// The directories declared with `prefixes` (debs, files), in order.
    pub prefixes: Vec<String>,
    /// Every image path prefix the overlay may change (its env, declared prefixes, files, its
    /// unit and launcher registration): anything else is refused when the layer is captured.
    pub allowed: Vec<String>,
    /// Plain files.
    pub files: Vec<OverlayFile>,
    /// The service, if any.
    pub service: Option<Service>,
    /// The smoke command, if any.
    pub smoke: Option<String>,
    /// Seconds the smoke command may take (a daemon that never returns fails the build).
    pub smoke_timeout: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverlay {
    kind: Spanned<String>,
    python: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    requirements: Option<Spanned<String>>,
    wheelhouse: Option<Spanned<String>>,
    #[serde(rename = "build-requirements")]
    build_requirements: Option<Spanned<String>>,
    debs: Option<Vec<Spanned<String>>>,
    prefixes: Option<Vec<Spanned<String>>>,
    smoke: Option<Spanned<String>>,
    #[serde(rename = "smoke-timeout")]
    smoke_timeout: Option<Spanned<i64>>,
    files: Option<Vec<Spanned<RawFile>>>,
    service: Option<Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    source: Spanned<String>,
    dest: Spanned<String>,
    mode: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    exec: Spanned<String>,
    user: Option<Spanned<String>>,
}

/// True for a name usable as env, unit and layer name.
pub fn is_overlay_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A normal absolute image path: starts with `/`, no `.`/`..`/empty components, not `/`.
fn image_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() > 1
        && !p.ends_with('/')
        && p[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// In a `debs` entry, the board's Debian architecture (`debs/beacon_1.0_{arch}.deb`), so one
/// overlay serves an arm64 and an armhf board.
pub const ARCH_PLACEHOLDER: &str = "{arch}";

/// How long a smoke command may run unless the overlay says otherwise (seconds; under
/// emulation a Python daemon's imports take a while).
pub const DEFAULT_SMOKE_TIMEOUT: u32 = 300;

/// Directories an overlay must never claim as its own (the system's shared trees).
const SHARED: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/local",
    "/usr/sbin",
    "/usr/share",
    "/var",
    "/var/lib",
    "/var/log",
    "/var/lib/python2",
    "/var/lib/python2/envs",
    "/var/lib/python3",
    "/var/lib/python3/envs",
];

impl Overlay {
    /// Reads `dir/overlay.toml`; the overlay's name is the directory's.
    pub fn load(dir: &Path) -> Result<Overlay, RecipeError> {
        let path = dir.join("overlay.toml");
        let text = read(&path)?;
        let src = Source {
            path: &path,
            text: &text,
        };
        let raw: RawOverlay = src.parse()?;
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if !is_overlay_name(&name) {
            return Err(src.error(
                0..0,
                "",
                format!("the overlay's directory name '{name}' must be a-z, 0-9, '-', '_' (it names the env and the unit)"),
            ));
        }
        let host_file = |v: &Spanned<String>, key: &str| -> Result<PathBuf, RecipeError> {
            let rel = v.get_ref().trim();
            if rel.is_empty() || Path::new(rel).is_absolute() || rel.split('/').any(|c| c == "..") {
                return Err(src.error(
                    v.span(),
                    key,
                    format!("'{rel}' must be a path inside the overlay's directory"),
                ));
            }
            let p = dir.join(rel);
            if !p.exists() {
                return Err(src.error(v.span(), key, format!("'{}' does not exist", p.display())));
            }
            Ok(p)
        };
        // Parsed now, so a bad line is refused before the build starts; errors name its line.
        let requirements_lock =
            |path: PathBuf, key: &str| -> Result<RequirementsLock, RecipeError> {
                let label = format!(
                    "{}/{}",
                    name,
                    path.strip_prefix(dir).unwrap_or(&path).display()
                );
                RequirementsLock::read(&path, label).map_err(|e| RecipeError {
                    file: path.clone(),
                    line: e.line,
                    key: if e.line == 0 {
                        key.to_string()
                    } else {
                        String::new()
                    },
                    message: e.reason,
                })
            };
        let mut allowed: Vec<String> = Vec::new();
        let claim = |v: &Spanned<String>, key: &str| -> Result<String, RecipeError> {
            let p = v.get_ref().trim();
            if !image_path(p) {
                return Err(src.error(
                    v.span(),
                    key,
                    format!("'{p}' is not a normal absolute path"),
                ));
            }
            if SHARED.contains(&p) {
                return Err(src.error(
                    v.span(),
                    key,
                    format!("'{p}' is shared by the whole system; claim a directory of the daemon's own"),
                ));
            }
            Ok(p.to_string())
        };
        let kind_name = raw.kind.get_ref().as_str();
        let only = |present: bool, key: &str, span: std::ops::Range<usize>| {
            if present {
                Err(src.error(span, key, format!("is not used by kind '{kind_name}'")))
            } else {
                Ok(())
            }
        };
        let mut prefix = None;
        let kind = match kind_name {
            "python-venv" => {
                let python = match &raw.python {
                    Some(p) => {
                        let v = p.get_ref().trim();
                        let ok = v == "python3"
                            || v == "python2"
                            || v.strip_prefix("python")
                                .and_then(|x| x.split_once('.'))
                                .is_some_and(|(a, b)| {
                                    (a == "2" || a == "3")
                                        && !b.is_empty()
                                        && b.bytes().all(|c| c.is_ascii_digit())
                                });
                        if !ok {
                            return Err(src.error(
                                p.span(),
                                "python",
                                format!("'{v}' is not python3, python2 or pythonX.Y"),
                            ));
                        }
                        v.to_string()
                    }
                    None => "python3".to_string(),
                };
                let requirements = match &raw.requirements {
                    Some(r) => requirements_lock(host_file(r, "requirements")?, "requirements")?,
                    None => {
                        return Err(src.error(
                            raw.kind.span(),
                            "requirements",
                            "a python-venv overlay needs requirements = \"FILE\" (a hashed lock)",
                        ))
                    }
                };
                let wheelhouse = raw
                    .wheelhouse
                    .as_ref()
                    .map(|w| host_file(w, "wheelhouse"))
                    .transpose()?;
                let build_requirements = raw
                    .build_requirements
                    .as_ref()
                    .map(|w| {
                        requirements_lock(host_file(w, "build-requirements")?, "build-requirements")
                    })
                    .transpose()?;
                let p = match &raw.prefix {
                    Some(p) => claim(p, "prefix")?,
                    None if python.starts_with("python2") => {
                        format!("/var/lib/python2/envs/{name}")
                    }
                    None => format!("/var/lib/python3/envs/{name}"),
                };
                allowed.push(p.clone());
                prefix = Some(p);
                if let Some(d) = raw.debs.as_ref().and_then(|d| d.first()) {
                    only(true, "debs", d.span())?;
                }
                Kind::PythonVenv {
                    python,
                    requirements,
                    wheelhouse,
                    build_requirements,
                }
            }
            "debs" | "files" => {
                for (v, key) in [
                    (&raw.python, "python"),
                    (&raw.prefix, "prefix"),
                    (&raw.requirements, "requirements"),
                    (&raw.wheelhouse, "wheelhouse"),
                    (&raw.build_requirements, "build-requirements"),
                ] {
                    if let Some(v) = v {
                        only(true, key, v.span())?;
                    }
                }
                if kind_name == "debs" {
                    let list = raw.debs.clone().unwrap_or_default();
                    if list.is_empty() {
                        return Err(src.error(
                            raw.kind.span(),
                            "debs",
                            "a debs overlay needs debs = [\"FILE.deb\", …]",
                        ));
                    }
                    let mut debs = Vec::new();
                    for d in &list {
                        if !d.get_ref().ends_with(".deb") {
                            return Err(src.error(d.span(), "debs", "expected a .deb file"));
                        }
                        // `{arch}` is the board's Debian architecture, known when the image is
                        // built: the file must exist for every board that builds the overlay.
                        let raw = d.get_ref().trim();
                        if raw.contains(ARCH_PLACEHOLDER) {
                            let expanded = crate::arch::DebianArch::ALL
                                .iter()
                                .map(|a| raw.replace(ARCH_PLACEHOLDER, a.as_str()))
                                .find(|e| dir.join(e).is_file())
                                .unwrap_or_else(|| raw.to_string());
                            host_file(&Spanned::new(d.span(), expanded), "debs")?;
                            debs.push(dir.join(raw));
                        } else {
                            debs.push(host_file(d, "debs")?);
                        }
                    }
                    Kind::Debs { debs }
                } else {
                    if let Some(d) = raw.debs.as_ref().and_then(|d| d.first()) {
                        only(true, "debs", d.span())?;
                    }
                    Kind::Files
                }
            }
            other => {
                return Err(src.error(
                    raw.kind.span(),
                    "kind",
                    format!("'{other}' is not python-venv, debs or files"),
                ))
            }
        };
        let mut prefixes = Vec::new();
        for p in raw.prefixes.iter().flatten() {
            let claimed = claim(p, "prefixes")?;
            allowed.push(claimed.clone());
            prefixes.push(claimed);
        }
        let mut files = Vec::new();
        for f in raw.files.iter().flatten() {
            let span = f.span();
            let f = f.get_ref();
            let source = host_file(&f.source, "files.source")?;
            let dest = f.dest.get_ref().trim().to_string();
            if !image_path(&dest) || SHARED.contains(&dest.as_str()) {
                return Err(src.error(
                    f.dest.span(),
                    "key 'files.dest'",
                    format!("'{dest}' is not a file path of the image"),
                ));
            }
            let mode = match &f.mode {
                None => 0o644,
                Some(m) => u32::from_str_radix(m.get_ref().trim(), 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| {
                        src.error(
                            m.span(),
                            "key 'files.mode'",
                            "expected octal permissions like \"0644\"",
                        )
                    })?,
            };
            let (uid, gid) = match &f.owner {
                None => (0, 0),
                Some(o) => o
                    .get_ref()
                    .split_once(':')
                    .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
                    .ok_or_else(|| {
                        src.error(o.span(), "files.owner", "expected numeric \"UID:GID\"")
                    })?,
            };
            if !source.is_file() {
                return Err(src.error(span, "files.source", "must be a regular file"));
            }
            allowed.push(dest.clone());
            files.push(OverlayFile {
                source,
                dest,
                mode,
                uid,
                gid,
            });
        }
        let service = match &raw.service {
            None => None,
            Some(s) => {
                let s = s.get_ref();
                let exec = s.exec.get_ref().trim().to_string();
                if prefix.is_none() && prefixes.is_empty() {
                    return Err(src.error(
                        s.exec.span(),
                        "service.exec",
                        "a service runs an executable of the overlay's environment: declare prefixes = [\"/opt/NAME\"] (its bin/ holds the executable)",
                    ));
                }
                let first = exec.split_whitespace().next().unwrap_or("");
                if first.is_empty() || first.contains('/') {
                    return Err(src.error(
                        s.exec.span(),
                        "key 'service.exec'",
                        "must start with an executable name of the overlay's environment (no path: envrun finds it)",
                    ));
                }
                allowed.push(format!("/etc/systemd/system/{name}.service"));
                allowed.push(format!(
                    "/etc/systemd/system/multi-user.target.wants/{name}.service"
                ));
                Some(Service {
                    exec,
                    user: s.user.as_ref().map(|u| u.get_ref().trim().to_string()),
                })
            }
        };
        allowed.push(format!("/etc/envrun.d/{name}.env"));
        let smoke = raw.smoke.as_ref().map(|s| s.get_ref().trim().to_string());
        if smoke.as_deref() == Some("") {
            if let Some(s) = &raw.smoke {
                return Err(src.error(s.span(), "smoke", "is empty"));
            }
        }
        let smoke_timeout = match &raw.smoke_timeout {
            None => DEFAULT_SMOKE_TIMEOUT,
            Some(t) => match u32::try_from(*t.get_ref()) {
                Ok(s) if (1..=3600).contains(&s) => s,
                _ => return Err(src.error(t.span(), "smoke-timeout", "must be 1 to 3600 seconds")),
            },
        };
        allowed.sort();
        allowed.dedup();
        Ok(Overlay {
            name,
            dir: dir.to_path_buf(),
            kind,
            prefix,
            prefixes,
            allowed,
            files,
            service,
            smoke,
            smoke_timeout,
        })
    }

    /// The environment envrun runs executables from: the python env, else the first declared
    /// prefix.
    pub fn env_prefix(&self) -> Option<&str> {
        self.prefix
            .as_deref()
            .or(self.prefixes.first().map(String::as_str))
    }

    /// True when an image path is one the overlay may change: one of its allowed paths or
    /// inside one.
    pub fn may_change(&self, path: &str) -> bool {
        self.allowed
            .iter()
            .any(|a| path == a || path.starts_with(&format!("{a}/")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(
        name: &str,
        toml: &str,
        files: &[&str],
    ) -> (tempfile::TempDir, Result<Overlay, RecipeError>) {
        let dir = tempfile::tempdir().unwrap();
        let o = dir.path().join(name);
        std::fs::create_dir(&o).unwrap();
        for f in files {
            let content = if f.ends_with(".lock") || *f == "r" {
                format!("msgpack==1.0.5 --hash=sha256:{}\n", "ab".repeat(32))
            } else {
                "x".into()
            };
            std::fs::write(o.join(f), content).unwrap();
        }
        std::fs::write(o.join("overlay.toml"), toml).unwrap();
        let r = Overlay::load(&o);
        (dir, r)
    }

    #[test]
    fn reads_a_python_overlay_with_its_defaults() {
        let (_d, o) = overlay(
            "telemetry",
            "kind = \"python-venv\"\nrequirements = \"requirements.lock\"\nsmoke = \"python3 -c 'import msgpack'\"\n\n[[files]]\nsource = \"t.conf\"\ndest = \"/etc/telemetry.conf\"\nmode = \"0640\"\nowner = \"0:108\"\n\n[service]\nexec = \"python3 -m telemetry\"\n",
            &["requirements.lock", "t.conf"],
        );
        let o = o.unwrap();
        assert_eq!(o.prefix.as_deref(), Some("/var/lib/python3/envs/telemetry"));
        assert!(matches!(&o.kind, Kind::PythonVenv { python, .. } if python == "python3"));
        assert_eq!(o.files[0].mode, 0o640);
        assert_eq!((o.files[0].uid, o.files[0].gid), (0, 108));
        assert!(o.may_change("/var/lib/python3/envs/telemetry/bin/python3"));
        assert!(o.may_change("/etc/systemd/system/multi-user.target.wants/telemetry.service"));
        assert!(o.may_change("/etc/envrun.d/telemetry.env"));
        assert!(!o.may_change("/usr/lib/python3/dist-packages/msgpack/__init__.py"));
        assert!(!o.may_change("/var/lib/python3/envs/telemetry2/x"));
    }

    #[test]
    fn refuses_bad_overlays_naming_file_line_and_key() {
        for (toml, files, expect) in [
            ("kind = \"rpm\"\n", &[][..], "key 'kind': 'rpm' is not"),
            (
                "kind = \"python-venv\"\n",
                &[][..],
                "key 'requirements': a python-venv overlay needs",
            ),
            (
                "kind = \"python-venv\"\nrequirements = \"missing.lock\"\n",
                &[][..],
                "does not exist",
            ),
            (
                "kind = \"python-venv\"\nrequirements = \"../x\"\n",
                &[][..],
                "inside the overlay's directory",
            ),
            (
                "kind = \"python-venv\"\nrequirements = \"r\"\npython = \"ruby\"\n",
                &["r"][..],
                "key 'python': 'ruby'",
            ),
            (
                "kind = \"python-venv\"\nrequirements = \"r\"\nprefix = \"/usr\"\n",
                &["r"][..],
                "shared by the whole system",
            ),
            (
                "kind = \"debs\"\n",
                &[][..],
                "key 'debs': a debs overlay needs",
            ),
            (
                "kind = \"debs\"\ndebs = [\"a.txt\"]\n",
                &["a.txt"][..],
                "expected a .deb",
            ),
            (
                "kind = \"files\"\nrequirements = \"r\"\n",
                &["r"][..],
                "key 'requirements': is not used by kind 'files'",
            ),
            (
                "kind = \"files\"\n[[files]]\nsource = \"a\"\ndest = \"etc/x\"\n",
                &["a"][..],
                "key 'files.dest'",
            ),
            (
                "kind = \"files\"\n[[files]]\nsource = \"a\"\ndest = \"/etc/x\"\nmode = \"999\"\n",
                &["a"][..],
                "key 'files.mode'",
            ),
            (
                "kind = \"files\"\nprefixes = [\"/opt/d\"]\n[service]\nexec = \"/usr/bin/x\"\n",
                &[][..],
                "key 'service.exec'",
            ),
            (
                "kind = \"files\"\n[service]\nexec = \"x\"\n",
                &[][..],
                "declare prefixes",
            ),
            (
                "kind = \"files\"\nfrobnicate = 1\n",
                &[][..],
                "unknown field",
            ),
        ] {
            let (_d, r) = overlay("daemon", toml, files);
            let e = r.unwrap_err().to_string();
            assert!(e.contains("daemon/overlay.toml:"), "{toml}: {e}");
            assert!(e.contains(expect), "{toml}: {e}");
        }
        let (_d, r) = overlay("Bad Name", "kind = \"files\"\n", &[]);
        assert!(r.unwrap_err().to_string().contains("directory name"));
    }

    #[test]
    fn parses_requirements_locks_at_load() {
        let toml = "kind = \"python-venv\"\nrequirements = \"requirements.lock\"\n";
        let (d, o) = overlay("telemetry", toml, &["requirements.lock"]);
        let Kind::PythonVenv { requirements, .. } = o.unwrap().kind else {
            panic!("not a python-venv overlay");
        };
        assert_eq!(requirements.label, "telemetry/requirements.lock");
        assert_eq!(requirements.requirements[0].name, "msgpack");

        // An unpinned line is refused when the recipe loads, naming the file and the line.
        let lock = d.path().join("telemetry/requirements.lock");
        std::fs::write(&lock, "# env\nmsgpack>=1\n").unwrap();
        let e = Overlay::load(&d.path().join("telemetry"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("telemetry/requirements.lock:2: "), "{e}");
        assert!(e.contains("not pinned"), "{e}");

        // A FIFO in its place is refused without blocking on it.
        std::fs::remove_file(&lock).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &lock,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = d.path().join("telemetry");
        std::thread::spawn(move || {
            let _ = tx.send(Overlay::load(&dir).map(|_| ()).map_err(|e| e.to_string()));
        });
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a FIFO lock must not block the load")
            .unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
