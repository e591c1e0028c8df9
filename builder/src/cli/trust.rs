//! `kiln trust init | rotate-root | delegate | refresh-timestamp`, `kiln release`, and the key
//! options every TUF-signing command shares (`--targets-key`, `--sign-command ROLE=PUB=CMD`, ...): thin
//! adapters over [`kiln::signing::tuf`].

use super::{OnlineKeyArgs, TrustAction};
use crate::cli::report::{error_exit, failed, layout_of};
use crate::cli::signing::now;
use kiln::exit::Exit;
use kiln::signing::sign::{CommandSigner, KeySigner, Signer};
use kiln::signing::tuf::{ReleaseSigners, Role, RoleChange, RoleKeys, RoleSigner};
use p256::ecdsa::VerifyingKey;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A key as given on the command line: its public half, and what signs with it when it was
/// given as a private key file or a command.
pub struct GivenKey {
    /// The public key.
    pub public: VerifyingKey,
    /// The signer, absent for a public key file.
    pub signer: Option<Box<dyn Signer>>,
}

impl GivenKey {
    fn into_signer(self) -> Option<RoleSigner> {
        let public = self.public;
        self.signer.map(|signer| RoleSigner { public, signer })
    }
}

/// Reads a key file: a public key (SPKI PEM) only lists the key, a private one also signs.
pub fn load_key(path: &Path) -> Result<GivenKey, ExitCode> {
    let head = std::fs::read(path)
        .map_err(|e| error_exit(format!("{}: {e}", path.display()), Exit::CouldNotRun))?;
    if head.windows(26).any(|w| w == b"-----BEGIN PUBLIC KEY-----") {
        let public = kiln::signing::keys::load_verifying_key(path).map_err(|e| failed(&e))?;
        return Ok(GivenKey {
            public,
            signer: None,
        });
    }
    let key = kiln::signing::keys::load_signing_key(path).map_err(|e| failed(&e))?;
    Ok(GivenKey {
        public: *key.verifying_key(),
        signer: Some(Box::new(KeySigner(key))),
    })
}

/// The keys given per role name ("root", "old-root", "targets", "snapshot", "timestamp").
#[derive(Default)]
pub struct GivenKeys(BTreeMap<String, Vec<GivenKey>>);

impl GivenKeys {
    /// Loads `--ROLE-key` files and `--sign-command ROLE=PUB=CMD` entries.
    pub fn load(online: &OnlineKeyArgs, extra: &[(&str, &[PathBuf])]) -> Result<Self, ExitCode> {
        let mut keys = GivenKeys::default();
        let files: [(&str, &[PathBuf]); 3] = [
            ("targets", &online.targets),
            ("snapshot", &online.snapshot),
            ("timestamp", &online.timestamp),
        ];
        for (role, paths) in files.iter().chain(extra) {
            for p in paths.iter() {
                let k = load_key(p)?;
                keys.0.entry(role.to_string()).or_default().push(k);
            }
        }
        for spec in &online.sign_command {
            let mut parts = spec.splitn(3, '=');
            let (Some(role), Some(public), Some(command)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(error_exit(
                    format!("--sign-command {spec:?}: expected ROLE=PUBLIC_KEY=COMMAND"),
                    Exit::CouldNotRun,
                ));
            };
            if role != "old-root" && Role::parse(role).is_none() {
                return Err(error_exit(
                    format!("--sign-command {spec:?}: {role:?} is not root, old-root, targets, snapshot or timestamp"),
                    Exit::CouldNotRun,
                ));
            }
            let public = kiln::signing::keys::load_verifying_key(Path::new(public))
                .map_err(|e| failed(&e))?;
            keys.0.entry(role.to_string()).or_default().push(GivenKey {
                public,
                signer: Some(Box::new(CommandSigner(command.to_string()))),
            });
        }
        Ok(keys)
    }

    /// The public keys given for `role`.
    pub fn publics(&self, role: &str) -> Vec<VerifyingKey> {
        self.0
            .get(role)
            .map(|v| v.iter().map(|k| k.public).collect())
            .unwrap_or_default()
    }

    /// The signers given for `role` (private key files and commands).
    pub fn take_signers(&mut self, role: &str) -> Vec<RoleSigner> {
        self.0
            .remove(role)
            .unwrap_or_default()
            .into_iter()
            .filter_map(GivenKey::into_signer)
            .collect()
    }

    /// The signers for a release, a delegation or a timestamp.
    pub fn take_online(&mut self) -> ReleaseSigners {
        ReleaseSigners {
            targets: self.take_signers("targets"),
            snapshot: self.take_signers("snapshot"),
            timestamp: self.take_signers("timestamp"),
        }
    }
}

/// The signers of `kiln release --key K`: K for targets, snapshot and timestamp.
pub fn single_key_signers(path: &Path) -> Result<ReleaseSigners, ExitCode> {
    let key = kiln::signing::keys::load_signing_key(path).map_err(|e| failed(&e))?;
    let one = || RoleSigner {
        public: *key.verifying_key(),
        signer: Box::new(KeySigner(key.clone())),
    };
    Ok(ReleaseSigners {
        targets: vec![one()],
        snapshot: vec![one()],
        timestamp: vec![one()],
    })
}

/// Prints the dev-board warning for one key signing every role.
pub fn warn_single_key() {
    eprintln!(
        "kiln: warning: one key signs every TUF role: fine for a dev board, not for a fleet \
         (keep root offline, separate targets, snapshot and timestamp: README \"Key ceremony\")"
    );
}

fn thresholds(specs: &[String]) -> Result<BTreeMap<Role, u64>, ExitCode> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let parsed = spec
            .split_once('=')
            .and_then(|(r, n)| Some((Role::parse(r)?, n.parse::<u64>().ok()?)));
        let Some((role, n)) = parsed else {
            return Err(error_exit(
                format!("--threshold {spec:?}: expected ROLE=N (ROLE: root, targets, snapshot, timestamp)"),
                Exit::CouldNotRun,
            ));
        };
        out.insert(role, n);
    }
    Ok(out)
}

fn describe(root: &serde_json::Value) -> String {
    Role::ALL
        .iter()
        .map(|r| {
            let n = root
                .pointer(&format!("/signed/roles/{r}/keyids"))
                .and_then(serde_json::Value::as_array)
                .map_or(0, Vec::len);
            let t = root
                .pointer(&format!("/signed/roles/{r}/threshold"))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            format!("{r} {t} of {n}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `kiln trust ...`: exit 0, 1 when the metadata or keys refuse, 2 when it cannot run.
pub fn run_trust(action: TrustAction) -> ExitCode {
    match trust(action) {
        Ok(code) | Err(code) => code,
    }
}

fn trust(action: TrustAction) -> Result<ExitCode, ExitCode> {
    match action {
        TrustAction::Init {
            repo,
            root,
            keys,
            threshold,
            expires_days,
        } => {
            let mut given = GivenKeys::load(&keys, &[("root", &root)])?;
            let thresholds = thresholds(&threshold)?;
            let roles: BTreeMap<Role, RoleKeys> = Role::ALL
                .into_iter()
                .map(|r| {
                    let keys = given.publics(r.name());
                    let threshold = thresholds.get(&r).copied().unwrap_or(1);
                    (r, RoleKeys { keys, threshold })
                })
                .collect();
            if kiln::signing::tuf::repository::single_key(&roles) {
                warn_single_key();
            }
            let signers = given.take_signers("root");
            let refs: Vec<&RoleSigner> = signers.iter().collect();
            let root = kiln::signing::tuf::init(&repo, &roles, &refs, now(), expires_days)
                .map_err(|e| failed(&e))?;
            println!(
                "created {} (root version 1: {})",
                repo.join("metadata/root.json").display(),
                describe(&root)
            );
        }
        TrustAction::RotateRoot {
            repo,
            old_root,
            root,
            keys,
            threshold,
            expires_days,
        } => {
            let mut given = GivenKeys::load(&keys, &[("root", &root), ("old-root", &old_root)])?;
            let thresholds = thresholds(&threshold)?;
            let mut changes: BTreeMap<Role, RoleChange> = BTreeMap::new();
            for r in Role::ALL {
                let publics = given.publics(r.name());
                let change = RoleChange {
                    keys: (!publics.is_empty()).then_some(publics),
                    threshold: thresholds.get(&r).copied(),
                };
                if change != RoleChange::default() {
                    changes.insert(r, change);
                }
            }
            let mut signers = given.take_signers("old-root");
            signers.extend(given.take_signers("root"));
            let refs: Vec<&RoleSigner> = signers.iter().collect();
            let new = kiln::signing::tuf::rotate_root(&repo, &changes, &refs, now(), expires_days)
                .map_err(|e| failed(&e))?;
            println!(
                "rotated {} to root version {} ({})",
                repo.join("metadata/root.json").display(),
                kiln::signing::tuf::metadata::version_of(&new),
                describe(&new)
            );
        }
        TrustAction::Delegate {
            repo,
            board,
            board_keys,
            threshold,
            keys,
            expires_days,
        } => {
            let mut given = GivenKeys::load(&keys, &[("board", &board_keys)])?;
            let role = RoleKeys {
                keys: given.publics("board"),
                threshold,
            };
            let signers = given.take_online();
            let version =
                kiln::signing::tuf::delegate(&repo, &board, &role, &signers, now(), expires_days)
                    .map_err(|e| failed(&e))?;
            println!(
                "delegated {board}/* to {} key(s), threshold {threshold}, terminating (targets version {version})",
                role.keys.len()
            );
        }
        TrustAction::RefreshTimestamp {
            repo,
            keys,
            expires_days,
        } => {
            let mut given = GivenKeys::load(&keys, &[])?;
            let signers = given.take_signers("timestamp");
            let version =
                kiln::signing::tuf::refresh_timestamp(&repo, &signers, now(), expires_days)
                    .map_err(|e| failed(&e))?;
            println!(
                "re-signed timestamp.json (version {version}, expires in {expires_days} day(s))"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `kiln release` was asked.
pub struct ReleaseRequest<'a> {
    /// The build's output.
    pub out: &'a std::path::Path,
    /// `--key`: one key for every role (a dev board).
    pub key: Option<&'a std::path::Path>,
    /// The online roles' keys.
    pub keys: &'a OnlineKeyArgs,
    /// The OTA repository.
    pub to: &'a std::path::Path,
    /// `--min-version`.
    pub min_version: Option<String>,
    /// `--expires-days`.
    pub expires_days: u64,
}

/// `kiln release`: exit 0, 1 when the image or the repository refuses, 2 could not run.
pub fn run_release(request: ReleaseRequest) -> ExitCode {
    let ReleaseRequest {
        out,
        key,
        keys,
        to,
        min_version,
        expires_days,
    } = request;
    let signers = match key {
        Some(key) => {
            warn_single_key();
            match single_key_signers(key) {
                Ok(s) => s,
                Err(code) => return code,
            }
        }
        None => match GivenKeys::load(keys, &[]) {
            Ok(mut given) => given.take_online(),
            Err(code) => return code,
        },
    };
    if signers.targets.is_empty() {
        return error_exit(
            "give --key KEYFILE (a dev board) or the online keys: --targets-key (or the board team's), --snapshot-key, --timestamp-key",
            Exit::CouldNotRun,
        );
    }
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
    match kiln::signing::release::release(&layout, to, &signers, &opts) {
        Ok(r) => {
            println!(
                "released {} as {} ({} version {}) in {}",
                r.image,
                r.target,
                r.recorded.role,
                r.recorded.version,
                to.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e),
    }
}
