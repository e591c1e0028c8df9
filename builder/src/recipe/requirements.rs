//! The requirements lock of a `python-venv` overlay: pip's requirements-file syntax, restricted
//! to what makes a build reproducible and offline-safe. Every line pins one distribution to
//! one version with `==` and carries at least one `--hash=sha256:…` (pip's hash-checking mode;
//! its rule is all-or-nothing, kiln's is every line), transitive dependencies included: an
//! unpinned transitive dependency (kombu under celery) is how a service that installed fine
//! died on start.
//!
//! Accepted: `name[extras]==version [; marker] --hash=sha256:HEX [--hash=…]`, `\` line
//! continuations, `#` comments, blank lines. Refused with the line number: any other version
//! operator or none, a missing or non-sha256 hash, URLs, paths, editable installs, `-r`/`-c`
//! includes and index options (where packages come from is the wheelhouse's or pip's
//! configuration, not the lock's).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One pinned requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The distribution name, normalised (PEP 503: lower case, runs of `-_.` as one `-`).
    pub name: String,
    /// The exact version.
    pub version: String,
    /// Extras asked for (`name[a,b]`), sorted.
    pub extras: Vec<String>,
    /// The environment marker after `;`, as written (None when absent).
    pub marker: Option<String>,
    /// Accepted sha256 digests (lower-case hex) of the wheel or sdist files.
    pub hashes: Vec<String>,
    /// Line where the requirement starts (1-based), for messages.
    pub line: usize,
}

/// Why a requirements lock was refused: the file, the line and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct RequirementsError {
    /// The file, as given.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// Why.
    pub reason: String,
}

/// PEP 503 normalisation of a distribution name.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if c == '-' || c == '_' || c == '.' {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn valid_name(name: &str) -> bool {
    // PEP 508: letters, digits, and - _ . inside, alphanumeric at both ends.
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

fn valid_version(v: &str) -> bool {
    // A PEP 440 version is at least this: no wildcard, no spaces, starts with a digit (or v).
    !v.is_empty()
        && !v.contains('*')
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".+!-_".contains(&c))
        && v.trim_start_matches(['v', 'V'])
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
}

/// Parses a requirements lock; `file` names it in errors. A name listed twice is refused.
pub fn parse(text: &str, file: &str) -> Result<Vec<Requirement>, RequirementsError> {
    let err = |line: usize, reason: String| RequirementsError {
        file: file.to_string(),
        line,
        reason,
    };
    // Join continuation lines, remembering where each logical line starts.
    let mut logical: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let (start, mut acc) = pending.take().unwrap_or((n, String::new()));
        // A comment starts at '#' preceded by whitespace or at the start (pip's rule).
        let mut content = raw;
        if let Some(pos) = raw
            .char_indices()
            .find(|&(p, c)| c == '#' && (p == 0 || raw[..p].ends_with(char::is_whitespace)))
            .map(|(p, _)| p)
        {
            content = &raw[..pos];
        }
        let trimmed = content.trim_end();
        if let Some(body) = trimmed.strip_suffix('\\') {
            acc.push_str(body);
            acc.push(' ');
            pending = Some((start, acc));
        } else {
            acc.push_str(trimmed);
            logical.push((start, acc));
        }
    }
    if let Some((start, acc)) = pending {
        logical.push((start, acc));
    }

    let mut out: Vec<Requirement> = Vec::new();
    for (line, text) in logical {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if text.starts_with('-') {
            let option = text.split_whitespace().next().unwrap_or(text);
            return Err(err(
                line,
                format!(
                    "option '{option}' is not allowed in a requirements lock (only pinned, hashed requirements)"
                ),
            ));
        }
        // Split the requirement from its options (--hash=… may follow with spaces).
        let (spec, options) = match text.find(" --") {
            Some(p) => (text[..p].trim(), text[p..].trim()),
            None => (text, ""),
        };
        let (spec, marker) = match spec.split_once(';') {
            Some((s, m)) => (s.trim(), Some(m.trim().to_string())),
            None => (spec, None),
        };
        if spec.contains("://") || spec.contains('@') || spec.starts_with('.') || spec.contains('/')
        {
            return Err(err(
                line,
                format!("'{spec}' is a URL or path; the lock pins names and versions only"),
            ));
        }
        let Some((name_part, version)) = spec.split_once("==") else {
            let op = ["~=", ">=", "<=", "!=", ">", "<", "==="]
                .into_iter()
                .find(|op| spec.contains(op));
            return Err(err(
                line,
                match op {
                    Some(op) => format!(
                        "'{spec}' is not pinned: '{op}' allows other versions; pin it with =="
                    ),
                    None => format!("'{spec}' is not pinned: give its exact version with =="),
                },
            ));
        };
        let version = version.trim();
        if version.starts_with('=') || version.contains(',') || !valid_version(version) {
            return Err(err(
                line,
                format!("'{spec}': '{version}' is not one exact version"),
            ));
        }
        let name_part = name_part.trim();
        let (name, extras) = match name_part.split_once('[') {
            Some((n, rest)) => {
                let inner = rest
                    .strip_suffix(']')
                    .ok_or_else(|| err(line, format!("'{name_part}': unclosed extras bracket")))?;
                let mut extras: Vec<String> = inner
                    .split(',')
                    .map(|e| normalize_name(e.trim()))
                    .filter(|e| !e.is_empty())
                    .collect();
                extras.sort();
                extras.dedup();
                (n.trim(), extras)
            }
            None => (name_part, Vec::new()),
        };
        if !valid_name(name) {
            return Err(err(line, format!("'{name}' is not a distribution name")));
        }
        let mut hashes = Vec::new();
        for opt in options.split_whitespace() {
            let value = opt
                .strip_prefix("--hash=")
                .or_else(|| opt.strip_prefix("--hash:"))
                .ok_or_else(|| {
                    err(
                        line,
                        format!("option '{opt}' is not allowed after a requirement (only --hash)"),
                    )
                })?;
            let (algo, hex) = value
                .split_once(':')
                .ok_or_else(|| err(line, format!("--hash={value}: expected sha256:HEX")))?;
            if algo != "sha256" {
                return Err(err(
                    line,
                    format!("--hash={value}: only sha256 is accepted, not {algo}"),
                ));
            }
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(
                    line,
                    format!("--hash={value}: a sha256 is 64 hex digits"),
                ));
            }
            hashes.push(hex.to_ascii_lowercase());
        }
        if hashes.is_empty() {
            return Err(err(
                line,
                format!("'{spec}' has no --hash=sha256:…; every requirement, transitive ones included, needs one"),
            ));
        }
        let name = normalize_name(name);
        if let Some(first) = out.iter().find(|r| r.name == name && r.marker == marker) {
            return Err(err(
                line,
                format!("'{name}' is already pinned on line {}", first.line),
            ));
        }
        out.push(Requirement {
            name,
            version: version.to_string(),
            extras,
            marker,
            hashes,
            line,
        });
    }
    Ok(out)
}

/// The largest requirements lock read (real ones are a few KB; a FIFO or an endless file must
/// not stall the recipe's load).
pub const MAX_LOCK_BYTES: u64 = 4 << 20;

/// A requirements lock as an overlay names it, read and parsed when the recipe loads, so a bad
/// line is refused before minutes of configure rather than after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequirementsLock {
    /// The file on the build host.
    pub path: PathBuf,
    /// How messages name it: `OVERLAY/FILE`.
    pub label: String,
    /// SHA-256 (lower-case hex) of the bytes parsed: part of the sdist build cache key.
    pub sha256: String,
    /// Its requirements in file order, markers not yet evaluated (that needs the target).
    pub requirements: Vec<Requirement>,
}

impl RequirementsLock {
    /// Reads and parses the lock at `path`; `label` names it in messages. Only a regular file
    /// of at most [`MAX_LOCK_BYTES`] is read.
    pub fn read(path: &Path, label: String) -> Result<Self, RequirementsError> {
        let err = |reason: String| RequirementsError {
            file: label.clone(),
            line: 0,
            reason,
        };
        // Non-blocking, so a FIFO planted in its place is refused instead of waited on.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        let meta = file.metadata().map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            return Err(err("is not a regular file".into()));
        }
        let mut bytes = Vec::new();
        file.take(MAX_LOCK_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| err(e.to_string()))?;
        if bytes.len() as u64 > MAX_LOCK_BYTES {
            return Err(err(format!("is larger than {MAX_LOCK_BYTES} bytes")));
        }
        let text = String::from_utf8(bytes).map_err(|_| err("is not UTF-8".into()))?;
        Ok(RequirementsLock {
            path: path.to_path_buf(),
            sha256: crate::digest::sha256_hex(text.as_bytes()),
            requirements: parse(&text, &label)?,
            label,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "2ef9d4d5a58b4ee1a8e2e2b6d1b8e4c3b0d4a3b2f1e0d9c8b7a6f5e4d3c2b1a0";
    const H2: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn reads_pip_compile_output() {
        let text = format!(
            "# generated by pip-compile --generate-hashes\n\
             msgpack==1.0.7 \\\n    --hash=sha256:{H1} \\\n    --hash=sha256:{H2}\n    # via telemetry\n\
             \n\
             Typing_Extensions==4.8.0 ; python_version < \"3.8\" --hash=sha256:{H2}\n\
             requests[socks,Security]==2.31.0 --hash=sha256:{}\n",
            H1.to_uppercase()
        );
        let reqs = parse(&text, "requirements.lock").unwrap();
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].name, "msgpack");
        assert_eq!(reqs[0].hashes, [H1, H2]);
        assert_eq!(reqs[0].line, 2);
        assert_eq!(reqs[1].name, "typing-extensions");
        assert_eq!(reqs[1].marker.as_deref(), Some("python_version < \"3.8\""));
        assert_eq!(reqs[1].line, 7);
        assert_eq!(reqs[2].extras, ["security", "socks"]);
        assert_eq!(reqs[2].hashes, [H1]);
    }

    #[test]
    fn refuses_what_would_not_reproduce_naming_the_line() {
        for (line, expect) in [
            ("msgpack==1.0.7".to_string(), "has no --hash"),
            (
                format!("msgpack>=1.0 --hash=sha256:{H1}"),
                "'>=' allows other versions",
            ),
            (format!("msgpack --hash=sha256:{H1}"), "not pinned"),
            (format!("msgpack~=1.0 --hash=sha256:{H1}"), "'~=' allows"),
            (
                format!("msgpack==1.* --hash=sha256:{H1}"),
                "not one exact version",
            ),
            (
                format!("msgpack==1.0,<2 --hash=sha256:{H1}"),
                "not one exact version",
            ),
            (
                format!("msgpack==1.0 --hash=md5:{}", &H1[..32]),
                "only sha256",
            ),
            (
                "msgpack==1.0 --hash=sha256:abc".to_string(),
                "64 hex digits",
            ),
            (
                format!("msgpack==1.0 --no-binary :all: --hash=sha256:{H1}"),
                "only --hash",
            ),
            ("-r other.txt".to_string(), "option '-r'"),
            (
                "--index-url https://example.org/simple".to_string(),
                "option '--index-url'",
            ),
            ("-e git+https://x/y.git#egg=y".to_string(), "option '-e'"),
            (
                format!("https://x/y-1.0.whl --hash=sha256:{H1}"),
                "URL or path",
            ),
            (
                format!("y @ https://x/y-1.0.whl --hash=sha256:{H1}"),
                "URL or path",
            ),
        ] {
            let text = format!("# header\n{line}\n");
            let e = parse(&text, "r.lock").unwrap_err();
            assert_eq!(e.line, 2, "{line}: {e}");
            assert!(e.to_string().starts_with("r.lock:2: "), "{e}");
            assert!(e.reason.contains(expect), "{line}: {e}");
        }
        let twice = format!("a==1 --hash=sha256:{H1}\nA==2 --hash=sha256:{H2}\n");
        assert!(parse(&twice, "r")
            .unwrap_err()
            .reason
            .contains("already pinned on line 1"));
    }

    #[test]
    fn normalises_names_as_pep_503() {
        assert_eq!(normalize_name("Foo.Bar__baz-"), "foo-bar-baz");
        assert_eq!(normalize_name("zope.interface"), "zope-interface");
    }
}
