//! End-to-end tests of the configure stage: real Debian packages (bookworm amd64 minbase,
//! fetched once from deb.debian.org into a cache under the target directory) republished in a
//! fixture archive beside fixture packages made in the old (stretch-era) format: gz control,
//! bz2 data, a preinst that diverts a file, a postinst that registers an alternative. amd64 runs
//! natively here, so these exercise kiln's sandbox and configure logic at host speed; the arm64
//! and armhf runs under qemu are ci/compare-mmdebstrap's.

use crate::fixture;

use fixture::{build_archive, kiln, real_minbase_debs, stderr, ArchiveSpec, Pkg, Signer};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A daemon package as stretch-era tooling built them: gz control, bz2 data, a preinst that
/// diverts a file of another package, a postinst that installs an alternative and leaves state.
fn stretch_format_daemon() -> Pkg {
    Pkg::new("kiln-fixture-daemon", "1.0-1", "amd64")
        .field("Depends", "dpkg, hostname")
        .compression("gz", "bz2")
        .entry(fixture::Entry::Dir("./usr/", 0o755))
        .entry(fixture::Entry::Dir("./usr/bin/", 0o755))
        .file("./usr/bin/kiln-fixture", "#!/bin/sh\ntouch /var/lib/kiln-fixture.ran\n", 0o755)
        .entry(fixture::Entry::Dir("./etc/", 0o755))
        .entry(fixture::Entry::Dir("./etc/init.d/", 0o755))
        .file("./etc/init.d/kiln-fixture", "#!/bin/sh\ntouch /var/lib/kiln-fixture.started\n", 0o755)
        .control_file(
            "preinst",
            "#!/bin/sh\nset -e\nif [ \"$1\" = install ]; then\n  dpkg-divert --package kiln-fixture-daemon --add --rename --divert /bin/hostname.distrib /bin/hostname\nfi\n",
            0o755,
        )
        .control_file(
            "postinst",
            "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n  update-alternatives --install /usr/bin/kiln-tool kiln-tool /usr/bin/kiln-fixture 50\n  getent passwd root > /var/lib/kiln-fixture.state\n  invoke-rc.d kiln-fixture start\n  start-stop-daemon --start --quiet --exec /usr/bin/kiln-fixture\nfi\n",
            0o755,
        )
}

struct Setup {
    _work: tempfile::TempDir,
    _signer: Signer,
    recipe: PathBuf,
    cache: PathBuf,
}

fn setup(extra: Vec<Pkg>, wanted: &[&str], base_extra: &str) -> Setup {
    let work = tempfile::tempdir().unwrap();
    let signer = Signer::new("configure fixture <c@kiln.invalid>", "never", None);
    let archive = build_archive(
        &work.path().join("archive"),
        ArchiveSpec {
            index_compressions: &["xz"],
            real_debs: real_minbase_debs(),
            ..ArchiveSpec::new("bookworm", "amd64", extra, &signer)
        },
    );
    let recipe = work.path().join("r");
    archive.write_recipe(&recipe, wanted, "");
    let toml = std::fs::read_to_string(recipe.join("kiln.toml")).unwrap();
    std::fs::write(
        recipe.join("kiln.toml"),
        toml.replace("configure = false\n", base_extra),
    )
    .unwrap();
    let cache = work.path().join("cache");
    Setup {
        recipe,
        cache,
        _work: work,
        _signer: signer,
    }
}

fn unpack_image(layout: &Path, into: &Path) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let layer =
        std::fs::File::open(blob(manifest["layers"][0]["digest"].as_str().unwrap())).unwrap();
    let mut tar = tar::Archive::new(zstd::stream::read::Decoder::new(layer).unwrap());
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.unpack(into).unwrap();
}

#[test]
fn configures_real_packages_and_an_old_format_package_with_diversion_and_alternative() {
    let s = setup(
        vec![stretch_format_daemon()],
        &["kiln-fixture-daemon"],
        "debconf = [\n  \"tzdata tzdata/Areas select Europe\",\n  \"tzdata tzdata/Zones/Europe select Berlin\",\n]\n",
    );
    let o = kiln(&s.recipe, &s.cache, &["build", "-o", "out", "--timings"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = s.recipe.join("unpacked");
    unpack_image(&s.recipe.join("out/oci"), &root);

    // Every package configured, as the target's dpkg sees it.
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    let packages = status.matches("\nStatus: ").count();
    assert!(packages > 90, "{packages}");
    assert_eq!(
        status.matches("Status: install ok installed").count(),
        packages
    );
    let audit = Command::new("chroot")
        .arg(&root)
        .args(["dpkg", "--audit"])
        .output()
        .unwrap();
    assert!(
        audit.status.success() && audit.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );

    // The preinst's diversion: registered and the file renamed.
    let diversions = std::fs::read_to_string(root.join("var/lib/dpkg/diversions")).unwrap();
    assert!(
        diversions.contains("/bin/hostname\n/bin/hostname.distrib\nkiln-fixture-daemon\n"),
        "{diversions}"
    );
    assert!(root.join("usr/bin/hostname.distrib").is_file());
    assert!(!root.join("usr/bin/hostname").exists());
    // The postinst's alternative.
    assert_eq!(
        std::fs::read_link(root.join("usr/bin/kiln-tool")).unwrap(),
        Path::new("/etc/alternatives/kiln-tool")
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/alternatives/kiln-tool")).unwrap(),
        Path::new("/usr/bin/kiln-fixture")
    );
    assert!(root.join("var/lib/dpkg/alternatives/kiln-tool").is_file());
    // It ran after base-passwd made /etc/passwd, and services were kept from starting.
    let state = std::fs::read_to_string(root.join("var/lib/kiln-fixture.state")).unwrap();
    assert!(
        state.starts_with("root:") && state.contains(":0:0:root:/root:"),
        "{state}"
    );
    assert!(
        !root.join("var/lib/kiln-fixture.started").exists(),
        "policy-rc.d kept the service from starting"
    );
    assert!(
        !root.join("var/lib/kiln-fixture.ran").exists(),
        "start-stop-daemon started nothing"
    );
    // Preseeded debconf answers reached tzdata's postinst.
    let localtime = std::fs::read_link(root.join("etc/localtime")).unwrap();
    assert!(
        localtime.ends_with("Europe/Berlin"),
        "{}",
        localtime.display()
    );
    // Clean-up: nothing of the build left behind.
    assert!(!root.join("usr/sbin/policy-rc.d").exists());
    assert!(!root.join("var/log/dpkg.log").exists());
    assert!(!root.join("var/lib/dpkg/status-old").exists());
    assert!(!root.join("var/lib/dpkg/tmp.ci").exists());
    assert!(!root.join("etc/resolv.conf").exists());
    assert!(!root.join("etc/hostname").exists());
    let ssd = std::fs::read(root.join("usr/sbin/start-stop-daemon")).unwrap();
    assert!(ssd.starts_with(b"\x7fELF"), "start-stop-daemon restored");
    for dir in ["proc", "sys", "dev", "tmp", "run"] {
        assert_eq!(
            std::fs::read_dir(root.join(dir)).unwrap().count(),
            0,
            "/{dir} is empty in the image"
        );
    }
    let timings = stderr(&o);
    assert!(timings.contains("dpkg --configure -a"), "{timings}");
    assert!(timings.contains("postinst scripts on"), "{timings}");

    // Scripts run several at once; one at a time must give the very same image.
    let manifest = |o: &std::process::Output| {
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        out.split_whitespace()
            .skip_while(|w| *w != "manifest")
            .nth(1)
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no manifest digest in {out}"))
    };
    std::fs::remove_dir_all(s.cache.join("layers")).unwrap();
    let serial = kiln(
        &s.recipe,
        &s.cache,
        &["build", "-o", "out-serial", "-j", "1"],
    );
    assert!(serial.status.success(), "{}", stderr(&serial));
    assert!(
        !String::from_utf8_lossy(&serial.stdout).contains("reused"),
        "the serial build configured again"
    );
    assert_eq!(manifest(&serial), manifest(&o));
}

#[test]
fn a_failing_maintainer_script_names_package_script_and_output() {
    let broken = Pkg::new("kiln-fixture-broken", "2.0", "amd64").control_file(
        "postinst",
        "#!/bin/sh\necho 'probing the robot bus'\necho 'cannot reach the robot bus' >&2\nexit 3\n",
        0o755,
    );
    let s = setup(vec![broken], &["kiln-fixture-broken"], "");
    let o = kiln(&s.recipe, &s.cache, &["build", "-o", "out"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    for needle in [
        "kiln-fixture-broken",
        "postinst",
        "cannot reach the robot bus",
        "exit status 3",
    ] {
        assert!(err.contains(needle), "lacks '{needle}': {err}");
    }
    assert!(
        !s.recipe.join("out").exists(),
        "a failed first build leaves no output directory"
    );

    let bad_preinst = Pkg::new("kiln-fixture-bad-preinst", "1", "amd64").control_file(
        "preinst",
        "#!/bin/sh\necho 'refusing to install on this board' >&2\nexit 1\n",
        0o755,
    );
    let s = setup(vec![bad_preinst], &["kiln-fixture-bad-preinst"], "");
    let o = kiln(&s.recipe, &s.cache, &["build", "-o", "out"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("kiln-fixture-bad-preinst: preinst failed")
            && err.contains("refusing to install"),
        "{err}"
    );
}

#[test]
fn a_killed_build_leaves_nothing_mounted_and_the_next_build_works() {
    let s = setup(vec![], &[], "");
    // Lock and fetch first, so the build below spends its time configuring.
    let o = kiln(&s.recipe, &s.cache, &["lock"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = s.recipe.join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--locked", "-o", "out"])
        .current_dir(&s.recipe)
        .env("KILN_CACHE_DIR", &s.cache)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the staging root exists (the tmpfs is mounted then), then SIGKILL.
    let started = std::time::Instant::now();
    let staging = loop {
        let found = std::fs::read_dir(&out).ok().and_then(|d| {
            d.flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with(".kiln-rootfs-"))
        });
        if let Some(e) = found {
            break e.path();
        }
        assert!(
            started.elapsed().as_secs() < 120,
            "the build never staged a root"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&staging.display().to_string()),
        "the staging tmpfs outlived kiln:\n{mounts}"
    );
    std::fs::remove_dir_all(&out).expect("the output directory can be removed");
    let o = kiln(&s.recipe, &s.cache, &["build", "--locked", "-o", "out"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
