//! X.509 certificates for RAUC: an offline CA certificate (what devices hold as their keyring)
//! and a release certificate the CA issues over the release key (what signs the bundles).
//!
//! Both are P-256 ECDSA, made with x509-cert's builder; ECDSA signatures are deterministic
//! (RFC 6979) and the serial number is derived from the certificate's contents, so the same
//! keys, names and dates give the same certificate.

use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::EncodePublicKey;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::{Decode, DecodePem, Encode, EncodePem};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;
use x509_cert::Certificate;

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct CertError {
    /// The file (or what was being made).
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

fn cert_err(path: &Path, reason: impl std::fmt::Display) -> CertError {
    CertError {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// What a certificate says: its subject and validity window.
pub struct CertRequest<'a> {
    /// Distinguished name, RFC 4514 form ("CN=Robot Release CA,O=Example").
    pub subject: &'a str,
    /// Start of validity (seconds since the epoch).
    pub not_before: u64,
    /// Length of validity in days.
    pub days: u32,
}

impl CertRequest<'_> {
    fn name(&self, what: &Path) -> Result<Name, CertError> {
        Name::from_str(self.subject)
            .map_err(|e| cert_err(what, format!("subject '{}': {e}", self.subject)))
    }

    fn validity(&self, what: &Path) -> Result<Validity, CertError> {
        let start = std::time::UNIX_EPOCH + Duration::from_secs(self.not_before);
        let end = start + Duration::from_secs(u64::from(self.days) * 86_400);
        Ok(Validity {
            not_before: x509_cert::time::Time::try_from(start).map_err(|e| cert_err(what, e))?,
            not_after: x509_cert::time::Time::try_from(end).map_err(|e| cert_err(what, e))?,
        })
    }

    /// A positive 15-byte serial derived from what the certificate binds.
    fn serial(&self, public: &VerifyingKey, issuer: &str) -> Result<SerialNumber, CertError> {
        let spki = public
            .to_public_key_der()
            .map_err(|e| cert_err(Path::new("serial"), e))?;
        let seed = format!(
            "{} {} {} {} {}",
            hex::encode(spki.as_bytes()),
            self.subject,
            issuer,
            self.not_before,
            self.days
        );
        let h = crate::digest::sha256_hex(seed.as_bytes());
        let mut bytes = hex::decode(&h[..30]).unwrap_or_else(|_| vec![1; 15]);
        bytes[0] &= 0x7f;
        bytes[0] |= 0x01;
        SerialNumber::new(&bytes).map_err(|e| cert_err(Path::new("serial"), e))
    }
}

fn spki(key: &VerifyingKey, what: &Path) -> Result<SubjectPublicKeyInfoOwned, CertError> {
    let der = key.to_public_key_der().map_err(|e| cert_err(what, e))?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(|e| cert_err(what, e))
}

/// A self-signed CA certificate for `ca_key` (DER).
pub fn ca_certificate(ca_key: &SigningKey, req: &CertRequest) -> Result<Vec<u8>, CertError> {
    let what = Path::new("CA certificate");
    let public = VerifyingKey::from(ca_key);
    signed(
        Profile::Root,
        req.serial(&public, req.subject)?,
        req,
        spki(&public, what)?,
        ca_key,
        what,
    )
}

/// Builds and signs a certificate (DER).
fn signed(
    profile: Profile,
    serial: SerialNumber,
    req: &CertRequest,
    subject_key: SubjectPublicKeyInfoOwned,
    issuer_key: &SigningKey,
    what: &Path,
) -> Result<Vec<u8>, CertError> {
    let builder = CertificateBuilder::new(
        profile,
        serial,
        req.validity(what)?,
        req.name(what)?,
        subject_key,
        issuer_key,
    )
    .map_err(|e| cert_err(what, e))?;
    let cert = builder
        .build::<DerSignature>()
        .map_err(|e| cert_err(what, e))?;
    cert.to_der().map_err(|e| cert_err(what, e))
}

/// A release (leaf, digitalSignature) certificate over `release_key`, issued by the CA.
pub fn release_certificate(
    ca_key: &SigningKey,
    ca_cert_der: &[u8],
    release_key: &VerifyingKey,
    req: &CertRequest,
) -> Result<Vec<u8>, CertError> {
    let what = Path::new("release certificate");
    let ca = Certificate::from_der(ca_cert_der).map_err(|e| cert_err(what, e))?;
    let ca_public = spki(&VerifyingKey::from(ca_key), what)?;
    if ca.tbs_certificate.subject_public_key_info != ca_public {
        return Err(cert_err(
            what,
            "the CA key does not belong to the CA certificate",
        ));
    }
    let issuer = ca.tbs_certificate.subject.clone();
    signed(
        Profile::Leaf {
            issuer: issuer.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        },
        req.serial(release_key, &issuer.to_string())?,
        req,
        spki(release_key, what)?,
        ca_key,
        what,
    )
}

/// PEM text of a DER certificate.
pub fn to_pem(der: &[u8]) -> Result<String, CertError> {
    let what = Path::new("certificate");
    let cert = Certificate::from_der(der).map_err(|e| cert_err(what, e))?;
    cert.to_pem(x509_cert::der::pem::LineEnding::LF)
        .map_err(|e| cert_err(what, e))
}

/// Reads every certificate of a PEM file (or one DER certificate) as DER, in file order.
pub fn load_certificates(path: &Path) -> Result<Vec<Vec<u8>>, CertError> {
    let bytes = std::fs::read(path).map_err(|e| cert_err(path, e))?;
    parse_certificates(bytes, path)
}

/// [`load_certificates`] on bytes already read; `path` names them in errors.
pub fn parse_certificates(bytes: Vec<u8>, path: &Path) -> Result<Vec<Vec<u8>>, CertError> {
    if bytes.first() == Some(&0x30) {
        Certificate::from_der(&bytes).map_err(|e| cert_err(path, e))?;
        return Ok(vec![bytes]);
    }
    let text = String::from_utf8(bytes).map_err(|_| cert_err(path, "neither PEM nor DER"))?;
    let mut out = Vec::new();
    let end = "-----END CERTIFICATE-----";
    let mut rest = text.as_str();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let stop = rest[start..]
            .find(end)
            .map(|i| start + i + end.len())
            .ok_or_else(|| cert_err(path, "unterminated PEM certificate"))?;
        let cert = Certificate::from_pem(&rest[start..stop]).map_err(|e| cert_err(path, e))?;
        out.push(cert.to_der().map_err(|e| cert_err(path, e))?);
        rest = &rest[stop..];
    }
    if out.is_empty() {
        return Err(cert_err(path, "holds no certificate"));
    }
    Ok(out)
}

/// The public key a certificate binds.
pub fn certificate_key(der: &[u8]) -> Result<VerifyingKey, CertError> {
    use p256::pkcs8::DecodePublicKey;
    let what = Path::new("certificate");
    let cert = Certificate::from_der(der).map_err(|e| cert_err(what, e))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| cert_err(what, e))?;
    VerifyingKey::from_public_key_der(&spki)
        .map_err(|_| cert_err(what, "its key is not a P-256 public key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_a_chain_and_is_deterministic() {
        let ca_key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let rel_key = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let req = CertRequest {
            subject: "CN=Test CA,O=kiln",
            not_before: 1_700_000_000,
            days: 3650,
        };
        let ca = ca_certificate(&ca_key, &req).unwrap();
        assert_eq!(ca, ca_certificate(&ca_key, &req).unwrap());
        let rel_req = CertRequest {
            subject: "CN=Release",
            not_before: 1_700_000_000,
            days: 365,
        };
        let rel =
            release_certificate(&ca_key, &ca, &VerifyingKey::from(&rel_key), &rel_req).unwrap();
        assert_eq!(certificate_key(&rel).unwrap(), VerifyingKey::from(&rel_key));
        let parsed = Certificate::from_der(&rel).unwrap();
        assert_eq!(
            parsed.tbs_certificate.issuer.to_string(),
            "CN=Test CA,O=kiln"
        );
        // The wrong CA key is refused.
        let e = release_certificate(&rel_key, &ca, &VerifyingKey::from(&rel_key), &rel_req)
            .unwrap_err();
        assert!(e.to_string().contains("does not belong"), "{e}");
        let pem = to_pem(&ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("chain.pem");
        std::fs::write(&p, format!("{pem}{}", to_pem(&rel).unwrap())).unwrap();
        assert_eq!(load_certificates(&p).unwrap(), vec![ca, rel]);
    }
}
