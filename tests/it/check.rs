//! `kiln check` against real ELF files: small programs and libraries built by Debian's cross
//! compilers (from ci/setup), each with one defect, placed in image trees that carry the cross
//! toolchain's real glibc. Every check must fire on its defect and stay silent on the clean
//! twin; the loader verdict is compared with what glibc's real loader does under qemu.

use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Debian architecture, its cross compiler and where its glibc lives.
#[derive(Clone, Copy)]
struct Target {
    arch: &'static str,
    triplet: &'static str,
    loader: &'static str,
}

const ARM64: Target = Target {
    arch: "arm64",
    triplet: "aarch64-linux-gnu",
    loader: "ld-linux-aarch64.so.1",
};
const ARMHF: Target = Target {
    arch: "armhf",
    triplet: "arm-linux-gnueabihf",
    loader: "ld-linux-armhf.so.3",
};
/// The host, for programs that must not be in an ARM image.
const AMD64: Target = Target {
    arch: "amd64",
    triplet: "x86_64-linux-gnu",
    loader: "ld-linux-x86-64.so.2",
};
const ARMEL: Target = Target {
    arch: "armel",
    triplet: "arm-linux-gnueabi",
    loader: "ld-linux.so.3",
};

fn work() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("check");
    fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles `source` for `t` with `flags` (cached by all three; tests run in parallel, so each
/// result is written under a temporary name and renamed into place).
fn cc(t: Target, name: &str, source: &str, flags: &[&str]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (t.arch, source, flags).hash(&mut h);
    let dir = work().join("bin").join(t.arch);
    fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{name}-{:016x}", h.finish()));
    if out.exists() {
        return out;
    }
    let tmp = tempfile::tempdir_in(&dir).unwrap();
    let src = tmp.path().join(format!("{name}.c"));
    fs::write(&src, source).unwrap();
    let built = tmp.path().join(name);
    let gcc = if t.arch == "amd64" {
        "gcc".to_string()
    } else {
        format!("{}-gcc", t.triplet)
    };
    let o = Command::new(&gcc)
        .arg("-o")
        .arg(&built)
        .arg(&src)
        .args(flags)
        .current_dir(tmp.path())
        .output()
        .unwrap_or_else(|e| panic!("{gcc} (install it with ci/setup): {e}"));
    assert!(
        o.status.success(),
        "{gcc} {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    fs::rename(&built, &out).unwrap();
    out
}

const HELLO: &str = "#include <stdio.h>\nint main(void) { puts(\"hi\"); return 0; }\n";
const USES_FOO: &str = "extern int foo(void);\nint main(void) { return foo() == 42 ? 0 : 1; }\n";
const USES_FOO2: &str =
    "extern int foo(void); extern int foo2(void);\nint main(void) { return foo() + foo2() == 84 ? 0 : 1; }\n";
const LIBFOO: &str = "int foo(void) { return 42; }\n";
const LIBFOO2: &str = "int foo(void) { return 42; }\nint foo2(void) { return 42; }\n";

/// An image tree with the merged-/usr layout of bookworm and the toolchain's glibc.
struct Image {
    root: PathBuf,
    t: Target,
}

impl Image {
    fn new(name: &str, t: Target) -> Image {
        let root = work().join("img").join(format!("{}-{name}", t.arch));
        let _ = fs::remove_dir_all(&root);
        let lib = root.join("usr/lib").join(t.triplet);
        fs::create_dir_all(&lib).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        for l in ["bin", "lib", "sbin"] {
            symlink(format!("usr/{l}"), root.join(l)).unwrap();
        }
        fs::create_dir_all(root.join("usr/sbin")).unwrap();
        let sysroot = PathBuf::from("/usr").join(t.triplet).join("lib");
        for f in ["libc.so.6", t.loader] {
            fs::copy(sysroot.join(f), lib.join(f)).unwrap();
        }
        // bookworm: /lib/LOADER -> TRIPLET/LOADER through the /lib symlink.
        symlink(
            format!("{}/{}", t.triplet, t.loader),
            root.join("usr/lib").join(t.loader),
        )
        .unwrap();
        Image { root, t }
    }

    fn put(&self, at: &str, file: &Path, mode: u32) -> &Image {
        let dest = self.root.join(at.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(file, &dest).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    fn write(&self, at: &str, text: &[u8], mode: u32) -> &Image {
        let dest = self.root.join(at.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(&dest, text).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    fn board(&self, arch: &str) -> PathBuf {
        let p = self.root.with_extension(format!("board-{arch}.toml"));
        fs::write(
            &p,
            format!(
                "name = \"test-{arch}\"\narch = \"{arch}\"\ncompatible = [\"kiln,test\"]\n\n[debian]\nsuite = \"bookworm\"\nmirror = \"http://deb.debian.org/debian\"\nkeyring = \"/usr/share/keyrings/debian-archive-keyring.gpg\"\n"
            ),
        )
        .unwrap();
        p
    }

    /// Runs `kiln check --format json` for the image's own arch (or `arch`).
    fn check_as(&self, arch: &str) -> (i32, Vec<Value>) {
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("check")
            .arg(&self.root)
            .arg("--board")
            .arg(self.board(arch))
            .args(["--format", "json"])
            .output()
            .unwrap();
        let findings = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON finding per line"))
            .collect();
        (o.status.code().unwrap_or(-1), findings)
    }

    fn check(&self) -> (i32, Vec<Value>) {
        self.check_as(self.t.arch)
    }
}

/// (check, path) of every finding at error or warning severity.
fn fired(findings: &[Value]) -> BTreeSet<(String, String)> {
    findings
        .iter()
        .filter(|f| f["severity"] != "info")
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn has(findings: &[Value], check: &str, path: &str) -> bool {
    findings
        .iter()
        .any(|f| f["check"] == check && f["path"] == path)
}

fn libfoo(t: Target, name: &str, source: &str, version_script: Option<&str>) -> PathBuf {
    let mut flags = vec!["-shared", "-fPIC", "-Wl,-soname,libfoo.so.1"];
    let script;
    if let Some(text) = version_script {
        let p = work().join(format!("{}-{name}.map", t.arch));
        fs::write(&p, text).unwrap();
        script = format!("-Wl,--version-script={}", p.display());
        flags.push(&script);
    }
    cc(t, name, source, &flags)
}

/// Links a program against a libfoo in `libdir` (as libfoo.so for the link).
fn against_foo(t: Target, name: &str, source: &str, lib: &Path, extra: &[&str]) -> PathBuf {
    let linkdir = work().join("link").join(t.arch).join(name);
    fs::create_dir_all(&linkdir).unwrap();
    fs::copy(lib, linkdir.join("libfoo.so")).unwrap();
    let l = format!("-L{}", linkdir.display());
    let mut flags = vec![l.as_str(), "-lfoo"];
    flags.extend_from_slice(extra);
    cc(t, name, source, &flags)
}

#[test]
fn a_clean_image_checks_clean_for_every_arm_flavour() {
    for t in [ARM64, ARMHF, ARMEL] {
        let lib = libfoo(t, "libfoo-clean", LIBFOO, None);
        let app = against_foo(
            t,
            "app-clean",
            USES_FOO,
            &lib,
            &["-Wl,-rpath,$ORIGIN/../lib"],
        );
        let img = Image::new("clean", t);
        img.put("/usr/bin/hello", &cc(t, "hello", HELLO, &[]), 0o755)
            .put("/opt/app/lib/libfoo.so.1", &lib, 0o644)
            .put("/opt/app/bin/app", &app, 0o755)
            .write("/usr/bin/tool", b"#!/bin/sh\necho hi\n", 0o755);
        img.put("/usr/bin/sh", &cc(t, "hello", HELLO, &[]), 0o755);
        let (code, findings) = img.check();
        assert_eq!(
            fired(&findings),
            BTreeSet::new(),
            "{}: {findings:?}",
            t.arch
        );
        assert_eq!(code, 0, "{}", t.arch);
    }
}

#[test]
fn machine_and_float_abi_defects_are_found() {
    let img = Image::new("machine", ARMHF);
    img.put("/usr/bin/x86", &cc(AMD64, "x86", HELLO, &[]), 0o755)
        .put("/usr/bin/arm64", &cc(ARM64, "hello", HELLO, &[]), 0o755)
        .put("/usr/bin/softfloat", &cc(ARMEL, "hello", HELLO, &[]), 0o755)
        .put("/usr/bin/hardfloat", &cc(ARMHF, "hello", HELLO, &[]), 0o755)
        .put(
            "/usr/bin/badinterp",
            &cc(
                ARMHF,
                "badinterp",
                HELLO,
                &["-Wl,--dynamic-linker=/lib/ld-missing.so.9"],
            ),
            0o755,
        );
    // A Cortex-M style bare-metal image in /lib/firmware is classified, not failed.
    img.put(
        "/lib/firmware/mcu.elf",
        &cc(
            ARMHF,
            "mcu",
            "void _start(void) { for (;;) ; }\n",
            &[
                "-nostdlib",
                "-static",
                "-Wl,-z,noexecstack",
                "-Wl,--build-id=none",
            ],
        ),
        0o644,
    );
    // A hard-float program whose header claims an older ARM EABI (version 4 in e_flags' top
    // byte): the one defect gcc will not produce for a Linux target, so the real file is patched.
    let mut eabi4 = fs::read(cc(ARMHF, "hello", HELLO, &[])).unwrap();
    eabi4[0x24 + 3] = 0x04;
    img.write("/usr/bin/eabi4", &eabi4, 0o755);
    let (code, findings) = img.check();
    assert_eq!(code, 1);
    assert!(
        has(&findings, "arm-float", "/usr/bin/eabi4"),
        "{findings:?}"
    );
    assert!(has(&findings, "arch", "/usr/bin/x86"), "{findings:?}");
    assert!(has(&findings, "arch", "/usr/bin/arm64"));
    assert!(
        has(&findings, "arm-float", "/usr/bin/softfloat"),
        "{findings:?}"
    );
    assert!(has(&findings, "interp", "/usr/bin/softfloat"));
    assert!(has(&findings, "interp", "/usr/bin/badinterp"));
    let all = fired(&findings);
    assert!(
        !all.iter().any(|(_, p)| p == "/usr/bin/hardfloat"),
        "{all:?}"
    );
    assert!(
        !all.iter()
            .any(|(_, p)| p == "/lib/firmware/mcu.elf" || p == "/usr/lib/firmware/mcu.elf"),
        "{all:?}"
    );
    // PT_INTERP names the board's loader, but the file there is built for another machine.
    let wrong_loader = Image::new("machine-loader", ARMHF);
    wrong_loader
        .put("/usr/bin/hardfloat", &cc(ARMHF, "hello", HELLO, &[]), 0o755)
        .put(
            "/usr/lib/arm-linux-gnueabihf/ld-linux-armhf.so.3",
            &PathBuf::from("/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1"),
            0o755,
        );
    let (_, findings) = wrong_loader.check();
    assert!(
        has(&findings, "interp", "/usr/bin/hardfloat"),
        "{findings:?}"
    );
    // The same soft-float program is clean on an armel board.
    let el = Image::new("machine-el", ARMEL);
    el.put("/usr/bin/softfloat", &cc(ARMEL, "hello", HELLO, &[]), 0o755);
    assert_eq!(fired(&el.check().1), BTreeSet::new());
}

/// An ld.so.cache in glibc's current format ("glibc-ld.so.cache1.1": 48-byte header, 24-byte
/// entries, strings after them with offsets from the header), as the target's ldconfig writes
/// it. The host's ldconfig cannot write one for ARM libraries ("unknown machine 183").
fn ld_so_cache(entries: &[(&str, &str)], flags: u32) -> Vec<u8> {
    let header = 48;
    let strings_at = header + 24 * entries.len();
    let mut strings = Vec::new();
    let mut table = Vec::new();
    for (key, value) in entries {
        let k = strings_at + strings.len();
        strings.extend_from_slice(key.as_bytes());
        strings.push(0);
        let v = strings_at + strings.len();
        strings.extend_from_slice(value.as_bytes());
        strings.push(0);
        table.extend_from_slice(&flags.to_le_bytes());
        table.extend_from_slice(&(k as u32).to_le_bytes());
        table.extend_from_slice(&(v as u32).to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
        table.extend_from_slice(&0u64.to_le_bytes());
    }
    let mut out = b"glibc-ld.so.cache1.1".to_vec();
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    out.push(2); // little-endian
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&[0; 16]);
    out.extend(table);
    out.extend(strings);
    out
}

/// An OCI image layout holding one image of uncompressed tar `layers`.
fn oci_layout(name: &str, layers: &[Vec<u8>]) -> PathBuf {
    let dir = work().join(name);
    let _ = fs::remove_dir_all(&dir);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = kiln::digest::sha256_hex(bytes);
        fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let descs: Vec<Value> = layers
        .iter()
        .map(|l| {
            let (digest, size) = put(l);
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size})
        })
        .collect();
    let config = serde_json::json!({"architecture": "arm64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}});
    let (cd, cs) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs,
    });
    let (md, ms) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms}]});
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    dir
}

/// The programs of `img` whose `needed` check fires.
fn needed_failures(img: &Image) -> (BTreeSet<String>, Vec<Value>) {
    let (_, findings) = img.check();
    let set = findings
        .iter()
        .filter(|f| f["check"] == "needed")
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    (set, findings)
}

/// Runs each program in a chroot of the image (qemu-user through binfmt_misc) and asserts the
/// real loader's verdict equals kiln's.
fn loader_agrees(img: &Image, programs: &[&str], failing: &BTreeSet<String>) {
    for prog in programs {
        let run = Command::new("chroot")
            .arg(&img.root)
            .arg(prog)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        let loads = !err.contains("error while loading shared libraries");
        assert_eq!(
            loads,
            !failing.contains(*prog),
            "{prog}: the real loader said {err:?}"
        );
        if loads {
            assert!(run.status.success(), "{prog}: {err}");
        }
    }
}

#[test]
fn library_resolution_follows_glibc_and_matches_the_real_loader() {
    let t = ARM64;
    let lib = libfoo(t, "libfoo-res", LIBFOO, None);
    let armhf_lib = libfoo(ARMHF, "libfoo-res", LIBFOO, None);
    let img = Image::new("needed", t);
    // Found through RUNPATH $ORIGIN; not found (no RPATH, not in a default directory); an
    // RPATH holding only a 32-bit libfoo, which glibc skips.
    img.put("/opt/a/lib/libfoo.so.1", &lib, 0o644)
        .put(
            "/opt/a/bin/runpath",
            &against_foo(
                t,
                "runpath",
                USES_FOO,
                &lib,
                &["-Wl,-rpath,$ORIGIN/../lib", "-Wl,--enable-new-dtags"],
            ),
            0o755,
        )
        .put(
            "/opt/a/bin/missing",
            &against_foo(t, "missing", USES_FOO, &lib, &[]),
            0o755,
        )
        .put("/opt/c/lib/libfoo.so.1", &armhf_lib, 0o644)
        .put(
            "/opt/c/bin/wrongclass",
            &against_foo(
                t,
                "wrongclass",
                USES_FOO,
                &lib,
                &["-Wl,-rpath,/opt/c/lib", "-Wl,--disable-new-dtags"],
            ),
            0o755,
        );
    // $LIB and $PLATFORM, expanded as Debian's glibc expands them.
    let dst = |name: &str, rpath: &str, tags: &str| {
        against_foo(
            t,
            name,
            USES_FOO,
            &lib,
            &[&format!("-Wl,-rpath,{rpath}"), tags],
        )
    };
    img.put("/opt/d/lib/aarch64-linux-gnu/libfoo.so.1", &lib, 0o644)
        .put(
            "/opt/d/bin/dstlib",
            &dst("dstlib", "/opt/d/$LIB", "-Wl,--disable-new-dtags"),
            0o755,
        )
        .put("/opt/e/aarch64/libfoo.so.1", &lib, 0o644)
        .put(
            "/opt/e/bin/dstplatform",
            &dst(
                "dstplatform",
                "/opt/e/${PLATFORM}",
                "-Wl,--enable-new-dtags",
            ),
            0o755,
        );
    let (failing, findings) = needed_failures(&img);
    let expected: BTreeSet<String> = ["/opt/a/bin/missing", "/opt/c/bin/wrongclass"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(failing, expected, "{findings:?}");
    let trace = findings
        .iter()
        .find(|f| f["check"] == "needed" && f["path"] == "/opt/c/bin/wrongclass")
        .map(|f| f["evidence"].to_string())
        .unwrap();
    assert!(
        trace.contains("wrong ELF class") && trace.contains("RPATH of /opt/c/bin/wrongclass"),
        "{trace}"
    );
    loader_agrees(
        &img,
        &[
            "/opt/a/bin/runpath",
            "/opt/a/bin/missing",
            "/opt/c/bin/wrongclass",
            "/opt/d/bin/dstlib",
            "/opt/e/bin/dstplatform",
        ],
        &failing,
    );

    // /etc/ld.so.conf (an include with a glob) names /opt/b/lib, which holds libfoo: without
    // an ld.so.cache listing it the loader still does not look there, and the trace says so.
    img.put("/opt/b/lib/libfoo.so.1", &lib, 0o644)
        .write(
            "/etc/ld.so.conf",
            b"include /etc/ld.so.conf.d/*.conf\n",
            0o644,
        )
        .write("/etc/ld.so.conf.d/b.conf", b"# app b\n/opt/b/lib\n", 0o644);
    let (failing, findings) = needed_failures(&img);
    assert!(failing.contains("/opt/a/bin/missing"));
    assert!(
        findings.iter().any(|f| f["evidence"]
            .to_string()
            .contains("not in ld.so.cache (run ldconfig)")),
        "{findings:?}"
    );
    loader_agrees(&img, &["/opt/a/bin/missing"], &failing);
    // With the cache ldconfig would write (glibc's format, the board's flags), both find it.
    img.write(
        "/etc/ld.so.cache",
        &ld_so_cache(&[("libfoo.so.1", "/opt/b/lib/libfoo.so.1")], 0x0a03),
        0o644,
    );
    let (failing, findings) = needed_failures(&img);
    assert_eq!(failing, BTreeSet::new(), "{findings:?}");
    loader_agrees(
        &img,
        &["/opt/a/bin/missing", "/opt/c/bin/wrongclass"],
        &failing,
    );
}

#[test]
fn symbol_versions_must_be_provided() {
    let t = ARMHF;
    let map_v2 = "FOO_1 { global: foo; local: *; };\nFOO_2 { global: foo2; } FOO_1;\n";
    let map_v1 = "FOO_1 { global: foo; local: *; };\n";
    let v2 = libfoo(t, "libfoo-v2", LIBFOO2, Some(map_v2));
    let v1 = libfoo(t, "libfoo-v1", LIBFOO, Some(map_v1));
    let app = against_foo(t, "app-v2", USES_FOO2, &v2, &["-Wl,-rpath,/opt/v/lib"]);
    let old = Image::new("symver-old", t);
    old.put("/opt/v/lib/libfoo.so.1", &v1, 0o644)
        .put("/opt/v/bin/app", &app, 0o755);
    let (code, findings) = old.check();
    assert_eq!(code, 1);
    let f = findings
        .iter()
        .find(|f| f["check"] == "symbol-versions")
        .expect("symbol-versions fires");
    assert!(f["message"].as_str().unwrap().contains("FOO_2"), "{f}");
    let new = Image::new("symver-new", t);
    new.put("/opt/v/lib/libfoo.so.1", &v2, 0o644)
        .put("/opt/v/bin/app", &app, 0o755);
    assert_eq!(fired(&new.check().1), BTreeSet::new());

    // A program built against bookworm's glibc in an image whose libc stops at 2.24 (stretch).
    let stretch_libc = cc(
        t,
        "libc-2.24",
        "void old(void) {}\n",
        &[
            "-shared",
            "-fPIC",
            "-nostdlib",
            "-Wl,-soname,libc.so.6",
            &format!("-Wl,--version-script={}", {
                let p = work().join("glibc-2.24.map");
                let mut text = String::new();
                let mut prev = String::new();
                for v in [
                    "2.4", "2.5", "2.6", "2.7", "2.8", "2.9", "2.10", "2.11", "2.12", "2.13",
                    "2.14", "2.15", "2.16", "2.17", "2.18", "2.22", "2.23", "2.24",
                ] {
                    text.push_str(&format!(
                        "GLIBC_{v} {{ {} }} {prev};\n",
                        if v == "2.4" {
                            "global: old; local: *;"
                        } else {
                            ""
                        }
                    ));
                    prev = format!("GLIBC_{v}");
                }
                fs::write(&p, text).unwrap();
                p.display().to_string()
            }),
        ],
    );
    let s = Image::new("stretch-libc", t);
    s.put(
        "/usr/lib/arm-linux-gnueabihf/libc.so.6",
        &stretch_libc,
        0o755,
    )
    .put("/usr/bin/hello", &cc(t, "hello", HELLO, &[]), 0o755);
    let (_, findings) = s.check();
    let f = findings
        .iter()
        .find(|f| f["check"] == "symbol-versions" && f["path"] == "/usr/bin/hello")
        .expect("a bookworm program needs a newer glibc than 2.24");
    assert!(
        f["message"].as_str().unwrap().contains("up to GLIBC_2.24"),
        "{f}"
    );
}

#[test]
fn rpath_policy() {
    let t = ARM64;
    let lib = libfoo(t, "libfoo-rp", LIBFOO, None);
    let with = |name: &str, rpath: &str| {
        against_foo(
            t,
            name,
            USES_FOO,
            &lib,
            &[&format!("-Wl,-rpath,{rpath}"), "-Wl,--disable-new-dtags"],
        )
    };
    let img = Image::new("rpath", t);
    img.put("/usr/lib/aarch64-linux-gnu/libfoo.so.1", &lib, 0o644)
        .put(
            "/usr/bin/builddir",
            &with("builddir", "/home/ci/build/lib"),
            0o755,
        )
        .put("/usr/bin/empty", &with("empty", "/opt/x/lib:"), 0o755)
        .put("/usr/bin/relative", &with("relative", "lib"), 0o755)
        .put("/opt/s/bin/suid", &with("suid", "$ORIGIN/../lib"), 0o4755)
        .put("/opt/s/lib/libfoo.so.1", &lib, 0o644)
        .put("/usr/bin/unsafe", &with("unsafe", "/tmp/lib"), 0o755)
        .put(
            "/opt/envs/nav/bin/nav",
            &with("outside", "/opt/other/lib"),
            0o755,
        )
        .put(
            "/usr/bin/redundant",
            &with("redundant", "/usr/lib/aarch64-linux-gnu"),
            0o755,
        )
        .put(
            "/usr/bin/missingdir",
            &with("missingdir", "/opt/nothing/lib"),
            0o755,
        )
        .put("/opt/envs/nav/lib/ok.so", &with("inside", "$ORIGIN"), 0o755);
    fs::create_dir_all(img.root.join("opt/x/lib")).unwrap();
    let (code, findings) = img.check();
    assert_eq!(code, 1);
    for (check, path) in [
        ("rpath-builddir", "/usr/bin/builddir"),
        ("rpath-empty", "/usr/bin/empty"),
        ("rpath-relative", "/usr/bin/relative"),
        ("rpath-setuid", "/opt/s/bin/suid"),
        ("rpath-unsafe-dir", "/usr/bin/unsafe"),
        ("rpath-outside-prefix", "/opt/envs/nav/bin/nav"),
        ("rpath-redundant", "/usr/bin/redundant"),
        ("rpath-missing-dir", "/usr/bin/missingdir"),
    ] {
        assert!(
            has(&findings, check, path),
            "{check} on {path}: {findings:?}"
        );
        // Each defect fires only its own rpath check (and the ones it implies).
        let others: Vec<&Value> = findings
            .iter()
            .filter(|f| {
                f["path"] == path
                    && f["check"].as_str().unwrap().starts_with("rpath-")
                    && f["check"] != check
            })
            .collect();
        let allowed: &[&str] = match check {
            "rpath-builddir" => &["rpath-missing-dir"],
            "rpath-unsafe-dir" => &["rpath-missing-dir", "rpath-builddir"],
            "rpath-outside-prefix" => &["rpath-missing-dir"],
            "rpath-relative" => &["rpath-missing-dir"],
            "rpath-setuid" => &["rpath-missing-dir"],
            _ => &[],
        };
        assert!(
            others
                .iter()
                .all(|f| allowed.contains(&f["check"].as_str().unwrap())),
            "{path}: {others:?}"
        );
    }
    assert!(
        !fired(&findings)
            .iter()
            .any(|(_, p)| p == "/opt/envs/nav/lib/ok.so"),
        "{findings:?}"
    );
}

#[test]
fn scripts_extensions_hardening_and_corrupt_files() {
    let t = ARMHF;
    let img = Image::new("misc", t);
    let hello = cc(t, "hello", HELLO, &[]);
    let data = fs::read(&hello).unwrap();
    img.write("/usr/bin/truncated", &data[..data.len() / 3], 0o755)
        .write(
            "/usr/bin/nopython",
            b"#!/usr/bin/python9\nprint(1)\n",
            0o755,
        )
        .write(
            "/usr/bin/envmissing",
            b"#!/usr/bin/env ruby\nputs 1\n",
            0o755,
        )
        .write("/usr/bin/notexec", b"#!/etc/hostname\n", 0o755)
        .write("/etc/hostname", b"robot\n", 0o644)
        .write("/usr/share/doc/x/example", b"#!/usr/bin/python9\n", 0o644)
        // An image left unconfigured (configure = false): mawk's postinst has not made the
        // /usr/bin/awk alternative yet, so its example script's interpreter is only pending.
        .write(
            "/var/lib/dpkg/status",
            b"Package: mawk\nStatus: install ok unpacked\nVersion: 1.3.4\n\n",
            0o644,
        )
        .write(
            "/var/lib/dpkg/info/mawk.postinst",
            b"#!/bin/sh\nupdate-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\\n  --slave /usr/bin/nawk nawk /usr/bin/mawk\n",
            0o755,
        )
        .write(
            "/usr/share/doc/mawk/examples/decl.awk",
            b"#!/usr/bin/awk -f\n",
            0o755,
        )
        .write(
            &format!("/usr/bin/{}", "long"),
            format!("#!/{}\n", "x".repeat(300)).as_bytes(),
            0o755,
        )
        .put(
            "/usr/bin/execstack",
            &cc(t, "execstack", HELLO, &["-Wl,-z,execstack"]),
            0o755,
        )
        .put(
            "/usr/bin/sysvhash",
            &cc(t, "sysvhash", HELLO, &["-Wl,--hash-style=sysv"]),
            0o755,
        )
        .put(
            "/usr/bin/nopie",
            &cc(t, "nopie", HELLO, &["-no-pie", "-Wl,-z,norelro"]),
            0o755,
        )
        .put(
            "/usr/lib/arm-linux-gnueabihf/libtext.so",
            &cc(
                t,
                "libtext",
                "int g;\nint *const p = &g;\n",
                &["-shared", "-fno-PIC", "-Wl,-z,notext"],
            ),
            0o644,
        )
        .write("/usr/lib/python3.11/os.py", b"", 0o644)
        .put(
            "/usr/lib/python3/dist-packages/a.cpython-311-aarch64-linux-gnu.so",
            &cc(t, "pyext", "int x;\n", &["-shared", "-fPIC"]),
            0o644,
        )
        .put(
            "/usr/lib/python3/dist-packages/b.cpython-35m-arm-linux-gnueabihf.so",
            &cc(t, "pyext", "int x;\n", &["-shared", "-fPIC"]),
            0o644,
        )
        .put(
            "/usr/lib/python3/dist-packages/c.cpython-311-arm-linux-gnueabihf.so",
            &cc(t, "pyext", "int x;\n", &["-shared", "-fPIC"]),
            0o644,
        );
    let (code, findings) = img.check();
    assert_eq!(code, 1);
    for (check, path) in [
        ("elf-corrupt", "/usr/bin/truncated"),
        ("script-interp", "/usr/bin/nopython"),
        ("script-interp", "/usr/bin/envmissing"),
        ("script-interp", "/usr/bin/notexec"),
        ("script-interp", "/usr/bin/long"),
        ("execstack", "/usr/bin/execstack"),
        ("no-gnu-hash", "/usr/bin/sysvhash"),
        ("hardening", "/usr/bin/nopie"),
        ("textrel", "/usr/lib/arm-linux-gnueabihf/libtext.so"),
        (
            "pyext",
            "/usr/lib/python3/dist-packages/a.cpython-311-aarch64-linux-gnu.so",
        ),
        (
            "pyext",
            "/usr/lib/python3/dist-packages/b.cpython-35m-arm-linux-gnueabihf.so",
        ),
    ] {
        assert!(
            has(&findings, check, path),
            "{check} on {path}: {findings:?}"
        );
    }
    let all = fired(&findings);
    assert!(
        findings.iter().any(|f| f["check"] == "script-interp"
            && f["path"] == "/usr/share/doc/mawk/examples/decl.awk"
            && f["severity"] == "info"
            && f["message"]
                .as_str()
                .unwrap_or("")
                .contains("mawk's postinst")),
        "{findings:?}"
    );
    for clean in [
        "/usr/share/doc/mawk/examples/decl.awk",
        "/usr/share/doc/x/example",
        "/usr/lib/python3/dist-packages/c.cpython-311-arm-linux-gnueabihf.so",
    ] {
        assert!(!all.iter().any(|(_, p)| p == clean), "{clean}: {all:?}");
    }
}

#[test]
fn tar_and_oci_inputs_and_waivers() {
    let t = ARM64;
    let img = Image::new("inputs", t);
    img.put("/usr/bin/x86", &cc(AMD64, "x86", HELLO, &[]), 0o755);
    let tarball = work().join("inputs.tar");
    let st = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&img.root)
        .args(["-cf"])
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let run = |path: &Path, board: &Path, format: &str| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("check")
            .arg(path)
            .arg("--board")
            .arg(board)
            .args(["--format", format])
            .output()
            .unwrap()
    };
    let board = img.board("arm64");
    let o = run(&tarball, &board, "json");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"check\":\"arch\""));
    // JUnit and SARIF are well-formed enough for their readers.
    let junit = String::from_utf8_lossy(&run(&tarball, &board, "junit").stdout).to_string();
    assert!(
        junit.contains("<testsuite ") && junit.contains("<failure type=\"arch\""),
        "{junit}"
    );
    let sarif: Value = serde_json::from_slice(&run(&tarball, &board, "sarif").stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(sarif["runs"][0]["results"][0]["ruleId"], "arch");

    // The same tree as an OCI image layout; a second layer whites the program out.
    let layer1 = fs::read(&tarball).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    b.append_data(&mut h, "usr/bin/.wh.x86", &[][..]).unwrap();
    let layer2 = b.into_inner().unwrap();
    let layout = oci_layout("inputs-oci", std::slice::from_ref(&layer1));
    assert_eq!(run(&layout, &board, "json").status.code(), Some(1));
    let layout = oci_layout("inputs-oci-whiteout", &[layer1, layer2]);
    let o = run(&layout, &board, "json");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // A layer whose bytes do not match its digest is refused (exit 2), naming the blob.
    let blobs = layout.join("blobs/sha256");
    let victim = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| fs::metadata(p).unwrap().len() > 4096)
        .unwrap();
    let mut bytes = fs::read(&victim).unwrap();
    bytes[1000] ^= 1;
    fs::write(&victim, bytes).unwrap();
    let o = run(&layout, &board, "json");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not match its digest"));

    // A waiver accepts it until it expires; an expired or unused waiver is reported.
    let waived = work().join("board-waived.toml");
    let base = fs::read_to_string(&board).unwrap();
    fs::write(&waived, format!("{base}\n[[waiver]]\npath = \"/usr/bin/x86\"\ncheck = \"arch\"\nreason = \"host tool for the test\"\nexpires = \"2999-01-01\"\n\n[[waiver]]\npath = \"/nothing\"\ncheck = \"textrel\"\nreason = \"stale\"\nexpires = \"2999-01-01\"\n")).unwrap();
    let o = run(&tarball, &waived, "json");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("matched nothing"));
    let expired = work().join("board-expired.toml");
    fs::write(&expired, format!("{base}\n[[waiver]]\npath = \"/usr/bin/*\"\ncheck = \"arch\"\nreason = \"old\"\nexpires = \"2001-01-01\"\n")).unwrap();
    let o = run(&tarball, &expired, "json");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("expired on 2001-01-01"));
    // A waiver naming an unknown check is a bad board, located to its line: wrong input, 1, as
    // a bad board is in `kiln export` and `kiln flash` (the one exit-code table).
    let bad = work().join("board-bad.toml");
    fs::write(&bad, format!("{base}\n[[waiver]]\npath = \"/x\"\ncheck = \"nonsense\"\nreason = \"r\"\nexpires = \"2999-01-01\"\n")).unwrap();
    let o = run(&tarball, &bad, "json");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown check 'nonsense'"));

    // Unreadable input: exit 2 with the path named.
    let o = run(&work().join("no-such-image"), &board, "table");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-image"));
}

/// Issue 20's stock-Debian false errors, each next to the true positive it must not hide: a
/// documentation example, a runit service file (the image has no runit) and a module of the
/// installed Python's standard library are info; with runit present the same file is an error,
/// and a stdlib directory with no interpreter beside it is not excused; `env /abs/path` is checked as that path; a plugin
/// (a library no executable links, outside the library directories) missing a library is a
/// warning naming the package, and the same library in a default directory stays an error.
#[test]
fn severity_follows_what_the_image_runs() {
    let t = ARM64;
    let lib = libfoo(t, "libfoo-plugin", LIBFOO, None);
    let uses = "extern int foo(void);\nint bar(void) { return foo(); }\n";
    let plugin = against_foo(t, "q_x", uses, &lib, &["-shared", "-fPIC"]);
    let img = Image::new("severity", t);
    let tc = format!("/usr/lib/{}/tc/q_x.so", t.triplet);
    let default_dir_lib = format!("/usr/lib/{}/libneedsfoo.so.1", t.triplet);
    img.write(
        "/usr/share/doc/python3-yaml/examples/yaml_hl.py",
        b"#!/usr/bin/python\n",
        0o755,
    )
    .write(
        "/etc/sv/ssh/run",
        b"#!/usr/bin/env /lib/runit/invoke-run\nexec sshd -D\n",
        0o755,
    )
    .write("/usr/bin/envabs", b"#!/usr/bin/env /opt/missing/tool\n", 0o755)
    .write("/usr/bin/env", b"", 0o755)
    .write("/usr/lib/python3.11/cgi.py", b"#! /usr/local/bin/python\n", 0o755)
    .write("/usr/bin/python3.11", b"", 0o755)
    .write("/usr/lib/python3.9/cgi.py", b"#! /usr/local/bin/python\n", 0o755)
    .put(&tc, &plugin, 0o644)
    .put(&default_dir_lib, &plugin, 0o644)
    .write(
        "/var/lib/dpkg/status",
        b"Package: iproute9\nStatus: install ok installed\nVersion: 1\nRecommends: libfoo1 (>= 1), libbpf1\n\n",
        0o644,
    )
    .write(
        "/var/lib/dpkg/info/iproute9.list",
        format!("/.\n/usr/lib/{}/tc\n{tc}\n", t.triplet).as_bytes(),
        0o644,
    );
    let (code, findings) = img.check();
    let find = |path: &str| -> &Value {
        findings
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("no finding on {path}: {findings:?}"))
    };
    let doc = find("/usr/share/doc/python3-yaml/examples/yaml_hl.py");
    assert_eq!(doc["severity"], "info", "{doc}");
    assert!(doc["message"]
        .as_str()
        .unwrap()
        .contains("documentation example"));
    let sv = find("/etc/sv/ssh/run");
    assert_eq!(sv["severity"], "info", "{sv}");
    let msg = sv["message"].as_str().unwrap();
    assert!(
        msg.contains("/lib/runit/invoke-run is not in the image") && msg.contains("runit"),
        "{msg}"
    );
    assert!(!msg.contains("PATH"), "{msg}");
    let cgi = find("/usr/lib/python3.11/cgi.py");
    assert_eq!(cgi["severity"], "info", "{cgi}");
    assert!(cgi["message"]
        .as_str()
        .unwrap()
        .contains("/usr/bin/python3.11's standard library"));
    assert_eq!(find("/usr/lib/python3.9/cgi.py")["severity"], "error");
    let envabs = find("/usr/bin/envabs");
    assert_eq!(envabs["severity"], "error", "{envabs}");
    assert!(envabs["message"]
        .as_str()
        .unwrap()
        .contains("/opt/missing/tool is not in the image"));
    let p = find(&tc);
    assert_eq!(p["severity"], "warning", "{p}");
    let msg = p["message"].as_str().unwrap();
    assert!(
        msg.contains("plugin")
            && msg.contains("libfoo1")
            && msg.contains("a Recommends of iproute9")
            && msg.contains("not installed"),
        "{msg}"
    );
    assert_eq!(find(&default_dir_lib)["severity"], "error");
    assert_eq!(code, 1);

    // With runit in the image its service file is run, so its broken line is an error again.
    img.write("/usr/bin/runsv", b"", 0o755);
    let (_, findings) = img.check();
    let sv = findings
        .iter()
        .find(|f| f["path"] == "/etc/sv/ssh/run")
        .unwrap();
    assert_eq!(sv["severity"], "error", "{sv}");
}

/// `baked-secret`: private keys are errors wherever they are, a program that merely names the
/// format is not, and a key the recipe ships on purpose is waived by path with its reason.
#[test]
fn baked_secrets_are_errors_unless_waived() {
    let t = ARM64;
    let img = Image::new("secrets", t);
    let key = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519"])
        .output()
        .unwrap()
        .stdout;
    assert!(key.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    let ssh = work().join("secrets-ssh");
    let _ = fs::remove_file(&ssh);
    let _ = fs::remove_file(ssh.with_extension("pub"));
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&ssh)
        .status()
        .unwrap()
        .success());
    img.write("/etc/ssl/private/device.key", &key, 0o600)
        .put("/etc/ssh/ssh_host_ed25519_key", &ssh, 0o600)
        .write(
            "/etc/wireguard/wg0.conf",
            b"[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n",
            0o600,
        )
        .write("/opt/app/test-ca.key", &key, 0o644)
        .write(
            "/usr/bin/keytool",
            b"\x7fnot elf\0-----BEGIN OPENSSH PRIVATE KEY-----\n\0-----END OPENSSH PRIVATE KEY-----\n",
            0o755,
        );
    let (code, findings) = img.check();
    assert_eq!(code, 1);
    let secrets: BTreeSet<String> = findings
        .iter()
        .filter(|f| f["check"] == "baked-secret" && f["severity"] == "error")
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        secrets,
        [
            "/etc/ssh/ssh_host_ed25519_key",
            "/etc/ssl/private/device.key",
            "/etc/wireguard/wg0.conf",
            "/opt/app/test-ca.key"
        ]
        .map(String::from)
        .into(),
        "{findings:?}"
    );
    // The explicit mechanism: a waiver naming the path, with a reason, shown in every report.
    let board = img.board(t.arch);
    let text = fs::read_to_string(&board).unwrap();
    fs::write(&board, format!("{text}\n[[waiver]]\npath = \"/opt/app/test-ca.key\"\ncheck = \"baked-secret\"\nreason = \"the dev fleet's public test CA; its key is published on purpose\"\nexpires = \"2099-12-31\"\n")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("check")
        .arg(&img.root)
        .arg("--board")
        .arg(&board)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let waived: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|f: &Value| f["path"] == "/opt/app/test-ca.key")
        .collect();
    assert!(
        waived[0]["waived"].is_object() || waived[0]["waived"].is_string(),
        "{waived:?}"
    );
}
