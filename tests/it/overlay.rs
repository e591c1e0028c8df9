//! The overlay stage end to end on a real configured base (bookworm amd64 minbase from
//! deb.debian.org, republished in a fixture archive; amd64 runs natively here, the ARM runs
//! under qemu are ci/check-example's): a `files` overlay with a service and a smoke command
//! becomes a layer of its own above the base and the envrun layer; inside the image, envrun
//! runs the daemon; a failing smoke command fails the build and keeps the previous output;
//! changing the overlay rebuilds only its layer.

use crate::fixture;

use fixture::{
    build_archive, real_minbase_debs, real_python2_debs, real_python_debs, stderr, ArchiveSpec,
    Signer,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// envrun for the build host (amd64), built into a target directory of the test's own so this
/// never waits for the lock of the build that runs the tests; static (glibc's crt-static, as
/// for the armv7 boards) so it runs on an image whose glibc is older than the host's.
fn host_envrun() -> PathBuf {
    static ENVRUN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ENVRUN
        .get_or_init(|| {
            let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("envrun-host");
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
            let o = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "--offline",
                    "-p",
                    "envrun",
                    "--target",
                    "x86_64-unknown-linux-gnu",
                    "--manifest-path",
                ])
                .arg(&manifest)
                .arg("--target-dir")
                .arg(&target)
                .env(
                    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                    "-C target-feature=+crt-static",
                )
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            target.join("x86_64-unknown-linux-gnu/debug/envrun")
        })
        .clone()
}

const HEARTBEAT: &str = "#!/bin/sh\ncase \"$1\" in\n  --once) echo \"heartbeat from $0\"; exit 0 ;;\n  --interval) while :; do echo beat; sleep \"$2\"; done ;;\n  *) echo \"heartbeat: unknown option $1\" >&2; exit 2 ;;\nesac\n";

struct World {
    _work: tempfile::TempDir,
    _signer: Signer,
    recipe: PathBuf,
    cache: PathBuf,
}

fn world() -> World {
    world_with(&[])
}

/// A recipe on a real amd64 base with `packages` besides minbase, and the heartbeat overlay.
fn world_with(packages: &[&str]) -> World {
    let debs = if packages.is_empty() {
        real_minbase_debs()
    } else {
        real_python_debs()
    };
    world_on("bookworm", debs, packages)
}

/// A recipe on a fixture archive named `suite` holding the real `debs`, with `packages` besides
/// minbase, and the heartbeat overlay.
fn world_on(suite: &str, debs: Vec<PathBuf>, packages: &[&str]) -> World {
    let work = tempfile::tempdir().unwrap();
    let signer = Signer::new("overlay fixture <o@kiln.invalid>", "never", None);
    let archive = build_archive(
        &work.path().join("archive"),
        ArchiveSpec {
            index_compressions: &["xz"],
            real_debs: debs,
            ..ArchiveSpec::new(suite, "amd64", Vec::new(), &signer)
        },
    );
    let recipe = work.path().join("r");
    archive.write_recipe(&recipe, packages, "");
    let toml = std::fs::read_to_string(recipe.join("kiln.toml")).unwrap();
    std::fs::write(
        recipe.join("kiln.toml"),
        format!(
            "overlays = [\"overlays/heartbeat\"]\n{}",
            toml.replace("configure = false\n", "")
        ),
    )
    .unwrap();
    let o = recipe.join("overlays/heartbeat");
    std::fs::create_dir_all(&o).unwrap();
    std::fs::write(o.join("heartbeat"), HEARTBEAT).unwrap();
    std::fs::write(o.join("heartbeat.conf"), "interval=5\n").unwrap();
    write_overlay(&recipe, "heartbeat --once");
    World {
        cache: work.path().join("cache"),
        recipe,
        _work: work,
        _signer: signer,
    }
}

fn write_overlay(recipe: &Path, smoke: &str) {
    std::fs::write(
        recipe.join("overlays/heartbeat/overlay.toml"),
        format!(
            "kind = \"files\"\nprefixes = [\"/opt/heartbeat\"]\nsmoke = \"{smoke}\"\nsmoke-timeout = 10\n\n[[files]]\nsource = \"heartbeat\"\ndest = \"/opt/heartbeat/bin/heartbeat\"\nmode = \"0755\"\n\n[[files]]\nsource = \"heartbeat.conf\"\ndest = \"/etc/heartbeat.conf\"\nmode = \"0640\"\nowner = \"0:4\"\n\n[service]\nexec = \"heartbeat --interval 5\"\nuser = \"nobody\"\n"
        ),
    )
    .unwrap();
}

fn build(w: &World) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.args(["build", "-o", "out"])
        .current_dir(&w.recipe)
        .env("KILN_CACHE_DIR", &w.cache)
        .env("KILN_ENVRUN", host_envrun())
        .env_remove("SOURCE_DATE_EPOCH");
    c.output().unwrap()
}

/// The image's layer digests, in order.
fn layers(out: &Path) -> Vec<String> {
    let layout = out.join("oci");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(&m[7..])).unwrap())
            .unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Every layer applied in order into `into` (the export stage's tar, unpacked by GNU tar).
fn unpack(out: &Path, into: &Path) {
    let tar = into.with_extension("tar");
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("export")
        .arg(out)
        .args(["--format", "tar", "-o"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::create_dir_all(into).unwrap();
    let o = Command::new("tar")
        .args(["-x", "--numeric-owner", "-p", "-f"])
        .arg(&tar)
        .arg("-C")
        .arg(into)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_files_overlay_is_a_layer_of_its_own_and_its_daemon_runs_through_envrun() {
    if !is_root() {
        eprintln!("skipped: overlays need root (overlayfs, chroot)");
        return;
    }
    let w = world();
    let o = build(&w);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains("layer envrun: built") && text.contains("layer heartbeat: built"),
        "{text}"
    );
    let out = w.recipe.join("out");
    let first = layers(&out);
    assert_eq!(first.len(), 3, "base, envrun, heartbeat");

    // Inside the image: the unit is enabled, envrun finds and runs the daemon.
    let root = w.recipe.join("rootfs");
    unpack(&out, &root);
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/heartbeat.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/envrun run heartbeat heartbeat --interval 5"),
        "{unit}"
    );
    assert!(unit.contains("User=nobody") && unit.contains("WantedBy=multi-user.target"));
    assert_eq!(
        std::fs::read_link(
            root.join("etc/systemd/system/multi-user.target.wants/heartbeat.service")
        )
        .unwrap(),
        Path::new("/etc/systemd/system/heartbeat.service")
    );
    let run = Command::new("/usr/sbin/chroot")
        .arg(&root)
        .args(["/usr/bin/envrun", "run", "heartbeat", "heartbeat", "--once"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "heartbeat from /opt/heartbeat/bin/heartbeat\n"
    );
    let list = Command::new("/usr/sbin/chroot")
        .arg(&root)
        .args(["/usr/bin/envrun", "list"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "heartbeat\t/opt/heartbeat\n"
    );
    let meta = std::fs::metadata(root.join("etc/heartbeat.conf")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o640, 4));

    // A smoke command that fails: the build fails, naming the overlay and the output, and the
    // previous output stays.
    write_overlay(&w.recipe, "heartbeat --no-such-flag");
    let o = build(&w);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("overlay heartbeat: smoke command `heartbeat --no-such-flag` failed (exit status 2): heartbeat: unknown option --no-such-flag"),
        "{}",
        stderr(&o)
    );
    assert_eq!(layers(&out), first);
    // A smoke command that never returns (the daemon itself): timed out.
    write_overlay(&w.recipe, "heartbeat --interval 1");
    let o = build(&w);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("timed out after 10 s"),
        "{}",
        stderr(&o)
    );
    assert_eq!(layers(&out), first);

    // Changing the overlay rebuilds its layer only: base and envrun stay, byte for byte.
    write_overlay(&w.recipe, "heartbeat --once");
    std::fs::write(
        w.recipe.join("overlays/heartbeat/heartbeat.conf"),
        "interval=7\n",
    )
    .unwrap();
    let o = build(&w);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("base layer reused"), "{text}");
    assert!(
        text.contains("layer envrun: reused") && text.contains("layer heartbeat: built"),
        "{text}"
    );
    let second = layers(&out);
    assert_eq!(second[..2], first[..2]);
    assert_ne!(second[2], first[2]);
}

/// A C++-or-Go-style daemon shipped as its own .deb; `evil` makes its postinst also drop a
/// module into the system's Python (the defect the capture must catch).
fn pinger_deb(evil: bool) -> Vec<u8> {
    let mut postinst = String::from("#!/bin/sh\nset -e\nmkdir -p /var/lib/pinger\n");
    if evil {
        postinst.push_str(
            "mkdir -p /usr/lib/python3/dist-packages\necho 'import os' > /usr/lib/python3/dist-packages/evil.py\n",
        );
    }
    fixture::Pkg::new("pinger", "1.0", "amd64")
        .field("Priority", "optional")
        .entry(fixture::Entry::Dir("./opt/", 0o755))
        .entry(fixture::Entry::Dir("./opt/pinger/", 0o755))
        .entry(fixture::Entry::Dir("./opt/pinger/bin/", 0o755))
        .file(
            "./opt/pinger/bin/pinger",
            "#!/bin/sh\n[ -d /var/lib/pinger ] && echo pong\n",
            0o755,
        )
        .control_file("postinst", &postinst, 0o755)
        .build()
}

#[test]
fn a_debs_overlay_installs_with_the_targets_dpkg_and_may_not_write_elsewhere() {
    if !is_root() {
        eprintln!("skipped: overlays need root (overlayfs, chroot)");
        return;
    }
    let w = world();
    let dir = w.recipe.join("overlays/pinger");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("overlay.toml"),
        "kind = \"debs\"\ndebs = [\"pinger_1.0_amd64.deb\"]\nprefixes = [\"/opt/pinger\", \"/var/lib/pinger\"]\nsmoke = \"pinger\"\n\n[service]\nexec = \"pinger\"\n",
    )
    .unwrap();
    let toml = std::fs::read_to_string(w.recipe.join("kiln.toml")).unwrap();
    std::fs::write(
        w.recipe.join("kiln.toml"),
        toml.replace("overlays/heartbeat", "overlays/pinger"),
    )
    .unwrap();

    // The planted defect: the package's postinst writes to /usr/lib/python3/dist-packages.
    std::fs::write(dir.join("pinger_1.0_amd64.deb"), pinger_deb(true)).unwrap();
    let o = build(&w);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("overlay pinger: changes outside its prefixes")
            && stderr(&o).contains("/usr/lib/python3/dist-packages/evil.py"),
        "{}",
        stderr(&o)
    );
    assert!(!w.recipe.join("out/oci").exists(), "nothing is written");

    // The honest package: installed by dpkg, recorded in its status, smoke-tested.
    std::fs::write(dir.join("pinger_1.0_amd64.deb"), pinger_deb(false)).unwrap();
    let o = build(&w);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = w.recipe.join("rootfs");
    unpack(&w.recipe.join("out"), &root);
    let status = Command::new("/usr/sbin/chroot")
        .arg(&root)
        .args([
            "dpkg-query",
            "-W",
            "-f",
            "${Package} ${Version} ${db:Status-Abbrev}",
            "pinger",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&status.stdout).trim(),
        "pinger 1.0 ii"
    );
    assert!(root.join("var/lib/pinger").is_dir());
    assert!(!root.join("var/cache/kiln-overlay").exists());
    assert!(!root.join("usr/sbin/policy-rc.d").exists());
    let run = Command::new("/usr/sbin/chroot")
        .arg(&root)
        .args(["/usr/bin/envrun", "run", "pinger", "pinger"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "pong\n");

    // The SBOM lists the overlay's package beside the base's.
    let sbom = sbom(&w.recipe.join("out"));
    let names: Vec<&str> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"pinger") && names.contains(&"dpkg"),
        "{names:?}"
    );
}

/// The SPDX document attached to the image in `out`.
fn sbom(out: &Path) -> serde_json::Value {
    let layout = out.join("oci");
    let blob = |d: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap())
            .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let sbom_manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["artifactType"] == "application/spdx+json")
        .expect("an SBOM referrer");
    blob(
        blob(sbom_manifest["digest"].as_str().unwrap())["layers"][0]["digest"]
            .as_str()
            .unwrap(),
    )
}

/// A pure-Python wheel `greet-1.0` with a console script; `variant` changes its bytes.
fn greet_wheel(path: &Path, variant: &str, extra: &[(&str, &[u8], u32)]) {
    greet_wheel_tagged(path, &["py3-none-any"], variant, extra);
}

/// The greet wheel with the given WHEEL tags (the file name must agree).
fn greet_wheel_tagged(path: &Path, tags: &[&str], variant: &str, extra: &[(&str, &[u8], u32)]) {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let module = format!(
        "import sys\n\ndef main():\n    print('hello from greet in ' + sys.prefix{variant})\n    return 0\n"
    );
    let wheel_meta = format!(
        "Wheel-Version: 1.0\nGenerator: kiln-tests\nRoot-Is-Purelib: true\n{}",
        tags.iter()
            .map(|t| format!("Tag: {t}\n"))
            .collect::<String>()
    );
    let mut entries: Vec<(&str, &[u8], u32)> = vec![
        ("greet/__init__.py", module.as_bytes(), 0o644),
        ("greet-1.0.dist-info/WHEEL", wheel_meta.as_bytes(), 0o644),
        (
            "greet-1.0.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: greet\nVersion: 1.0\n",
            0o644,
        ),
        (
            "greet-1.0.dist-info/entry_points.txt",
            b"[console_scripts]\ngreet = greet:main\n",
            0o644,
        ),
    ];
    entries.extend_from_slice(extra);
    for (name, content, mode) in entries {
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(mode & 0o7777);
        if mode & 0o170000 == 0o120000 {
            z.add_symlink(name, std::str::from_utf8(content).unwrap(), opts)
                .unwrap();
        } else {
            z.start_file(name, opts).unwrap();
            z.write_all(content).unwrap();
        }
    }
    z.finish().unwrap();
}

/// `hello_sdist-1.0.tar.gz`: a source distribution whose in-tree build backend (PEP 517
/// `backend-path`) writes a pure-Python wheel with Python's own zipfile.
fn hello_sdist(path: &Path) {
    let backend = r#"import os, zipfile

FILES = {
    "hello_sdist/__init__.py": "WHO = 'built from its sdist'\n",
    "hello_sdist-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: hello-sdist\nVersion: 1.0\n",
    "hello_sdist-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: in-tree\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "hello_sdist-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for path in sorted(FILES):
            z.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), FILES[path])
        z.writestr(zipfile.ZipInfo("hello_sdist-1.0.dist-info/RECORD", (1980, 1, 1, 0, 0, 0)), "")
    return name
"#;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    ));
    for (name, content) in [
        (
            "hello_sdist-1.0/pyproject.toml",
            "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n",
        ),
        ("hello_sdist-1.0/backend.py", backend),
        (
            "hello_sdist-1.0/PKG-INFO",
            "Metadata-Version: 2.1\nName: hello-sdist\nVersion: 1.0\n",
        ),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        tar.append_data(&mut h, name, content.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

fn sha256_file(path: &Path) -> String {
    kiln::digest::sha256_hex(&std::fs::read(path).unwrap())
}

#[test]
fn a_python_venv_overlay_is_isolated_reproducible_and_refuses_planted_defects() {
    if !is_root() {
        eprintln!("skipped: overlays need root (overlayfs, chroot)");
        return;
    }
    let w = world_with(&["python3"]);
    let dir = w.recipe.join("overlays/greeter");
    std::fs::create_dir_all(dir.join("wheels")).unwrap();
    let wheel = dir.join("wheels/greet-1.0-py3-none-any.whl");
    greet_wheel(&wheel, "", &[]);
    let lock =
        |hash: &str| format!("# the greeter's env\ngreet==1.0 \\\n    --hash=sha256:{hash}\n");
    std::fs::write(dir.join("requirements.lock"), lock(&sha256_file(&wheel))).unwrap();
    let overlay = |smoke: &str| {
        format!("kind = \"python-venv\"\nrequirements = \"requirements.lock\"\nwheelhouse = \"wheels\"\nsmoke = \"{smoke}\"\n\n[service]\nexec = \"greet\"\n")
    };
    std::fs::write(dir.join("overlay.toml"), overlay("greet")).unwrap();
    let toml = std::fs::read_to_string(w.recipe.join("kiln.toml")).unwrap();
    std::fs::write(
        w.recipe.join("kiln.toml"),
        toml.replace("overlays/heartbeat", "overlays/greeter"),
    )
    .unwrap();

    // A second requirement only as an sdist, with an in-tree PEP 517 backend: built under
    // the image's interpreter into the wheel cache.
    let sdist = dir.join("wheels/hello_sdist-1.0.tar.gz");
    hello_sdist(&sdist);
    let full_lock = |greet: &str| {
        format!(
            "{}hello-sdist==1.0 --hash=sha256:{}\n",
            lock(greet),
            sha256_file(&sdist)
        )
    };
    std::fs::write(
        dir.join("requirements.lock"),
        full_lock(&sha256_file(&wheel)),
    )
    .unwrap();

    let o = build(&w);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = w.recipe.join("out");
    let first = layers(&out);
    assert_eq!(first.len(), 3, "base, envrun, greeter");
    let built: Vec<PathBuf> = std::fs::read_dir(w.cache.join("built-wheels"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(built.len(), 1, "one sdist, one cache entry: {built:?}");
    let wheel_built = built[0].join("hello_sdist-1.0-py3-none-any.whl");
    let built_at = std::fs::metadata(&wheel_built).unwrap().modified().unwrap();

    // Inside: only the stdlib and the env on sys.path (through envrun, with a clean
    // environment), the console script starts the env's interpreter, pycs are hash-based.
    let root = w.recipe.join("rootfs");
    unpack(&out, &root);
    let env = "/var/lib/python3/envs/greeter";
    let run = |args: &[&str]| -> String {
        let o = Command::new("/usr/sbin/chroot")
            .arg(&root)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PYTHONPATH", "/usr/lib/python3/dist-packages")
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let sys_path = run(&[
        "/usr/bin/envrun",
        "run",
        "greeter",
        "python3",
        "-c",
        "import sys; print(sys.path)",
    ]);
    assert_eq!(
        sys_path,
        format!("['', '/usr/lib/python311.zip', '/usr/lib/python3.11', '/usr/lib/python3.11/lib-dynload', '{env}/lib/python3.11/site-packages']")
    );
    assert_eq!(
        run(&["/usr/bin/envrun", "run", "greeter", "greet"]),
        format!("hello from greet in {env}")
    );
    let launcher = std::fs::read_to_string(root.join(&env[1..]).join("bin/greet")).unwrap();
    assert!(
        launcher.starts_with(&format!("#!{env}/bin/python3.11\n")),
        "{launcher}"
    );
    let cfg = std::fs::read_to_string(root.join(&env[1..]).join("pyvenv.cfg")).unwrap();
    assert!(
        cfg.contains("include-system-site-packages = false"),
        "{cfg}"
    );
    assert_eq!(
        std::fs::read_link(root.join(&env[1..]).join("bin/python3.11")).unwrap(),
        Path::new("/usr/bin/python3.11")
    );
    let pyc = std::fs::read(
        root.join(&env[1..])
            .join("lib/python3.11/site-packages/greet/__pycache__/__init__.cpython-311.pyc"),
    )
    .unwrap();
    assert_eq!(pyc[4..8], [3, 0, 0, 0], "a checked-hash pyc (PEP 552)");
    let record = std::fs::read_to_string(
        root.join(&env[1..])
            .join("lib/python3.11/site-packages/greet-1.0.dist-info/RECORD"),
    )
    .unwrap();
    assert!(record.contains("../../../bin/greet,sha256="), "{record}");
    assert_eq!(
        run(&[
            "/usr/bin/envrun",
            "run",
            "greeter",
            "python3",
            "-c",
            "import hello_sdist; print(hello_sdist.WHO)",
        ]),
        "built from its sdist"
    );
    assert!(!root.join("var/cache/kiln-overlay").exists());
    let sbom = sbom(&out);
    let purls: Vec<&str> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["externalRefs"][0]["referenceLocator"].as_str())
        .collect();
    assert!(purls.contains(&"pkg:pypi/greet@1.0"), "{purls:?}");

    // The same lock, built again from scratch (no layer records): the same layer.
    // The sdist is not built again: its wheel comes from the cache.
    std::fs::remove_dir_all(w.cache.join("layers")).unwrap();
    let o = build(&w);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(layers(&out), first);
    assert_eq!(
        std::fs::metadata(&wheel_built).unwrap().modified().unwrap(),
        built_at
    );
    // Built again from nothing (no wheel cache either): still the same layer.
    std::fs::remove_dir_all(w.cache.join("layers")).unwrap();
    std::fs::remove_dir_all(w.cache.join("built-wheels")).unwrap();
    let o = build(&w);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(layers(&out), first);

    // Planted defects: each fails with its reason, and the previous output stays.
    let refused = |what: &str, expect: &str| {
        let o = build(&w);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{what}: {}", stderr(&o));
        assert_eq!(layers(&out), first, "{what}: the previous output stays");
    };
    // An unhashed requirement.
    std::fs::write(
        dir.join("requirements.lock"),
        "# the greeter's env\ngreet==1.0\n",
    )
    .unwrap();
    refused("unhashed", "requirements.lock:2: ");
    // A wheel whose hash differs from the lock's.
    let good = sha256_file(&wheel);
    std::fs::write(dir.join("requirements.lock"), full_lock(&good)).unwrap();
    greet_wheel(&wheel, " + '!'", &[]);
    refused(
        "hash differs",
        &format!(
            "sha256 {}, but the lock (greeter/requirements.lock:2) allows only {good}",
            sha256_file(&wheel)
        ),
    );
    // A directory symlink inside the env (a wheel that would plant one).
    greet_wheel(&wheel, "", &[("greet/lib64", b"/usr/lib", 0o120777)]);
    std::fs::write(
        dir.join("requirements.lock"),
        full_lock(&sha256_file(&wheel)),
    )
    .unwrap();
    refused("directory symlink", "entry 'greet/lib64' is a symlink");
    // A smoke command that fails: it installs but does not start.
    greet_wheel(&wheel, "", &[]);
    std::fs::write(dir.join("requirements.lock"), lock(&good)).unwrap();
    std::fs::write(
        dir.join("overlay.toml"),
        overlay("python3 -c 'import telemetry'"),
    )
    .unwrap();
    refused("smoke fails", "No module named 'telemetry'");
}

/// Python 2.7 (bullseye, the last suite that has it) ignores pyvenv.cfg: its env holds a copy of
/// the interpreter, getpath's landmarks and kiln's site.py. Through envrun, from a launcher and
/// run directly with HOME set, only the stdlib and the env are on sys.path; a module planted in
/// the system's dist-packages or the user's site-packages, which the system's python2.7 imports,
/// is not importable from the env.
#[test]
fn a_python2_env_is_isolated_without_pyvenv_cfg_support() {
    if !is_root() {
        eprintln!("skipped: overlays need root (overlayfs, chroot)");
        return;
    }
    let w = world_on("bullseye", real_python2_debs(), &["python2.7"]);
    let dir = w.recipe.join("overlays/oldie");
    std::fs::create_dir_all(dir.join("wheels")).unwrap();
    let wheel = dir.join("wheels/greet-1.0-py2.py3-none-any.whl");
    greet_wheel_tagged(&wheel, &["py2-none-any", "py3-none-any"], "", &[]);
    std::fs::write(
        dir.join("requirements.lock"),
        format!("greet==1.0 --hash=sha256:{}\n", sha256_file(&wheel)),
    )
    .unwrap();
    std::fs::write(
        dir.join("overlay.toml"),
        "kind = \"python-venv\"\npython = \"python2.7\"\nrequirements = \"requirements.lock\"\nwheelhouse = \"wheels\"\nsmoke = \"greet\"\n\n[service]\nexec = \"greet\"\n",
    )
    .unwrap();
    let toml = std::fs::read_to_string(w.recipe.join("kiln.toml")).unwrap();
    std::fs::write(
        w.recipe.join("kiln.toml"),
        toml.replace("overlays/heartbeat", "overlays/oldie"),
    )
    .unwrap();
    let board = w.recipe.join("boards/test.toml");
    let board_text = std::fs::read_to_string(&board).unwrap();
    std::fs::write(
        &board,
        format!("{board_text}\n[[waiver]]\npath = \"/usr/share/doc/util-linux/examples/getopt-parse.tcsh\"\ncheck = \"script-interp\"\nreason = \"an example in bullseye's util-linux documentation\"\nexpires = \"2099-12-31\"\n"),
    )
    .unwrap();
    let o = build(&w);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = w.recipe.join("out");
    let first = layers(&out);

    let root = w.recipe.join("rootfs");
    unpack(&out, &root);
    let env = "/var/lib/python2/envs/oldie";
    let run = |args: &[&str]| -> (bool, String) {
        let o = Command::new("/usr/sbin/chroot")
            .arg(&root)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/root")
            .env("PYTHONPATH", "/usr/lib/python2.7/dist-packages")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (o.status.success(), text + stderr(&o).trim())
    };
    let stdlib = "'/usr/lib/python2.7', '/usr/lib/python2.7/plat-x86_64-linux-gnu', '/usr/lib/python2.7/lib-tk', '/usr/lib/python2.7/lib-old', '/usr/lib/python2.7/lib-dynload'";
    let show = "import sys; print(sys.path)";
    assert_eq!(
        run(&["/usr/bin/envrun", "run", "oldie", "python2.7", "-c", show]),
        (
            true,
            format!("['', {stdlib}, '{env}/lib/python2.7/site-packages']")
        )
    );
    assert_eq!(
        run(&["/usr/bin/envrun", "run", "oldie", "greet"]),
        (true, format!("hello from greet in {env}"))
    );
    let launcher = std::fs::read_to_string(root.join(&env[1..]).join("bin/greet")).unwrap();
    assert!(
        launcher.starts_with(&format!("#!{env}/bin/python2.7\n")),
        "{launcher}"
    );
    // The interpreter is a copy (a link would resolve to /usr and bring dist-packages).
    let copy = root.join(&env[1..]).join("bin/python2.7");
    assert!(std::fs::symlink_metadata(&copy).unwrap().is_file());
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(root.join("usr/bin/python2.7")).unwrap()
    );
    // pycs for the env's site.py and the wheel, dated like their sources (SOURCE_DATE_EPOCH).
    for (source, pyc) in [
        ("lib/python2.7/site.py", "lib/python2.7/site.pyc"),
        (
            "lib/python2.7/site-packages/greet/__init__.py",
            "lib/python2.7/site-packages/greet/__init__.pyc",
        ),
    ] {
        use std::os::unix::fs::MetadataExt;
        let mtime = std::fs::metadata(root.join(&env[1..]).join(source))
            .unwrap()
            .mtime();
        let data = std::fs::read(root.join(&env[1..]).join(pyc)).unwrap();
        assert_eq!(
            i64::from(u32::from_le_bytes(data[4..8].try_into().unwrap())),
            mtime,
            "{pyc}"
        );
    }

    // Modules the system's python2.7 finds (dist-packages, the user's site-packages) are not
    // the env's.
    std::fs::create_dir_all(root.join("usr/lib/python2.7/dist-packages")).unwrap();
    std::fs::write(root.join("usr/lib/python2.7/dist-packages/leak.py"), "").unwrap();
    let user_site = root.join("root/.local/lib/python2.7/site-packages");
    std::fs::create_dir_all(&user_site).unwrap();
    std::fs::write(user_site.join("userleak.py"), "").unwrap();
    let imports = "import leak, userleak; print('both')";
    assert_eq!(
        run(&["/usr/bin/python2.7", "-c", imports]),
        (true, "both".to_string())
    );
    let python = format!("{env}/bin/python2.7");
    assert_eq!(
        run(&["/usr/bin/env", "-u", "PYTHONPATH", &python, "-c", show]),
        (
            true,
            format!("['', {stdlib}, '{env}/lib/python2.7/site-packages']")
        ),
        "run directly, with HOME set"
    );
    for module in ["leak", "userleak"] {
        let (ok, text) = run(&[
            "/usr/bin/env",
            "-u",
            "PYTHONPATH",
            &python,
            "-c",
            &format!("import {module}"),
        ]);
        assert!(
            !ok && text.contains(&format!("No module named {module}")),
            "{module}: {text}"
        );
    }

    // `kiln check --run-envs` starts the env as the robot does: clean. A .pth line adding the
    // system's dist-packages is a plain path no file check flags; the running interpreter shows it.
    let check = |run_envs: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.arg("check").arg(&root).arg("--board").arg(&board);
        if run_envs {
            c.arg("--run-envs");
        }
        c.env("KILN_CACHE_DIR", &w.cache).output().unwrap()
    };
    let o = check(true);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    std::fs::write(
        root.join(&env[1..])
            .join("lib/python2.7/site-packages/system.pth"),
        "/usr/lib/python2.7/dist-packages\n",
    )
    .unwrap();
    assert!(check(false).status.success(), "no file check sees it");
    let o = check(true);
    let report = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!("venv-sys-path          {env}/bin/python2.7  sys.path holds /usr/lib/python2.7/dist-packages")),
        "{report}"
    );
    assert_eq!(
        std::fs::read_dir(w.cache.join("tmp")).unwrap().count(),
        0,
        "the unpacked image is removed"
    );

    // The same lock again from scratch: the same layers.
    std::fs::remove_dir_all(w.cache.join("layers")).unwrap();
    let o = build(&w);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(layers(&out), first);
}
