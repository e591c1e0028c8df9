//! Debian source package metadata: which source a binary was built from (its `Source:` field),
//! the suite's `Sources` index (what the signed Release vouches for, by digest) and a source
//! package's `.dsc`. Parsing only; every name that becomes a path (a `Directory`, a file
//! name) is refused unless it stays one plain relative path, since a hostile index could
//! otherwise name `../../etc/passwd` as a file to store.
//!
//! Formats: Debian Policy 5.4 (source package control files, `.dsc`), 5.6.1 (`Source`, with
//! a version in parentheses when it differs from the binary's, as for binNMUs), and the
//! archive's `Sources` index (a `.dsc` paragraph plus `Package`, `Directory`).

use crate::debian::control::{self, Paragraph};

/// A file of a source package as an index or `.dsc` lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceFile {
    /// File name (no directory).
    pub name: String,
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// One source package of a `Sources` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    /// Source package name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Where its files lie under the mirror root (`pool/main/g/glibc`).
    pub directory: String,
    /// Every file, the `.dsc` among them.
    pub files: Vec<SourceFile>,
}

impl SourceEntry {
    /// The `.dsc` file of the entry.
    pub fn dsc(&self) -> Option<&SourceFile> {
        self.files.iter().find(|f| f.name.ends_with(".dsc"))
    }
}

/// What a `.dsc` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsc {
    /// `Source`.
    pub source: String,
    /// `Version`.
    pub version: String,
    /// `Checksums-Sha256`: the other files of the source package.
    pub files: Vec<SourceFile>,
    /// Whether it is an OpenPGP clear-signed text.
    pub signed: bool,
}

/// The source package a binary was built from: `Source: NAME` (same version as the binary) or
/// `Source: NAME (VERSION)`; no field means the binary's own name and version.
pub fn source_of_binary(
    binary: &str,
    binary_version: &str,
    source_field: Option<&str>,
) -> Result<(String, String), String> {
    let Some(field) = source_field.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok((binary.to_string(), binary_version.to_string()));
    };
    let (name, version) = match field.split_once('(') {
        Some((name, rest)) => {
            let version = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("{binary}: Source '{field}' lacks its closing ')'"))?
                .trim();
            (name.trim(), version)
        }
        None => (field, binary_version),
    };
    if !control::valid_package_name(name) || version.is_empty() || !valid_version(version) {
        return Err(format!(
            "{binary}: Source '{}' is not a source package name and version",
            field.chars().take(80).collect::<String>()
        ));
    }
    Ok((name.to_string(), version.to_string()))
}

fn valid_version(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".+~-:".contains(&b))
}

/// A file name an index may give: one path component of the characters Debian's archive uses.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+~-".contains(&b))
}

/// A `Directory` an index may give: a relative path of plain components under the mirror.
pub fn valid_directory(dir: &str) -> bool {
    !dir.is_empty()
        && !dir.starts_with('/')
        && dir.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._+~-".contains(&b))
        })
}

/// Parses a `Checksums-Sha256` field: ` HEX SIZE NAME` lines.
fn checksums(field: &str) -> Result<Vec<SourceFile>, String> {
    let mut out = Vec::new();
    for line in field.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [hash, size, name] = parts[..] else {
            return Err(format!("malformed Checksums-Sha256 line '{line}'"));
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "malformed digest in Checksums-Sha256 line '{line}'"
            ));
        }
        let size = size
            .parse()
            .map_err(|_| format!("malformed size in Checksums-Sha256 line '{line}'"))?;
        if !valid_file_name(name) {
            return Err(format!(
                "file name '{}' is not one plain file name",
                name.chars().take(80).collect::<String>()
            ));
        }
        if out.iter().any(|f: &SourceFile| f.name == name) {
            return Err(format!("lists {name} twice"));
        }
        out.push(SourceFile {
            name: name.to_string(),
            sha256: hash.to_ascii_lowercase(),
            size,
        });
    }
    Ok(out)
}

/// Parses a `Sources` index; the error names the line.
pub fn parse_sources(text: &str) -> Result<Vec<SourceEntry>, String> {
    let paragraphs = control::parse(text).map_err(|e| e.to_string())?;
    paragraphs.iter().map(entry).collect()
}

fn entry(p: &Paragraph) -> Result<SourceEntry, String> {
    let line = p.line;
    let field = |name: &str| {
        p.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("line {line}: source package without a {name} field"))
    };
    let name = field("Package")?.to_string();
    if !control::valid_package_name(&name) {
        return Err(format!(
            "line {line}: Package '{}' is not a valid Debian package name",
            name.chars().take(80).collect::<String>()
        ));
    }
    let version = field("Version")?.to_string();
    if !valid_version(&version) {
        return Err(format!(
            "line {line}: {name}: Version '{version}' is not one"
        ));
    }
    let directory = field("Directory")?.to_string();
    if !valid_directory(&directory) {
        return Err(format!(
            "line {line}: {name}: Directory '{}' is not a path inside the mirror",
            directory.chars().take(80).collect::<String>()
        ));
    }
    let files = checksums(p.get_raw("Checksums-Sha256").unwrap_or(""))
        .map_err(|e| format!("line {line}: {name}: {e}"))?;
    if !files.iter().any(|f| f.name.ends_with(".dsc")) {
        return Err(format!(
            "line {line}: {name} {version}: lists no .dsc with a SHA-256 (kiln does not trust MD5)"
        ));
    }
    Ok(SourceEntry {
        name,
        version,
        directory,
        files,
    })
}

/// The text of a clear-signed message without its armor (RFC 4880 7.1: dash-escaped lines
/// unescaped), or the text itself when it is not signed.
fn signed_body(text: &str) -> Result<(String, bool), String> {
    let mut lines = text.lines();
    match lines.next() {
        Some(first) if first.trim_end() == "-----BEGIN PGP SIGNED MESSAGE-----" => {}
        _ => return Ok((text.to_string(), false)),
    }
    // Armor headers (Hash: ...) end at the first empty line.
    for l in lines.by_ref() {
        if l.trim_end().is_empty() {
            break;
        }
    }
    let mut body = String::new();
    let mut ended = false;
    for l in lines {
        if l.trim_end() == "-----BEGIN PGP SIGNATURE-----" {
            ended = true;
            break;
        }
        body.push_str(l.strip_prefix("- ").unwrap_or(l));
        body.push('\n');
    }
    if !ended {
        return Err("a signed message without its signature block".into());
    }
    Ok((body, true))
}

/// Parses a `.dsc` (signed or not; the signature itself is checked elsewhere).
pub fn parse_dsc(bytes: &[u8]) -> Result<Dsc, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string())?;
    let (body, signed) = signed_body(text)?;
    let paragraphs = control::parse(&body).map_err(|e| e.to_string())?;
    let [p] = paragraphs.as_slice() else {
        return Err(format!("holds {} paragraphs, not one", paragraphs.len()));
    };
    let field = |name: &str| {
        p.get(name)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("has no {name} field"))
    };
    Ok(Dsc {
        source: field("Source")?,
        version: field("Version")?,
        files: checksums(p.get_raw("Checksums-Sha256").unwrap_or(""))?,
        signed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0f343b0931126a20f133d67c2b018a3b4c1f5e3f5a3a1c0f9d4b3a2e1f0c9d8b";

    #[test]
    fn a_binary_names_its_source_with_or_without_a_version() {
        assert_eq!(
            source_of_binary("libc6", "2.36-9", Some("glibc")).unwrap(),
            ("glibc".into(), "2.36-9".into())
        );
        assert_eq!(
            source_of_binary("libgcc-s1", "12.2.0-14", Some("gcc-12 (12.2.0-14+b1)")).unwrap(),
            ("gcc-12".into(), "12.2.0-14+b1".into())
        );
        assert_eq!(
            source_of_binary("hello", "1:2.10-3", None).unwrap(),
            ("hello".into(), "1:2.10-3".into())
        );
        assert!(source_of_binary("x", "1", Some("../../etc (1)")).is_err());
        assert!(source_of_binary("x", "1", Some("y (1")).is_err());
        assert!(source_of_binary("x", "1", Some("y (1/2)")).is_err());
    }

    #[test]
    fn the_index_names_only_plain_files_inside_the_mirror() {
        let good = format!(
            "Package: hello\nVersion: 2.10-3\nDirectory: pool/main/h/hello\nChecksums-Sha256:\n {H} 1 hello_2.10-3.dsc\n {H} 2 hello_2.10.orig.tar.gz\n"
        );
        let e = parse_sources(&good).unwrap();
        assert_eq!(e[0].files.len(), 2);
        assert_eq!(e[0].dsc().unwrap().name, "hello_2.10-3.dsc");
        for (bad, why) in [
            (good.replace("pool/main/h/hello", "../../etc"), "Directory"),
            (good.replace("pool/main/h/hello", "/etc"), "Directory"),
            (
                good.replace("hello_2.10.orig.tar.gz", "../passwd"),
                "plain file name",
            ),
            (
                good.replace("hello_2.10.orig.tar.gz", ".hidden"),
                "plain file name",
            ),
            (
                good.replace("hello_2.10.orig.tar.gz", "hello_2.10-3.dsc"),
                "twice",
            ),
            (
                good.replace(" 2 hello_2.10.orig", " x hello_2.10.orig"),
                "size",
            ),
            (good.replace(".dsc", ".txt"), "no .dsc"),
            (
                good.replace("Directory: pool/main/h/hello\n", ""),
                "Directory",
            ),
        ] {
            let err = parse_sources(&bad).unwrap_err();
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn a_signed_dsc_is_read_through_its_armor() {
        let dsc = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nFormat: 3.0 (quilt)\nSource: hello\nVersion: 2.10-3\nChecksums-Sha256:\n {H} 2 hello_2.10.orig.tar.gz\n\n-----BEGIN PGP SIGNATURE-----\nxx\n-----END PGP SIGNATURE-----\n"
        );
        // A dash-escaped line is text of the message, not the start of its signature.
        let (body, signed) = signed_body(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n- -----BEGIN x\nA: b\n-----BEGIN PGP SIGNATURE-----\n",
        )
        .unwrap();
        assert_eq!((body.as_str(), signed), ("-----BEGIN x\nA: b\n", true));
        let d = parse_dsc(dsc.as_bytes()).unwrap();
        assert!(d.signed);
        assert_eq!((d.source.as_str(), d.version.as_str()), ("hello", "2.10-3"));
        assert_eq!(d.files[0].name, "hello_2.10.orig.tar.gz");
        let cut = dsc.split("-----BEGIN PGP SIGNATURE-----").next().unwrap();
        assert!(parse_dsc(cut.as_bytes()).is_err());
        assert!(parse_dsc(b"\xff\xfe").is_err());
    }
}
