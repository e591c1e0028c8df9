//! `kiln diff` between two real builds of the fixture archive: the second has libc6 at the next
//! point release, hello upgraded and a new package with a DEP-5 licence. The report lists the
//! point release first, the upgrade, the addition, the new licence and the files of the
//! differing layer, in the table and in JSON; the same image twice is identical; a side that is no image is refused in one line.

use crate::fixture::{base_packages, build_archive, kiln, text, ArchiveSpec, Pkg, Signer};
use crate::sign::built;
use std::path::Path;

fn diff(old: &Path, new: &Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("diff")
        .arg(old)
        .arg(new)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_diff_lists_point_releases_first_then_upgrades_additions_licences_and_layers() {
    let old = &built().1;
    let work = tempfile::tempdir().unwrap();
    let signer = Signer::new("kiln fixture archive <archive@kiln.invalid>", "never", None);
    let mut packages: Vec<Pkg> = base_packages("arm64")
        .into_iter()
        .map(|mut p| {
            match p.name.as_str() {
                "libc6" => p.version = "2.36-9+deb12u5".into(),
                "hello" => p.version = "2.12-1".into(),
                _ => {}
            }
            p
        })
        .collect();
    packages.push(
        Pkg::new("extra-tool", "1.0-1", "arm64").file(
            "./usr/share/doc/extra-tool/copyright",
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: 2026 Someone\nLicense: MIT\n",
            0o644,
        ),
    );
    let archive = build_archive(
        &work.path().join("archive"),
        ArchiveSpec::new("bookworm", "arm64", packages, &signer),
    );
    let recipe = work.path().join("recipe");
    archive.write_recipe(&recipe, &["hello", "extra-tool"], "");
    let o = kiln(&recipe, &work.path().join("cache"), &["build", "-o", "out"]);
    assert!(o.status.success(), "{}", text(&o));
    let new = recipe.join("out");

    let o = diff(old, &new, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    let summary = t.lines().find(|l| l.starts_with("summary: ")).unwrap_or("");
    assert!(
        summary.contains("3 package changes (1 point-release, 1 upgraded, 1 added)")
            && summary.contains("licences +MIT")
            && summary.contains("layers: 1 of 1 new, 1 removed"),
        "{t}"
    );
    let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("  ")).collect();
    assert!(
        lines[0].contains("point-release")
            && lines[0].contains("libc6 (arm64)")
            && lines[0].contains("2.36-9+deb12u4 -> 2.36-9+deb12u5"),
        "{t}"
    );
    assert!(
        lines[1].contains("upgraded") && lines[1].contains("2.10-3 -> 2.12-1"),
        "{t}"
    );
    assert!(
        lines[2].contains("added") && lines[2].contains("extra-tool"),
        "{t}"
    );

    // Files, from the two base layers only (they differ): the new package's, and dpkg's status.
    assert!(
        summary.contains("files: 5 added, 0 removed, 1 changed"),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.contains("added") && l.contains("/usr/share/doc/extra-tool/copyright")),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.contains("content,size") && l.contains("/var/lib/dpkg/status")),
        "{t}"
    );
    // Findings: both builds recorded theirs (OUT/check.json); the bare layouts carry no
    // record, so kiln diff checks them itself, every layer stacked, and says it had no waivers.
    assert!(
        summary.contains("findings: 0 new, 0 resolved, 0 waived, 0 unwaived")
            && !summary.contains("no waivers recorded"),
        "{t}"
    );
    assert!(new.join("check.json").is_file());
    let o = diff(&old.join("oci"), &new.join("oci"), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let bare = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        bare.lines()
            .any(|l| l.starts_with("summary: ") && l.contains("(no waivers recorded for ")),
        "{bare}"
    );
    let o = diff(old, &new, &["--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["packages"]["changes"][0]["kind"], "point-release");
    assert_eq!(j["packages"]["licenses_added"], serde_json::json!(["MIT"]));
    let new_layer = j["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["status"] == "new")
        .unwrap();
    let download = j["download_bytes"].as_u64().unwrap();
    assert!(
        download > new_layer["layer"]["size"].as_u64().unwrap(),
        "{j}"
    );

    // The HTML page, as a reviewer sees it: headless Chromium from Debian runs its script
    // (no console message), the table lists the known changes, and a screenshot is kept.
    let page = work.path().join("diff.html");
    let o = diff(
        old,
        &new,
        &["--format", "html", "-o", page.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "external resource"
    );
    let chromium = |extra: &[&str]| {
        let profile = tempfile::tempdir().unwrap();
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium (ci/setup installs it)")
    };
    let o = chromium(&["--dump-dom"]);
    assert!(o.status.success(), "{}", text(&o));
    let dom = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    assert!(
        dom.contains("data-ready=\"yes\""),
        "the page's script did not run: {dom}"
    );
    let row = dom.split("<tr").find(|r| r.contains("libc6")).unwrap_or("");
    assert!(
        row.contains("point-release") && row.contains("2.36-9+deb12u5"),
        "{row}"
    );
    assert!(dom.contains("extra-tool") && dom.contains("<rect"), "{dom}");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("kiln-diff.png");
    let _ = std::fs::remove_file(&shot);
    let o = chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,1600",
        "--hide-scrollbars",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // The same image twice; a side that is not an image.
    let o = diff(old, old, &[]);
    assert!(
        o.status.success() && text(&o).contains("identical images"),
        "{}",
        text(&o)
    );
    let o = diff(old, &work.path().join("nothing"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(text(&o).lines().count(), 1, "{}", text(&o));
}
