//! Maintainer scripts run in an equivalent, faster form: a shell loop that starts programs per
//! item, which under qemu costs some 50 ms a start, changed so that it starts one process or
//! none, exactly where kiln can show the result is the same. The shipped script is put back as
//! soon as it has run; everything else in it, debconf included, runs as shipped.
//!
//! - locales' postinst (bullseye, bookworm and trixie alike) appends every locale of
//!   /usr/share/i18n/SUPPORTED not yet in /etc/locale.gen as `# LOCALE`, one `grep` per locale:
//!   about 500 programs, 20–25 s on the longest chain of a robot image's configure (locales
//!   waits for the debconf lock like chrony and openssh-server). The loop is replaced by one
//!   `mawk` doing the same matching: the loop's pattern `^[# ]*LOCALE *$` reads alike as a grep
//!   basic and an awk extended expression when the locale names hold only letters, digits,
//!   `_ . @ -` and spaces, which kiln checks first.
//! - ca-certificates' config script (which debconf runs from the postinst) tests each of the
//!   146 certificates against the deselected and the trusted lists with `(echo "$LIST" | grep
//!   -F -q -x "$crt")`, two subshells and two greps per certificate, 10 s under qemu. On a new
//!   image both lists are empty, and a whole-line match of a non-empty name against the one
//!   empty line `echo ""` prints can never succeed: each test is prefixed with the shell's
//!   built-in `test -n "$LIST" &&`, which decides the same without starting anything.
//!
//! Proven, not assumed: unit tests run the shipped and the faster text with the host's `sh`,
//! `grep` and `mawk` (on Debian's own SUPPORTED list; on empty and non-empty certificate lists)
//! and compare what they produce; CI builds the robot image once fully emulated
//! (`--emulate-all`, which runs every script as shipped) and requires the same digest.

use crate::inroot::{ImageRoot, InRootError, Kind};

/// A change kiln makes to one control member of one package before running it.
pub struct Rewrite {
    /// The package.
    pub package: &'static str,
    /// The member as dpkg files it in /var/lib/dpkg/info (`postinst`, `config`).
    pub member: &'static str,
    /// Each original text (which must occur exactly once) and what replaces it.
    pub edits: &'static [(&'static str, &'static str)],
    /// Whether the image is one where both forms give the same result.
    pub applies: fn(&ImageRoot) -> Result<bool, InRootError>,
}

/// locales' postinst: one `grep` per supported locale.
pub const LOCALE_GEN_LIST: Rewrite = Rewrite {
    package: "locales",
    member: "postinst",
    edits: &[(
        "        echo \"$SUPPORTED_LOCALES\" | while read locale ; do\n           if ! grep -q \"^[# ]*$locale *\\$\" $LG; then \n             echo \"# $locale\" >> $LG\n           fi\n        done\n",
        "        # kiln: the loop that ran one grep per locale, in one mawk (kiln's configure/rewrite.rs)\n        echo \"$SUPPORTED_LOCALES\" | /usr/bin/mawk -v lg=\"$LG\" '\n          BEGIN { n = 0; while ((getline line < lg) > 0) seen[n++] = line; close(lg) }\n          { pattern = \"^[# ]*\" $0 \" *$\"; found = 0\n            for (i = 0; i < n; i++) if (seen[i] ~ pattern) { found = 1; break }\n            if (!found) { print \"# \" $0 >> lg; seen[n++] = \"# \" $0 } }'\n",
    )],
    applies: locales_applies,
};

/// ca-certificates' config: two subshells and greps per certificate against lists that are
/// empty on a new image.
pub const CA_CERTIFICATES_LISTS: Rewrite = Rewrite {
    package: "ca-certificates",
    member: "config",
    edits: &[
        (
            "   if (echo \"$CERTS_DISABLED\" | grep -F -q -x \"$crt\") > /dev/null 2>&1; then\n",
            "   if test -n \"$CERTS_DISABLED\" && (echo \"$CERTS_DISABLED\" | grep -F -q -x \"$crt\") > /dev/null 2>&1; then\n",
        ),
        (
            "   elif (echo \"$CERTS_TRUST\" | grep -F -q -x \"$crt\") > /dev/null 2>&1; then\n",
            "   elif test -n \"$CERTS_TRUST\" && (echo \"$CERTS_TRUST\" | grep -F -q -x \"$crt\") > /dev/null 2>&1; then\n",
        ),
    ],
    applies: |_| Ok(true),
};

/// Every rewrite kiln knows.
pub const REWRITES: &[Rewrite] = &[LOCALE_GEN_LIST, CA_CERTIFICATES_LISTS];

/// The loop and its replacement agree when: mawk is in the image (unpacked; called by its own
/// path, since the `awk` alternative may not be made yet), every supported locale name holds
/// only characters that mean the same to grep and awk (and nothing `read` would alter), and
/// /etc/locale.gen is absent or ends with a newline (a last line without one would join the
/// first appended line, which the in-memory copy would not see).
fn locales_applies(image: &ImageRoot) -> Result<bool, InRootError> {
    if image.kind("/usr/bin/mawk")? != Some(Kind::File) {
        return Ok(false);
    }
    for list in [
        "/usr/share/i18n/SUPPORTED",
        "/usr/local/share/i18n/SUPPORTED",
    ] {
        match image.kind(list)? {
            None => continue,
            Some(Kind::File) => {}
            Some(_) => return Ok(false),
        }
        let Some(text) = image.read(list, 1 << 20)? else {
            return Ok(false);
        };
        if !supported_names_are_plain(&text) {
            return Ok(false);
        }
    }
    match image.kind("/etc/locale.gen")? {
        None => Ok(true),
        Some(Kind::File) => Ok(image
            .read("/etc/locale.gen", 16 << 20)?
            .is_some_and(|t| t.is_empty() || t.ends_with(b"\n"))),
        Some(_) => Ok(false),
    }
}

/// Whether every line the postinst keeps (`sed -e '/^[a-zA-Z]/!d' -e 's/ *$//g'`) holds only
/// letters, digits, `_ . @ -` and single inner spaces.
fn supported_names_are_plain(text: &[u8]) -> bool {
    text.split(|&b| b == b'\n')
        .filter(|line| line.first().is_some_and(u8::is_ascii_alphabetic))
        .all(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let end = line.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
            line[..end]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"_.@- ".contains(&b))
        })
}

/// The members of `package` that run in a faster form, with their new text: `member` gives a
/// member's shipped text by name.
pub fn faster_members<'a>(
    package: &str,
    member: impl Fn(&str) -> Option<&'a [u8]>,
    image: &ImageRoot,
) -> Result<Vec<(&'static str, Vec<u8>)>, InRootError> {
    let mut faster = Vec::new();
    for rewrite in REWRITES {
        if rewrite.package != package {
            continue;
        }
        let Some(Ok(text)) = member(rewrite.member).map(std::str::from_utf8) else {
            continue;
        };
        if let Some(new) = apply(rewrite, text) {
            if (rewrite.applies)(image)? {
                faster.push((rewrite.member, new.into_bytes()));
            }
        }
    }
    Ok(faster)
}

/// `text` with every edit of `rewrite` made, or None when an original is not there exactly once.
fn apply(rewrite: &Rewrite, text: &str) -> Option<String> {
    let mut text = text.to_string();
    for (original, faster) in rewrite.edits {
        if text.matches(original).count() != 1 {
            return None;
        }
        text = text.replacen(original, faster, 1);
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `script` with the host's `sh -c` and `env`; its standard output.
    fn sh(script: &str, env: &[(&str, &str)]) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `loop_text` with the host's shell the way locales' postinst does, on `lg`.
    fn run_loop(loop_text: &str, supported: &str, lg: &std::path::Path) {
        let script = format!(
            "set -e\nLG={lg}\nSUPPORTED_LOCALES=\"$(sed -e '/^[a-zA-Z]/!d' -e 's/ *$//g' {supported} | sort -u)\"\n{loop_text}",
            lg = lg.display()
        );
        sh(&script, &[("LC_ALL", "C")]);
    }

    #[test]
    fn the_locale_loop_and_its_replacement_write_the_same_file() {
        let tmp = tempfile::tempdir().unwrap();
        let supported = tmp.path().join("SUPPORTED");
        // Debian's own list (the host's locales package, installed by ci/setup), plus lines
        // the loop must treat alike: a name that is a prefix of another, one with `@`, a
        // comment, blank and indented lines.
        let mut list = std::fs::read_to_string("/usr/share/i18n/SUPPORTED")
            .expect("ci/setup installs locales on the build host");
        assert!(list.lines().count() > 400);
        list.push_str("# a comment\n\n  indented UTF-8\nen_US UTF-8\nen_US.UTF-8 UTF-8  \nsr_RS@latin UTF-8\n");
        std::fs::write(&supported, &list).unwrap();
        assert!(supported_names_are_plain(list.as_bytes()));
        let supported = supported.display().to_string();
        for start in [
            "\n",
            "\n# en_US.UTF-8 UTF-8\nde_DE.UTF-8 UTF-8\n#   fr_FR ISO-8859-1   \n",
        ] {
            let shipped = tmp.path().join("shipped.gen");
            let faster = tmp.path().join("faster.gen");
            std::fs::write(&shipped, start).unwrap();
            std::fs::write(&faster, start).unwrap();
            let (original, fast) = LOCALE_GEN_LIST.edits[0];
            run_loop(original, &supported, &shipped);
            run_loop(&fast.replace("/usr/bin/mawk", "mawk"), &supported, &faster);
            let a = std::fs::read(&shipped).unwrap();
            assert_eq!(a, std::fs::read(&faster).unwrap());
            assert!(a.len() > 5000, "the list was written");
        }
    }

    #[test]
    fn the_rewrite_applies_only_where_it_is_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        let image = ImageRoot::open(tmp.path()).unwrap();
        let original = LOCALE_GEN_LIST.edits[0].0;
        let script = format!("#!/bin/sh\nset -e\n{original}exit 0\n");
        let faster_postinst = |package: &str, text: &[u8], image: &ImageRoot| {
            faster_members(package, |m| (m == "postinst").then_some(text), image)
                .map(|v| v.into_iter().next().map(|(_, t)| t))
        };
        // No mawk: the script runs as shipped.
        assert!(faster_postinst("locales", script.as_bytes(), &image)
            .unwrap()
            .is_none());
        image.write("/usr/bin/mawk", b"", 0o755).unwrap();
        image
            .write("/usr/share/i18n/SUPPORTED", b"en_US.UTF-8 UTF-8\n", 0o644)
            .unwrap();
        let faster = faster_postinst("locales", script.as_bytes(), &image)
            .unwrap()
            .unwrap();
        let faster = String::from_utf8(faster).unwrap();
        assert!(faster.contains("/usr/bin/mawk") && !faster.contains("grep -q"));
        assert!(faster.starts_with("#!/bin/sh\nset -e\n") && faster.ends_with("exit 0\n"));
        // Another package, a changed loop, a name grep and awk read differently, or a
        // locale.gen without a final newline: as shipped.
        assert!(faster_postinst("other", script.as_bytes(), &image)
            .unwrap()
            .is_none());
        let twice = format!("{script}{original}");
        assert!(faster_postinst("locales", twice.as_bytes(), &image)
            .unwrap()
            .is_none());
        image
            .write("/usr/share/i18n/SUPPORTED", b"x+y UTF-8\n", 0o644)
            .unwrap();
        assert!(faster_postinst("locales", script.as_bytes(), &image)
            .unwrap()
            .is_none());
        image
            .write("/usr/share/i18n/SUPPORTED", b"en_US.UTF-8 UTF-8\n", 0o644)
            .unwrap();
        image.write("/etc/locale.gen", b"en_US", 0o644).unwrap();
        assert!(faster_postinst("locales", script.as_bytes(), &image)
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_certificate_tests_decide_alike_without_starting_grep() {
        // The loop of ca-certificates' config (as bullseye, bookworm and trixie ship it),
        // around both forms of the two tests, on empty and non-empty lists.
        let body = |disabled_test: &str, trust_test: &str| {
            format!(
                r#"set -e
crts="mozilla/A.crt mozilla/B_1.crt mozilla/C.crt"
CERTS_AVAILABLE=""; CERTS_ENABLED=""; CERTS_NEW=""
  for crt in $crts
  do
   if test "$CERTS_AVAILABLE" = ""; then
     CERTS_AVAILABLE="$crt"
   else
     CERTS_AVAILABLE="$CERTS_AVAILABLE, $crt"
   fi
{disabled_test}     : # echo "I: ignore $crt"
{trust_test}     if test "$CERTS_ENABLED" = ""; then
       CERTS_ENABLED="$crt"
     else
       CERTS_ENABLED="$CERTS_ENABLED, $crt"
     fi
   else
     if test "$trust_new" = "yes"; then
       CERTS_ENABLED="$CERTS_ENABLED, $crt"
     elif test "$trust_new" = "ask"; then
       CERTS_NEW="$CERTS_NEW, $crt"
     fi
   fi
  done
echo "$CERTS_AVAILABLE|$CERTS_ENABLED|$CERTS_NEW"
"#
            )
        };
        let [(disabled, disabled_fast), (trust, trust_fast)] = CA_CERTIFICATES_LISTS.edits else {
            panic!("two edits");
        };
        let shipped = body(disabled, trust);
        let faster = body(disabled_fast, trust_fast);
        let run = |script: &str, disabled: &str, trust: &str, trust_new: &str| {
            sh(
                script,
                &[
                    ("CERTS_DISABLED", disabled),
                    ("CERTS_TRUST", trust),
                    ("trust_new", trust_new),
                ],
            )
        };
        for (disabled, trust) in [
            ("", ""),
            ("mozilla/B_1.crt", ""),
            ("", "mozilla/C.crt\nmozilla/A.crt"),
            ("mozilla/A.crt", "mozilla/A.crt\nmozilla/B_1.crt"),
        ] {
            for trust_new in ["yes", "ask", "no"] {
                assert_eq!(
                    run(&shipped, disabled, trust, trust_new),
                    run(&faster, disabled, trust, trust_new),
                    "disabled {disabled:?}, trusted {trust:?}, trust_new {trust_new}"
                );
            }
        }
        // The two tests are found once each in the shipped config.
        let config = format!("#!/bin/sh\n{shipped}");
        let tmp = tempfile::tempdir().unwrap();
        let image = ImageRoot::open(tmp.path()).unwrap();
        let faster_config = faster_members(
            "ca-certificates",
            |m| (m == "config").then_some(config.as_bytes()),
            &image,
        )
        .unwrap();
        assert_eq!(faster_config.len(), 1);
        assert_eq!(faster_config[0].0, "config");
        assert!(
            String::from_utf8_lossy(&faster_config[0].1).contains("test -n \"$CERTS_TRUST\" &&")
        );
    }
}
