//! The recipe stage: reads `kiln.toml`, the board file it names, each overlay's `overlay.toml`
//! ([`overlay`]) and the `[[waiver]]` tables of both into a validated [`Recipe`].
//!
//! Every error names the file, the line and the key, because firmware CI shows only one line.

pub mod overlay;
pub mod requirements;

use crate::arch::DebianArch;
use crate::check::findings::Check;
pub use crate::check::waiver::Waiver;
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A problem with a recipe or board file, located to file, line and key.
#[derive(Debug, thiserror::Error)]
pub struct RecipeError {
    /// The file at fault.
    pub file: PathBuf,
    /// 1-based line, 0 when the whole file is at fault (unreadable).
    pub line: usize,
    /// The dotted key at fault, empty when unknown.
    pub key: String,
    /// What is wrong and, where possible, what to do.
    pub message: String,
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ": key '{}'", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The image recipe: what to build, for which board, from which packages.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The directory of `kiln.toml`; relative paths in the recipe are resolved against it.
    pub dir: PathBuf,
    /// Image name (OCI `ref.name` and the annotation `org.opencontainers.image.title`).
    pub name: String,
    /// Image version (OCI `org.opencontainers.image.version`).
    pub version: String,
    /// The board the image is for.
    pub board: Board,
    /// The board file path as written in the recipe (recorded in the lock).
    pub board_ref: String,
    /// The lock file's name in `dir`: `kiln.lock`, or `kiln.BOARD.lock` for each board of a
    /// recipe that lists several (`image.boards`).
    pub lock_name: String,
    /// Which base set of packages to start from.
    pub variant: Variant,
    /// Extra packages requested by name, sorted and deduplicated.
    pub packages: Vec<String>,
    /// Run the maintainer scripts at build time (default). False leaves every package
    /// `unpacked`, for images whose second stage runs on the device.
    pub configure: bool,
    /// debconf answers given before any maintainer script runs, one per line in
    /// `debconf-set-selections` form: `owner question type value`.
    pub debconf: Vec<String>,
    /// The overlays named by the recipe, loaded and checked, in order (one layer each).
    pub overlays: Vec<overlay::Overlay>,
    /// `kiln check` waivers of the image (the board's own apply too).
    pub waivers: Vec<Waiver>,
}

/// The base package set, named as mmdebstrap names its variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// `Essential: yes` packages only.
    Essential,
    /// `Essential: yes` and `Priority: required` packages, plus apt.
    Minbase,
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Variant::Essential => "essential",
            Variant::Minbase => "minbase",
        })
    }
}

/// A board definition: the hardware an image is for and the Debian archive it is built from.
#[derive(Debug, Clone)]
pub struct Board {
    /// The board file.
    pub path: PathBuf,
    /// Board name.
    pub name: String,
    /// Debian architecture; every ELF expectation derives from it.
    pub arch: DebianArch,
    /// Device-tree style `compatible` strings of hardware this image may be installed on.
    pub compatible: Vec<String>,
    /// Debian suite (codename), such as `bookworm` or `stretch`.
    pub suite: String,
    /// Archive base URL (`http://`, `https://` or `file://`).
    pub mirror: String,
    /// Archive components, such as `main`.
    pub components: Vec<String>,
    /// OpenPGP keyring (binary or armored) that must have signed the suite's InRelease.
    pub keyring: PathBuf,
    /// The suite is archived: an expired `Valid-Until` and keys that expired after the
    /// Release's own `Date` are accepted (time-anchored), and only then.
    pub archived: bool,
    /// Whether the suite's root filesystem has merged /usr (/bin -> usr/bin and friends).
    pub merged_usr: bool,
    /// The flash layout, kept as written until the export stage reads it.
    pub flash: toml::Table,
    /// `kiln check` waivers shipped with the board (findings its base image is known to have).
    pub waivers: Vec<Waiver>,
}

/// OCI's limit on a tag (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`, distribution spec).
const MAX_TAG: usize = 128;

/// Whether `name` is one path component of an OCI repository name
/// (`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, distribution spec), so `..`, `.` or `-x` never become
/// a reference or a directory name.
fn oci_name_component(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || b.len() > 255 || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &name[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    image: Spanned<RawImage>,
    base: Option<RawBase>,
    overlays: Option<Vec<Spanned<String>>>,
    waiver: Option<Vec<Spanned<RawWaiver>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    name: Spanned<String>,
    version: Spanned<String>,
    board: Option<Spanned<String>>,
    boards: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBase {
    variant: Option<Spanned<String>>,
    configure: Option<bool>,
    debconf: Option<Vec<Spanned<String>>>,
    packages: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoard {
    name: Spanned<String>,
    arch: Spanned<String>,
    compatible: Spanned<Vec<Spanned<String>>>,
    debian: RawDebian,
    flash: Option<toml::Table>,
    waiver: Option<Vec<Spanned<RawWaiver>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWaiver {
    path: Spanned<String>,
    check: Spanned<String>,
    reason: Spanned<String>,
    expires: Spanned<String>,
}

/// Validates `[[waiver]]` tables of a board or recipe file.
fn waivers(src: &Source, raw: Option<Vec<Spanned<RawWaiver>>>) -> Result<Vec<Waiver>, RecipeError> {
    let mut out = Vec::new();
    for w in raw.unwrap_or_default() {
        let line = src.line_of(w.span());
        let w = w.into_inner();
        let path = non_empty(src, &w.path, "waiver.path")?;
        if glob::Pattern::new(&path).is_err() || !path.starts_with('/') {
            return Err(src.error(
                w.path.span(),
                "waiver.path",
                format!("'{path}' is not an absolute path glob"),
            ));
        }
        let id = non_empty(src, &w.check, "waiver.check")?;
        let Some(check) = Check::from_id(&id) else {
            let ids: Vec<&str> = Check::ALL.iter().map(|c| c.id()).collect();
            return Err(src.error(
                w.check.span(),
                "waiver.check",
                format!("unknown check '{id}' (one of {})", ids.join(", ")),
            ));
        };
        let reason = non_empty(src, &w.reason, "waiver.reason")?;
        let expires = non_empty(src, &w.expires, "waiver.expires")?;
        let Some(expires_day) = crate::timefmt::parse_date(&expires) else {
            return Err(src.error(
                w.expires.span(),
                "waiver.expires",
                format!("'{expires}' is not a date YYYY-MM-DD"),
            ));
        };
        out.push(Waiver {
            path,
            check,
            reason,
            expires,
            expires_day,
            origin: format!("{}:{line}", src.path.display()),
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDebian {
    suite: Spanned<String>,
    mirror: Spanned<String>,
    components: Option<Vec<Spanned<String>>>,
    keyring: Spanned<String>,
    archived: Option<bool>,
    #[serde(rename = "merged-usr")]
    merged_usr: Option<bool>,
}

/// Suites released before Debian made merged /usr the only layout (bookworm, 2023).
const UNMERGED_SUITES: &[&str] = &["jessie", "stretch", "buster", "bullseye"];

/// A TOML file being parsed, for errors that name its path and line.
pub(crate) struct Source<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
}

impl Source<'_> {
    pub(crate) fn line_of(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|b| *b == b'\n').count() + 1
    }

    pub(crate) fn error(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> RecipeError {
        RecipeError {
            file: self.path.to_path_buf(),
            line: self.line_of(span),
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, RecipeError> {
        toml::from_str(self.text).map_err(|e| {
            let line = e.span().map(|s| self.line_of(s)).unwrap_or(0);
            let message = e.message().trim().replace('\n', " ");
            let key = message
                .split('`')
                .nth(1)
                .filter(|_| message.contains("field"))
                .unwrap_or("")
                .to_string();
            RecipeError {
                file: self.path.to_path_buf(),
                line,
                key,
                message,
            }
        })
    }
}

pub(crate) fn read(path: &Path) -> Result<String, RecipeError> {
    std::fs::read_to_string(path).map_err(|e| RecipeError {
        file: path.to_path_buf(),
        line: 0,
        key: String::new(),
        message: format!("cannot read: {e}"),
    })
}

/// True for a valid Debian package name (Policy 5.6.1).
pub fn is_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

fn non_empty(src: &Source, value: &Spanned<String>, key: &str) -> Result<String, RecipeError> {
    let v = value.get_ref().trim();
    if v.is_empty() {
        return Err(src.error(value.span(), key, "must not be empty"));
    }
    Ok(v.to_string())
}

impl Recipe {
    /// Every waiver `kiln check` applies to this recipe's image: the board's, then the recipe's.
    pub fn all_waivers(&self) -> Vec<Waiver> {
        let mut all = self.board.waivers.clone();
        all.extend(self.waivers.iter().cloned());
        all
    }

    /// The lock file of this recipe (for this board).
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(&self.lock_name)
    }

    /// Loads `kiln.toml` from a directory (or a recipe file path) and the one board it names;
    /// a recipe listing several boards is refused here (see [`Recipe::load_all`]).
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let mut all = Recipe::load_all(path)?;
        match all.len() {
            1 => Ok(all.remove(0)),
            n => Err(RecipeError {
                file: all[0].dir.join("kiln.toml"),
                line: 0,
                key: "image.boards".into(),
                message: format!(
                    "lists {n} boards; this command takes a recipe for one board (kiln lock and kiln build take several)"
                ),
            }),
        }
    }

    /// Loads `kiln.toml` and every board it names (`image.board`, or the list
    /// `image.boards`): one recipe per board, the same image for each, each with its own lock.
    pub fn load_all(path: &Path) -> Result<Vec<Recipe>, RecipeError> {
        let file = if path.is_dir() {
            path.join("kiln.toml")
        } else {
            path.to_path_buf()
        };
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let text = read(&file)?;
        let src = Source {
            path: &file,
            text: &text,
        };
        let raw: RawRecipe = src.parse()?;
        let image = raw.image.get_ref();
        let name = non_empty(&src, &image.name, "image.name")?;
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return Err(src.error(
                image.name.span(),
                "image.name",
                format!("'{name}' must use only a-z, 0-9, '.', '_' and '-' (it becomes an OCI reference)"),
            ));
        }
        if !oci_name_component(&name) {
            return Err(src.error(
                image.name.span(),
                "image.name",
                format!("'{name}' is not an OCI repository name: it must start and end with a letter or digit, with single '.', '_' or '-' between them (OCI distribution spec)"),
            ));
        }
        let version = non_empty(&src, &image.version, "image.version")?;
        if version.len() > MAX_TAG || !version.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(src.error(
                image.version.span(),
                "image.version",
                format!(
                    "'{}' must start with a letter or digit and be at most {MAX_TAG} characters (it becomes an OCI tag); it has {}",
                    version.chars().take(40).collect::<String>(),
                    version.len()
                ),
            ));
        }
        if !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+~".contains(&b))
        {
            return Err(src.error(
                image.version.span(),
                "image.version",
                format!("'{version}' must use only letters, digits and '._-+~'"),
            ));
        }
        let board_refs: Vec<(&Spanned<String>, &str)> =
            match (&image.board, &image.boards) {
                (Some(one), None) => vec![(one, "image.board")],
                (None, Some(list)) if !list.get_ref().is_empty() => {
                    list.get_ref().iter().map(|b| (b, "image.boards")).collect()
                }
                (None, Some(list)) => {
                    return Err(src.error(list.span(), "image.boards", "lists no board"))
                }
                _ => return Err(src.error(
                    raw.image.span(),
                    "image",
                    "name the board file: board = \"FILE\" (or boards = [\"FILE\", …] for several)",
                )),
            };
        let several = board_refs.len() > 1;
        let mut boards: Vec<(String, Board)> = Vec::new();
        for (spanned, key) in board_refs {
            let board_ref = non_empty(&src, spanned, key)?;
            let board_path = dir.join(&board_ref);
            if !board_path.is_file() {
                return Err(src.error(
                    spanned.span(),
                    key,
                    format!("board file '{}' does not exist", board_path.display()),
                ));
            }
            let board = Board::load(&board_path)?;
            // Each board's lock and output are named after it.
            let file_name_safe = board
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && !board.name.starts_with('.');
            if several && !file_name_safe {
                return Err(src.error(
                    spanned.span(),
                    key,
                    format!(
                        "board '{}' of several needs a name of lower-case letters, digits and '._-' (it names its lock and output)",
                        board.name
                    ),
                ));
            }
            if boards.iter().any(|(_, b)| b.name == board.name) {
                return Err(src.error(
                    spanned.span(),
                    key,
                    format!("two boards are named '{}'", board.name),
                ));
            }
            boards.push((board_ref, board));
        }

        let configure = raw.base.as_ref().and_then(|b| b.configure).unwrap_or(true);
        let mut debconf = Vec::new();
        for answer in raw
            .base
            .as_ref()
            .and_then(|b| b.debconf.as_ref())
            .into_iter()
            .flatten()
        {
            let text = answer.get_ref().trim();
            let words: Vec<&str> = text.splitn(4, char::is_whitespace).collect();
            if words.len() < 3 || text.contains('\n') {
                return Err(src.error(
                    answer.span(),
                    "base.debconf",
                    format!(
                        "'{text}' is not 'owner question type value' (debconf-set-selections form)"
                    ),
                ));
            }
            debconf.push(text.to_string());
        }
        let (variant, raw_packages) = match raw.base {
            Some(base) => {
                let variant = match &base.variant {
                    None => Variant::Minbase,
                    Some(v) => match v.get_ref().as_str() {
                        "minbase" => Variant::Minbase,
                        "essential" => Variant::Essential,
                        other => {
                            return Err(src.error(
                                v.span(),
                                "base.variant",
                                format!(
                                    "unknown variant '{other}' (expected 'minbase' or 'essential')"
                                ),
                            ))
                        }
                    },
                };
                (variant, base.packages.unwrap_or_default())
            }
            None => (Variant::Minbase, Vec::new()),
        };
        let mut packages = Vec::new();
        for p in &raw_packages {
            let name = p.get_ref().trim();
            if !is_package_name(name) {
                return Err(src.error(
                    p.span(),
                    "base.packages",
                    format!("'{name}' is not a valid Debian package name"),
                ));
            }
            packages.push(name.to_string());
        }
        packages.sort();
        packages.dedup();

        let mut overlays: Vec<overlay::Overlay> = Vec::new();
        for o in raw.overlays.unwrap_or_default() {
            let rel = non_empty(&src, &o, "overlays")?;
            let overlay_file = dir.join(&rel).join("overlay.toml");
            if !overlay_file.is_file() {
                return Err(src.error(
                    o.span(),
                    "overlays",
                    format!("'{}' does not exist", overlay_file.display()),
                ));
            }
            // The overlay's own errors name its file and line.
            let overlay = overlay::Overlay::load(&dir.join(&rel))?;
            if overlays.iter().any(|x| x.name == overlay.name) {
                return Err(src.error(
                    o.span(),
                    "overlays",
                    format!("two overlays are named '{}'", overlay.name),
                ));
            }
            overlays.push(overlay);
        }

        let waivers = waivers(&src, raw.waiver)?;
        Ok(boards
            .into_iter()
            .map(|(board_ref, board)| Recipe {
                dir: dir.clone(),
                name: name.clone(),
                version: version.clone(),
                lock_name: if several {
                    format!("kiln.{}.lock", board.name)
                } else {
                    "kiln.lock".to_string()
                },
                board,
                board_ref,
                variant,
                packages: packages.clone(),
                configure,
                debconf: debconf.clone(),
                overlays: overlays.clone(),
                waivers: waivers.clone(),
            })
            .collect())
    }
}

impl Board {
    /// Loads and validates a board file.
    pub fn load(path: &Path) -> Result<Board, RecipeError> {
        let text = read(path)?;
        let src = Source { path, text: &text };
        let raw: RawBoard = src.parse()?;
        let name = non_empty(&src, &raw.name, "name")?;
        let arch = DebianArch::parse(raw.arch.get_ref().trim()).ok_or_else(|| {
            src.error(
                raw.arch.span(),
                "arch",
                format!(
                    "unknown Debian architecture '{}' (expected one of arm64, armhf, armel, amd64)",
                    raw.arch.get_ref()
                ),
            )
        })?;
        let mut compatible = Vec::new();
        for c in raw.compatible.get_ref() {
            compatible.push(non_empty(&src, c, "compatible")?);
        }
        if compatible.is_empty() {
            return Err(src.error(
                raw.compatible.span(),
                "compatible",
                "list at least one hardware compatible string",
            ));
        }
        let d = raw.debian;
        let suite = non_empty(&src, &d.suite, "debian.suite")?;
        if !suite
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(src.error(d.suite.span(), "debian.suite", "not a suite name"));
        }
        let mirror = non_empty(&src, &d.mirror, "debian.mirror")?;
        if !(mirror.starts_with("http://")
            || mirror.starts_with("https://")
            || mirror.starts_with("file:///"))
        {
            return Err(src.error(
                d.mirror.span(),
                "debian.mirror",
                format!("'{mirror}' must be an http://, https:// or file:/// URL"),
            ));
        }
        let mirror = mirror.trim_end_matches('/').to_string();
        let mut components = Vec::new();
        for c in d.components.unwrap_or_default() {
            components.push(non_empty(&src, &c, "debian.components")?);
        }
        if components.is_empty() {
            components.push("main".to_string());
        }
        let keyring_raw = non_empty(&src, &d.keyring, "debian.keyring")?;
        let keyring = match path.parent() {
            Some(dir) if !Path::new(&keyring_raw).is_absolute() => dir.join(&keyring_raw),
            _ => PathBuf::from(&keyring_raw),
        };
        let not_usable = match std::fs::metadata(&keyring) {
            Ok(m) if m.is_file() => None,
            Ok(_) => Some(format!(
                "keyring '{}' is not a regular file (a keyring is a file of OpenPGP keys)",
                keyring.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
                "keyring '{}' does not exist (Debian's keyrings come with the debian-archive-keyring package)",
                keyring.display()
            )),
            Err(e) => Some(format!("keyring '{}': {e}", keyring.display())),
        };
        if let Some(reason) = not_usable {
            return Err(src.error(d.keyring.span(), "debian.keyring", reason));
        }
        let merged_usr = d
            .merged_usr
            .unwrap_or(!UNMERGED_SUITES.contains(&suite.as_str()));
        Ok(Board {
            path: path.to_path_buf(),
            name,
            arch,
            compatible,
            suite,
            mirror,
            components,
            keyring,
            archived: d.archived.unwrap_or(false),
            merged_usr,
            flash: raw.flash.unwrap_or_default(),
            waivers: waivers(&src, raw.waiver)?,
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn oci_repository_name_components() {
        for good in ["fixture", "robot-fw", "a.b", "a__b", "a--b", "x1", "0"] {
            assert!(oci_name_component(good), "{good}");
        }
        for bad in [
            "", ".", "..", "a..b", "-x", "x-", "A", "a/b", "a___b", "a._b", "_a",
        ] {
            assert!(!oci_name_component(bad), "{bad}");
        }
    }

    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn board_text(arch: &str) -> String {
        format!(
            "name = \"b\"\narch = \"{arch}\"\ncompatible = [\"acme,bot\"]\n\n[debian]\nsuite = \"bookworm\"\nmirror = \"http://deb.debian.org/debian\"\nkeyring = \"key.gpg\"\n"
        )
    }

    #[test]
    fn loads_a_valid_recipe() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "key.gpg", "x");
        write(d.path(), "b.toml", &board_text("armhf"));
        write(
            d.path(),
            "kiln.toml",
            "[image]\nname = \"img\"\nversion = \"1.0\"\nboard = \"b.toml\"\n[base]\npackages = [\"zlib1g\", \"netbase\", \"zlib1g\"]\n",
        );
        let r = Recipe::load(d.path()).unwrap();
        assert_eq!(r.board.arch, DebianArch::Armhf);
        assert_eq!(r.packages, vec!["netbase", "zlib1g"]);
        assert!(r.board.merged_usr);
        assert_eq!(r.variant, Variant::Minbase);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "key.gpg", "x");
        let b = write(d.path(), "b.toml", &board_text("sparc"));
        let e = Board::load(&b).unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.key, "arch");
        let msg = e.to_string();
        assert!(msg.contains("b.toml:2: key 'arch'"), "{msg}");
        assert!(!msg.contains('\n'));

        write(d.path(), "b.toml", &board_text("arm64"));
        write(
            d.path(),
            "kiln.toml",
            "[image]\nname = \"img\"\nversion = \"1.0\"\nboard = \"b.toml\"\n[base]\npackages = [\"ok\",\n \"Bad_Name\"]\n",
        );
        let e = Recipe::load(d.path()).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (7, "base.packages"));

        write(
            d.path(),
            "kiln.toml",
            "[image]\nname = \"img\"\nversoin = \"1.0\"\nboard = \"b.toml\"\n",
        );
        let e = Recipe::load(d.path()).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert_eq!(e.key, "versoin", "{e}");
    }

    #[test]
    fn overlays_are_loaded_and_their_errors_name_their_file() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "key.gpg", "x");
        write(d.path(), "b.toml", &board_text("armhf"));
        std::fs::create_dir_all(d.path().join("overlays/telemetry")).unwrap();
        write(
            d.path(),
            "kiln.toml",
            "overlays = [\"overlays/telemetry\"]\n[image]\nname = \"img\"\nversion = \"1.0\"\nboard = \"b.toml\"\n",
        );
        write(
            &d.path().join("overlays/telemetry"),
            "overlay.toml",
            "kind = \"python-venv\"\nrequirements = \"missing.lock\"\n",
        );
        let e = Recipe::load(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("telemetry/overlay.toml:2: key 'requirements'"),
            "{e}"
        );
        write(
            &d.path().join("overlays/telemetry"),
            "overlay.toml",
            "kind = \"files\"\n",
        );
        let r = Recipe::load(d.path()).unwrap();
        assert_eq!(r.overlays.len(), 1);
        assert_eq!(r.overlays[0].name, "telemetry");
    }

    /// A recipe for several boards: one recipe per board, each with its own lock; a command
    /// for one board refuses it; a board named so it could not name a file, two boards of one
    /// name, both keys or neither are refused with the key.
    #[test]
    fn a_recipe_lists_several_boards_each_with_its_own_lock() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "key.gpg", "x");
        write(
            d.path(),
            "a.toml",
            &board_text("arm64").replace("\"b\"", "\"robot-a\""),
        );
        write(
            d.path(),
            "h.toml",
            &board_text("armhf").replace("\"b\"", "\"robot-h\""),
        );
        let recipe = |image: &str| {
            write(
                d.path(),
                "kiln.toml",
                &format!("[image]\nname = \"img\"\nversion = \"1.0\"\n{image}\n"),
            );
        };
        recipe("boards = [\"a.toml\", \"h.toml\"]");
        let all = Recipe::load_all(d.path()).unwrap();
        let got: Vec<(&str, DebianArch, PathBuf)> = all
            .iter()
            .map(|r| (r.board.name.as_str(), r.board.arch, r.lock_path()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "robot-a",
                    DebianArch::Arm64,
                    d.path().join("kiln.robot-a.lock")
                ),
                (
                    "robot-h",
                    DebianArch::Armhf,
                    d.path().join("kiln.robot-h.lock")
                ),
            ]
        );
        let e = Recipe::load(d.path()).unwrap_err().to_string();
        assert!(e.contains("lists 2 boards"), "{e}");
        recipe("board = \"a.toml\"");
        assert_eq!(
            Recipe::load(d.path()).unwrap().lock_path(),
            d.path().join("kiln.lock")
        );

        write(
            d.path(),
            "x.toml",
            &board_text("armhf").replace("\"b\"", "\"../up\""),
        );
        recipe("boards = [\"a.toml\", \"x.toml\"]");
        let e = Recipe::load_all(d.path()).unwrap_err().to_string();
        assert!(e.contains("needs a name of lower-case letters"), "{e}");
        recipe("boards = [\"a.toml\", \"a.toml\"]");
        let e = Recipe::load_all(d.path()).unwrap_err().to_string();
        assert!(e.contains("two boards are named 'robot-a'"), "{e}");
        recipe("board = \"a.toml\"\nboards = [\"h.toml\"]");
        let e = Recipe::load_all(d.path()).unwrap_err().to_string();
        assert!(e.contains("name the board file"), "{e}");
        recipe("boards = []");
        let e = Recipe::load_all(d.path()).unwrap_err().to_string();
        assert!(e.contains("lists no board"), "{e}");
    }

    #[test]
    fn stretch_is_not_merged_usr() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "key.gpg", "x");
        let b = write(
            d.path(),
            "b.toml",
            &board_text("armhf").replace("bookworm", "stretch"),
        );
        assert!(!Board::load(&b).unwrap().merged_usr);
    }
}
