//! Writing the dpkg database (`var/lib/dpkg`) for natively unpacked packages, so that the
//! target's own dpkg recognises every package as `install ok unpacked` and can configure it.
//!
//! Layout and field order follow dpkg 1.21's own writer (lib/dpkg/dump.c, fieldinfos order in
//! lib/dpkg/parse.c): known fields in dpkg's order, unknown fields after them in control order.

use super::Unpacked;
use crate::debian::control::Paragraph;
use crate::inroot::{Dir, ImageRoot, InRootError};
use std::collections::BTreeMap;

/// dpkg's order of the fields it knows, as `dpkg --status` writes them.
const FIELD_ORDER: &[&str] = &[
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Description",
    "Triggers-Pending",
    "Triggers-Awaited",
];

/// The mode of a control member written to `info/`: executable (0755) when the member is,
/// otherwise 0644, whatever else its tar header said.
pub fn info_file_mode(member_mode: u32) -> u32 {
    if member_mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

/// The name dpkg files a package's info under: `pkg` or, for Multi-Arch: same, `pkg:arch`.
pub fn info_name(control: &Paragraph) -> String {
    let name = control.get("Package").unwrap_or_default();
    if control.get("Multi-Arch") == Some("same") {
        format!("{name}:{}", control.get("Architecture").unwrap_or_default())
    } else {
        name.to_string()
    }
}

/// The status paragraph for an unpacked package.
pub fn status_paragraph(pkg: &Unpacked, state: &str) -> Paragraph {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut src = pkg.control.control.clone();
    src.set("Status", &format!("install ok {state}"));
    if !pkg.conffiles.is_empty() {
        let mut v = String::new();
        for (path, md5) in &pkg.conffiles {
            v.push_str(&format!("\n {path} {md5}"));
        }
        src.set("Conffiles", &v);
    }
    for known in FIELD_ORDER {
        if let Some(v) = src.get_raw(known) {
            fields.push((known.to_string(), v.to_string()));
        }
    }
    for (k, v) in &src.fields {
        if !FIELD_ORDER.iter().any(|f| f.eq_ignore_ascii_case(k)) {
            fields.push((k.clone(), v.clone()));
        }
    }
    Paragraph { fields, line: 0 }
}

/// Control members dpkg keeps in its info database (deb(5), deb-*(5), dpkg's own list of
/// known control files); `control` itself goes into the status file. Anything else is not
/// written: `list`, above all, is the file list dpkg (here: kiln) generates, and a package
/// must not forge its own.
pub const INFO_MEMBERS: &[&str] = &[
    "conffiles",
    "config",
    "md5sums",
    "postinst",
    "postrm",
    "preinst",
    "prerm",
    "shlibs",
    "symbols",
    "templates",
    "triggers",
];

/// Names of files dpkg itself keeps in `triggers/`, which no trigger may take.
const TRIGGER_DB_FILES: &[&str] = &["File", "Unincorp", "Lock"];

/// Whether `name` may name an explicit trigger: dpkg's rule (lib/dpkg/triglib.c,
/// `trig_name_is_illegal`: printable ASCII without spaces) and, since kiln makes it a file
/// name under `triggers/`, no `/`, not `.`/`..` and none of dpkg's own files there.
pub fn valid_trigger_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|c| c > b' ' && c < 0x7f && c != b'/')
        && name != "."
        && name != ".."
        && !TRIGGER_DB_FILES.contains(&name)
}

/// Writes status, info files and trigger interests for the unpacked packages, through the
/// in-root API (a symlink a package planted at `var/lib/dpkg` or any file in it is replaced or
/// resolved inside the root, never written through).
pub fn write_database(
    image: &ImageRoot,
    arch: &str,
    packages: &[Unpacked],
) -> Result<(), DatabaseError> {
    let db = image.make_dir_all("var/lib/dpkg")?;
    for sub in ["info", "updates", "triggers", "alternatives", "parts"] {
        image.make_dir_all(format!("var/lib/dpkg/{sub}"))?;
    }
    let info_dir = image.make_dir_all("var/lib/dpkg/info")?;
    let triggers_dir = image.make_dir_all("var/lib/dpkg/triggers")?;
    let file = |dir: &Dir, name: &str, data: &[u8], mode: u32| dir.write_file(name, data, mode);
    // dpkg sorts the status file by package name (and architecture).
    let mut sorted: Vec<&Unpacked> = packages.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.arch.cmp(&b.arch)));
    let mut status = String::new();
    for pkg in &sorted {
        status.push_str(&status_paragraph(pkg, "unpacked").to_string());
        status.push('\n');
    }
    file(&db, "status", status.as_bytes(), 0o644)?;
    // What `dpkg --add-architecture`-aware tools read; mmdebstrap writes it the same way.
    file(&db, "arch", format!("{arch}\n").as_bytes(), 0o644)?;
    file(&info_dir, "format", b"1\n", 0o644)?;

    let mut file_interests: Vec<String> = Vec::new();
    let mut named_interests: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pkg in &sorted {
        let info = info_name(&pkg.control.control);
        if !crate::debian::control::valid_package_name(&pkg.name)
            || !crate::debian::control::valid_arch_name(&pkg.arch)
            || info.contains('/')
        {
            return Err(DatabaseError::Name {
                package: pkg.name.clone(),
                reason: "is not a valid Debian package name or architecture".into(),
            });
        }
        let mut list = String::new();
        for p in &pkg.paths {
            list.push_str(p);
            list.push('\n');
        }
        file(&info_dir, &format!("{info}.list"), list.as_bytes(), 0o644)?;
        for (name, f) in &pkg.control.files {
            if !INFO_MEMBERS.contains(&name.as_str()) {
                continue;
            }
            file(
                &info_dir,
                &format!("{info}.{name}"),
                &f.data,
                info_file_mode(f.mode),
            )?;
        }
        {
            // deb-triggers(5): `interest[-await|-noawait] NAME`; a NAME starting with '/' is a
            // file trigger recorded in triggers/File, any other an explicit trigger file.
            let plain = pkg.name.clone();
            for (kind, name) in trigger_directives(pkg) {
                let name = name.as_str();
                let who = match kind.as_str() {
                    "interest" | "interest-await" => plain.clone(),
                    "interest-noawait" => format!("{plain}/noawait"),
                    _ => continue,
                };
                if name.starts_with('/') {
                    if name.bytes().any(|c| c <= b' ' || c >= 0x7f) {
                        return Err(DatabaseError::Trigger {
                            package: pkg.name.clone(),
                            name: name.into(),
                        });
                    }
                    file_interests.push(format!("{name} {who}"));
                } else if valid_trigger_name(name) {
                    named_interests
                        .entry(name.to_string())
                        .or_default()
                        .push(who);
                } else {
                    return Err(DatabaseError::Trigger {
                        package: pkg.name.clone(),
                        name: name.chars().take(80).collect(),
                    });
                }
            }
        }
    }
    if !file_interests.is_empty() {
        let mut text = file_interests.join("\n");
        text.push('\n');
        file(&triggers_dir, "File", text.as_bytes(), 0o644)?;
    }
    for (name, who) in named_interests {
        let mut text = who.join("\n");
        text.push('\n');
        file(&triggers_dir, &name, text.as_bytes(), 0o644)?;
    }
    file(&triggers_dir, "Unincorp", b"", 0o644)?;
    Ok(())
}

/// The `(directive, name)` lines of a package's `triggers` control member (deb-triggers(5)),
/// comments and blank lines left out.
fn trigger_directives(pkg: &Unpacked) -> Vec<(String, String)> {
    let Some(triggers) = pkg.control.files.get("triggers") else {
        return Vec::new();
    };
    String::from_utf8_lossy(&triggers.data)
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

/// The triggers dpkg itself would have activated while unpacking these packages, which kiln
/// unpacks natively: each explicit trigger a package names in an `activate*` directive, and
/// each file trigger under which a package ships a path (dpkg's tarobject activates the
/// interests at a file's path and every parent directory of it, lib/dpkg/triglib.c,
/// `trig_file_activate_parents`). Only interests of *another* package count: dpkg drops an
/// activation of a package that is not yet installed (`trig_record_activation`, "not
/// interested then"), and a package is never installed while it is being unpacked itself.
///
/// Configure hands these to the target's dpkg (triggers/Unincorp) before its final
/// `dpkg --configure -a`, so every trigger runs once after all postinsts, as in a dpkg or
/// mmdebstrap install: libc-bin's `ldconfig` above all, whose cache must list every library of
/// the image however the postinsts were scheduled.
pub fn unpack_activations(packages: &[Unpacked]) -> Vec<String> {
    let directives: Vec<Vec<(String, String)>> = packages.iter().map(trigger_directives).collect();
    // Trigger name (or file trigger path) → the packages interested in it.
    let mut interests: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (pkg, lines) in packages.iter().zip(&directives) {
        for (kind, name) in lines {
            if kind.starts_with("interest") {
                interests.entry(name).or_default().push(&pkg.name);
            }
        }
    }
    let by_other = |name: &str, pkg: &Unpacked| {
        interests
            .get(name)
            .is_some_and(|who| who.iter().any(|q| *q != pkg.name))
    };
    let mut activated: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for (pkg, lines) in packages.iter().zip(&directives) {
        for (kind, name) in lines {
            if kind.starts_with("activate") && by_other(name, pkg) {
                activated.insert(name.clone());
            }
        }
    }
    for interest in interests.keys().filter(|name| name.starts_with('/')) {
        let under = |path: &String| {
            path.strip_prefix(interest)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if packages
            .iter()
            .any(|pkg| by_other(interest, pkg) && pkg.paths.iter().any(under))
        {
            activated.insert(interest.to_string());
        }
    }
    activated.into_iter().collect()
}

/// Why the dpkg database could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// A path inside the root was refused or failed.
    #[error("dpkg database: {0}")]
    InRoot(#[from] InRootError),
    /// A package name that cannot become a file name.
    #[error("{package}: package name or architecture {reason}")]
    Name {
        /// The name as given.
        package: String,
        /// Why.
        reason: String,
    },
    /// A trigger name dpkg would refuse.
    #[error("{package}: control member 'triggers': trigger name '{name}' is not valid (dpkg allows printable ASCII without spaces; kiln also refuses '/', '.', '..' and dpkg's own File, Unincorp, Lock)")]
    Trigger {
        /// Package.
        package: String,
        /// The trigger name (shortened).
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::deb::{ControlFile, DebControl};

    fn package(name: &str, triggers: &str, paths: &[&str]) -> Unpacked {
        let mut control = DebControl {
            control: crate::debian::control::Paragraph {
                fields: vec![("Package".into(), name.into())],
                line: 0,
            },
            files: Default::default(),
        };
        if !triggers.is_empty() {
            control.files.insert(
                "triggers".into(),
                ControlFile {
                    mode: 0o644,
                    data: triggers.as_bytes().to_vec(),
                },
            );
        }
        Unpacked {
            name: name.into(),
            arch: "arm64".into(),
            control,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            conffiles: Vec::new(),
        }
    }

    #[test]
    fn unpack_activates_what_another_package_is_interested_in() {
        let packages = [
            package(
                "libc-bin",
                "interest-noawait ldconfig\n",
                &["/.", "/sbin/ldconfig"],
            ),
            // A library activating ldconfig, as debhelper writes it, with a comment.
            package(
                "libblas3",
                "# dh\nactivate-noawait ldconfig\n",
                &["/usr/lib/libblas.so.3"],
            ),
            package(
                "man-db",
                "interest-noawait /usr/share/man\nactivate-noawait man-only\n",
                &["/usr/share/man/man1/man.1.gz"],
            ),
            // Ships under man-db's interest, but under a sibling that only shares a prefix too.
            package(
                "less",
                "",
                &["/usr/share/man/man1/less.1.gz", "/usr/share/manx"],
            ),
            // Activates a trigger nobody is interested in, and one only it is interested in.
            package(
                "lonely",
                "activate nobody\ninterest self\nactivate-await self\n",
                &[],
            ),
        ];
        assert_eq!(
            unpack_activations(&packages),
            vec!["/usr/share/man".to_string(), "ldconfig".to_string()]
        );
    }

    #[test]
    fn a_file_interest_is_matched_at_directory_boundaries_and_not_by_its_own_package() {
        let packages = [
            package("watcher", "interest /usr/lib/foo\n", &["/usr/lib/foo/own"]),
            package("near", "", &["/usr/lib/foobar/x", "/usr/lib"]),
        ];
        assert!(unpack_activations(&packages).is_empty());
        let packages = [
            package("watcher", "interest /usr/lib/foo\n", &[]),
            package("exact", "", &["/usr/lib/foo"]),
        ];
        assert_eq!(
            unpack_activations(&packages),
            vec!["/usr/lib/foo".to_string()]
        );
    }
}
