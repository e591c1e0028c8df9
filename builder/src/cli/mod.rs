//! The command line's definitions: every command, option and value as clap reads them (and as
//! `kiln completions` and `kiln manpages` describe them). What each command does is in the
//! adapters beside this file, one per group: [`build`] (lock, build), [`image`] (check,
//! export, flash), [`signing`] (keygen, sign, verify, release, cert), [`docs`] (completions,
//! man pages), with [`report`] printing errors and choosing exit codes for all of them.

pub mod build;
pub mod docs;
pub mod image;
pub mod registry;
pub mod report;
pub mod review;
pub mod signing;
pub mod trust;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Mirrors a library enum as a clap value, so the library does not depend on clap: the same
/// variants and help text, converted where the command calls the library. The conversion's
/// match is exhaustive, so a variant added to the library without its option fails to compile.
macro_rules! value_enum {
    ($(#[$doc:meta])* $name:ident => $lib:ident { $($(#[$vdoc:meta])* $variant:ident,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl From<$name> for $lib {
            fn from(value: $name) -> $lib {
                match value {
                    $($name::$variant => $lib::$variant,)*
                }
            }
        }
    };
}

use kiln::check::report::Format as CheckFormat;
use kiln::export::ExportFormat;
use kiln::image::pack::LayerCompression;

value_enum! {
    /// `kiln build --compression`.
    CompressionArg => LayerCompression {
        /// `tar+zstd` (OCI 1.1), the default.
        Zstd,
        /// `tar+gzip`, for older tools such as umoci 0.4.
        Gzip,
    }
}

value_enum! {
    /// `kiln export --format`.
    ExportFormatArg => ExportFormat {
        /// The flattened root filesystem as one tar (numeric owners, sorted, clamped times).
        Tar,
        /// An ext4 file system image of the root filesystem.
        Ext4,
        /// A squashfs image of the root filesystem (xz), read-only root for A/B slots.
        Squashfs,
        /// A partitioned disk image from the board's flash layout, plus FILE.bmap.
        Disk,
        /// A RAUC bundle (verity format) signed with an X.509 release certificate.
        Rauc,
    }
}

value_enum! {
    /// `kiln check --format`.
    CheckFormatArg => CheckFormat {
        /// Terminal table.
        Table,
        /// One JSON object per finding per line.
        Json,
        /// JUnit XML.
        Junit,
        /// SARIF 2.1.0.
        Sarif,
    }
}

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Fires signed, reproducible Debian firmware images for ARM robots"
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        compression: CompressionArg,
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
        /// A registry repository (HOST[:PORT]/REPO) shared by CI runners as the layer cache:
        /// finished layers are looked up there before being built and stored there after.
        #[arg(long, env = "KILN_CACHE_REGISTRY")]
        cache_registry: Option<String>,
        /// An inputs archive (HOST[:PORT]/REPO:TAG, made by `kiln vendor`) to put into the cache
        /// first: with --offline, a rebuild that needs no Debian mirror and no Python index.
        #[arg(long)]
        inputs: Option<String>,
        /// Who builds, as the provenance (OUT/provenance.json, SLSA v1) states it: your CI's
        /// id (a URI), which `kiln verify --builder-id` can require.
        #[arg(long, env = "KILN_BUILDER_ID")]
        builder_id: Option<String>,
        #[command(flatten)]
        connect: RegistryArgs,
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
        /// The public key (PEM) of the key the command signs with: every signature is checked
        /// against it before it is written, and the provenance attestation names its key id.
        #[arg(long, requires = "sign_command")]
        public_key: Option<PathBuf>,
    },
    /// Copy a build's image, signature and SBOM to a registry (HOST[:PORT]/REPO:TAG), tag last.
    /// Several OUTs (one release built for several boards) go under one tag as an OCI image
    /// index, one manifest per board.
    Push {
        /// Output directory of `kiln build` (the layout is OUT/oci), or an OCI layout; several
        /// for several boards.
        #[arg(required = true, num_args = 1..)]
        out: Vec<PathBuf>,
        /// Where to: HOST[:PORT]/REPOSITORY:TAG.
        reference: String,
        /// A repository of the same registry (HOST[:PORT]/REPO) whose blobs are linked by a
        /// cross-repository mount instead of uploaded: by default the fleet's layer cache.
        #[arg(long, env = "KILN_CACHE_REGISTRY")]
        mount_from: Option<String>,
        #[command(flatten)]
        connect: RegistryArgs,
    },
    /// Archive every input of the locked recipe (each .deb of kiln.lock, each Python file its
    /// overlays' requirement locks allow that the cache holds) as one OCI artifact at
    /// HOST[:PORT]/REPO:TAG, so `kiln build --offline --inputs` rebuilds it when the mirror or
    /// index has dropped them. Run it after a build, with that build's cache.
    Vendor {
        /// Where to: HOST[:PORT]/REPOSITORY:TAG.
        reference: String,
        /// Recipe directory (holding kiln.toml and kiln.lock).
        #[arg(short = 'C', long = "directory", default_value = ".")]
        dir: PathBuf,
        /// Cache directory (default: $KILN_CACHE_DIR, $XDG_CACHE_HOME/kiln or ~/.cache/kiln).
        #[arg(long)]
        cache: Option<PathBuf>,
        #[command(flatten)]
        connect: RegistryArgs,
    },
    /// Copy an image (with its signature and SBOM) from a registry into OUT/oci, every blob
    /// verified while it streams; `kiln verify`, `export` and `flash` then take OUT.
    Pull {
        /// What: HOST[:PORT]/REPOSITORY:TAG or HOST[:PORT]/REPOSITORY@sha256:HEX.
        reference: String,
        /// Output directory (the layout goes to OUT/oci).
        #[arg(short = 'o', long = "output", default_value = "out")]
        out: PathBuf,
        /// The board (its name) whose image to take from a release for several boards; the
        /// image must be that board's.
        #[arg(long)]
        board: Option<String>,
        #[command(flatten)]
        connect: RegistryArgs,
    },
    /// Put a signed image into an OTA repository: an OCI archive and signed TUF metadata.
    /// A fleet's repository is made by `kiln trust init`; a release takes only the online keys
    /// (targets or the board team's, snapshot, timestamp), never the root keys.
    Release {
        /// Output directory of `kiln build` (the layout is OUT/oci), signed with a targets key.
        out: PathBuf,
        /// One key for every role (a dev board; kiln warns): signs targets, snapshot and
        /// timestamp, and on the first release makes a root trusting only it.
        #[arg(long)]
        key: Option<PathBuf>,
        #[command(flatten)]
        keys: OnlineKeyArgs,
        /// The OTA repository (DIR/metadata, DIR/targets).
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
        /// Output directory of `kiln build`, an OCI layout, a registry reference
        /// (HOST[:PORT]/REPO:TAG, verified as it streams), or (with --root) a release repository.
        out: PathBuf,
        /// Pinned TUF root.json: verify OUT as an OTA repository made by `kiln release`.
        #[arg(long)]
        root: Option<PathBuf>,
        /// With --root: the release to check (TUF target name); default the newest (of --board).
        #[arg(long, requires = "root")]
        target: Option<String>,
        /// With --root: a directory keeping the metadata trusted at the last check (as a TUF
        /// client's), so that no version goes down (rollback) and rotated roots are remembered.
        #[arg(long, requires = "root")]
        state: Option<PathBuf>,
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
        /// The board (its name) the image must be built for; for a registry release for
        /// several boards, the one whose image to verify.
        #[arg(long)]
        board: Option<String>,
        /// Require the signed build provenance (SLSA v1 in a DSSE envelope, from `kiln sign`)
        /// naming this image, signed by one of the keys.
        #[arg(long)]
        provenance: bool,
        /// Trust only provenance from this builder id (repeat for several; implies
        /// --provenance).
        #[arg(long = "builder-id")]
        builder_id: Vec<String>,
        /// For OUT given as a registry reference (HOST[:PORT]/REPO:TAG).
        #[command(flatten)]
        connect: RegistryArgs,
    },
    /// Flatten an image into a tar, ext4, squashfs or partitioned disk image (with bmap).
    Export {
        /// Output directory of `kiln build`, or an OCI layout.
        out: PathBuf,
        /// What to write.
        #[arg(long, value_enum)]
        format: ExportFormatArg,
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
    /// The OTA repository's TUF trust: make its root, rotate it, delegate boards to their
    /// teams' keys, re-sign the timestamp.
    Trust {
        #[command(subcommand)]
        action: TrustAction,
    },
    /// What changed between two releases: packages (point-release updates first), wheels,
    /// licences, layers and what a device holding OLD downloads. Reads manifests and SBOMs
    /// only, never a layer.
    Diff {
        /// The older release: a build's output or an OCI layout.
        old: PathBuf,
        /// The newer release.
        new: PathBuf,
        /// Output: a table (summary first), JSON, or a self-contained HTML page (with -o).
        #[arg(long, value_enum, default_value = "table")]
        format: DiffFormat,
        /// The file to write the HTML page to (--format html).
        #[arg(short = 'o', long = "output", required_if_eq("format", "html"))]
        output: Option<PathBuf>,
    },
    /// Gather the corresponding source of a build for licence compliance: every Debian source
    /// package its lock's .debs were built from (found through the signed Release and Sources,
    /// each file verified), the sdists its envs' locks pin and the overlays' own files, with an
    /// index and the SBOM extended by the source packages, into a directory or a reproducible
    /// tar (FILE.tar).
    Sources {
        /// The build's output (OUT, or its OCI layout).
        out: PathBuf,
        /// Where to: a directory, or FILE.tar.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Recipe directory (holding kiln.toml and the kiln.lock the build used).
        #[arg(short = 'C', long = "directory", default_value = ".")]
        dir: PathBuf,
        /// Only packages whose licences include GPL, LGPL, AGPL or MPL (or are not machine-
        /// readable); by default every package.
        #[arg(long, value_enum)]
        only: Option<SourcesOnly>,
        /// Use only the cache (what an earlier online run fetched); the same bundle, bit for bit.
        #[arg(long)]
        offline: bool,
        /// Leave out a source package whose files the mirror does not serve (404; offline: the
        /// cache lacks), listing it in the index and on stderr, instead of failing.
        #[arg(long)]
        allow_unavailable: bool,
        /// Cache directory (default: $KILN_CACHE_DIR, $XDG_CACHE_HOME/kiln or ~/.cache/kiln).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// The board (its name) whose image's sources to bundle, for a recipe listing several
        /// (OUT is then the build's output, OUT/BOARD its image).
        #[arg(long)]
        board: Option<String>,
        /// An uploaders' keyring for the `.dsc` files' own signatures, tried after the board's
        /// (repeatable; Debian's: /usr/share/keyrings/debian-keyring.gpg and
        /// debian-maintainers.gpg, package debian-keyring).
        #[arg(long = "dsc-keyring", value_name = "KEYRING")]
        dsc_keyrings: Vec<PathBuf>,
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
        format: CheckFormatArg,
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

/// The online roles' keys: a private key file signs; `--sign-command` signs through an HSM or
/// KMS. For `kiln trust init` and `rotate-root`, a public key file lists a key without signing.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OnlineKeyArgs {
    /// A targets key (repeat for several): signs targets.json, or for a delegated board the
    /// board's role (then it is the board team's key).
    #[arg(long = "targets-key")]
    pub targets: Vec<PathBuf>,
    /// A snapshot key (repeat for several).
    #[arg(long = "snapshot-key")]
    pub snapshot: Vec<PathBuf>,
    /// A timestamp key (repeat for several).
    #[arg(long = "timestamp-key")]
    pub timestamp: Vec<PathBuf>,
    /// ROLE=PUBLIC_KEY=COMMAND: sign ROLE's metadata through COMMAND, as `kiln sign
    /// --sign-command` runs it; PUBLIC_KEY is the key's public half (ROLE: root, old-root,
    /// targets, snapshot, timestamp).
    #[arg(long = "sign-command")]
    pub sign_command: Vec<String>,
}

#[derive(Subcommand)]
pub enum TrustAction {
    /// Create the repository's root (version 1): which keys sign which role, and how many
    /// must (thresholds). Signed by the root keys, which then go back offline.
    Init {
        /// The OTA repository (DIR/metadata is created).
        repo: PathBuf,
        /// A root key (repeat for several): private to sign, public to only list.
        #[arg(long = "root-key")]
        root: Vec<PathBuf>,
        #[command(flatten)]
        keys: OnlineKeyArgs,
        /// ROLE=N: how many distinct keys must sign ROLE (default 1 each).
        #[arg(long)]
        threshold: Vec<String>,
        /// Days until the root expires.
        #[arg(long, default_value_t = 365)]
        expires_days: u64,
    },
    /// Write root version N+1, signed by a threshold of the current root keys and of the new
    /// ones: new keys for the roles given (dropping a leaked key), new thresholds.
    RotateRoot {
        /// The OTA repository.
        repo: PathBuf,
        /// A current root key that signs the rotation (repeat; not listed in the new root
        /// unless also given as --root-key).
        #[arg(long = "old-root-key")]
        old_root: Vec<PathBuf>,
        /// The new root's root keys (repeat): private to sign, public to only list. Default:
        /// unchanged.
        #[arg(long = "root-key")]
        root: Vec<PathBuf>,
        #[command(flatten)]
        keys: OnlineKeyArgs,
        /// ROLE=N: a role's new threshold.
        #[arg(long)]
        threshold: Vec<String>,
        /// Days until the new root expires.
        #[arg(long, default_value_t = 365)]
        expires_days: u64,
    },
    /// Delegate a board's releases (BOARD/*) to its team's keys, terminating: no other key
    /// may release for that board. Signed by the targets keys.
    Delegate {
        /// The OTA repository.
        repo: PathBuf,
        /// The board (its name).
        #[arg(long)]
        board: String,
        /// The board team's public key (repeat for several).
        #[arg(long = "board-key", required = true)]
        board_keys: Vec<PathBuf>,
        /// How many board keys must sign a release.
        #[arg(long, default_value_t = 1)]
        threshold: u64,
        #[command(flatten)]
        keys: OnlineKeyArgs,
        /// Days until targets, snapshot and timestamp expire.
        #[arg(long, default_value_t = 30)]
        expires_days: u64,
    },
    /// Re-sign only timestamp.json with the online timestamp key (run it from cron), so
    /// devices can tell a frozen mirror from a quiet one.
    RefreshTimestamp {
        /// The OTA repository.
        repo: PathBuf,
        #[command(flatten)]
        keys: OnlineKeyArgs,
        /// Days until the timestamp expires.
        #[arg(long, default_value_t = 1)]
        expires_days: u64,
    },
}

#[derive(Subcommand)]
pub enum CertAction {
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

/// Which packages `kiln sources --only` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourcesOnly {
    /// GPL, LGPL, AGPL or MPL in any version, and licences that are not machine-readable.
    Copyleft,
}

/// How `kiln diff` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// A table for the terminal, summary first.
    Table,
    /// One JSON document.
    Json,
    /// One self-contained HTML page: summary, sortable tables, a treemap of sizes.
    Html,
}

/// How `kiln verify` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyFormat {
    /// The one-line verdict.
    Line,
    /// Every check, as one JSON object.
    Json,
}

/// How to reach a registry (credentials come from the standard auth files, never arguments).
#[derive(clap::Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Plain HTTP, for a registry on this machine only.
    #[arg(long)]
    pub insecure: bool,
    /// Trust the CA certificates in this PEM file for the registry's TLS.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

impl RegistryArgs {
    /// The library's options.
    pub fn options(&self) -> kiln::registry::ConnectOptions {
        kiln::registry::ConnectOptions {
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
        }
    }
}
