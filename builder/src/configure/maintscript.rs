//! What a maintainer script touches, read from its text: the shared state that decides which
//! scripts may run at the same time (see [`super::schedule`]), and whether a preinst does
//! anything at all on a fresh install.
//!
//! The reading is deliberately coarse and errs one way: a command name anywhere in the text
//! (a comment included) claims its resource, so a misread costs parallelism, never
//! correctness of the order. Commands not listed here only touch state of their own package
//! (files it ships, directories under its own name), which is what lets scripts overlap.

use std::collections::BTreeSet;

/// Commands and the shared state they read or write.
///
/// - `debconf`: the debconf database (`/var/cache/debconf/*.dat`); its frontend refuses a
///   second writer ("config.dat is locked by another process").
/// - `accounts`: /etc/passwd, group, shadow, gshadow; ids are handed out in call order, and
///   `chown`/`chgrp` by name read what earlier scripts added.
/// - `shells`: /etc/shells and /var/lib/shells.state (line order is call order).
/// - `alternatives`: /etc/alternatives and /var/lib/dpkg/alternatives.
/// - `services`: sysv-rc enablement (rc?.d links, ordered across services by insserv on older
///   suites). `deb-systemd-helper` and `systemctl` are not listed: they keep their state per
///   unit (/var/lib/systemd/deb-systemd-helper-enabled/UNIT.dsh-also, the unit's own links).
/// - `ldconfig`: /etc/ld.so.cache.
/// - `pam`: /etc/pam.d/common-* written by pam-auth-update from every package's profile.
/// - `certificates`: /etc/ssl/certs.
/// - `statoverride`: /var/lib/dpkg/statoverride, which `dpkg-statoverride` reads and rewrites
///   whole (src/statoverride/main.c: it reads no other part of the dpkg database, but maps
///   user and group names, hence also `accounts`).
/// - `triggers`: /var/lib/dpkg/triggers/Unincorp, to which `dpkg-trigger` adds a line (its
///   order is call order, and dpkg processes the triggers in that order); it looks up only
///   the calling package itself in the status file, which lists every package from the start.
/// - `diversions`: /var/lib/dpkg/diversions, which `dpkg-divert` rewrites and `ucf`/`ucfr`
///   read (`dpkg-divert --listpackage`); the file lists dpkg-divert also reads never change
///   during configure.
/// - `ucf`: ucf's own records (/var/lib/ucf: hashfile, registry).
///
/// `ucf` also claims `debconf`: it always sources debconf's confmodule when run as root
/// (bookworm's /usr/bin/ucf, "Start up debconf") and loads its templates into the database, so it starts
/// a frontend of its own when the calling script has none.
const RESOURCES: &[(&str, &str)] = &[
    ("confmodule", "debconf"),
    ("debconf", "debconf"),
    ("debconf-set-selections", "debconf"),
    ("db_get", "debconf"),
    ("db_input", "debconf"),
    ("adduser", "accounts"),
    ("addgroup", "accounts"),
    ("deluser", "accounts"),
    ("delgroup", "accounts"),
    ("useradd", "accounts"),
    ("groupadd", "accounts"),
    ("usermod", "accounts"),
    ("groupmod", "accounts"),
    ("userdel", "accounts"),
    ("groupdel", "accounts"),
    ("update-passwd", "accounts"),
    ("shadowconfig", "accounts"),
    ("pwconv", "accounts"),
    ("grpconv", "accounts"),
    ("chpasswd", "accounts"),
    ("chfn", "accounts"),
    ("chsh", "accounts"),
    ("systemd-sysusers", "accounts"),
    ("chown", "accounts"),
    ("chgrp", "accounts"),
    ("getent", "accounts"),
    ("add-shell", "shells"),
    ("remove-shell", "shells"),
    ("update-shells", "shells"),
    ("update-alternatives", "alternatives"),
    ("update-rc.d", "services"),
    ("invoke-rc.d", "services"),
    ("ldconfig", "ldconfig"),
    ("pam-auth-update", "pam"),
    ("update-ca-certificates", "certificates"),
    ("dpkg-statoverride", "statoverride"),
    ("dpkg-statoverride", "accounts"),
    ("dpkg-trigger", "triggers"),
    ("dpkg-divert", "diversions"),
    ("ucf", "debconf"),
    ("ucf", "diversions"),
    ("ucf", "ucf"),
    ("ucfr", "diversions"),
    ("ucfr", "ucf"),
    ("ucfq", "ucf"),
];

/// Commands that read the dpkg database's package states, which the
/// configure stage rewrites as packages become installed: a script calling one starts only
/// after every script before it, and sees exactly what a one-by-one run shows it.
const READS_DPKG_DATABASE: &[&str] = &["dpkg-query"];

/// `dpkg` actions that do not read the database; any other use of `dpkg` is taken to read it.
const DPKG_PURE_ACTIONS: &[&str] = &[
    "--compare-versions",
    "--validate-version",
    "--print-architecture",
    "--print-foreign-architectures",
    "--assert-multi-arch",
    "--assert-versioned-provides",
];

/// What a script touches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Shared state (names as in [`RESOURCES`]).
    pub resources: BTreeSet<&'static str>,
    /// It reads the dpkg database.
    pub reads_dpkg_database: bool,
    /// It changes what every script uses, so nothing may run beside it: a diversion moves a
    /// file any package may own, and dash's postinst, diverting /bin/sh, removes and relinks
    /// the shell every other script is started with (`rm -f /bin/sh` then `mv`).
    pub runs_alone: bool,
}

/// Directories whose programs a script may name by full path.
const COMMAND_DIRS: &[&str] = &[
    "/bin/",
    "/sbin/",
    "/usr/bin/",
    "/usr/sbin/",
    "/usr/share/debconf/",
];

/// The words of a script that can name a command: bare words, and paths in the program
/// directories reduced to their file name. Other paths (`/var/lib/dpkg/info`) name no command.
fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/')))
        .filter(|w| !w.is_empty())
        .map(|w| {
            if !w.contains('/') {
                return w;
            }
            match COMMAND_DIRS.iter().find_map(|d| w.strip_prefix(d)) {
                Some(name) if !name.contains('/') => name,
                _ => "",
            }
        })
        .collect()
}

/// Reads a script (shell, perl, anything: only command names matter). A script that is not
/// UTF-8 is taken to touch everything.
pub fn profile(text: &[u8]) -> Profile {
    if std::str::from_utf8(text).is_err() {
        return Profile {
            resources: RESOURCES.iter().map(|&(_, r)| r).collect(),
            reads_dpkg_database: true,
            runs_alone: true,
        };
    }
    let words = words(std::str::from_utf8(text).unwrap_or(""));
    let mut p = Profile::default();
    for (i, w) in words.iter().enumerate() {
        for &(_, r) in RESOURCES.iter().filter(|(c, _)| c == w) {
            p.resources.insert(r);
        }
        if READS_DPKG_DATABASE.contains(w) {
            p.reads_dpkg_database = true;
        }
        if *w == "dpkg-divert" {
            p.runs_alone = true;
        }
        if *w == "dpkg" {
            // `dpkg` as a command takes an option first; "dpkg's" in prose does not.
            let action = words.get(i + 1).copied().unwrap_or("");
            if action.starts_with('-') && !DPKG_PURE_ACTIONS.contains(&action) {
                p.reads_dpkg_database = true;
            }
        }
    }
    if p.reads_dpkg_database {
        // A dpkg that opens the database for writing incorporates triggers/Unincorp; a
        // `dpkg-trigger` of a later script must not race it.
        p.resources.insert("triggers");
    }
    p
}

/// `dpkg-maintscript-helper` commands whose preinst action is guarded by a non-empty old
/// version (`[ "$1" = install -o "$1" = upgrade ] && [ -n "$2" ]`, dpkg's
/// scripts/dpkg-maintscript-helper.sh since 1.15.7), so on a fresh install they do nothing.
const HELPER_NOOP_ON_INSTALL: &[&str] = &[
    "rm_conffile",
    "mv_conffile",
    "symlink_to_dir",
    "dir_to_symlink",
];

/// True when a preinst does nothing for `preinst install` with no old version, the only way
/// kiln runs it: its only commands are `set -e` and `dpkg-maintscript-helper` calls of the
/// kinds above that pass the script's arguments on (`-- "$@"`). Such preinsts are skipped;
/// running them costs a helper start-up under qemu per line (tzdata has 16).
pub fn preinst_is_noop_on_install(text: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let mut lines = text.lines();
    let shells = ["#!/bin/sh", "#!/bin/sh -e", "#! /bin/sh", "#! /bin/sh -e"];
    if !lines.next().is_some_and(|l| shells.contains(&l.trim())) {
        return false;
    }
    let mut any_helper = false;
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line == "set -e" {
            continue;
        }
        // The arguments must be plain words: nothing the shell would expand or chain.
        let Some(head) = line.strip_suffix(r#" -- "$@""#) else {
            return false;
        };
        let mut w = head.split_whitespace();
        let ok = w.next() == Some("dpkg-maintscript-helper")
            && w.next()
                .is_some_and(|c| HELPER_NOOP_ON_INSTALL.contains(&c))
            && !head.contains(|c: char| ";&|`$><(){}\"'*?[]".contains(c));
        if !ok {
            return false;
        }
        any_helper = true;
    }
    any_helper
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_claim_their_resources() {
        let p = profile(
            b"#!/bin/sh\nset -e\n. /usr/share/debconf/confmodule\nif ! getent passwd _apt >/dev/null; then\n  adduser --system _apt\nfi\ndeb-systemd-helper unmask apt-daily.timer\ninvoke-rc.d cron restart\ndpkg --compare-versions \"$2\" lt 1.0 || true\n",
        );
        assert_eq!(
            p.resources,
            BTreeSet::from(["debconf", "accounts", "services"])
        );
        assert!(!p.reads_dpkg_database);
    }

    #[test]
    fn database_readers_are_recognised() {
        for script in [
            &b"if dpkg -s foo >/dev/null; then :; fi\n"[..],
            b"/usr/bin/dpkg-query -W -f='${Version}' libc6\n",
        ] {
            let p = profile(script);
            assert!(p.reads_dpkg_database, "{}", String::from_utf8_lossy(script));
            // A reader may be a dpkg that incorporates triggers/Unincorp: ordered with dpkg-trigger.
            assert!(p.resources.contains("triggers"));
        }
        assert!(!profile(b"dpkg --validate-version -- 1.0\ndpkg-maintscript-helper rm_conffile /etc/x 1.0~ -- \"$@\"\n").reads_dpkg_database);
    }

    #[test]
    fn trigger_and_statoverride_calls_claim_their_files_not_the_whole_database() {
        // ca-certificates' postinst: these kept a 40 s script waiting for every earlier one.
        let p = profile(b"elif ! dpkg-statoverride --list /usr/local/share/ca-certificates >/dev/null; then\ndpkg-trigger --no-await update-ca-certificates\n");
        assert_eq!(
            p.resources,
            // (the trigger's name is also a command's: the coarse reading claims it too)
            BTreeSet::from(["statoverride", "accounts", "triggers", "certificates"])
        );
        assert!(!p.reads_dpkg_database);
    }

    #[test]
    fn diversions_and_ucf_claim_their_files_and_ucf_debconf() {
        let p = profile(b"dpkg-divert --package dash --add /bin/sh\n");
        assert_eq!(p.resources, BTreeSet::from(["diversions"]));
        assert!(p.runs_alone && !p.reads_dpkg_database);
        // chrony's postinst runs ucf without sourcing debconf itself.
        let p = profile(b"ucf --three-way /usr/share/chrony/chrony.conf /etc/chrony/chrony.conf\nucfr chrony /etc/chrony/chrony.conf\n");
        assert_eq!(
            p.resources,
            BTreeSet::from(["debconf", "diversions", "ucf"])
        );
        assert!(!p.reads_dpkg_database);
    }

    #[test]
    fn plain_file_work_claims_nothing() {
        let p = profile(b"#!/bin/sh\nset -e\nmkdir -p /var/lib/foo\nchmod 0755 /var/lib/foo\nln -sf ../foo /usr/share/doc/bar\nadmindir=/var/lib/dpkg\nwarning \"going behind dpkg's back\"\nls /usr/lib/adduser/x /etc/dpkg/origins\n");
        assert_eq!(p, Profile::default());
    }

    #[test]
    fn helper_only_preinsts_are_noops_on_install() {
        assert!(preinst_is_noop_on_install(
            b"#!/bin/sh\nset -e\n# Automatically added by dh_installdeb/13.11.4\ndpkg-maintscript-helper rm_conffile /etc/cron.daily/passwd 1:4.7-2\\~ -- \"$@\"\n# End automatically added section\n"
        ));
        assert!(preinst_is_noop_on_install(
            b"#!/bin/sh\nset -e\ndpkg-maintscript-helper dir_to_symlink /usr/share/zoneinfo/posix/US ../US 2022g-1\\~ -- \"$@\"\n"
        ));
        for busy in [
            &b"#!/bin/sh\nset -e\ndpkg-maintscript-helper rm_conffile /etc/x 1.0 -- \"$@\"\nmkdir /x\n"[..],
            b"#!/bin/sh\nset -e\ndpkg-maintscript-helper supports rm_conffile -- \"$@\"\n",
            b"#!/bin/sh\nset -e\ndpkg-maintscript-helper rm_conffile /etc/x 1.0 -- install 1.0\n",
            b"#!/bin/sh\nset -e\ndpkg-maintscript-helper rm_conffile /etc/x 1.0 -- \"$@\" && rm -rf /etc\n",
            b"#!/bin/sh\nset -e\ndpkg-maintscript-helper rm_conffile $(rm -rf /) -- \"$@\"\n",
            b"#!/bin/bash\ndpkg-maintscript-helper rm_conffile /etc/x 1.0 -- \"$@\"\n",
            b"#!/bin/sh\nset -e\n",
            b"\xff\xfe",
        ] {
            assert!(
                !preinst_is_noop_on_install(busy),
                "{}",
                String::from_utf8_lossy(busy)
            );
        }
    }
}
