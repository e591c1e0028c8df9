//! Running target programs inside the staging root: a chroot in a mount namespace of its own,
//! with /proc, /sys, a minimal /dev and tmpfs /tmp and /run, foreign code executed by qemu-user
//! through binfmt_misc, and an environment built from scratch (nothing of the host's PIP_*,
//! PYTHON*, proxy or locale settings leaks in).
//!
//! The mounts exist only in the child's namespace and vanish with it, so nothing stays mounted
//! in the staging root afterwards (copying or packing it can never walk into the host's /proc).

use crate::arch::DebianArch;
use std::ffi::CString;
use std::io;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// Why target code cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No usable binfmt_misc handler for the target.
    #[error("cannot run {arch} programs: {reason}. Install and register qemu-user: `apt-get install qemu-user-static binfmt-support` (and, in a container, `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && update-binfmts --enable`)")]
    NoEmulator {
        /// Target architecture.
        arch: DebianArch,
        /// What is missing.
        reason: String,
    },
    /// Starting the sandboxed process failed.
    #[error("cannot start {program} in {root}: {reason}")]
    Spawn {
        /// What was run.
        program: String,
        /// The root.
        root: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Checks that the host can execute the architecture's binaries inside a chroot: natively, or
/// through a binfmt_misc handler with the F flag (the interpreter opened at registration, so it
/// need not exist inside the chroot).
fn check_emulation(arch: DebianArch) -> Result<(), SandboxError> {
    let host_native = matches!(
        (std::env::consts::ARCH, arch),
        ("x86_64", DebianArch::Amd64) | ("aarch64", DebianArch::Arm64)
    );
    if host_native {
        return Ok(());
    }
    let Some(name) = arch.qemu_binfmt_name() else {
        return Err(SandboxError::NoEmulator {
            arch,
            reason: "no emulator is known for it".into(),
        });
    };
    let path = Path::new("/proc/sys/fs/binfmt_misc").join(name);
    let text = std::fs::read_to_string(&path).map_err(|_| SandboxError::NoEmulator {
        arch,
        reason: format!(
            "binfmt_misc has no {name} handler ({} is missing)",
            path.display()
        ),
    })?;
    if !text.lines().any(|l| l.trim() == "enabled") {
        return Err(SandboxError::NoEmulator {
            arch,
            reason: format!("the {name} binfmt handler is disabled"),
        });
    }
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap_or("")
        .trim()
        .to_string();
    if !flags.contains('F') {
        return Err(SandboxError::NoEmulator {
            arch,
            reason: format!(
                "the {name} binfmt handler lacks the F (fix-binary) flag, so it cannot run inside a chroot (flags: '{flags}')"
            ),
        });
    }
    Ok(())
}

/// The fixed environment of everything run in the sandbox. Maintainer scripts see a plain,
/// non-interactive Debian system; the host's variables are not inherited.
fn base_environment(source_date_epoch: u64) -> Vec<(String, String)> {
    vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), "/root".into()),
        ("LC_ALL".into(), "C".into()),
        ("LANG".into(), "C".into()),
        ("DEBIAN_FRONTEND".into(), "noninteractive".into()),
        ("DEBCONF_NONINTERACTIVE_SEEN".into(), "true".into()),
        ("DEBCONF_NOWARNINGS".into(), "yes".into()),
        ("SOURCE_DATE_EPOCH".into(), source_date_epoch.to_string()),
        ("TZ".into(), "UTC".into()),
    ]
}

/// What a sandboxed program did: its exit status and its standard output and error, merged
/// in the order it wrote them (so a failing script's messages stay next to their context).
#[derive(Debug)]
pub struct Ran {
    /// Exit status.
    pub status: ExitStatus,
    /// stdout and stderr, interleaved.
    pub output: Vec<u8>,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// A prepared chroot.
pub struct Sandbox {
    root: PathBuf,
    env: Vec<(String, String)>,
    shared: Option<PathBuf>,
}

/// Where a sandbox's shared host directory appears inside it ([`Sandbox::share`]).
pub const SHARED_DIR: &str = "/run/kiln";

struct Mount {
    source: CString,
    target: CString,
    fstype: CString,
    flags: libc::c_ulong,
    data: CString,
}

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Device nodes of the minimal /dev: (name, major, minor).
const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

impl Sandbox {
    /// The one way to get a sandbox: over `root`, for programs of `arch`, refused when this
    /// machine cannot run them ([`check_emulation`]), with kiln's build environment dated
    /// `source_date_epoch` ([`base_environment`]) for every run.
    pub fn for_target(
        root: &Path,
        arch: DebianArch,
        source_date_epoch: u64,
    ) -> Result<Sandbox, SandboxError> {
        check_emulation(arch)?;
        Ok(Sandbox {
            root: root.to_path_buf(),
            env: base_environment(source_date_epoch),
            shared: None,
        })
    }

    /// The same sandbox with `key` set to `value` in every run (replacing what it had).
    pub fn with_env(mut self, key: &str, value: impl Into<String>) -> Sandbox {
        let value = value.into();
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.env.push((key.to_string(), value)),
        }
        self
    }

    /// The same sandbox with `dir` searched first on PATH.
    pub fn with_path_first(self, dir: &str) -> Sandbox {
        let path = self
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| format!("{dir}:{v}"))
            .unwrap_or_else(|| dir.to_string());
        self.with_env("PATH", path)
    }

    /// The same sandbox with the host directory `dir` bind-mounted at [`SHARED_DIR`] in every
    /// run: how a stand-in program hands kiln a request without writing into the image (the
    /// mount point lives in the run's own tmpfs /run, so the image is never touched).
    pub fn share(mut self, dir: &Path) -> Sandbox {
        self.shared = Some(dir.to_path_buf());
        self
    }

    /// The host path of the sandbox's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `program args` inside the chroot, capturing its output.
    pub fn run(
        &self,
        program: &str,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Result<Ran, SandboxError> {
        self.run_with_input(program, args, extra_env, &[])
    }

    /// Like [`Sandbox::run`], with `input` on the program's standard input.
    pub fn run_with_input(
        &self,
        program: &str,
        args: &[&str],
        extra_env: &[(&str, &str)],
        input: &[u8],
    ) -> Result<Ran, SandboxError> {
        let spawn_err = |reason: String| SandboxError::Spawn {
            program: program.to_string(),
            root: self.root.clone(),
            reason,
        };
        // The mount points must be directories of the image itself: a symlink there (a package
        // may ship one) would be followed by mount(2) on the host's side of the chroot.
        let top = crate::inroot::ImageRoot::open(&self.root)
            .and_then(|r| r.root_dir())
            .map_err(|e| spawn_err(e.to_string()))?;
        for dir in ["proc", "sys", "dev", "tmp", "run"] {
            match top.kind(dir).map_err(|e| spawn_err(e.to_string()))? {
                Some(crate::inroot::Kind::Dir) => {}
                None => {
                    top.make_dir(dir, None)
                        .map_err(|e| spawn_err(e.to_string()))?;
                }
                Some(_) => {
                    return Err(spawn_err(format!(
                        "/{dir} in the image is not a directory; the sandbox mounts a file system there"
                    )))
                }
            }
        }
        let root_c =
            cstr(self.root.as_os_str().as_bytes()).map_err(|e| spawn_err(e.to_string()))?;
        let at =
            |sub: &str| -> io::Result<CString> { cstr(self.root.join(sub).as_os_str().as_bytes()) };
        let mk = |source: &str,
                  target: &str,
                  fstype: &str,
                  flags: libc::c_ulong,
                  data: &str|
         -> io::Result<Mount> {
            Ok(Mount {
                source: cstr(source.as_bytes())?,
                target: at(target)?,
                fstype: cstr(fstype.as_bytes())?,
                flags,
                data: cstr(data.as_bytes())?,
            })
        };
        let nosuid = libc::MS_NOSUID | libc::MS_NODEV;
        let mounts = vec![
            mk("proc", "proc", "proc", nosuid | libc::MS_NOEXEC, "")
                .map_err(|e| spawn_err(e.to_string()))?,
            mk(
                "sysfs",
                "sys",
                "sysfs",
                nosuid | libc::MS_NOEXEC | libc::MS_RDONLY,
                "",
            )
            .map_err(|e| spawn_err(e.to_string()))?,
            mk("tmpfs", "dev", "tmpfs", libc::MS_NOSUID, "mode=755")
                .map_err(|e| spawn_err(e.to_string()))?,
            mk("tmpfs", "tmp", "tmpfs", nosuid, "mode=1777")
                .map_err(|e| spawn_err(e.to_string()))?,
            mk("tmpfs", "run", "tmpfs", nosuid, "mode=755")
                .map_err(|e| spawn_err(e.to_string()))?,
        ];
        let devices: Vec<(CString, libc::dev_t)> = DEVICES
            .iter()
            .map(|(n, maj, min)| Ok((at(&format!("dev/{n}"))?, libc::makedev(*maj, *min))))
            .collect::<io::Result<_>>()
            .map_err(|e| spawn_err(e.to_string()))?;
        let links: Vec<(CString, CString)> = [
            ("/proc/self/fd", "dev/fd"),
            ("/proc/self/fd/0", "dev/stdin"),
            ("/proc/self/fd/1", "dev/stdout"),
            ("/proc/self/fd/2", "dev/stderr"),
        ]
        .iter()
        .map(|(t, l)| Ok((cstr(t.as_bytes())?, at(l)?)))
        .collect::<io::Result<_>>()
        .map_err(|e| spawn_err(e.to_string()))?;
        let shm = at("dev/shm").map_err(|e| spawn_err(e.to_string()))?;
        let shared: Option<(CString, CString)> = match &self.shared {
            Some(dir) => Some((
                cstr(dir.as_os_str().as_bytes()).map_err(|e| spawn_err(e.to_string()))?,
                at(SHARED_DIR.trim_start_matches('/')).map_err(|e| spawn_err(e.to_string()))?,
            )),
            None => None,
        };
        let slash = cstr(b"/").map_err(|e| spawn_err(e.to_string()))?;

        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra_env.iter().copied())
            .stdin(if input.is_empty() {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .current_dir("/");
        let (reader, writer) = pipe().map_err(|e| spawn_err(e.to_string()))?;
        let writer2 = writer.try_clone().map_err(|e| spawn_err(e.to_string()))?;
        cmd.stdout(Stdio::from(writer)).stderr(Stdio::from(writer2));
        // SAFETY: runs in the forked child before exec; only async-signal-safe syscalls on
        // data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let check = |rc: libc::c_int| {
                    if rc == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                };
                check(libc::unshare(
                    libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC,
                ))?;
                check(libc::mount(
                    std::ptr::null(),
                    slash.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                for m in &mounts {
                    check(libc::mount(
                        m.source.as_ptr(),
                        m.target.as_ptr(),
                        m.fstype.as_ptr(),
                        m.flags,
                        m.data.as_ptr().cast(),
                    ))?;
                }
                for (path, dev) in &devices {
                    check(libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, *dev))?;
                    check(libc::chmod(path.as_ptr(), 0o666))?;
                }
                for (target, link) in &links {
                    check(libc::symlink(target.as_ptr(), link.as_ptr()))?;
                }
                check(libc::mkdir(shm.as_ptr(), 0o1777))?;
                if let Some((source, target)) = &shared {
                    // Inside the tmpfs just mounted on /run: nothing of the image changes.
                    check(libc::mkdir(target.as_ptr(), 0o755))?;
                    check(libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV,
                        std::ptr::null(),
                    ))?;
                }
                check(libc::chroot(root_c.as_ptr()))?;
                check(libc::chdir(slash.as_ptr()))?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| spawn_err(e.to_string()))?;
        // Close our copies of the pipe's write end, so reading ends when the child exits.
        drop(cmd);
        if let Some(mut stdin) = child.stdin.take() {
            // A program that exits without reading its input is its own failure, seen in its
            // exit status; a broken pipe here adds nothing.
            let _ = std::io::Write::write_all(&mut stdin, input);
        }
        let mut output = Vec::new();
        std::fs::File::from(reader)
            .read_to_end(&mut output)
            .map_err(|e| spawn_err(e.to_string()))?;
        let status = child.wait().map_err(|e| spawn_err(e.to_string()))?;
        Ok(Ran { status, output })
    }
}

/// Moves this process into a mount namespace of its own (with private propagation, so nothing
/// mounted here reaches the host), so the staging tmpfs of a build dies with the process even
/// when it is killed (SIGKILL, a CI time-out) and never stays mounted under the output
/// directory. Must run before the process starts any thread (unshare(2) refuses CLONE_NEWNS
/// while the filesystem context is shared). Returns false, changing nothing, when kiln may
/// not (not root); the build then simply has no tmpfs.
pub fn private_mount_namespace() -> bool {
    // SAFETY: called before any thread exists (main's first act for `kiln build`), so no other
    // thread shares the filesystem context that unshare changes.
    if unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.is_err() {
        return false;
    }
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::REC | rustix::mount::MountPropagationFlags::PRIVATE,
    )
    .is_ok()
}

/// A tmpfs mounted over a staging directory for the life of a build: unpacking, configuring
/// (dpkg fsyncs its database after every package) and packing then never wait for the disk.
/// Unmounted (lazily, so an open file cannot keep it) when dropped.
pub struct ScratchMount {
    target: PathBuf,
    mounted: bool,
}

impl ScratchMount {
    /// Mounts a tmpfs at `dir` when kiln may (it runs as root); otherwise the directory stays
    /// on disk, which is only slower.
    pub fn over(dir: &Path) -> ScratchMount {
        let mounted = rustix::mount::mount(
            "kiln-staging",
            dir,
            "tmpfs",
            rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
            c"mode=755",
        )
        .is_ok();
        ScratchMount {
            target: dir.to_path_buf(),
            mounted,
        }
    }

    /// Whether the tmpfs is in place.
    pub fn is_mounted(&self) -> bool {
        self.mounted
    }
}

impl Drop for ScratchMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(&self.target, rustix::mount::UnmountFlags::DETACH);
        }
    }
}
