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

/// The pairs of [`RESOURCES`] where the command only reads the resource: scripts that only
/// read a resource may run at the same time (neither changes what the other reads); one that
/// changes it still runs in order with every reader. `chown`, `chgrp` and `getent` look names
/// up in the account files; `dpkg-statoverride` maps the names it is given.
const READ_ONLY: &[(&str, &str)] = &[
    ("chown", "accounts"),
    ("chgrp", "accounts"),
    ("getent", "accounts"),
    ("dpkg-statoverride", "accounts"),
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
    /// The part of `resources` the script only reads ([`READ_ONLY`]).
    pub reads: BTreeSet<&'static str>,
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
            reads: BTreeSet::new(),
            reads_dpkg_database: true,
            runs_alone: true,
        };
    }
    let text = without_heredoc_prose(std::str::from_utf8(text).unwrap_or(""));
    let text = text.as_str();
    let words = words(text);
    let mut p = Profile::default();
    let state_queries = text
        .lines()
        .filter(|line| line.contains("dpkg-query"))
        .any(|line| !queries_only_fixed_fields(line));
    let mut written = BTreeSet::new();
    for (i, w) in words.iter().enumerate() {
        for &(c, r) in RESOURCES.iter().filter(|(c, _)| c == w) {
            p.resources.insert(r);
            if READ_ONLY.contains(&(c, r)) {
                p.reads.insert(r);
            } else {
                written.insert(r);
            }
        }
        if READS_DPKG_DATABASE.contains(w) && (*w != "dpkg-query" || state_queries) {
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
    // Read-only only where nothing in the script also writes it.
    p.reads.retain(|r| !written.contains(r));
    p
}

/// The script without the bodies of its here-documents, which are text for a person
/// (passwd's postinst tells the admin to run ``dpkg --configure passwd'' in one, and otherwise
/// waited for every script before it). A body line that can run a command (`$(`, a backtick)
/// is kept (an empty pair of backticks, TeX-style quoting, runs nothing), and so is every body
/// of a here-document whose marker is in backticks (Perl's command here-document).
fn without_heredoc_prose(text: &str) -> String {
    let mut kept = String::with_capacity(text.len());
    let mut until: Option<(String, bool)> = None;
    let lines: Vec<&str> = text.lines().collect();
    for (n, &line) in lines.iter().enumerate() {
        if let Some((marker, tabs)) = &until {
            let end = if *tabs {
                line.trim_start_matches('\t')
            } else {
                line
            };
            if end == marker {
                until = None;
            } else if line.contains("$(") || line.replace("``", "").contains('`') {
                kept.push_str(line);
                kept.push('\n');
            }
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
        // Only a here-document that ends: `<<` may also be a shift (`$((1 << n))`), and
        // misreading one must not hide the rest of the script.
        until = heredoc_marker(line).filter(|(marker, tabs)| {
            lines[n + 1..].iter().any(|l| {
                let l = if *tabs { l.trim_start_matches('\t') } else { l };
                l == marker
            })
        });
    }
    kept
}

/// The end marker of a here-document a line opens (`<<EOF`, `<<-'EOF'`, `<< "EOF"`), and
/// whether leading tabs are stripped (`<<-`); None for no here-document, a here-string
/// (`<<<`) or a command here-document (a marker in backticks).
fn heredoc_marker(line: &str) -> Option<(String, bool)> {
    let at = line.find("<<")?;
    let rest = &line[at + 2..];
    if rest.starts_with('<') {
        return None;
    }
    let (tabs, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start();
    if rest.starts_with('`') {
        return None;
    }
    let marker: String = rest
        .trim_start_matches(['\'', '"', '\\'])
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let word = marker.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    word.then_some((marker, tabs))
}

/// Fields of a package's status entry that no configure step changes: which packages exist
/// and what they were selected for. `db:Status-Want` is `install` for every package kiln
/// unpacks, whether unpacked or configured yet (dpkg-query(1), "db:Status-Want").
const FIXED_FIELDS: &[&str] = &[
    "db:Status-Want",
    "Package",
    "binary:Package",
    "Version",
    "Architecture",
    "Source",
];

/// Whether a line's `dpkg-query` call is `-W`/`--show` with a `-f`/`--showformat` that asks only
/// for [`FIXED_FIELDS`]: its answer is the same before and after any other script ran
/// (locales' postinst asks `${db:Status-Want}` of locales-all, and otherwise had its 20–30 s
/// wait for every script before it).
fn queries_only_fixed_fields(line: &str) -> bool {
    let Some(at) = line.find("dpkg-query") else {
        return true;
    };
    let call = &line[at..];
    // One call per line: anything chained after it could be a second query.
    if call.matches("dpkg-query").count() > 1 || line[..at].contains("dpkg-query") {
        return false;
    }
    let shows = call.contains(" -W ") || call.contains(" --show ");
    let format = call
        .split_once(" -f")
        .or_else(|| call.split_once(" --showformat="))
        .map(|(_, rest)| rest);
    let Some(format) = format else {
        return false;
    };
    let mut fields = Vec::new();
    let mut rest = format;
    while let Some(start) = rest.find("${") {
        let Some(end) = rest[start..].find('}') else {
            return false;
        };
        fields.push(&rest[start + 2..start + end]);
        rest = &rest[start + end + 1..];
    }
    shows && !fields.is_empty() && fields.iter().all(|f| FIXED_FIELDS.contains(f))
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
        // getent reads the account files, adduser writes them: a writer.
        assert!(p.reads.is_empty());
        assert!(!p.reads_dpkg_database);
    }

    #[test]
    fn scripts_that_only_look_names_up_only_read_the_accounts() {
        // xml-core's and ca-certificates' kind: chown/chgrp by name, dpkg-statoverride.
        let p = profile(
            b"chown root:root /etc/xml/catalog
chgrp staff /usr/local/share/x
dpkg-statoverride --list /x >/dev/null || true
",
        );
        assert_eq!(p.resources, BTreeSet::from(["accounts", "statoverride"]));
        assert_eq!(p.reads, BTreeSet::from(["accounts"]));
        // One adding a user as well: a writer.
        let p = profile(
            b"getent passwd foo || adduser --system foo
chown foo /var/lib/foo
",
        );
        assert!(p.reads.is_empty());
    }

    #[test]
    fn database_readers_are_recognised() {
        for script in [
            &b"if dpkg -s foo >/dev/null; then :; fi\n"[..],
            b"/usr/bin/dpkg-query -W -f='${Version} ${db:Status-Status}' libc6\n",
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
    fn a_query_of_fields_configure_never_changes_does_not_wait_for_earlier_scripts() {
        let locales = b"    if [ \"$(dpkg-query -W -f='${db:Status-Want}' locales-all 2>/dev/null)\" = 'install' ] ; then\n";
        assert!(!profile(locales).reads_dpkg_database);
        for stateful in [
            &b"dpkg-query -W -f='${db:Status-Abbrev}' foo\n"[..],
            b"dpkg-query -W -f='${Version} ${Status}' foo\n",
            b"dpkg-query -l foo\n",
            b"dpkg-query -W foo\n",
            b"dpkg-query -W -f='${Version}' a; dpkg-query -s b\n",
            b"dpkg-query -W -f='${Version}' a\ndpkg-query -L b\n",
        ] {
            assert!(
                profile(stateful).reads_dpkg_database,
                "{}",
                String::from_utf8_lossy(stateful)
            );
        }
    }

    #[test]
    fn here_document_prose_names_no_command_but_a_substitution_in_one_does() {
        let passwd = b"if ! getent group shadow | grep -q '^shadow:[^:]*:42'\nthen\n\tgroupadd -g 42 shadow || (\n\t\tcat <<EOF\nPlease correct this problem and reconfigure with ``dpkg --configure passwd''.\nEOF\n\t\texit 1\n\t)\nfi\n";
        let p = profile(passwd);
        assert!(!p.reads_dpkg_database);
        assert_eq!(p.resources, BTreeSet::from(["accounts"]));
        // After the marker, words count again; `<<-` ends at a tab-indented marker.
        assert!(
            profile(b"cat <<-'END'\n\tdpkg-query -l x\n\tEND\ndpkg -s x\n").reads_dpkg_database
        );
        assert!(!profile(b"cat <<-'END'\n\tdpkg -s x\n\tEND\n").reads_dpkg_database);
        for runs in [
            &b"cat <<EOF\nversion: $(dpkg-query -W -f='${Status}' x)\nEOF\n"[..],
            b"cat <<EOF\nversion: `dpkg -s x`\nEOF\n",
            b"print <<`CMD`;\ndpkg -s x\nCMD\n",
            b"x=$(cat <<<\"$y\")\ndpkg -s x\n",
            b"mask=$((1 << 3))\ndpkg -s x\n3\n",
            b"mask=$((1 << n))\ndpkg -s x\n",
        ] {
            assert!(
                profile(runs).reads_dpkg_database,
                "{}",
                String::from_utf8_lossy(runs)
            );
        }
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
