//! The command line as a person meets it: the same spelling of `-C/--directory` and
//! `-o/--output` in every command that takes them, man pages that `man` renders, and a bash
//! completion script that bash loads and that completes commands and options.

use std::process::Command;

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("kiln runs")
}

fn help(command: &[&str]) -> String {
    let mut args = command.to_vec();
    args.push("--help");
    let o = kiln(&args);
    assert!(o.status.success(), "{command:?}");
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn directory_and_output_are_spelled_the_same_everywhere() {
    for command in [&["lock"][..], &["build"]] {
        assert!(
            help(command).contains("-C, --directory <DIR>"),
            "{command:?}"
        );
    }
    for command in [
        &["build"][..],
        &["keygen"],
        &["export"],
        &["cert", "ca"],
        &["cert", "issue"],
        &["manpages"],
    ] {
        assert!(help(command).contains("-o, --output <"), "{command:?}");
    }
}

#[test]
fn man_pages_render_with_man() {
    let dir = tempfile::tempdir().unwrap();
    let o = kiln(&["manpages", "-o", dir.path().to_str().unwrap()]);
    assert!(o.status.success());
    for page in [
        "kiln.1",
        "kiln-build.1",
        "kiln-verify.1",
        "kiln-cert-issue.1",
    ] {
        assert!(dir.path().join(page).is_file(), "{page}");
    }
    let man = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("kiln-build.1"))
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output()
        .expect("man runs (man-db, from ci/setup)");
    assert!(man.status.success(), "{man:?}");
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(
        text.contains("NAME") && text.contains("kiln-build"),
        "{text}"
    );
    assert!(text.contains("-C, --directory <DIR>"), "{text}");
    assert!(text.contains("--offline"), "{text}");
    let top = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("kiln.1"))
        .env("MANPAGER", "cat")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    for command in ["build", "verify", "export", "flash", "completions"] {
        assert!(
            text.contains(&format!("kiln-{command}(1)")),
            "{command}: {text}"
        );
    }

    // A directory that cannot be made: a one-line reason, exit 2.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let o = kiln(&["manpages", "-o", blocker.join("man").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("kiln: error: ") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn bash_completes_commands_and_options() {
    let o = kiln(&["completions", "bash"]);
    assert!(o.status.success());
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), &o.stdout).unwrap();
    // What bash does on TAB: set COMP_WORDS/COMP_CWORD and call the registered function.
    let complete = |line: &[&str]| -> Vec<String> {
        let words = line
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let probe = format!(
            "source '{}'\nf=$(complete -p kiln | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p')\nCOMP_WORDS=({words}); COMP_CWORD={}; COMP_LINE='{}'; COMP_POINT=${{#COMP_LINE}}\n\"$f\" kiln '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.path().display(),
            line.len() - 1,
            line.join(" "),
            line[line.len() - 1],
            line[line.len() - 2],
        );
        let o = Command::new("bash").arg("-c").arg(probe).output().unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let commands = complete(&["kiln", "ver"]);
    assert_eq!(commands, ["verify"], "{commands:?}");
    let options = complete(&["kiln", "build", "--di"]);
    assert_eq!(options, ["--directory"], "{options:?}");
    let shells = complete(&["kiln", "completions", "fi"]);
    assert_eq!(shells, ["fish"], "{shells:?}");
}
