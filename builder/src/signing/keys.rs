//! Release keys: ECDSA P-256, the one scheme cosign, notation, RAUC's CMS, Mender, SWUpdate and
//! TUF all accept. The private key is PKCS#8 (PEM, and DER beside it for tools that want it),
//! readable by its owner only; the public key is SubjectPublicKeyInfo PEM, what
//! `openssl dgst -verify` and `cosign verify --key` read.
//!
//! A private key is never printed, logged or put in an error message; a key file that group or
//! others can read is refused before it is parsed (the key may already be leaked, and signing
//! with it would hide that).

use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a key could not be made or read. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The private key file is readable by group or others.
    #[error("{path}: private key is readable by group or others (mode {mode:04o}); run `chmod 600 {path}` and consider the key exposed")]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a key of the expected kind.
    #[error("{path}: {reason}")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never the key's bytes).
        reason: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> KeyError {
    KeyError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Where `keygen` puts the parts of a key pair named `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    /// PKCS#8 PEM private key (mode 0600).
    pub private_pem: PathBuf,
    /// PKCS#8 DER private key (mode 0600).
    pub private_der: PathBuf,
    /// SPKI PEM public key.
    pub public_pem: PathBuf,
}

impl KeyFiles {
    /// `base`, `base.der` and `base.pub`.
    pub fn for_base(base: &Path) -> KeyFiles {
        let with = |ext: &str| {
            let mut s = base.as_os_str().to_owned();
            s.push(ext);
            PathBuf::from(s)
        };
        KeyFiles {
            private_pem: base.to_path_buf(),
            private_der: with(".der"),
            public_pem: with(".pub"),
        }
    }
}

/// Writes a file that must not exist yet, with `mode` from the start (never briefly wider).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                io_err(path, "already exists; kiln never overwrites a key")
            } else {
                io_err(path, e)
            }
        })?;
    // The umask may have narrowed the mode further; never let it stay wider.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_err(path, e))?;
    f.write_all(bytes).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))
}

/// Makes a new key pair from the operating system's random source and writes it to `files`.
/// Refuses to overwrite any of them; on failure nothing of the new key is left behind.
pub fn keygen(files: &KeyFiles) -> Result<VerifyingKey, KeyError> {
    for p in [&files.private_pem, &files.private_der, &files.public_pem] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(io_err(p, "already exists; kiln never overwrites a key"));
        }
    }
    let key = SigningKey::random(&mut rand_core::OsRng);
    let public = *key.verifying_key();
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| io_err(&files.private_pem, e))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| io_err(&files.private_der, e))?;
    let public_pem = public
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| io_err(&files.public_pem, e))?;
    let result = write_new(&files.private_pem, pem.as_bytes(), 0o600)
        .and_then(|()| write_new(&files.private_der, der.as_bytes(), 0o600))
        .and_then(|()| write_new(&files.public_pem, public_pem.as_bytes(), 0o644));
    if let Err(e) = result {
        for p in [&files.private_pem, &files.private_der, &files.public_pem] {
            let _ = fs::remove_file(p);
        }
        return Err(e);
    }
    Ok(public)
}

/// Reads a private key (PKCS#8, PEM or DER), refusing a file group or others can read.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let meta = fs::metadata(path).map_err(|e| io_err(path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = fs::read(path).map_err(|e| io_err(path, e))?;
    let malformed = |what: &str| KeyError::Malformed {
        path: path.to_path_buf(),
        reason: format!("not a PKCS#8 ECDSA P-256 private key ({what})"),
    };
    if bytes.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(&bytes).map_err(|_| malformed("PEM that is not text"))?;
        if text.contains("ENCRYPTED PRIVATE KEY") {
            return Err(malformed(
                "it is encrypted; give kiln an unencrypted key or use --sign-command",
            ));
        }
        SigningKey::from_pkcs8_pem(text).map_err(|_| malformed("PEM"))
    } else {
        SigningKey::from_pkcs8_der(&bytes).map_err(|_| malformed("DER"))
    }
}

/// Reads a public key (SPKI PEM, as `kiln keygen`, `openssl ec -pubout` and cosign write it).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    VerifyingKey::from_public_key_pem(&text).map_err(|_| KeyError::Malformed {
        path: path.to_path_buf(),
        reason: "not a PEM ECDSA P-256 public key (-----BEGIN PUBLIC KEY-----)".into(),
    })
}

/// The key's identity for messages and metadata: sha256 of its DER SubjectPublicKeyInfo, hex
/// (TUF's key id scheme is different and lives with the TUF metadata).
pub fn fingerprint(key: &VerifyingKey) -> String {
    match key.to_public_key_der() {
        Ok(der) => crate::digest::sha256_hex(der.as_bytes()),
        Err(_) => String::from("unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_owner_only_private_keys_that_load_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let files = KeyFiles::for_base(&dir.path().join("release.key"));
        let public = keygen(&files).unwrap();
        for p in [&files.private_pem, &files.private_der] {
            let mode = fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
            let key = load_signing_key(p).unwrap();
            assert_eq!(key.verifying_key(), &public);
        }
        assert_eq!(load_verifying_key(&files.public_pem).unwrap(), public);
        let pem = fs::read_to_string(&files.private_pem).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
        let err = keygen(&files).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(
            load_signing_key(&files.private_pem)
                .unwrap()
                .verifying_key(),
            &public
        );
    }

    #[test]
    fn a_readable_private_key_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = KeyFiles::for_base(&dir.path().join("k"));
        keygen(&files).unwrap();
        fs::set_permissions(&files.private_pem, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_signing_key(&files.private_pem)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mode 0644") && err.contains("chmod 600"),
            "{err}"
        );
        let pem = fs::read_to_string(&files.private_pem).unwrap();
        let body = pem.lines().nth(1).unwrap();
        assert!(!err.contains(body));
    }

    #[test]
    fn garbage_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_new(
            &p,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            0o600,
        )
        .unwrap();
        assert!(matches!(
            load_signing_key(&p),
            Err(KeyError::Malformed { .. })
        ));
        let q = dir.path().join("p.pub");
        fs::write(&q, "nope").unwrap();
        assert!(matches!(
            load_verifying_key(&q),
            Err(KeyError::Malformed { .. })
        ));
    }
}
