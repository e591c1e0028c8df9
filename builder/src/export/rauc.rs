//! RAUC bundles in the `verity` format, the A/B updater's over-the-air unit.
//!
//! Layout (RAUC's bundle format documentation, and what `rauc bundle` 1.8 writes):
//! `squashfs (padded to 4 KiB) | dm-verity hash tree | CMS signature | u64 big-endian size of
//! the signature`. The squashfs holds `manifest.raucm` and the slot image (`rootfs.img`, the
//! squashfs of the root filesystem). The CMS SignedData carries the manifest inline (not
//! detached), with `[bundle] format=verity` and the tree's root hash, salt and size, so the
//! signature covers every payload byte through the hash tree: the device checks the payload
//! block by block as it reads it (dm-verity), and `rauc extract` checks it before extracting.
//!
//! Hand-written here rather than calling `rauc bundle`: RAUC draws a random verity salt and
//! OpenSSL a random ECDSA nonce and a signing time, so its bundles are never reproducible.
//! kiln derives the salt from the image digest, signs with RFC 6979 ECDSA and puts no signing
//! time in the signed attributes, so two exports of one image are byte-identical.
//! The dm-verity tree is that of `veritysetup format --no-superblock` (format 1, SHA-256,
//! 4 KiB data and hash blocks, salt hashed first); the tests check it with veritysetup.

use super::rootfs::Staging;
use super::{fsimage, io_err, run_tool, ExportError, SourceImage};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use p256::ecdsa::signature::Signer;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use x509_cert::attr::Attribute;
use x509_cert::der::asn1::{OctetString, SetOfVec};
use x509_cert::der::{Any, Decode, Encode, Tag};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

/// dm-verity block size (data and hash).
const BLOCK: usize = 4096;

/// The RAUC signer: the release key and its X.509 certificate (issued by the CA whose
/// certificate the devices hold as their keyring).
pub struct RaucSigner {
    /// The release private key (P-256).
    pub key: p256::ecdsa::SigningKey,
    /// The release certificate (DER).
    pub cert_der: Vec<u8>,
    /// Intermediate certificates to include (DER), usually none.
    pub chain_der: Vec<Vec<u8>>,
}

/// A dm-verity hash tree: the tree as stored after the data, and its root hash.
pub struct VerityTree {
    /// Hash blocks, top level first (as dm-verity lays them out).
    pub tree: Vec<u8>,
    /// Root hash.
    pub root: [u8; 32],
}

fn salted(salt: &[u8], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// The dm-verity tree of `data` (a whole number of 4 KiB blocks).
pub fn verity_tree(data: &[u8], salt: &[u8]) -> VerityTree {
    let mut hashes: Vec<[u8; 32]> = data.chunks(BLOCK).map(|b| salted(salt, b)).collect();
    if hashes.len() <= 1 {
        // One data block: its hash is the root and there is no tree.
        return VerityTree {
            tree: Vec::new(),
            root: hashes.first().copied().unwrap_or_else(|| salted(salt, &[])),
        };
    }
    let per_block = BLOCK / 32;
    let mut levels: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut level = Vec::with_capacity(hashes.len().div_ceil(per_block) * BLOCK);
        for h in &hashes {
            level.extend_from_slice(h);
        }
        level.resize(level.len().div_ceil(BLOCK) * BLOCK, 0);
        hashes = level.chunks(BLOCK).map(|b| salted(salt, b)).collect();
        levels.push(level);
        if hashes.len() == 1 {
            break;
        }
    }
    let root = hashes[0];
    let tree = levels.into_iter().rev().flatten().collect();
    VerityTree { tree, root }
}

/// The bundle's manifest; `verity` adds the `[bundle]` lines only the signed copy carries.
fn manifest(
    image: &SourceImage,
    rootfs_sha256: &str,
    rootfs_size: u64,
    verity: Option<(&VerityTree, &[u8], usize)>,
) -> String {
    let compatible = image.compatible.first().map(String::as_str).unwrap_or("");
    let mut m = format!(
        "[update]\ncompatible={compatible}\nversion={}\ndescription={} {} for {}\nbuild={}\n\n[bundle]\nformat=verity\n",
        image.version, image.name, image.version, image.board, image.digest
    );
    if let Some((tree, salt, size)) = verity {
        m.push_str(&format!(
            "verity-hash={}\nverity-salt={}\nverity-size={size}\n",
            hex::encode(tree.root),
            hex::encode(salt)
        ));
    }
    m.push_str(&format!(
        "\n[image.rootfs]\nsha256={rootfs_sha256}\nsize={rootfs_size}\nfilename=rootfs.img\n"
    ));
    m
}

fn sign_err(e: impl std::fmt::Display) -> ExportError {
    ExportError::Signing(e.to_string())
}

/// CMS SignedData with `content` inline, signed by `signer` (signed attributes: content type
/// and message digest only), with the signer's certificate (and chain).
pub fn cms_sign(content: &[u8], signer: &RaucSigner) -> Result<Vec<u8>, ExportError> {
    use const_oid::db::{rfc5911, rfc5912};
    let cert = Certificate::from_der(&signer.cert_der).map_err(sign_err)?;
    let cert_key = crate::signing::certs::certificate_key(&signer.cert_der).map_err(sign_err)?;
    if cert_key != p256::ecdsa::VerifyingKey::from(&signer.key) {
        return Err(ExportError::Signing(
            "the release key does not belong to the release certificate".into(),
        ));
    }
    let sha256 = AlgorithmIdentifierOwned {
        oid: rfc5912::ID_SHA_256,
        parameters: None,
    };
    let attr = |oid, value: Any| -> Result<Attribute, ExportError> {
        let mut values = SetOfVec::new();
        values.insert(value).map_err(sign_err)?;
        Ok(Attribute { oid, values })
    };
    let mut attrs = SetOfVec::new();
    attrs
        .insert(attr(
            rfc5911::ID_CONTENT_TYPE,
            Any::encode_from(&rfc5911::ID_DATA).map_err(sign_err)?,
        )?)
        .map_err(sign_err)?;
    let digest = OctetString::new(Sha256::digest(content).to_vec()).map_err(sign_err)?;
    attrs
        .insert(attr(
            rfc5911::ID_MESSAGE_DIGEST,
            Any::encode_from(&digest).map_err(sign_err)?,
        )?)
        .map_err(sign_err)?;
    // RFC 5652 5.4: the signature covers the DER of the attributes as a SET OF.
    let signed: p256::ecdsa::DerSignature = signer.key.sign(&attrs.to_der().map_err(sign_err)?);
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: sha256.clone(),
        signed_attrs: Some(attrs),
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        },
        signature: OctetString::new(signed.as_bytes().to_vec()).map_err(sign_err)?,
        unsigned_attrs: None,
    };
    let mut certificates = SetOfVec::new();
    certificates
        .insert(CertificateChoices::Certificate(cert))
        .map_err(sign_err)?;
    for der in &signer.chain_der {
        certificates
            .insert(CertificateChoices::Certificate(
                Certificate::from_der(der).map_err(sign_err)?,
            ))
            .map_err(sign_err)?;
    }
    let mut digest_algorithms = SetOfVec::new();
    digest_algorithms.insert(sha256).map_err(sign_err)?;
    let mut signer_infos = SetOfVec::new();
    signer_infos.insert(signer_info).map_err(sign_err)?;
    let signed_data = SignedData {
        version: CmsVersion::V1,
        digest_algorithms,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: rfc5911::ID_DATA,
            econtent: Some(Any::new(Tag::OctetString, content.to_vec()).map_err(sign_err)?),
        },
        certificates: Some(CertificateSet(certificates)),
        crls: None,
        signer_infos: SignerInfos(signer_infos),
    };
    ContentInfo {
        content_type: rfc5911::ID_SIGNED_DATA,
        content: Any::encode_from(&signed_data).map_err(sign_err)?,
    }
    .to_der()
    .map_err(sign_err)
}

/// Writes the signed verity bundle of `image` to `out`.
pub fn write_bundle(
    image: &SourceImage,
    signer: &RaucSigner,
    staging: &Staging,
    out: &Path,
) -> Result<(), ExportError> {
    if image.compatible.is_empty() {
        return Err(ExportError::BadImage {
            image: image.digest.clone(),
            reason: "lists no compatible string for the RAUC manifest".into(),
        });
    }
    let tree_dir = staging.materialise(image)?;
    let content = staging.path().join("bundle");
    std::fs::create_dir(&content).map_err(io_err(&content))?;
    let rootfs = content.join("rootfs.img");
    fsimage::squashfs(&tree_dir, &rootfs, image.created)?;
    let (rootfs_sha256, rootfs_size) =
        crate::digest::sha256_reader(std::fs::File::open(&rootfs).map_err(io_err(&rootfs))?)
            .map_err(io_err(&rootfs))?;
    let plain = manifest(image, &rootfs_sha256, rootfs_size, None);
    let manifest_file = content.join("manifest.raucm");
    std::fs::write(&manifest_file, &plain).map_err(io_err(&manifest_file))?;
    let sde = image.created.to_string();
    let payload = staging.path().join("bundle.squashfs");
    run_tool(
        Command::new("mksquashfs")
            .arg(&content)
            .arg(&payload)
            .args([
                "-noappend",
                "-no-progress",
                "-quiet",
                "-no-xattrs",
                "-all-root",
                "-reproducible",
                // The slot image is compressed already.
                "-noD",
                "-noF",
                "-noX",
            ])
            .args(["-all-time", &sde, "-mkfs-time", &sde]),
        None,
    )?;
    let mut data = std::fs::read(&payload).map_err(io_err(&payload))?;
    data.resize(data.len().div_ceil(BLOCK) * BLOCK, 0);
    let salt = image.derived_bytes("rauc-verity-salt");
    let tree = verity_tree(&data, &salt);
    let signed_manifest = manifest(
        image,
        &rootfs_sha256,
        rootfs_size,
        Some((&tree, &salt, tree.tree.len())),
    );
    let cms = cms_sign(signed_manifest.as_bytes(), signer)?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).map_err(io_err(out))?);
    file.write_all(&data).map_err(io_err(out))?;
    file.write_all(&tree.tree).map_err(io_err(out))?;
    file.write_all(&cms).map_err(io_err(out))?;
    file.write_all(&(cms.len() as u64).to_be_bytes())
        .map_err(io_err(out))?;
    file.flush().map_err(io_err(out))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verity_tree_shapes() {
        let salt = [1u8; 32];
        // One block: no tree, the root is the block's hash.
        let one = verity_tree(&[0u8; BLOCK], &salt);
        assert!(one.tree.is_empty());
        // 3 blocks: one hash block; 129 blocks: two level-0 blocks and the top block first.
        assert_eq!(verity_tree(&vec![0u8; 3 * BLOCK], &salt).tree.len(), BLOCK);
        let big = verity_tree(&vec![5u8; 129 * BLOCK], &salt);
        assert_eq!(big.tree.len(), 3 * BLOCK);
        assert_eq!(big.root, salted(&salt, &big.tree[..BLOCK]));
        assert_eq!(&big.tree[..32], &salted(&salt, &big.tree[BLOCK..2 * BLOCK]));
    }
}
