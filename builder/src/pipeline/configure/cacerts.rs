//! `update-ca-certificates`, natively: the trust store that ca-certificates' postinst and its
//! trigger build in /etc/ssl/certs (one symlink per enabled certificate, the
//! `ca-certificates.crt` bundle, and `openssl rehash`'s `HASH.0` links), made by kiln itself
//! instead of by the script under qemu, where it forks four to seven programs per certificate
//! (about 30 s of a robot image's critical path, twice: postinst and trigger).
//!
//! **Proven, not assumed.** Only the scripts kiln was written against are replaced, recognised
//! by their SHA-256 ([`KNOWN_SCRIPTS`]: bullseye's, bookworm's and trixie's), and only for the
//! calls ca-certificates' own maintainer scripts make (`--hooksdir ''` and no arguments, with or
//! without `--fresh`; anything else runs the real program). Before changing anything, kiln
//! checks that the tree is one whose result it computes exactly like the script (a new trust
//! store: no old hash links, no local certificates, no hooks to run, one certificate per file,
//! no two certificates with one subject hash); otherwise the real program runs, under qemu, at
//! the same point. CI builds the robot image once more fully emulated (`kiln build -j 1
//! --emulate-all`) and requires the same digest, and a unit test runs the host's own
//! update-ca-certificates beside this module on the same certificates.
//!
//! **When.** The stand-in records the request ([`REQUESTS`], outside the image) and returns; kiln
//! carries it out as soon as the calling script has ended (the postinst does nothing after the
//! call but `dpkg-trigger`), and again after `dpkg --configure -a` for the trigger's call.
//!
//! **Hashes.** `HASH` is OpenSSL's `X509_NAME_hash`: the first four bytes, little-endian, of
//! the SHA-1 of the subject's canonical encoding (crypto/x509/x_name.c, `x509_name_canon`:
//! every string value re-encoded as a UTF8String, trimmed, inner white space collapsed, ASCII
//! lower-cased; the RDN SETs concatenated without the outer SEQUENCE).

use crate::inroot::{ImageRoot, InRootError, Kind};
use sha1::Digest as _;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use x509_cert::der::{self, Decode, Encode, Tagged};

/// The program replaced.
pub const PROGRAM: &str = "/usr/sbin/update-ca-certificates";

/// Where the stand-in records each call (one line: `fresh` or `update`, then `hooks` or
/// `no-hooks`), for kiln to carry out: in the sandbox's shared directory
/// ([`crate::sandbox::SHARED_DIR`]), outside the image, whose bytes and times stay those of a
/// fully emulated run. Removed once done.
pub const REQUESTS: &str = "update-ca-certificates.requests";

/// The update-ca-certificates scripts this module reproduces, by SHA-256, and how each builds
/// the bundle.
pub const KNOWN_SCRIPTS: &[(&str, Variant)] = &[
    // bullseye, 20210119: the bundle is made in /tmp and always replaces the old one.
    (
        "7ad4af5c16cfe26de17f76a3b2217f011a651fe1f25ed1608584765aeeffb7f9",
        Variant::AlwaysBundle,
    ),
    // bookworm, 20230311+deb12u1: the bundle is left alone when no certificate is enabled.
    (
        "395364bffc7ce85ccbe2de71215f9c6c85c024af3bbd991c75a01c2d2aa3080a",
        Variant::BundleWhenAnyEnabled,
    ),
    // trixie and bookworm-updates, 20250419: as bookworm's, with `read -r` and `--sysroot`.
    (
        "2cb06c85b5f01c4f6b72c3983d9f66d44aac0a7ac997ee55e7e429aedbc3934d",
        Variant::BundleWhenAnyEnabled,
    ),
];

/// What the image's own programs would do: its update-ca-certificates script's variant, and
/// whether its `openssl rehash` takes the names in sorted order (OpenSSL 3 does; 1.1 reads the
/// directory order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tools {
    /// How the script writes the bundle.
    pub variant: Variant,
    /// `openssl rehash` numbers a shared hash's links in name order.
    pub rehash_sorts_names: bool,
}

/// Whether the `openssl` package at `version` (Debian version) rehashes in name order.
pub fn rehash_sorts_names(openssl_version: &str) -> bool {
    let upstream = openssl_version
        .split_once(':')
        .map_or(openssl_version, |(_, v)| v);
    let major: String = upstream.chars().take_while(char::is_ascii_digit).collect();
    major.parse::<u32>().is_ok_and(|m| m >= 3)
}

/// How a known script version writes `ca-certificates.crt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The bundle is rewritten on every run, empty when no certificate is enabled.
    AlwaysBundle,
    /// The bundle is rewritten when at least one certificate is enabled, else left as it was.
    BundleWhenAnyEnabled,
}

/// The stand-in: records the calls ca-certificates' own scripts make, runs the real program
/// for anything else.
pub const STAND_IN: &[u8] = br#"#!/bin/sh
# kiln: ca-certificates' own calls are carried out by kiln once the calling script ends
# (kiln's configure/cacerts.rs); any other call runs the real program.
real=/usr/sbin/update-ca-certificates.kiln-real
[ "$DPKG_MAINTSCRIPT_PACKAGE" = ca-certificates ] || exec "$real" "$@"
case "$#:$1:$2:$3" in
  0:::) request="update hooks" ;;
  1:--fresh::) request="fresh hooks" ;;
  2:--hooksdir::) request="update no-hooks" ;;
  3:--hooksdir::--fresh) request="fresh no-hooks" ;;
  *) exec "$real" "$@" ;;
esac
echo "$request" >>/run/kiln/update-ca-certificates.requests
"#;

const CONF: &str = "/etc/ca-certificates.conf";
const CERTS_DIR: &str = "/usr/share/ca-certificates";
const LOCAL_CERTS_DIR: &str = "/usr/local/share/ca-certificates";
const ETC_CERTS: &str = "/etc/ssl/certs";
const HOOKS_DIR: &str = "/etc/ca-certificates/update.d";
const BUNDLE: &str = "ca-certificates.crt";
/// Largest certificate file or configuration read (the biggest in Debian is a few KiB).
const MAX_FILE: u64 = 1 << 20;
/// Certificates `openssl rehash` links under one hash at most (apps/rehash.c).
const MAX_COLLISIONS: usize = 256;
/// Symlinks followed in a row before giving up, as the kernel (ELOOP).
const MAX_SYMLINKS: usize = 40;

/// One recorded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// `--fresh`: clear the links into the certificate directories first.
    pub fresh: bool,
    /// Run the hooks in /etc/ca-certificates/update.d afterwards.
    pub hooks: bool,
}

impl Request {
    /// The arguments that make the real program do the same.
    pub fn args(&self) -> Vec<&'static str> {
        let mut args = Vec::new();
        if !self.hooks {
            args.extend(["--hooksdir", ""]);
        }
        if self.fresh {
            args.push("--fresh");
        }
        args
    }
}

/// The variant of the update-ca-certificates in the image, when it is one kiln reproduces.
pub fn known_variant(image: &ImageRoot) -> Result<Option<Variant>, InRootError> {
    let Some(script) = image.read(PROGRAM, MAX_FILE)? else {
        return Ok(None);
    };
    let digest = crate::digest::sha256_hex(&script);
    Ok(KNOWN_SCRIPTS
        .iter()
        .find(|(known, _)| *known == digest)
        .map(|(_, variant)| *variant))
}

/// Takes the recorded calls from the shared directory (and removes the record). The
/// directory is written by code under the image's control: opened as an image root, so a
/// symlink or FIFO planted there is refused, never followed.
pub fn take_requests(shared: &ImageRoot) -> Result<Vec<Request>, InRootError> {
    let Some(text) = shared.read(REQUESTS, MAX_FILE)? else {
        return Ok(Vec::new());
    };
    shared.remove_file(REQUESTS)?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let fresh = match words.next()? {
                "fresh" => true,
                "update" => false,
                _ => return None,
            };
            let hooks = words.next()? == "hooks";
            Some(Request { fresh, hooks })
        })
        .collect())
}

/// What a native update did, or why the tree is one kiln leaves to the real program.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: certificates linked (added) and links removed, as the script counts them.
    Done {
        /// Links made or replaced.
        added: usize,
        /// Links removed (certificates deselected with `!`).
        removed: usize,
    },
    /// Not something this module reproduces exactly; the reason, for `--timings`.
    Unsupported(String),
}

fn unsupported<T>(reason: impl Into<String>) -> Result<T, Plan> {
    Err(Plan::Unsupported(reason.into()))
}

/// Internal: planning stops either on a reason to leave the work to the real program, or on
/// an error reading the image.
enum Plan {
    Unsupported(String),
    Failed(InRootError),
}

impl From<InRootError> for Plan {
    fn from(e: InRootError) -> Plan {
        Plan::Failed(e)
    }
}

/// What the run will write, computed before anything is touched.
struct Changes {
    remove: Vec<OsString>,
    link: Vec<(OsString, OsString)>,
    /// `None`: the bundle is left as it is.
    bundle: Option<Vec<u8>>,
    /// Orphaned symlinks removed before rehashing, and the hash links made.
    orphans: Vec<OsString>,
    hash_links: Vec<(String, OsString)>,
    added: usize,
    removed: usize,
}

/// Runs update-ca-certificates as `request` asks, in `image`, when the tree is one whose
/// result this module computes exactly; otherwise changes nothing and says why.
pub fn update(image: &ImageRoot, tools: Tools, request: Request) -> Result<Outcome, InRootError> {
    let changes = match plan(image, tools, request) {
        Ok(c) => c,
        Err(Plan::Unsupported(reason)) => return Ok(Outcome::Unsupported(reason)),
        Err(Plan::Failed(e)) => return Err(e),
    };
    let certs = image.dir(ETC_CERTS)?.ok_or_else(|| InRootError {
        path: ETC_CERTS.into(),
        reason: "vanished".into(),
    })?;
    for name in &changes.remove {
        certs.remove_file(name)?;
    }
    for (name, target) in &changes.link {
        certs.symlink(name, target)?;
    }
    for name in &changes.orphans {
        certs.remove_file(name)?;
    }
    for (name, target) in &changes.hash_links {
        certs.symlink(name, target)?;
    }
    if let Some(bundle) = &changes.bundle {
        certs.write_file(BUNDLE, bundle, 0o644)?;
    }
    Ok(Outcome::Done {
        added: changes.added,
        removed: changes.removed,
    })
}

/// `basename STRING SUFFIX` (POSIX): the last component, the suffix removed unless it is all.
fn basename(path: &[u8], suffix: &[u8]) -> Vec<u8> {
    let trimmed = {
        let mut end = path.len();
        while end > 1 && path[end - 1] == b'/' {
            end -= 1;
        }
        &path[..end]
    };
    if trimmed == b"/" {
        return b"/".to_vec();
    }
    let last = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    match last.strip_suffix(suffix) {
        Some(stem) if !stem.is_empty() => stem.to_vec(),
        _ => last.to_vec(),
    }
}

/// The shell's `read` of one line: leading and trailing IFS white space removed.
fn read_field(line: &[u8]) -> &[u8] {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n');
    let start = line.iter().position(|b| !ws(b)).unwrap_or(line.len());
    let end = line.iter().rposition(|b| !ws(b)).map_or(start, |i| i + 1);
    &line[start..end]
}

/// Whether `path` exists following symlinks inside the root (`test -e`), and what it is at the
/// end of the chain: None when it does not resolve.
fn resolve_kind(image: &ImageRoot, path: &[u8]) -> Result<Option<(Vec<u8>, Kind)>, Plan> {
    let mut path = path.to_vec();
    for _ in 0..MAX_SYMLINKS {
        let logical = lexical(&path);
        let Some((dir, name)) = image.parent(OsStr::from_bytes(&logical), false)? else {
            return Ok(None);
        };
        match dir.kind(&name)? {
            None => return Ok(None),
            Some(Kind::Symlink) => {
                let target = dir.read_link(&name)?.into_os_string().into_vec();
                path = if target.starts_with(b"/") {
                    target
                } else {
                    let mut base = dir.path().as_bytes().to_vec();
                    base.push(b'/');
                    base.extend_from_slice(&target);
                    base
                };
            }
            Some(kind) => return Ok(Some((logical, kind))),
        }
    }
    unsupported(format!(
        "{}: too many levels of symbolic links",
        String::from_utf8_lossy(&path)
    ))
}

/// `path` with `.` and `..` resolved lexically at the root (`..` stops there), as an image path.
fn lexical(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut out = Vec::new();
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Reads the regular file at the end of `path`'s symlink chain.
fn read_following(image: &ImageRoot, path: &[u8]) -> Result<Option<Vec<u8>>, Plan> {
    match resolve_kind(image, path)? {
        Some((logical, Kind::File)) => Ok(image.read(OsStr::from_bytes(&logical), MAX_FILE)?),
        _ => Ok(None),
    }
}

/// The script's steps, in its order, on what the image holds now.
fn plan(image: &ImageRoot, tools: Tools, request: Request) -> Result<Changes, Plan> {
    let certs = match image.dir(ETC_CERTS) {
        Ok(Some(d)) => d,
        _ => return unsupported("/etc/ssl/certs is not a directory"),
    };
    let conf = read_conf(image)?;
    // An empty or missing configuration makes the script fresh too.
    let fresh = request.fresh || conf.is_empty();
    let mut entries = survey(image, &certs, fresh, request.hooks)?;
    let mut changes = Changes {
        remove: Vec::new(),
        link: Vec::new(),
        bundle: None,
        orphans: Vec::new(),
        hash_links: Vec::new(),
        added: 0,
        removed: 0,
    };
    let lines: Vec<&[u8]> = conf
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    deselect(&lines, &mut entries, &mut changes);
    let bundle = enable(image, &certs, &lines, &mut entries, &mut changes)?;
    changes.bundle = match tools.variant {
        Variant::BundleWhenAnyEnabled => bundle,
        Variant::AlwaysBundle => Some(bundle.unwrap_or_default()),
    };
    if tools.variant == Variant::AlwaysBundle {
        // bullseye's script removes the old bundle before rehashing.
        entries.remove(OsStr::new(BUNDLE));
    }
    if changes.added > 0 || changes.removed > 0 {
        let live = without_orphans(image, &certs, &entries, &mut changes)?;
        changes.hash_links = rehash(image, &live, tools.rehash_sorts_names)?;
    }
    Ok(changes)
}

/// /etc/ca-certificates.conf (empty when missing), as far as kiln reads it like the script's
/// `sed | while read` does: no backslashes (`read` without `-r` in bookworm's script would
/// interpret them), no NUL, and a final newline (`read` drops a last unterminated line).
fn read_conf(image: &ImageRoot) -> Result<Vec<u8>, Plan> {
    let conf = match image.kind(CONF)? {
        None => Vec::new(),
        Some(Kind::File) => image.read(CONF, MAX_FILE)?.unwrap_or_default(),
        Some(_) => return unsupported("/etc/ca-certificates.conf is not a regular file"),
    };
    if conf.contains(&b'\\') || conf.contains(&0) {
        return unsupported("/etc/ca-certificates.conf holds a backslash or NUL");
    }
    if !conf.is_empty() && !conf.ends_with(b"\n") {
        return unsupported("/etc/ca-certificates.conf does not end with a newline");
    }
    Ok(conf)
}

/// /etc/ssl/certs as it is now (name → kind), once the tree is known to be one kiln computes
/// exactly: no subdirectory (the script's `find` would recurse) or special file, no symlink
/// under `--fresh`, no bundle left half-made, no local certificates, no hooks to run.
fn survey(
    image: &ImageRoot,
    certs: &crate::inroot::Dir,
    fresh: bool,
    hooks: bool,
) -> Result<std::collections::BTreeMap<OsString, Kind>, Plan> {
    let mut entries: std::collections::BTreeMap<OsString, Kind> = Default::default();
    for name in certs.entries()? {
        match certs.kind(&name)? {
            Some(Kind::Dir) | Some(Kind::Special) => {
                return unsupported(format!(
                    "/etc/ssl/certs/{} is a directory or special file",
                    name.to_string_lossy()
                ))
            }
            Some(kind) => {
                entries.insert(name, kind);
            }
            None => {}
        }
    }
    if fresh && entries.values().any(|k| *k == Kind::Symlink) {
        return unsupported("--fresh over existing symlinks");
    }
    if entries.contains_key(OsStr::new("ca-certificates.crt.new")) {
        return unsupported("a ca-certificates.crt.new is left from an earlier run");
    }
    if let Some(local) = image.dir(LOCAL_CERTS_DIR).ok().flatten() {
        if !local.entries()?.is_empty() {
            return unsupported("/usr/local/share/ca-certificates holds local certificates");
        }
    }
    if hooks {
        if let Some(hooks) = image.dir(HOOKS_DIR).ok().flatten() {
            if !hooks.entries()?.is_empty() {
                return unsupported("/etc/ca-certificates/update.d holds hooks to run");
            }
        }
    }
    Ok(entries)
}

/// `sed -n -e '/^$/d' -e 's/^!//p'`: each deselected certificate loses its link.
fn deselect(
    lines: &[&[u8]],
    entries: &mut std::collections::BTreeMap<OsString, Kind>,
    changes: &mut Changes,
) {
    for line in lines {
        let Some(rest) = line.strip_prefix(b"!") else {
            continue;
        };
        let mut cert = CERTS_DIR.as_bytes().to_vec();
        cert.push(b'/');
        cert.extend_from_slice(read_field(rest));
        let mut pem = basename(&cert, b".crt");
        pem.extend_from_slice(b".pem");
        let pem = OsString::from_vec(pem);
        if entries.get(&pem) == Some(&Kind::Symlink) {
            entries.remove(&pem);
            changes.remove.push(pem);
            changes.removed += 1;
        }
    }
}

/// `sed -e '/^$/d' -e '/^#/d' -e '/^!/d'`: each enabled certificate that is a file (`test -f`;
/// others are warned about and skipped) is linked as NAME.pem unless the link is already
/// right, and appended to the bundle; returns the bundle (None: no certificate enabled, so no
/// bundle was started).
fn enable(
    image: &ImageRoot,
    certs: &crate::inroot::Dir,
    lines: &[&[u8]],
    entries: &mut std::collections::BTreeMap<OsString, Kind>,
    changes: &mut Changes,
) -> Result<Option<Vec<u8>>, Plan> {
    let mut bundle: Option<Vec<u8>> = None;
    for line in lines {
        if line.starts_with(b"#") || line.starts_with(b"!") {
            continue;
        }
        let mut cert = CERTS_DIR.as_bytes().to_vec();
        cert.push(b'/');
        cert.extend_from_slice(read_field(line));
        let content = match resolve_kind(image, &cert)? {
            Some((logical, Kind::File)) => image
                .read(OsStr::from_bytes(&logical), MAX_FILE)?
                .unwrap_or_default(),
            _ => continue,
        };
        // basename CERT .crt | sed -e 's/ /_/g' -e 's/[()]/=/g' -e 's/,/_/g'
        let mut name = basename(&cert, b".crt");
        for b in name.iter_mut() {
            *b = match *b {
                b' ' | b',' => b'_',
                b'(' | b')' => b'=',
                other => other,
            };
        }
        name.extend_from_slice(b".pem");
        let name = OsString::from_vec(name);
        let up_to_date = match entries.get(&name) {
            Some(Kind::Symlink) => certs.read_link(&name)?.as_os_str().as_bytes() == cert,
            _ => false,
        };
        if !up_to_date {
            entries.insert(name.clone(), Kind::Symlink);
            changes.link.push((name, OsString::from_vec(cert.clone())));
            changes.added += 1;
        }
        // `sed -e '$a\'`: the file, with a final newline added when it lacks one.
        let b = bundle.get_or_insert_with(Vec::new);
        b.extend_from_slice(&content);
        if !content.is_empty() && !content.ends_with(b"\n") {
            b.push(b'\n');
        }
    }
    Ok(bundle)
}

/// `find -type l ! -exec test -e {} \;`: symlinks that resolve to nothing are removed (noted
/// in `changes`); returns what remains for `openssl rehash`, each entry with its symlink
/// target as an absolute image path (None: a regular file).
fn without_orphans(
    image: &ImageRoot,
    certs: &crate::inroot::Dir,
    entries: &std::collections::BTreeMap<OsString, Kind>,
    changes: &mut Changes,
) -> Result<std::collections::BTreeMap<OsString, Option<Vec<u8>>>, Plan> {
    let mut live = std::collections::BTreeMap::new();
    for (name, kind) in entries {
        if *kind != Kind::Symlink {
            live.insert(name.clone(), None);
            continue;
        }
        let target = match changes.link.iter().find(|(n, _)| n == name) {
            Some((_, t)) => t.as_bytes().to_vec(),
            None => certs.read_link(name)?.into_os_string().into_vec(),
        };
        let absolute = if target.starts_with(b"/") {
            target
        } else {
            [ETC_CERTS.as_bytes(), b"/", &target].concat()
        };
        if resolve_kind(image, &absolute)?.is_none() {
            changes.orphans.push(name.clone());
        } else {
            live.insert(name.clone(), Some(absolute));
        }
    }
    Ok(live)
}

/// `openssl rehash .` over a directory with no hash links yet (apps/rehash.c): every file
/// named `*.pem`, `*.crt`, `*.cer` or `*.crl` that holds exactly one certificate gets a link
/// `HASH.N` to its name, N counting up from 0 among the certificates of one subject hash, a
/// certificate whose SHA-1 fingerprint was seen under an earlier name skipped. OpenSSL 3 takes
/// the names in sorted order; 1.1 in directory order, which kiln does not reproduce, so there a
/// shared hash is left to the real program. `live` maps each entry to its symlink target (None:
/// a regular file).
fn rehash(
    image: &ImageRoot,
    live: &std::collections::BTreeMap<OsString, Option<Vec<u8>>>,
    rehash_sorts_names: bool,
) -> Result<Vec<(String, OsString)>, Plan> {
    // hash → the certificates linked under it: (fingerprint, name), in link order.
    let mut buckets: std::collections::BTreeMap<u32, Vec<([u8; 20], OsString)>> =
        Default::default();
    for (name, target) in live {
        let bytes = name.as_bytes();
        if is_hash_link_name(bytes) {
            return unsupported("/etc/ssl/certs already holds hash links");
        }
        let ext = match bytes.iter().rposition(|&b| b == b'.') {
            Some(i) => bytes[i + 1..].to_ascii_lowercase(),
            None => continue,
        };
        if !matches!(&ext[..], b"pem" | b"crt" | b"cer" | b"crl") {
            continue;
        }
        let content = match target {
            Some(t) => read_following(image, t)?,
            None => image.read(
                OsStr::from_bytes(&[ETC_CERTS.as_bytes(), b"/", bytes].concat()),
                MAX_FILE,
            )?,
        };
        let Some(content) = content else {
            return unsupported(format!(
                "/etc/ssl/certs/{} cannot be read",
                name.to_string_lossy()
            ));
        };
        let der = match certificate_of(&content) {
            Ok(Some(der)) => der,
            Ok(None) => continue,
            Err(why) => {
                return unsupported(format!("/etc/ssl/certs/{}: {why}", name.to_string_lossy()))
            }
        };
        let hash = match subject_hash(&der) {
            Ok(h) => h,
            Err(why) => {
                return unsupported(format!("/etc/ssl/certs/{}: {why}", name.to_string_lossy()))
            }
        };
        let fingerprint: [u8; 20] = sha1::Sha1::digest(&der).into();
        let bucket = buckets.entry(hash).or_default();
        if !bucket.is_empty() && !rehash_sorts_names {
            return unsupported(format!(
                "two certificates share the subject hash {hash:08x} and this OpenSSL rehashes in directory order"
            ));
        }
        if bucket.iter().any(|(seen, _)| *seen == fingerprint) {
            continue;
        }
        if bucket.len() >= MAX_COLLISIONS {
            return unsupported(format!(
                "more than {MAX_COLLISIONS} certificates hash to {hash:08x}"
            ));
        }
        bucket.push((fingerprint, name.clone()));
    }
    Ok(buckets
        .into_iter()
        .flat_map(|(hash, certs)| {
            certs
                .into_iter()
                .enumerate()
                .map(move |(n, (_, name))| (format!("{hash:08x}.{n}"), name))
        })
        .collect())
}

/// `^[0-9a-fA-F]{8}\.r?[0-9]+$`: a name `openssl rehash` treats as one of its links.
fn is_hash_link_name(name: &[u8]) -> bool {
    if name.len() < 10 || !name[..8].iter().all(u8::is_ascii_hexdigit) || name[8] != b'.' {
        return false;
    }
    let rest = &name[9..];
    let digits = rest.strip_prefix(b"r").unwrap_or(rest);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// What a file offers `openssl rehash`.
#[derive(Debug, PartialEq, Eq)]
enum PemContent {
    /// Exactly one certificate (its DER).
    One(Vec<u8>),
    /// Not exactly one object, only certificates or nothing: rehash skips it.
    Skipped,
    /// Something kiln does not reproduce (CRLs, keys, damaged PEM).
    Other(String),
}

/// What `openssl rehash` takes from a file: the DER of its one certificate, None when it
/// skips the file (no PEM block, or several certificates), an error for what kiln does not
/// reproduce (CRLs, keys, PEM headers, damaged blocks).
pub fn certificate_of(content: &[u8]) -> Result<Option<Vec<u8>>, String> {
    match single_certificate(content) {
        PemContent::One(der) => Ok(Some(der)),
        PemContent::Skipped => Ok(None),
        PemContent::Other(why) => Err(why),
    }
}

/// The PEM blocks of `content`, as OpenSSL's `PEM_X509_INFO_read_bio` would count them.
fn single_certificate(content: &[u8]) -> PemContent {
    let text = String::from_utf8_lossy(content);
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if current.is_some() {
                return PemContent::Other("a PEM block inside another".into());
            }
            current = Some((label.to_string(), String::new()));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            match current.take() {
                Some((begun, body)) if begun == label => blocks.push((begun, body)),
                _ => return PemContent::Other("an unmatched PEM END line".into()),
            }
        } else if let Some((_, body)) = current.as_mut() {
            if line.contains(':') {
                return PemContent::Other("a PEM header line".into());
            }
            body.push_str(line.trim());
        } else if line.starts_with("-----") {
            return PemContent::Other("an unrecognised PEM line".into());
        }
    }
    if current.is_some() {
        return PemContent::Other("an unterminated PEM block".into());
    }
    if blocks.iter().any(|(label, _)| label != "CERTIFICATE") {
        return PemContent::Other("a PEM block that is not a CERTIFICATE".into());
    }
    match blocks.as_slice() {
        [] => PemContent::Skipped,
        [(_, body)] => {
            use base64::Engine as _;
            match base64::engine::general_purpose::STANDARD.decode(body) {
                Ok(der) => PemContent::One(der),
                Err(e) => PemContent::Other(format!("bad base64 in the certificate: {e}")),
            }
        }
        _ => PemContent::Skipped,
    }
}

/// OpenSSL's `X509_NAME_hash` of a certificate's subject (see the module doc).
pub fn subject_hash(certificate_der: &[u8]) -> Result<u32, String> {
    let cert = x509_cert::Certificate::from_der(certificate_der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut canonical = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        let mut members: Vec<Vec<u8>> = Vec::new();
        for atv in rdn.0.iter() {
            let oid = atv.oid.to_der().map_err(|e| e.to_string())?;
            let value = match canonical_string(atv.value.tag(), atv.value.value())? {
                Some(text) => tlv(0x0c, &text),
                None => atv.value.to_der().map_err(|e| e.to_string())?,
            };
            members.push(tlv(0x30, &[oid, value].concat()));
        }
        // DER SET OF: members in the order of their encodings (shorter first on a tie).
        members.sort_by(|a, b| {
            let n = a.len().min(b.len());
            a[..n].cmp(&b[..n]).then(a.len().cmp(&b.len()))
        });
        canonical.extend(tlv(0x31, &members.concat()));
    }
    let md = sha1::Sha1::digest(&canonical);
    Ok(u32::from_le_bytes([md[0], md[1], md[2], md[3]]))
}

/// A DER tag-length-value with a one-byte tag.
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

/// `asn1_string_canon`: the canonical UTF-8 of a string value, or None for a type OpenSSL
/// copies as it is.
fn canonical_string(tag: der::Tag, value: &[u8]) -> Result<Option<Vec<u8>>, String> {
    use x509_cert::der::Tag;
    let utf8: String = match tag {
        Tag::Utf8String => std::str::from_utf8(value)
            .map_err(|_| "a UTF8String in the subject is not UTF-8".to_string())?
            .to_string(),
        // MBSTRING_ASC: one character per byte.
        Tag::PrintableString | Tag::TeletexString | Tag::Ia5String | Tag::VisibleString => {
            value.iter().map(|&b| char::from(b)).collect()
        }
        Tag::BmpString => {
            if value.len() % 2 != 0 {
                return Err("a BMPString of odd length".into());
            }
            value
                .chunks(2)
                .map(|c| char::from_u32(u32::from(u16::from_be_bytes([c[0], c[1]]))))
                .collect::<Option<String>>()
                .ok_or("a BMPString with a surrogate")?
        }
        // Every other type (UniversalString included, which x509-cert does not decode and so
        // never reaches here) is copied as it is.
        _ => return Ok(None),
    };
    let bytes = utf8.into_bytes();
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let start = bytes.iter().position(|&b| !space(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !space(b))
        .map_or(start, |i| i + 1);
    let mut out = Vec::with_capacity(end - start);
    let mut i = start;
    while i < end {
        let b = bytes[i];
        if !b.is_ascii() {
            out.push(b);
            i += 1;
        } else if space(b) {
            out.push(b' ');
            while i < end && space(bytes[i]) {
                i += 1;
            }
        } else {
            out.push(b.to_ascii_lowercase());
            i += 1;
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    const HOST_CERTS: &str = "/usr/share/ca-certificates/mozilla";

    fn host_certs() -> Vec<std::path::PathBuf> {
        let mut certs: Vec<_> = std::fs::read_dir(HOST_CERTS)
            .expect("ci/setup installs ca-certificates on the build host")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "crt"))
            .collect();
        certs.sort();
        assert!(certs.len() > 100, "the host's Mozilla certificates");
        certs
    }

    fn der_of(pem: &[u8]) -> Vec<u8> {
        match single_certificate(pem) {
            PemContent::One(der) => der,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subject_hashes_are_openssls_for_every_mozilla_certificate() {
        let certs = host_certs();
        let out = Command::new("sh")
            .arg("-c")
            .arg("for f in \"$@\"; do openssl x509 -subject_hash -noout -in \"$f\"; done")
            .arg("sh")
            .args(&certs)
            .output()
            .unwrap();
        assert!(out.status.success());
        let expected: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(expected.len(), certs.len());
        for (path, want) in certs.iter().zip(expected) {
            let der = der_of(&std::fs::read(path).unwrap());
            let got = format!("{:08x}", subject_hash(&der).unwrap());
            assert_eq!(got, want, "{}", path.display());
        }
    }

    #[test]
    fn canonical_strings_follow_openssl() {
        let canon = |tag, v: &[u8]| canonical_string(tag, v).unwrap().unwrap();
        assert_eq!(
            canon(der::Tag::PrintableString, b"  Foo \t BAR  "),
            b"foo bar"
        );
        assert_eq!(
            canon(der::Tag::Utf8String, "Ä Ü".as_bytes()),
            "Ä Ü".as_bytes()
        );
        assert_eq!(canon(der::Tag::TeletexString, b"\xe9A"), "éa".as_bytes());
        assert_eq!(canon(der::Tag::BmpString, b"\x00A\x00 \x00 \x00b"), b"a b");
        assert!(canonical_string(der::Tag::OctetString, b"x")
            .unwrap()
            .is_none());
        assert!(canonical_string(der::Tag::Utf8String, b"\xff").is_err());
    }

    /// An image root holding the host's certificates where Debian puts them, the ca-certificates
    /// configuration enabling `enabled` (plus a deselected, a missing and a commented line).
    fn image_with(root: &Path, enabled: &[String]) {
        let certs = root.join("usr/share/ca-certificates/mozilla");
        std::fs::create_dir_all(&certs).unwrap();
        for c in host_certs() {
            std::fs::copy(&c, certs.join(c.file_name().unwrap())).unwrap();
        }
        std::fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
        std::fs::create_dir_all(root.join("usr/local/share/ca-certificates")).unwrap();
        std::fs::create_dir_all(root.join("etc/ca-certificates/update.d")).unwrap();
        let mut conf = String::from("# a comment\n!mozilla/Not_There_Either.crt\n");
        for e in enabled {
            conf.push_str(&format!("{e}\n"));
        }
        conf.push_str("mozilla/Missing.crt\n");
        std::fs::write(root.join("etc/ca-certificates.conf"), conf).unwrap();
    }

    /// Every entry of etc/ssl/certs: name → symlink target (with `prefix` taken off) or the
    /// content of a regular file.
    fn listing(root: &Path, prefix: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(root.join("etc/ssl/certs"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let meta = std::fs::symlink_metadata(e.path()).unwrap();
                let value = if meta.file_type().is_symlink() {
                    let t = std::fs::read_link(e.path()).unwrap();
                    let t = t.to_string_lossy();
                    format!("-> {}", t.strip_prefix(prefix).unwrap_or(&t)).into_bytes()
                } else {
                    std::fs::read(e.path()).unwrap()
                };
                (e.file_name().to_string_lossy().into_owned(), value)
            })
            .collect()
    }

    /// The host's own update-ca-certificates (a Debian script this module knows) on `root`.
    fn run_real(root: &Path, hooks: bool) {
        let script = std::fs::read(PROGRAM).unwrap();
        let digest = crate::digest::sha256_hex(&script);
        assert!(
            KNOWN_SCRIPTS.iter().any(|(d, _)| *d == digest),
            "the host's update-ca-certificates ({digest}) is not one kiln reproduces"
        );
        let r = root.display();
        let mut cmd = Command::new("sh");
        cmd.arg(PROGRAM)
            .args(["--certsconf", &format!("{r}/etc/ca-certificates.conf")])
            .args(["--certsdir", &format!("{r}/usr/share/ca-certificates")])
            .args([
                "--localcertsdir",
                &format!("{r}/usr/local/share/ca-certificates"),
            ])
            .args(["--etccertsdir", &format!("{r}/etc/ssl/certs")])
            .env("TMPDIR", root);
        if !hooks {
            cmd.args(["--hooksdir", ""]);
        } else {
            cmd.args(["--hooksdir", &format!("{r}/etc/ca-certificates/update.d")]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_trust_store_is_the_one_debians_script_makes() {
        let enabled: Vec<String> = host_certs()
            .iter()
            .map(|p| format!("mozilla/{}", p.file_name().unwrap().to_string_lossy()))
            .collect();
        let native = tempfile::tempdir().unwrap();
        let real = tempfile::tempdir().unwrap();
        image_with(native.path(), &enabled);
        image_with(real.path(), &enabled);
        let script = std::fs::read(PROGRAM).unwrap();
        let variant = KNOWN_SCRIPTS
            .iter()
            .find(|(d, _)| *d == crate::digest::sha256_hex(&script))
            .map(|(_, v)| *v)
            .expect("a known host script");
        let openssl = Command::new("openssl").arg("version").output().unwrap();
        let openssl = String::from_utf8_lossy(&openssl.stdout).into_owned();
        let tools = Tools {
            variant,
            rehash_sorts_names: rehash_sorts_names(
                openssl.split_whitespace().nth(1).unwrap_or_default(),
            ),
        };
        assert!(
            tools.rehash_sorts_names,
            "the host's OpenSSL is 3: {openssl}"
        );
        let image = ImageRoot::open(native.path()).unwrap();
        // The postinst's call, then the trigger's (which changes nothing but the bundle).
        let first = Request {
            fresh: false,
            hooks: false,
        };
        assert_eq!(
            update(&image, tools, first).unwrap(),
            Outcome::Done {
                added: enabled.len(),
                removed: 0
            }
        );
        run_real(real.path(), false);
        let prefix = real.path().display().to_string();
        let made = listing(native.path(), "");
        assert_eq!(made, listing(real.path(), &prefix));
        assert!(
            made.keys()
                .filter(|k| is_hash_link_name(k.as_bytes()))
                .count()
                == enabled.len()
        );
        // Debian's set holds two certificates of one subject hash (Firmaprofesional's two
        // roots): numbered in name order, as OpenSSL 3 does.
        assert!(
            made.keys().any(|k| k.ends_with(".1")),
            "a shared subject hash"
        );
        // An OpenSSL 1.1 image numbers them in directory order: left to the real program.
        let other = tempfile::tempdir().unwrap();
        image_with(other.path(), &enabled);
        let old_openssl = Tools {
            rehash_sorts_names: false,
            ..tools
        };
        let outcome = update(&ImageRoot::open(other.path()).unwrap(), old_openssl, first);
        assert!(matches!(outcome.unwrap(), Outcome::Unsupported(r) if r.contains("subject hash")));
        assert!(listing(other.path(), "").is_empty(), "nothing was changed");
        assert!(made["ca-certificates.crt"].len() > 100_000);

        let trigger = Request {
            fresh: false,
            hooks: true,
        };
        assert_eq!(
            update(&image, tools, trigger).unwrap(),
            Outcome::Done {
                added: 0,
                removed: 0
            }
        );
        run_real(real.path(), true);
        assert_eq!(listing(native.path(), ""), listing(real.path(), &prefix));

        // Deselecting one afterwards means rehashing over existing hash links: left to the
        // real program, with nothing changed.
        let conf = native.path().join("etc/ca-certificates.conf");
        let text = std::fs::read_to_string(&conf).unwrap();
        std::fs::write(&conf, text.replacen("\nmozilla/", "\n!mozilla/", 1)).unwrap();
        assert!(matches!(
            update(&image, tools, first).unwrap(),
            Outcome::Unsupported(_)
        ));
        assert_eq!(made, listing(native.path(), ""));
    }

    #[test]
    fn a_hostile_configuration_stays_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside.crt");
        let pem = std::fs::read(&host_certs()[0]).unwrap();
        std::fs::write(&outside, &pem).unwrap();
        let mozilla = root.join("usr/share/ca-certificates/mozilla");
        std::fs::create_dir_all(&mozilla).unwrap();
        std::fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
        // A certificate that is a symlink to a host path, one climbing out, and a FIFO.
        std::os::unix::fs::symlink(&outside, mozilla.join("abs.crt")).unwrap();
        std::os::unix::fs::symlink("../../../../../../outside.crt", mozilla.join("up.crt"))
            .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            mozilla.join("fifo.crt"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_bits_truncate(0o644),
            0,
        )
        .unwrap();
        std::fs::write(mozilla.join("real.crt"), &pem).unwrap();
        std::fs::write(
            root.join("etc/ca-certificates.conf"),
            "mozilla/abs.crt\nmozilla/up.crt\nmozilla/fifo.crt\n../../../../outside.crt\nmozilla/real.crt\n",
        )
        .unwrap();
        let image = ImageRoot::open(&root).unwrap();
        let request = Request {
            fresh: false,
            hooks: false,
        };
        let tools = Tools {
            variant: Variant::BundleWhenAnyEnabled,
            rehash_sorts_names: true,
        };
        let outcome = update(&image, tools, request).unwrap();
        // Only the certificate inside the image is linked and bundled.
        assert_eq!(
            outcome,
            Outcome::Done {
                added: 1,
                removed: 0
            }
        );
        let bundle = std::fs::read(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
        assert_eq!(bundle, pem);
        assert_eq!(std::fs::read(&outside).unwrap(), pem);
    }

    #[test]
    fn requests_are_read_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let image = ImageRoot::open(tmp.path()).unwrap();
        image
            .write(REQUESTS, b"update no-hooks\nfresh hooks\nnonsense\n", 0o644)
            .unwrap();
        let requests = take_requests(&image).unwrap();
        assert_eq!(
            requests,
            vec![
                Request {
                    fresh: false,
                    hooks: false
                },
                Request {
                    fresh: true,
                    hooks: true
                }
            ]
        );
        assert_eq!(requests[0].args(), ["--hooksdir", ""]);
        assert!(take_requests(&image).unwrap().is_empty());
        // What a hostile script could plant in the shared directory instead: a symlink to a
        // host file, a FIFO. Refused, never followed, never blocked on.
        std::fs::write(tmp.path().join("host-secret"), "update hooks\n").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("host-secret"), tmp.path().join(REQUESTS))
            .unwrap();
        assert!(take_requests(&image).is_err());
        std::fs::remove_file(tmp.path().join(REQUESTS)).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            tmp.path().join(REQUESTS),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_bits_truncate(0o644),
            0,
        )
        .unwrap();
        assert!(take_requests(&image).is_err());
        assert_eq!(basename(b"/a/b/x.crt", b".crt"), b"x");
        assert_eq!(basename(b"/a/.crt", b".crt"), b".crt");
        assert!(is_hash_link_name(b"0a1b2c3d.0") && is_hash_link_name(b"0A1B2C3D.r12"));
        assert!(!is_hash_link_name(b"0a1b2c3d.pem"));
        assert!(rehash_sorts_names("3.0.15-1~deb12u1") && rehash_sorts_names("1:3.5.1-1"));
        assert!(!rehash_sorts_names("1.1.1w-0+deb11u1") && !rehash_sorts_names(""));
    }
}
