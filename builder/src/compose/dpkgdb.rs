//! Writing the dpkg database (`var/lib/dpkg`) for natively unpacked packages, so that the
//! target's own dpkg recognises every package as `install ok unpacked` and can configure it.
//!
//! Layout and field order follow dpkg 1.21's own writer (lib/dpkg/dump.c, fieldinfos order in
//! lib/dpkg/parse.c): known fields in dpkg's order, unknown fields after them in control order.

use super::Unpacked;
use crate::control::Paragraph;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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

fn write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    fs::write(path, data)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Writes status, info files and trigger interests for the unpacked packages.
pub fn write_database(root: &Path, arch: &str, packages: &[Unpacked]) -> io::Result<()> {
    let db = root.join("var/lib/dpkg");
    for sub in ["info", "updates", "triggers", "alternatives", "parts"] {
        fs::create_dir_all(db.join(sub))?;
    }
    // dpkg sorts the status file by package name (and architecture).
    let mut sorted: Vec<&Unpacked> = packages.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.arch.cmp(&b.arch)));
    let mut status = String::new();
    for pkg in &sorted {
        status.push_str(&status_paragraph(pkg, "unpacked").to_string());
        status.push('\n');
    }
    write(&db.join("status"), status.as_bytes(), 0o644)?;
    // What `dpkg --add-architecture`-aware tools read; mmdebstrap writes it the same way.
    write(&db.join("arch"), format!("{arch}\n").as_bytes(), 0o644)?;
    write(&db.join("info/format"), b"1\n", 0o644)?;

    let mut file_interests: Vec<String> = Vec::new();
    let mut named_interests: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pkg in &sorted {
        let info = info_name(&pkg.control.control);
        let mut list = String::new();
        for p in &pkg.paths {
            list.push_str(p);
            list.push('\n');
        }
        write(
            &db.join(format!("info/{info}.list")),
            list.as_bytes(),
            0o644,
        )?;
        for (name, file) in &pkg.control.files {
            let mode = if file.mode & 0o111 != 0 { 0o755 } else { 0o644 };
            write(&db.join(format!("info/{info}.{name}")), &file.data, mode)?;
        }
        if let Some(triggers) = pkg.control.files.get("triggers") {
            // deb-triggers(5): `interest[-await|-noawait] NAME`; a NAME starting with '/' is a
            // file trigger recorded in triggers/File, any other an explicit trigger file.
            let plain = pkg.name.clone();
            for line in String::from_utf8_lossy(&triggers.data).lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                let mut words = line.split_whitespace();
                let (Some(kind), Some(name)) = (words.next(), words.next()) else {
                    continue;
                };
                let who = match kind {
                    "interest" | "interest-await" => plain.clone(),
                    "interest-noawait" => format!("{plain}/noawait"),
                    _ => continue,
                };
                if name.starts_with('/') {
                    file_interests.push(format!("{name} {who}"));
                } else {
                    named_interests
                        .entry(name.to_string())
                        .or_default()
                        .push(who);
                }
            }
        }
    }
    if !file_interests.is_empty() {
        let mut text = file_interests.join("\n");
        text.push('\n');
        write(&db.join("triggers/File"), text.as_bytes(), 0o644)?;
    }
    for (name, who) in named_interests {
        let mut text = who.join("\n");
        text.push('\n');
        write(&db.join("triggers").join(name), text.as_bytes(), 0o644)?;
    }
    write(&db.join("triggers/Unincorp"), b"", 0o644)?;
    Ok(())
}
