//! `kiln keygen`, `kiln sign`, `kiln verify`, `kiln release` and `kiln cert`: thin adapters
//! over [`kiln::signing`].

use super::{CertAction, VerifyFormat};
use crate::cli::report::{error_exit, failed, layout_of};
use kiln::exit::Exit;
use std::path::PathBuf;
use std::process::ExitCode;

/// `kiln keygen`: exit 0, or 2 when the files cannot be written.
pub fn run_keygen(out: &std::path::Path) -> ExitCode {
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
pub fn run_sign(
    out: &std::path::Path,
    key: Option<&std::path::Path>,
    command: Option<&str>,
    public_key: Option<&std::path::Path>,
) -> ExitCode {
    // The key id an attestation names: TUF's (securesystemslib's) id of the public key.
    let mut keyid = String::new();
    let signer: Box<dyn kiln::signing::sign::Signer> = match (key, command) {
        (Some(key), _) => match kiln::signing::keys::load_signing_key(key) {
            Ok(k) => {
                keyid = kiln::signing::tuf::key_id(k.verifying_key());
                Box::new(kiln::signing::sign::KeySigner(k))
            }
            Err(e) => return failed(&e),
        },
        (None, Some(cmd)) => {
            let command = Box::new(kiln::signing::sign::CommandSigner(cmd.to_string()));
            match public_key {
                None => command,
                Some(path) => match kiln::signing::keys::load_verifying_key(path) {
                    Ok(public) => {
                        keyid = kiln::signing::tuf::key_id(&public);
                        Box::new(kiln::signing::sign::CheckedSigner {
                            inner: command,
                            key: public,
                            key_name: path.display().to_string(),
                        })
                    }
                    Err(e) => return failed(&e),
                },
            }
        }
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
    let signed = match kiln::signing::sign::sign_layout(&layout, signer.as_ref()) {
        Ok(signed) => signed,
        Err(e) => return failed(&e),
    };
    for s in signed {
        println!("signed {} as {} ({})", s.image, s.tag, s.signature_manifest);
    }
    // The build's provenance, when it wrote one beside the layout: signed and attached.
    let statement = match kiln::signing::attest::read_statement(out) {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    if let Some(statement) = statement {
        match kiln::signing::attest::attest_layout(&layout, &statement, signer.as_ref(), &keyid) {
            Ok(a) => println!(
                "attested the provenance of {} as {} ({})",
                a.image, a.tag, a.manifest
            ),
            Err(e) => return failed(&e),
        }
    }
    ExitCode::SUCCESS
}

/// What `kiln verify` was asked.
pub struct VerifyRequest<'a> {
    /// A build's output, a layout, a registry reference or (with `root`) a release repository.
    pub out: &'a std::path::Path,
    /// The pinned TUF root, for a release repository.
    pub root: Option<&'a std::path::Path>,
    /// The TUF target to check.
    pub target: Option<&'a str>,
    /// The TUF client state directory.
    pub state: Option<&'a std::path::Path>,
    /// Trusted public keys.
    pub keys: &'a [PathBuf],
    /// The device's compatible string.
    pub compatible: Option<String>,
    /// The version on the device.
    pub installed_version: Option<String>,
    /// How to print the verdict.
    pub format: VerifyFormat,
    /// `--board`, for a registry reference.
    pub board: Option<&'a str>,
    /// `--provenance`: require the signed build provenance.
    pub provenance: bool,
    /// `--builder-id`: the builders trusted.
    pub builder_ids: Vec<String>,
    /// How to reach a registry, for a reference.
    pub connect: kiln::registry::ConnectOptions,
}

/// `kiln verify`: exit 0 accepted, 1 refused, 2 when it cannot run.
pub fn run_verify(request: VerifyRequest) -> ExitCode {
    let VerifyRequest {
        out,
        root,
        target,
        state,
        keys,
        compatible,
        installed_version,
        format,
        board,
        provenance,
        builder_ids,
        connect,
    } = request;
    let connect = &connect;
    let mut opts = kiln::signing::verify::VerifyOptions {
        compatible,
        installed_version,
        board: board.map(str::to_string),
        provenance: provenance || !builder_ids.is_empty(),
        builder_ids,
        ..Default::default()
    };
    for k in keys {
        match kiln::signing::keys::load_verifying_key(k) {
            Ok(k) => opts.keys.push(k),
            Err(e) => return failed(&e),
        }
    }
    // A registry reference: what does not exist here and parses as HOST[:PORT]/REPO:TAG.
    let registry_ref = match (root, out.exists(), out.to_str()) {
        (None, false, Some(text)) => kiln::registry::Reference::parse(text).ok(),
        _ => None,
    };
    let result = match (root, registry_ref) {
        (_, Some(reference)) => {
            match kiln::registry::pull::verify_reference(&reference, connect, board, &opts) {
                Ok(v) => Ok(v),
                Err(e) => return failed(&e),
            }
        }
        (Some(root), None) => {
            let query = kiln::signing::verify::ReleaseQuery {
                trusted_root: root,
                state,
                target,
                now: now(),
            };
            kiln::signing::verify::verify_release(out, &query, &opts)
        }
        (None, None) => {
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
pub fn require_signed(layout: &std::path::Path, keys: &[PathBuf]) -> Result<(), ExitCode> {
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

/// `kiln cert`: exit 0, 1 when the inputs do not fit together, 2 when files cannot be used.
pub fn run_cert(action: CertAction) -> ExitCode {
    match make_certificate(action) {
        Ok(code) => code,
        Err(code) => code,
    }
}

pub fn make_certificate(action: CertAction) -> Result<ExitCode, ExitCode> {
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
pub fn now() -> u64 {
    kiln::timefmt::now()
}
