//! The `kiln` command line: the contract CI scripts and people rely on (DESIGN.md).
//! Exit codes: 0 success, then the one table of [`kiln::exit`]: 1 the input is wrong, 2 kiln
//! could not run. Typed errors carry their own code ([`failed`]).

use clap::{Parser, Subcommand};
use kiln::build::{self, BuildError, BuildOptions};
use kiln::check::report::{render, summary, Format};
use kiln::check::{check_image, CheckOptions};
use kiln::exit::{Classified, Exit};
use kiln::fetch::Cache;
use kiln::image::ImageTree;
use kiln::pack::LayerCompression;
use kiln::recipe::Board;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Fires signed, reproducible Debian firmware images for ARM robots"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Resolve the recipe against the suite's signed index and write kiln.lock.
    Lock {
        /// Recipe directory (holding kiln.toml).
        #[arg(short = 'C', long = "directory", default_value = ".")]
        dir: PathBuf,
    },
    /// Lock (unless --locked), fetch, compose and pack the image into OUT/oci.
    Build {
        /// Recipe directory (holding kiln.toml).
        #[arg(short = 'C', long = "directory", default_value = ".")]
        dir: PathBuf,
        /// Fail unless kiln.lock exists and matches the recipe.
        #[arg(long)]
        locked: bool,
        /// Use no network: build from kiln.lock and the cache.
        #[arg(long)]
        offline: bool,
        /// Output directory.
        #[arg(short = 'o', long = "output", default_value = "out")]
        out: PathBuf,
        /// Layer compression.
        #[arg(long, value_enum, default_value = "zstd")]
        compression: LayerCompression,
        /// Cache directory (default: $KILN_CACHE_DIR, $XDG_CACHE_HOME/kiln or ~/.cache/kiln).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Print each stage's wall time to stderr.
        #[arg(long)]
        timings: bool,
        /// Maintainer scripts run at once (default: the number of CPUs; the image is the same
        /// for every value).
        #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
        /// Run every generator the maintainer scripts call under qemu, none natively (slower;
        /// the image is the same: CI builds this way once to prove it).
        #[arg(long)]
        emulate_all: bool,
    },
    /// Make an ECDSA P-256 release key pair: KEYFILE (PKCS#8 PEM, 0600), KEYFILE.der, KEYFILE.pub.
    Keygen {
        /// Where the private key goes.
        #[arg(short = 'o', long = "output")]
        out: PathBuf,
    },
    /// Sign the image in OUT/oci (cosign-compatible signature, also an OCI 1.1 referrer).
    Sign {
        /// Output directory of `kiln build` (the layout is OUT/oci).
        out: PathBuf,
        /// Private key (PKCS#8 PEM or DER, mode 0600).
        #[arg(
            long,
            required_unless_present = "sign_command",
            conflicts_with = "sign_command"
        )]
        key: Option<PathBuf>,
        /// Sign through this command instead (sh -c; payload on stdin, digest in
        /// KILN_SIGN_DIGEST; prints the DER signature, raw or base64).
        #[arg(long)]
        sign_command: Option<String>,
    },
    /// Put a signed image into an OTA repository: an OCI archive and signed TUF metadata.
    Release {
        /// Output directory of `kiln build` (the layout is OUT/oci), signed with KEY.
        out: PathBuf,
        /// The release key (signs the TUF metadata; must have signed the image).
        #[arg(long)]
        key: PathBuf,
        /// The OTA repository (DIR/metadata, DIR/targets), created on the first release.
        #[arg(long)]
        to: PathBuf,
        /// Lowest version devices may still be given; older releases count as revoked.
        #[arg(long)]
        min_version: Option<String>,
        /// Days until targets, snapshot and timestamp expire.
        #[arg(long, default_value_t = 30)]
        expires_days: u64,
    },
    /// Verify offline: every blob, the signature, the board, no rollback (exit 1 if not).
    /// OUT is a build's output (or an OCI layout), or with --root an OTA repository.
    Verify {
        /// Output directory of `kiln build`, an OCI layout, or (with --root) a release repository.
        out: PathBuf,
        /// Pinned TUF root.json: verify OUT as an OTA repository made by `kiln release`.
        #[arg(long)]
        root: Option<PathBuf>,
        /// With --root: the release to check (TUF target name); default the newest.
        #[arg(long, requires = "root")]
        target: Option<String>,
        /// Trusted public key(s) (PEM); any one signature by them suffices.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        /// The device's compatible string, which the image must list.
        #[arg(long)]
        compatible: Option<String>,
        /// The version installed on the device; the image must be newer.
        #[arg(long)]
        installed_version: Option<String>,
        /// Output: one line, or every check as JSON.
        #[arg(long, value_enum, default_value = "line")]
        format: VerifyFormat,
    },
    /// Flatten an image into a tar, ext4, squashfs or partitioned disk image (with bmap).
    Export {
        /// Output directory of `kiln build`, or an OCI layout.
        out: PathBuf,
        /// What to write.
        #[arg(long, value_enum)]
        format: kiln::export::ExportFormat,
        /// The file to write (a disk export also writes FILE.bmap).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// The board file: its flash layout (required for disk; sizes ext4).
        #[arg(long)]
        board: Option<PathBuf>,
        /// Public key(s) the image must be signed by; checked before anything is written.
        #[arg(long)]
        key: Vec<PathBuf>,
        /// For rauc: the release private key that signs the bundle.
        #[arg(long, requires = "cert")]
        signing_key: Option<PathBuf>,
        /// For rauc: the release certificate over that key (PEM; further certificates in the
        /// file are included as the chain).
        #[arg(long, requires = "signing_key")]
        cert: Option<PathBuf>,
    },
    /// Write a signed image onto a block device (SD card, eMMC) and verify it by reading back.
    Flash {
        /// Output directory of `kiln build`, or an OCI layout (signed).
        image: PathBuf,
        /// The whole-disk block device (/dev/sdX, /dev/mmcblkN).
        device: PathBuf,
        /// Public key(s) the image must be signed by.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        /// The board file (its flash layout and max-device-size).
        #[arg(long)]
        board: PathBuf,
        /// Write to a device larger than the board's max-device-size.
        #[arg(long)]
        force: bool,
        /// Cache directory for the disk image (default: $KILN_CACHE_DIR, ~/.cache/kiln).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// X.509 certificates for RAUC: an offline CA, and release certificates it issues.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// Check every ELF file and script of an image against a board (exit 1 on errors).
    Check {
        /// A directory, a tar (optionally compressed) or an OCI image layout.
        path: PathBuf,
        /// The board file the image is for.
        #[arg(long)]
        board: PathBuf,
        /// Report format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Also start each Python env's interpreter under qemu-user (root, binfmt_misc) and
        /// check its sys.path (venv-sys-path); the image is unpacked in the cache directory.
        #[arg(long)]
        run_envs: bool,
        /// Cache directory for --run-envs (default: $KILN_CACHE_DIR, ~/.cache/kiln).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Print the shell completion script for SHELL (generated from these definitions).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (kiln.1 and one per command, kiln-build.1 ...) into a directory.
    Manpages {
        /// The directory to write them into (created if missing).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertAction {
    /// A self-signed CA certificate for KEY (from `kiln keygen`): the devices' RAUC keyring.
    Ca {
        /// The CA's private key.
        #[arg(long)]
        key: PathBuf,
        /// Subject, RFC 4514 ("CN=Robot Release CA,O=Example").
        #[arg(long, default_value = "CN=kiln release CA")]
        subject: String,
        /// Validity in days, from now.
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// The certificate file to write (PEM).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// A release certificate over a public key, issued by the CA.
    Issue {
        /// The CA's private key.
        #[arg(long)]
        ca_key: PathBuf,
        /// The CA's certificate.
        #[arg(long)]
        ca: PathBuf,
        /// The release public key (KEY.pub from `kiln keygen`).
        #[arg(long = "for")]
        public: PathBuf,
        /// Subject, RFC 4514.
        #[arg(long, default_value = "CN=kiln release")]
        subject: String,
        /// Validity in days, from now.
        #[arg(long, default_value_t = 730)]
        days: u32,
        /// The certificate file to write (PEM).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

/// Reports an error on one line and gives the exit code for it.
fn error_exit(e: impl std::fmt::Display, exit: Exit) -> ExitCode {
    eprintln!(
        "kiln: error: {}",
        kiln::transport::redact_userinfo(&e.to_string())
    );
    ExitCode::from(exit.code())
}

/// Reports a typed error on one line with the exit code its type says.
fn failed(e: &(impl std::fmt::Display + Classified)) -> ExitCode {
    error_exit(e, e.exit())
}

/// How `kiln verify` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum VerifyFormat {
    /// The one-line verdict.
    Line,
    /// Every check, as one JSON object.
    Json,
}

/// The OCI layout of an output directory (OUT/oci), or the path itself when it is a layout.
fn layout_of(out: &std::path::Path) -> PathBuf {
    if out.join("oci-layout").exists() {
        out.to_path_buf()
    } else {
        out.join("oci")
    }
}

/// `kiln keygen`: exit 0, or 2 when the files cannot be written.
fn run_keygen(out: &std::path::Path) -> ExitCode {
    let files = kiln::signing::keys::KeyFiles::for_base(out);
    match kiln::signing::keys::keygen(&files) {
        Ok(public) => {
            println!(
                "wrote {} (private, 0600), {} and {} (key sha256:{})",
                files.private_pem.display(),
                files.private_der.display(),
                files.public_pem.display(),
                kiln::signing::keys::fingerprint(&public)
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// `kiln sign`: exit 0, 1 when the layout is wrong, 2 when the key or command is unusable.
fn run_sign(
    out: &std::path::Path,
    key: Option<&std::path::Path>,
    command: Option<&str>,
) -> ExitCode {
    let signer: Box<dyn kiln::signing::sign::Signer> = match (key, command) {
        (Some(key), _) => match kiln::signing::keys::load_signing_key(key) {
            Ok(k) => Box::new(kiln::signing::sign::KeySigner(k)),
            Err(e) => return failed(&e),
        },
        (None, Some(cmd)) => Box::new(kiln::signing::sign::CommandSigner(cmd.to_string())),
        (None, None) => {
            eprintln!("kiln: error: give --key KEYFILE or --sign-command CMD");
            return ExitCode::from(Exit::CouldNotRun.code());
        }
    };
    let layout = layout_of(out);
    let _hold = match kiln::output::hold(&layout, kiln::output::Access::Write) {
        Ok(h) => h,
        Err(e) => return error_exit(format!("{}: {e}", out.display()), Exit::CouldNotRun),
    };
    match kiln::signing::sign::sign_layout(&layout, signer.as_ref()) {
        Ok(signed) => {
            for s in signed {
                println!("signed {} as {} ({})", s.image, s.tag, s.signature_manifest);
            }
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// `kiln verify`: exit 0 accepted, 1 refused, 2 could not run.
fn run_verify(
    out: &std::path::Path,
    root: Option<&std::path::Path>,
    target: Option<&str>,
    keys: &[PathBuf],
    compatible: Option<String>,
    installed_version: Option<String>,
    format: VerifyFormat,
) -> ExitCode {
    let mut opts = kiln::signing::verify::VerifyOptions {
        compatible,
        installed_version,
        ..Default::default()
    };
    for k in keys {
        match kiln::signing::keys::load_verifying_key(k) {
            Ok(k) => opts.keys.push(k),
            Err(e) => return failed(&e),
        }
    }
    let result = match root {
        Some(root) => kiln::signing::verify::verify_release(out, root, target, &opts, now()),
        None => {
            let layout = layout_of(out);
            let _hold = match kiln::output::hold(&layout, kiln::output::Access::Read) {
                Ok(h) => h,
                Err(e) => return error_exit(format!("{}: {e}", out.display()), Exit::CouldNotRun),
            };
            kiln::signing::verify::verify_layout(&layout, &opts)
        }
    };
    let v = match result {
        Ok(v) => v,
        Err(e) => return error_exit(e, Exit::CouldNotRun),
    };
    match format {
        VerifyFormat::Line => println!("{}", v.verdict()),
        VerifyFormat::Json => {
            let mut json = serde_json::to_value(&v).unwrap_or_default();
            json["verdict"] = serde_json::Value::String(v.verdict());
            println!("{json}");
        }
    }
    if v.accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(Exit::Refused.code())
    }
}

/// Refuses an image that is not signed by one of `keys` (exit 1), or whose keys cannot be
/// read (exit 2); prints the verdict of an accepted one to stderr.
fn require_signed(layout: &std::path::Path, keys: &[PathBuf]) -> Result<(), ExitCode> {
    let mut opts = kiln::signing::verify::VerifyOptions::default();
    for k in keys {
        opts.keys
            .push(kiln::signing::keys::load_verifying_key(k).map_err(|e| failed(&e))?);
    }
    let v = kiln::signing::verify::verify_layout(layout, &opts)
        .map_err(|e| error_exit(e, Exit::CouldNotRun))?;
    if !v.accepted {
        return Err(error_exit(v.verdict(), Exit::Refused));
    }
    eprintln!("kiln: {}", v.verdict());
    Ok(())
}

/// `kiln export`: exit 0, 1 when the image, its signature or the board is wrong, 2 when a
/// tool or the disk fails.
fn run_export(
    out: &std::path::Path,
    format: kiln::export::ExportFormat,
    output: &std::path::Path,
    board: Option<&std::path::Path>,
    keys: &[PathBuf],
    rauc: Option<(&std::path::Path, &std::path::Path)>,
) -> ExitCode {
    let layout = layout_of(out);
    let _hold = match kiln::output::hold(&layout, kiln::output::Access::Read) {
        Ok(h) => h,
        Err(e) => return error_exit(format!("{}: {e}", out.display()), Exit::CouldNotRun),
    };
    if !keys.is_empty() {
        if let Err(code) = require_signed(&layout, keys) {
            return code;
        }
    }
    let signer = match rauc {
        None => None,
        Some((key, cert)) => {
            let key = match kiln::signing::keys::load_signing_key(key) {
                Ok(k) => k,
                Err(e) => return failed(&e),
            };
            let mut certs = match kiln::signing::certs::load_certificates(cert) {
                Ok(c) => c,
                Err(e) => return error_exit(e, Exit::CouldNotRun),
            };
            let cert_der = certs.remove(0);
            Some(kiln::export::rauc::RaucSigner {
                key,
                cert_der,
                chain_der: certs,
            })
        }
    };
    let board = match board.map(Board::load).transpose() {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    let opts = kiln::export::ExportOptions {
        format,
        output: output.to_path_buf(),
        board: board.as_ref(),
        rauc: signer.as_ref(),
    };
    match kiln::export::export(&layout, &opts) {
        Ok(done) => {
            println!(
                "exported {} to {} ({} bytes, sha256:{}){}",
                done.image,
                output.display(),
                done.size,
                done.sha256,
                done.files[1..]
                    .iter()
                    .map(|f| format!(" and {}", f.display()))
                    .collect::<String>()
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// `kiln flash`: exit 0 written and verified, 1 refused (signature, device, board), 2 failed.
fn run_flash(
    image: &std::path::Path,
    device: &std::path::Path,
    keys: &[PathBuf],
    board: &std::path::Path,
    force: bool,
    cache: Option<PathBuf>,
) -> ExitCode {
    let layout = layout_of(image);
    let _hold = match kiln::output::hold(&layout, kiln::output::Access::Read) {
        Ok(h) => h,
        Err(e) => return error_exit(format!("{}: {e}", image.display()), Exit::CouldNotRun),
    };
    if let Err(code) = require_signed(&layout, keys) {
        return code;
    }
    let board = match Board::load(board) {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    let flash_layout = match kiln::export::layout::FlashLayout::from_board(&board) {
        Ok(l) => l,
        Err(e) => return failed(&e),
    };
    let limits = kiln::flash::Limits {
        max_device_size: flash_layout.max_device_size,
        force,
    };
    // Checked before the disk image is made, and again by the exclusive open when writing.
    if let Err(e) = kiln::flash::check_device(device, flash_layout.disk_size(), limits) {
        return error_exit(e, Exit::Refused);
    }
    let cache = cache.unwrap_or_else(Cache::default_dir);
    let work = match std::fs::create_dir_all(&cache)
        .and_then(|_| tempfile::Builder::new().prefix("flash-").tempdir_in(&cache))
    {
        Ok(w) => w,
        Err(e) => return error_exit(format!("{}: {e}", cache.display()), Exit::CouldNotRun),
    };
    let disk = work.path().join("disk.img");
    let opts = kiln::export::ExportOptions {
        format: kiln::export::ExportFormat::Disk,
        output: disk.clone(),
        board: Some(&board),
        rauc: None,
    };
    let exported = match kiln::export::export(&layout, &opts) {
        Ok(x) => x,
        Err(e) => {
            return failed(&e);
        }
    };
    let target = match kiln::flash::check_device(device, exported.size, limits) {
        Ok(t) => t,
        Err(e) => return error_exit(e, Exit::Refused),
    };
    match kiln::flash::flash(&disk, &target, std::io::stderr().is_terminal()) {
        Ok(done) => {
            println!(
                "flashed {} onto {} ({}): {} MiB written of a {} MiB image, read back and verified",
                exported.image,
                device.display(),
                target.name,
                done.written >> 20,
                done.image_size >> 20
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// `kiln cert`: exit 0, 1 when the inputs do not fit together, 2 when files cannot be used.
fn run_cert(action: CertAction) -> ExitCode {
    match make_certificate(action) {
        Ok(code) => code,
        Err(code) => code,
    }
}

fn make_certificate(action: CertAction) -> Result<ExitCode, ExitCode> {
    use kiln::signing::certs::{ca_certificate, release_certificate, to_pem, CertRequest};
    let usable = |e: &dyn std::fmt::Display| error_exit(e, Exit::CouldNotRun);
    let (der, output, subject, days) = match action {
        CertAction::Ca {
            key,
            subject,
            days,
            output,
        } => {
            let key = kiln::signing::keys::load_signing_key(&key).map_err(|e| usable(&e))?;
            let req = CertRequest {
                subject: &subject,
                not_before: now(),
                days,
            };
            let der = ca_certificate(&key, &req);
            (der, output, subject, days)
        }
        CertAction::Issue {
            ca_key,
            ca,
            public,
            subject,
            days,
            output,
        } => {
            let ca_key = kiln::signing::keys::load_signing_key(&ca_key).map_err(|e| usable(&e))?;
            let ca_der = kiln::signing::certs::load_certificates(&ca)
                .map_err(|e| usable(&e))?
                .remove(0);
            let public =
                kiln::signing::keys::load_verifying_key(&public).map_err(|e| usable(&e))?;
            let req = CertRequest {
                subject: &subject,
                not_before: now(),
                days,
            };
            let der = release_certificate(&ca_key, &ca_der, &public, &req);
            (der, output, subject, days)
        }
    };
    let pem = der
        .and_then(|d| to_pem(&d))
        .map_err(|e| error_exit(e, Exit::Refused))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&output)
        .and_then(|mut f| std::io::Write::write_all(&mut f, pem.as_bytes()))
        .map_err(|e| error_exit(format!("{}: {e}", output.display()), Exit::CouldNotRun))?;
    println!("wrote {} ({subject}, {days} days)", output.display());
    Ok(ExitCode::SUCCESS)
}

/// Seconds since the epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `kiln release`: exit 0, 1 when the image or the repository refuses, 2 could not run.
fn run_release(
    out: &std::path::Path,
    key: &std::path::Path,
    to: &std::path::Path,
    min_version: Option<String>,
    expires_days: u64,
) -> ExitCode {
    let key = match kiln::signing::keys::load_signing_key(key) {
        Ok(k) => k,
        Err(e) => return error_exit(e, Exit::CouldNotRun),
    };
    let opts = kiln::signing::release::ReleaseOptions {
        min_version,
        expiry: kiln::signing::tuf::Expiry {
            root_days: 365,
            release_days: expires_days,
        },
        now: now(),
    };
    let layout = layout_of(out);
    let _hold = match kiln::output::hold(&layout, kiln::output::Access::Read) {
        Ok(h) => h,
        Err(e) => return error_exit(format!("{}: {e}", out.display()), Exit::CouldNotRun),
    };
    match kiln::signing::release::release(&layout, to, &key, &opts) {
        Ok(r) => {
            println!(
                "released {} as {} (targets version {}) in {}",
                r.image,
                r.target,
                r.targets_version,
                to.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}

/// `kiln check`: exit 0 clean, 1 errors, 2 could not run.
fn run_check(
    path: &std::path::Path,
    board: &std::path::Path,
    format: Format,
    run_envs_cache: Option<PathBuf>,
) -> ExitCode {
    let board = match Board::load(board) {
        Ok(b) => b,
        Err(e) => return failed(&e),
    };
    // Held while the image is read (a path that is not a build's output is not held).
    let _hold = match kiln::output::hold(&layout_of(path), kiln::output::Access::Read) {
        Ok(h) => h,
        Err(e) => return error_exit(format!("{}: {e}", path.display()), Exit::CouldNotRun),
    };
    let image = match ImageTree::open(path) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("kiln: error: cannot read image {}: {e}", path.display());
            return ExitCode::from(Exit::CouldNotRun.code());
        }
    };
    let mut opts = CheckOptions::new(board.arch);
    opts.waivers = board.waivers.clone();
    // The image runs from a private directory in the cache's tmp/, removed afterwards.
    let scratch = match run_envs_cache {
        Some(cache) => {
            let tmp = cache.join("tmp");
            match std::fs::create_dir_all(&tmp).and_then(|()| {
                tempfile::Builder::new()
                    .prefix("check-run-")
                    .tempdir_in(&tmp)
            }) {
                Ok(d) => Some(d),
                Err(e) => {
                    eprintln!("kiln: error: cache {}: {e}", tmp.display());
                    return ExitCode::from(Exit::CouldNotRun.code());
                }
            }
        }
        None => None,
    };
    opts.run_envs = scratch.as_ref().map(|d| d.path().to_path_buf());
    let report = check_image(&image, &opts);
    print!("{}", render(&report, format));
    if format != Format::Table {
        eprintln!("kiln check: {}", summary(&report));
    }
    if report.errors() > 0 {
        ExitCode::from(Exit::Refused.code())
    } else {
        ExitCode::SUCCESS
    }
}

fn source_date_epoch() -> Result<Option<u64>, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("SOURCE_DATE_EPOCH='{v}' is not a number of seconds")),
        _ => Ok(None),
    }
}

fn fail(e: &BuildError) -> ExitCode {
    if let BuildError::Check { report, .. } = e {
        eprint!("{report}");
    }
    eprintln!(
        "kiln: error: {}",
        kiln::transport::redact_userinfo(&e.to_string())
    );
    ExitCode::from(e.exit().code())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Build { .. }) {
        // Before any thread exists: the build's tmpfs then lives and dies with this process.
        kiln::sandbox::private_mount_namespace();
    }
    match cli.command {
        Command::Lock { dir } => match build::lock_recipe(&dir) {
            Ok((lock, path)) => {
                println!(
                    "locked {} packages from InRelease sha256:{} into {}",
                    lock.packages.len(),
                    lock.release.inrelease_sha256,
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Build {
            dir,
            locked,
            offline,
            out,
            compression,
            cache,
            timings,
            jobs,
            emulate_all,
        } => {
            let sde = match source_date_epoch() {
                Ok(v) => v,
                Err(e) => return error_exit(e, Exit::Refused),
            };
            let opts = BuildOptions {
                locked,
                offline,
                out,
                compression,
                cache_dir: cache.unwrap_or_else(Cache::default_dir),
                progress: std::io::stderr().is_terminal(),
                source_date_epoch: sde,
                timings,
                jobs: jobs.map(usize::from).unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
                }),
                emulate_all,
            };
            match build::build(&dir, &opts) {
                Ok(report) => {
                    println!(
                        "built {}:{} ({} packages{}) manifest {}",
                        report.layout.display(),
                        report.image.tag,
                        report.packages,
                        if report.base_reused {
                            ", base layer reused from the layer cache"
                        } else {
                            ""
                        },
                        report.image.manifest_digest
                    );
                    for (name, reused) in &report.overlays {
                        println!(
                            "  layer {name}: {}",
                            if *reused { "reused" } else { "built" }
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Check {
            path,
            board,
            format,
            run_envs,
            cache,
        } => run_check(
            &path,
            &board,
            format,
            run_envs.then(|| cache.unwrap_or_else(Cache::default_dir)),
        ),
        Command::Keygen { out } => run_keygen(&out),
        Command::Sign {
            out,
            key,
            sign_command,
        } => run_sign(&out, key.as_deref(), sign_command.as_deref()),
        Command::Verify {
            out,
            root,
            target,
            key,
            compatible,
            installed_version,
            format,
        } => run_verify(
            &out,
            root.as_deref(),
            target.as_deref(),
            &key,
            compatible,
            installed_version,
            format,
        ),
        Command::Export {
            out,
            format,
            output,
            board,
            key,
            signing_key,
            cert,
        } => run_export(
            &out,
            format,
            &output,
            board.as_deref(),
            &key,
            signing_key.as_deref().zip(cert.as_deref()),
        ),
        Command::Cert { action } => run_cert(action),
        Command::Flash {
            image,
            device,
            key,
            board,
            force,
            cache,
        } => run_flash(&image, &device, &key, &board, force, cache),
        Command::Release {
            out,
            key,
            to,
            min_version,
            expires_days,
        } => run_release(&out, &key, &to, min_version, expires_days),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "kiln", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Manpages { output } => run_manpages(&output),
    }
}

/// `kiln manpages`: exit 0, or 2 when a page cannot be written.
fn run_manpages(dir: &std::path::Path) -> ExitCode {
    let cmd = <Cli as clap::CommandFactory>::command();
    match std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(cmd, dir)) {
        Ok(()) => {
            println!("man pages written to {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => error_exit(format!("{}: {e}", dir.display()), Exit::CouldNotRun),
    }
}
