//! The envrun binary end to end (natively, and under qemu-user when cargo runs the tests for an
//! ARM target): a registry in a temporary directory, environments whose executables are
//! symlinks to the host's /bin/sh, as a venv's python3 is a symlink to the system interpreter.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct World {
    _dir: tempfile_free::TempDir,
    registry: PathBuf,
    root: PathBuf,
}

/// A tiny self-cleaning temporary directory (envrun has no dependencies, not even for tests).
mod tempfile_free {
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn world(tag: &str) -> World {
    let root = std::env::temp_dir().join(format!("envrun-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let registry = root.join("envrun.d");
    std::fs::create_dir_all(&registry).unwrap();
    for name in ["telemetry", "arm-ctl"] {
        let bin = root.join("envs").join(name).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink("/bin/sh", bin.join("sh")).unwrap();
        std::fs::write(bin.join("data.txt"), "not executable").unwrap();
        std::fs::write(
            registry.join(format!("{name}.env")),
            format!("prefix={}\n", root.join("envs").join(name).display()),
        )
        .unwrap();
    }
    World {
        _dir: tempfile_free::TempDir(root.clone()),
        registry,
        root,
    }
}

fn envrun(w: &World, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_envrun"))
        .args(args)
        .env("ENVRUN_REGISTRY", &w.registry)
        .env("PYTHONPATH", "/somewhere/else")
        .env("PYTHONHOME", "/usr/other")
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn lists_and_finds_executables() {
    let w = world("list");
    let o = envrun(&w, &["list"]);
    assert!(o.status.success(), "{}", err(&o));
    let listing = out(&o);
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(names, ["arm-ctl", "telemetry"]);
    let o = envrun(&w, &["which", "telemetry", "sh"]);
    assert_eq!(
        out(&o).trim(),
        w.root.join("envs/telemetry/bin/sh").display().to_string()
    );
}

#[test]
fn unknown_environments_and_executables_are_clear_errors() {
    let w = world("errors");
    let o = envrun(&w, &["run", "nope", "sh"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(
        err(&o).contains("no environment 'nope'") && err(&o).contains("known: arm-ctl, telemetry"),
        "{}",
        err(&o)
    );
    let o = envrun(&w, &["run", "telemetry", "python3"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(
        err(&o).contains("has no executable 'python3'"),
        "{}",
        err(&o)
    );
    let o = envrun(&w, &["run", "telemetry", "data.txt"]);
    assert_eq!(o.status.code(), Some(126));
    let o = envrun(&w, &["run", "telemetry", "/bin/sh"]);
    assert_eq!(o.status.code(), Some(2));
    let o = envrun(&w, &["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("usage: envrun"), "{}", err(&o));
}

#[test]
fn run_replaces_itself_scrubs_python_variables_and_passes_flags_through() {
    let w = world("run");
    let child = Command::new(env!("CARGO_BIN_EXE_envrun"))
        .args([
            "run",
            "telemetry",
            "sh",
            "-c",
            "echo pid=$$; echo pp=${PYTHONPATH-unset} ph=${PYTHONHOME-unset}; echo argv0=$0; printf '[%s]' \"$@\"; echo; echo path=$PATH",
            "argv0-ignored",
            "--help",
            "two words",
            "-x",
        ])
        .env("ENVRUN_REGISTRY", &w.registry)
        .env("PYTHONPATH", "/somewhere/else")
        .env("PYTHONHOME", "/usr/other")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let text = out(&o);
    // The shell has envrun's pid: envrun exec'd it, no launcher process stays.
    assert!(text.contains(&format!("pid={pid}\n")), "{text}");
    assert!(text.contains("pp=unset ph=unset"), "{text}");
    assert!(text.contains("[--help][two words][-x]"), "{text}");
    let bin = w.root.join("envs/telemetry/bin");
    assert!(text.contains(&format!("path={}:", bin.display())), "{text}");
}

#[test]
fn works_from_a_shebang_line() {
    let w = world("shebang");
    let script = w.root.join("daemon");
    // Linux hands "run telemetry sh" to envrun as one argument, then the script's path.
    let envrun = Path::new(env!("CARGO_BIN_EXE_envrun"));
    let line = format!("#!{} run telemetry sh\n", envrun.display());
    assert!(line.len() < 127, "shebang too long for old kernels: {line}");
    std::fs::write(
        &script,
        format!("{line}echo script=$0; printf '<%s>' \"$@\"; echo\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = run_fresh_executable(
        Command::new(&script)
            .args(["--verbose", "a b"])
            .env("ENVRUN_REGISTRY", &w.registry),
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains(&format!("script={}\n<--verbose><a b>", script.display())),
        "{}",
        out(&o)
    );
}

/// Runs a file this process has just written. Another test thread may fork while the file's
/// write descriptor is open; the child holds it until it execs, and meanwhile the kernel refuses
/// to execute the file (ETXTBSY). That is the test harness racing itself, so wait it out: up
/// to 10 s, since under qemu-user on a loaded 2-core machine the child's way from fork to exec
/// is emulated and slow (2 s was once not enough in CI).
fn run_fresh_executable(command: &mut Command) -> Output {
    for _ in 0..1000 {
        match command.output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
    panic!("the script stayed busy for 10 s");
}
