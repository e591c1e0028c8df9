//! Per-device identity: what packages generate at build time that must differ on every robot.
//!
//! Every unit flashed from an image holds the same bytes. openssh-server's postinst makes SSH
//! host keys and ssl-cert's makes a TLS "snakeoil" key; baked into the image they are one key
//! for the whole fleet (whoever holds one robot, or the image, can impersonate all of them),
//! and being random they also make the image differ from build to build. Debian's own cloud
//! and live images remove them at build time and make them on the device at first boot; kiln
//! does the same:
//!
//! 1. before the maintainer scripts run, [`hold_back`] puts empty placeholders where each
//!    generator writes, so the postinsts, which only generate what is missing
//!    (openssh-server's `create_key`: `[ ! -f "$file" ]`; make-ssl-cert without
//!    `--force-overwrite`), skip the work whose result would be thrown away (openssh-server's
//!    postinst took 10 s of qemu time making keys);
//! 2. after them, [`remove_and_arrange`] removes the keys (placeholders or not) and the
//!    identity systemd makes for itself ([`ALWAYS_REMOVED`]; /etc/machine-id is emptied by the
//!    clean-up), and, where systemd is the init, installs and enables a unit per generator that
//!    makes them on the device before the service that needs them starts.
//!
//! An image whose init is not systemd still loses the keys; the build says so, since then the
//! team's own init must run the generator ([`Arranged::notes`]).

use crate::inroot::{ImageRoot, InRootError, Kind};

/// Files removed from every image: identity systemd creates at build time when a postinst
/// runs `systemd-machine-id-setup` or `systemctl`, and makes again on the device when missing
/// (systemd-random-seed.service(8): the seed is "refreshed" at boot and shutdown and must not
/// be shared; credential.secret: systemd-creds(1), "generated on first use").
pub const ALWAYS_REMOVED: &[&str] = &[
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
];

/// One generator of per-device identity.
struct Generator {
    /// What it makes, for messages.
    what: &'static str,
    /// The package whose postinst runs it at build time.
    package: &'static str,
    /// The files it writes; placeholders go there before the postinsts run.
    outputs: &'static [&'static str],
    /// The systemd unit (`etc/systemd/system/NAME`) that runs it on the device.
    unit_name: &'static str,
    /// The unit's text.
    unit: &'static str,
    /// Where the unit is enabled: `(directory under etc/systemd/system, link name)`.
    enabled_in: &'static [&'static str],
    /// The program the unit runs (it must be in the image for the unit to be installed).
    program: &'static str,
    /// What the team must do when the init is not systemd.
    otherwise: &'static str,
}

const SSH_UNIT: &str = "\
# Written by kiln. Every robot makes its own SSH host keys: the image carries none (kiln
# removed those openssh-server's postinst would have made at build time), so no two units
# flashed from it share a key. `ssh-keygen -A` makes only the missing keys; on a read-only
# root /etc/ssh must be writable (a bind mount from the data partition, for example).
[Unit]
Description=Make this device's SSH host keys
Before=ssh.service ssh.socket

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
RequiredBy=ssh.service
";

const SNAKEOIL_UNIT: &str = "\
# Written by kiln. ssl-cert's default \"snakeoil\" key and certificate are made on the device,
# so no two units flashed from this image share a TLS key. Early, before the services that use
# them (sysinit.target is before every ordinary service).
[Unit]
Description=Make this device's snakeoil TLS key and certificate
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target
ConditionPathExists=!/etc/ssl/private/ssl-cert-snakeoil.key

[Service]
Type=oneshot
ExecStart=/usr/sbin/make-ssl-cert generate-default-snakeoil
RemainAfterExit=yes

[Install]
WantedBy=sysinit.target
";

const GENERATORS: &[Generator] = &[
    Generator {
        what: "SSH host keys",
        package: "openssh-server",
        outputs: &[
            "etc/ssh/ssh_host_rsa_key",
            "etc/ssh/ssh_host_dsa_key",
            "etc/ssh/ssh_host_ecdsa_key",
            "etc/ssh/ssh_host_ed25519_key",
        ],
        unit_name: "kiln-ssh-host-keys.service",
        unit: SSH_UNIT,
        enabled_in: &["multi-user.target.wants", "ssh.service.requires"],
        program: "usr/bin/ssh-keygen",
        otherwise: "run `ssh-keygen -A` on the device before sshd starts",
    },
    Generator {
        what: "the snakeoil TLS key",
        package: "ssl-cert",
        outputs: &[
            "etc/ssl/private/ssl-cert-snakeoil.key",
            "etc/ssl/certs/ssl-cert-snakeoil.pem",
        ],
        unit_name: "kiln-ssl-snakeoil.service",
        unit: SNAKEOIL_UNIT,
        enabled_in: &["sysinit.target.wants"],
        program: "usr/sbin/make-ssl-cert",
        otherwise: "run `make-ssl-cert generate-default-snakeoil` on the device",
    },
];

/// What [`remove_and_arrange`] did.
#[derive(Debug, Default)]
pub struct Arranged {
    /// Image paths removed.
    pub removed: Vec<String>,
    /// First-boot units installed and enabled.
    pub units: Vec<String>,
    /// What the team must know (a generator with no unit because systemd is not the init).
    pub notes: Vec<String>,
}

fn installed<'p>(packages: impl IntoIterator<Item = &'p str>, name: &str) -> bool {
    packages.into_iter().any(|p| p == name)
}

/// Puts an empty placeholder where each generator of an installed package writes, so its
/// postinst skips making what would be removed. Returns the placeholders made.
pub fn hold_back<'p>(
    image: &ImageRoot,
    packages: impl IntoIterator<Item = &'p str> + Clone,
) -> Result<Vec<String>, InRootError> {
    let mut made = Vec::new();
    for g in GENERATORS {
        if !installed(packages.clone(), g.package) {
            continue;
        }
        for out in g.outputs {
            let Some((dir, name)) = image.parent(out, false)? else {
                continue;
            };
            if dir.kind(&name)?.is_none() {
                dir.write_file(&name, b"", 0o600)?;
                made.push(format!("/{out}"));
            }
        }
    }
    Ok(made)
}

/// Whether systemd is the image's init (`/sbin/init` resolves to systemd), as
/// systemd-sysv arranges it.
fn systemd_is_init(image: &ImageRoot) -> Result<bool, InRootError> {
    let has_systemd = ["usr/lib/systemd/systemd", "lib/systemd/systemd"]
        .iter()
        .map(|p| image.kind(p))
        .collect::<Result<Vec<_>, _>>()?
        .contains(&Some(Kind::File));
    let init = match image.parent("sbin/init", false)? {
        Some((dir, name)) if dir.kind(&name)? == Some(Kind::Symlink) => {
            dir.read_link(&name)?.to_string_lossy().into_owned()
        }
        _ => String::new(),
    };
    Ok(has_systemd && init.ends_with("systemd/systemd"))
}

/// Removes every generator's output and [`ALWAYS_REMOVED`], and installs the first-boot units.
pub fn remove_and_arrange<'p>(
    image: &ImageRoot,
    packages: impl IntoIterator<Item = &'p str> + Clone,
) -> Result<Arranged, InRootError> {
    let mut done = Arranged::default();
    for p in ALWAYS_REMOVED {
        if image.remove_file(p)? {
            done.removed.push(format!("/{p}"));
        }
    }
    let systemd = systemd_is_init(image)?;
    for g in GENERATORS {
        for out in g.outputs {
            for path in [out.to_string(), format!("{out}.pub")] {
                if image.remove_file(&path)? {
                    done.removed.push(format!("/{path}"));
                }
            }
        }
        remove_links_to(image, g.outputs, &mut done)?;
        if !installed(packages.clone(), g.package) {
            continue;
        }
        if !systemd {
            done.notes.push(format!(
                "{} removed from the image; systemd is not its init, so {}",
                g.what, g.otherwise
            ));
            continue;
        }
        if image.kind(g.program)? != Some(Kind::File) {
            continue;
        }
        let units = image.make_dir_all("etc/systemd/system")?;
        units.write_file(g.unit_name, g.unit.as_bytes(), 0o644)?;
        for wants in g.enabled_in {
            let dir = image.make_dir_all(format!("etc/systemd/system/{wants}"))?;
            dir.symlink(g.unit_name, format!("/etc/systemd/system/{}", g.unit_name))?;
        }
        done.units.push(g.unit_name.to_string());
    }
    Ok(done)
}

/// Removes the symlinks in the outputs' directories that point at an output (the
/// `<subject hash>.0` link make-ssl-cert adds beside the snakeoil certificate).
fn remove_links_to(
    image: &ImageRoot,
    outputs: &[&str],
    done: &mut Arranged,
) -> Result<(), InRootError> {
    for out in outputs {
        let (parent, file) = out.rsplit_once('/').unwrap_or(("", out));
        let Some(dir) = image.dir(parent)? else {
            continue;
        };
        for name in dir.entries()? {
            if dir.kind(&name)? != Some(Kind::Symlink) {
                continue;
            }
            let target = dir.read_link(&name)?;
            if target.file_name().is_some_and(|t| t == file) {
                dir.remove_file(&name)?;
                done.removed
                    .push(format!("/{parent}/{}", name.to_string_lossy()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with(files: &[&str], links: &[(&str, &str)]) -> (tempfile::TempDir, ImageRoot) {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        for (link, target) in links {
            let p = d.path().join(link);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, p).unwrap();
        }
        let root = ImageRoot::open(d.path()).unwrap();
        (d, root)
    }

    #[test]
    fn keys_go_and_a_first_boot_unit_makes_them_under_systemd() {
        let (d, image) = image_with(
            &[
                "etc/ssh/ssh_host_ed25519_key",
                "etc/ssh/ssh_host_ed25519_key.pub",
                "etc/ssh/sshd_config",
                "usr/bin/ssh-keygen",
                "usr/lib/systemd/systemd",
                "var/lib/systemd/random-seed",
                "etc/ssl/certs/ssl-cert-snakeoil.pem",
            ],
            &[
                ("sbin/init", "/lib/systemd/systemd"),
                ("lib", "usr/lib"),
                ("etc/ssl/certs/1a2b3c4d.0", "ssl-cert-snakeoil.pem"),
            ],
        );
        let done = remove_and_arrange(&image, ["openssh-server"]).unwrap();
        assert_eq!(
            done.removed,
            [
                "/var/lib/systemd/random-seed",
                "/etc/ssh/ssh_host_ed25519_key",
                "/etc/ssh/ssh_host_ed25519_key.pub",
                "/etc/ssl/certs/ssl-cert-snakeoil.pem",
                "/etc/ssl/certs/1a2b3c4d.0",
            ]
        );
        assert_eq!(done.units, ["kiln-ssh-host-keys.service"]);
        assert!(done.notes.is_empty());
        let sys = d.path().join("etc/systemd/system");
        assert!(
            std::fs::read_to_string(sys.join("kiln-ssh-host-keys.service"))
                .unwrap()
                .contains("ExecStart=/usr/bin/ssh-keygen -A")
        );
        for wants in ["multi-user.target.wants", "ssh.service.requires"] {
            assert_eq!(
                std::fs::read_link(sys.join(wants).join("kiln-ssh-host-keys.service")).unwrap(),
                std::path::Path::new("/etc/systemd/system/kiln-ssh-host-keys.service")
            );
        }
        assert!(d.path().join("etc/ssh/sshd_config").exists());
    }

    #[test]
    fn placeholders_only_for_installed_generators_and_never_over_a_file() {
        let (d, image) = image_with(&["etc/ssh/ssh_host_rsa_key"], &[]);
        std::fs::create_dir_all(d.path().join("etc/ssl/private")).unwrap();
        let made = hold_back(&image, ["openssh-server"]).unwrap();
        assert_eq!(
            made,
            [
                "/etc/ssh/ssh_host_dsa_key",
                "/etc/ssh/ssh_host_ecdsa_key",
                "/etc/ssh/ssh_host_ed25519_key"
            ]
        );
        assert_eq!(
            std::fs::read(d.path().join("etc/ssh/ssh_host_rsa_key")).unwrap(),
            b"x"
        );
        assert!(!d
            .path()
            .join("etc/ssl/private/ssl-cert-snakeoil.key")
            .exists());
    }

    #[test]
    fn without_systemd_the_keys_still_go_and_the_build_says_what_to_do() {
        let (d, image) = image_with(
            &["etc/ssh/ssh_host_rsa_key", "usr/bin/ssh-keygen"],
            &[("sbin/init", "/lib/sysvinit/init")],
        );
        let done = remove_and_arrange(&image, ["openssh-server"]).unwrap();
        assert_eq!(done.removed, ["/etc/ssh/ssh_host_rsa_key"]);
        assert!(done.units.is_empty());
        assert!(done.notes[0].contains("ssh-keygen -A"), "{:?}", done.notes);
        assert!(!d.path().join("etc/systemd").exists());
    }
}
