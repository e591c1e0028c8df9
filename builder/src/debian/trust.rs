//! OpenPGP trust: checks that an archive's `InRelease` (or `Release` + `Release.gpg`) was signed
//! by a key of the board's keyring that was valid when it mattered.
//!
//! The signature arithmetic is rpgp's; what rpgp's `verify()` leaves to the caller is done here
//! (see FIELD-NOTES): the keyring's self-signatures and subkey bindings are checked, no
//! signature of a key revoked as compromised (or for no stated reason) counts, a key its owner
//! retired or superseded counts only for signatures made before that (and never for a live
//! suite), and key expiry is
//! evaluated at a reference time. That time is "now" for a live
//! suite. For a suite the board marks archived (stretch), Debian's keys have expired since, so
//! the reference time is the signature's own creation time: a key that was valid when it signed
//! is accepted, and only for such a board (time-anchored verification rather than the blanket
//! "ignore expiry" of other tools).

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::KeyDetails;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why an archive signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The keyring cannot be read or holds no usable key.
    #[error("keyring {path}: {reason}")]
    Keyring {
        /// Keyring file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The signed file is not a valid OpenPGP signed message.
    #[error("{what}: not a valid OpenPGP signature: {reason}")]
    Malformed {
        /// Which file.
        what: String,
        /// Parser message.
        reason: String,
    },
    /// No signature verified against any valid key of the keyring.
    #[error("{what}: no valid signature by a key in {keyring}: {details}")]
    Untrusted {
        /// Which file.
        what: String,
        /// Keyring file.
        keyring: PathBuf,
        /// Per-signature reasons.
        details: String,
    },
}

/// When key validity is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeAnchor {
    /// At the current time (live suites).
    Now,
    /// At the time each signature was made (archived suites whose keys have expired since).
    SignatureTime,
}

/// A key that may sign: the primary key or a subkey, with its validity window.
struct SigningCandidate {
    key: Box<dyn VerifyOnly>,
    fingerprint: String,
    /// The (sub)key's fingerprint and key id, to try only the keys a signature names.
    issuer: (pgp::types::Fingerprint, pgp::types::KeyId),
    /// Its owner's revocation, if any (kept, to say why its signatures do not count).
    revoked: Option<Revoked>,
    created: u64,
    expires: Option<u64>,
}

trait VerifyOnly: Send + Sync {
    fn verify(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()>;
}

impl VerifyOnly for SignedPublicKey {
    fn verify(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        sig.verify(self, data)
    }
}

impl VerifyOnly for pgp::composed::SignedPublicSubKey {
    fn verify(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        sig.verify(self, data)
    }
}

/// A key its owner revoked, with a verified revocation signature.
#[derive(Debug, Clone, Copy)]
struct Revoked {
    /// When (the earliest such revocation signature's creation time, seconds since the epoch).
    at: u64,
    /// Hard: no reason, "compromised", or another code: none of the key's signatures counts,
    /// whenever made. Soft ("superseded", "retired"): those made before `at` still do.
    hard: bool,
}

impl Revoked {
    /// The revocation that holds when both `a` and `b` were issued (a primary key's and its
    /// subkey's): the hard one if one is, else the earlier.
    fn either(a: Option<Revoked>, b: Option<Revoked>) -> Option<Revoked> {
        match (a, b) {
            (Some(a), Some(b)) if a.hard != b.hard => Some(if a.hard { a } else { b }),
            (Some(a), Some(b)) => Some(Revoked {
                at: a.at.min(b.at),
                hard: a.hard,
            }),
            (a, b) => a.or(b),
        }
    }
}

/// What the verified revocation signatures among `sigs` say, RFC 9580 5.2.3.31: "key
/// superseded" and "key retired" keep the signatures made before the revocation valid (Debian
/// uploaders rotate signing subkeys this way; gpgv accepts their earlier .dsc signatures); no
/// reason, "compromised" or any other code voids every signature of the key.
fn revocation_state<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<Revoked> {
    use pgp::packet::RevocationCode;
    let mut state = None;
    for sig in sigs {
        let at = sig.created().map(|t| t.as_secs() as u64).unwrap_or(0);
        let hard = !matches!(
            sig.revocation_reason_code(),
            Some(RevocationCode::KeySuperseded | RevocationCode::KeyRetired)
        );
        state = Revoked::either(state, Some(Revoked { at, hard }));
    }
    state
}

/// The keys of one keyring file that passed their own self-checks.
pub struct Keyring {
    path: PathBuf,
    candidates: Vec<SigningCandidate>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The expiry that the newest of the given self-signatures states, as absolute seconds.
fn expiry_from(created: u64, sigs: &[&Signature]) -> Option<u64> {
    let newest = sigs
        .iter()
        .max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))?;
    match newest.key_expiration_time() {
        Some(d) if d.as_secs() > 0 => Some(created + u64::from(d.as_secs())),
        _ => None,
    }
}

/// When the primary key expires, as GnuPG computes it (RFC 9580 5.2.3.18 and GnuPG's
/// `merge_selfsigs_main`): the newest direct-key self-signature that states an expiry wins;
/// otherwise the newest self-signature on the primary user id (the one flagged primary, else the
/// newest of all user ids). Direct-key signatures without an expiry (Debian's keys carry such,
/// newer than their user-id self-signature) and certifications by other keys state nothing.
fn primary_expiry(key: &SignedPublicKey, created: u64) -> Option<u64> {
    let created_at = |s: &&Signature| s.created().map(|t| t.as_secs()).unwrap_or(0);
    let direct: Vec<&Signature> = key
        .details
        .direct_signatures
        .iter()
        .filter(|s| issued_by(s, key) && s.key_expiration_time().is_some())
        .collect();
    if !direct.is_empty() {
        return expiry_from(created, &direct);
    }
    let newest_per_user: Vec<&Signature> = key
        .details
        .users
        .iter()
        .filter_map(|u| {
            u.signatures
                .iter()
                .filter(|s| issued_by(s, key))
                .max_by_key(created_at)
        })
        .collect();
    let primary: Vec<&Signature> = newest_per_user
        .iter()
        .copied()
        .filter(|s| s.is_primary())
        .collect();
    if primary.is_empty() {
        expiry_from(created, &newest_per_user)
    } else {
        expiry_from(created, &primary)
    }
}

/// Whether a signature names `key` as its issuer (by fingerprint or key id).
fn issued_by(sig: &Signature, key: &SignedPublicKey) -> bool {
    let fingerprint = key.fingerprint();
    let id = key.legacy_key_id();
    sig.issuer_fingerprint().iter().any(|f| **f == fingerprint)
        || sig.issuer_key_id().iter().any(|k| **k == id)
}

/// The key's own certifications of its user ids: every one verifies, and at least one exists.
/// Certifications by other keys are not the key owner's statements and are skipped (rpgp's
/// `verify_bindings` would fail on them: Debian's archive keys are cross-signed by the release
/// keys, so bullseye's keys, signed by bookworm's, would all be dropped); apt does not use them
/// either.
fn self_certified(key: &SignedPublicKey) -> bool {
    let mut certified = false;
    for user in &key.details.users {
        for sig in user.signatures.iter().filter(|s| issued_by(s, key)) {
            if sig
                .verify_certification(&key.primary_key, pgp::types::Tag::UserId, &user.id)
                .is_err()
            {
                return false;
            }
            certified = true;
        }
    }
    let direct_ok = key
        .details
        .direct_signatures
        .iter()
        .filter(|s| issued_by(s, key))
        .all(|s| s.verify_key(&key.primary_key).is_ok());
    certified && direct_ok
}

/// Whether `sig` may be `cand`'s: it names `cand` as its issuer, or names no issuer at all.
/// Trying only those keeps a 28 MB uploaders' keyring (thousands of keys) cheap; a signature
/// whose issuer was altered to name another key fails to verify, as it would anyway.
fn may_have_made(sig: &Signature, cand: &SigningCandidate) -> bool {
    let fingerprints = sig.issuer_fingerprint();
    let ids = sig.issuer_key_id();
    (fingerprints.is_empty() && ids.is_empty())
        || fingerprints.iter().any(|f| **f == cand.issuer.0)
        || ids.iter().any(|k| **k == cand.issuer.1)
}

/// The largest keyring read: debian-archive-keyring's files are about 100 KiB each, the
/// uploaders' keyring of the debian-keyring package (for `.dsc` signatures) 28 MB.
const MAX_KEYRING: u64 = 64 << 20;

/// Reads the regular file `path` (symlinks followed: keyrings live behind them in
/// /usr/share/keyrings) of at most `max` bytes; a FIFO or device is refused without reading.
fn read_bounded_file(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > max {
        return Err(format!(
            "is {} bytes, more than a keyring's {max}",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    Ok(bytes)
}

impl Keyring {
    /// Reads a keyring (binary, as Debian ships them, or ASCII-armored) and keeps the keys whose
    /// self-signatures verify, with their owners' revocations; refused if no unrevoked key is left.
    pub fn load(path: &Path) -> Result<Keyring, TrustError> {
        // Debian's archive keyring is 100 KiB, its uploaders' 28 MB; a device or FIFO here
        // must not be read for ever.
        let bytes = read_bounded_file(path, MAX_KEYRING).map_err(|reason| TrustError::Keyring {
            path: path.to_path_buf(),
            reason,
        })?;
        Keyring::from_bytes(path, &bytes)
    }

    /// [`Keyring::load`] of a keyring's bytes already read; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Keyring, TrustError> {
        let err = |reason: String| TrustError::Keyring {
            path: path.to_path_buf(),
            reason,
        };
        let armored = bytes.starts_with(b"-----BEGIN");
        let keys: Vec<SignedPublicKey> = if armored {
            let (iter, _) = SignedPublicKey::from_armor_many(bytes)
                .map_err(|e| err(format!("not an OpenPGP keyring: {e}")))?;
            iter.filter_map(Result::ok).collect()
        } else {
            SignedPublicKey::from_bytes_many(bytes)
                .map_err(|e| err(format!("not an OpenPGP keyring: {e}")))?
                .filter_map(Result::ok)
                .collect()
        };
        let mut candidates = Vec::new();
        for key in keys {
            // A primary key whose user-id bindings do not verify is not a key its owner made.
            if !self_certified(&key) {
                continue;
            }
            let revoked = revocation_state(
                key.details
                    .revocation_signatures
                    .iter()
                    .filter(|s| s.verify_key(&key.primary_key).is_ok()),
            );
            let created = key.primary_key.created_at().as_secs() as u64;
            // Only the key's own self-signatures state its expiry: Debian's archive keys carry
            // certifications by other keys, newer than the self-signature and without an
            // expiry, which would otherwise make an expired key live forever.
            let expires = primary_expiry(&key, created);
            for sub in &key.public_subkeys {
                if sub.verify_bindings(&key.primary_key).is_err() {
                    continue;
                }
                // verify_bindings verified the revocations too.
                let sub_revoked = revocation_state(
                    sub.signatures
                        .iter()
                        .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation)),
                );
                let binding: Vec<&Signature> = sub
                    .signatures
                    .iter()
                    .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
                    .collect();
                if binding.iter().all(|s| !s.key_flags().sign()) {
                    continue;
                }
                let sub_created = sub.key.created_at().as_secs() as u64;
                let sub_expires = expiry_from(sub_created, &binding);
                candidates.push(SigningCandidate {
                    fingerprint: hex::encode_upper(sub.key.fingerprint().as_bytes()),
                    issuer: (sub.key.fingerprint(), sub.key.legacy_key_id()),
                    // Revoking the primary key revokes its subkeys.
                    revoked: Revoked::either(sub_revoked, revoked),
                    key: Box::new(sub.clone()),
                    created: sub_created,
                    // A subkey cannot outlive its primary key.
                    expires: match (sub_expires, expires) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    },
                });
            }
            candidates.push(SigningCandidate {
                fingerprint: hex::encode_upper(key.fingerprint().as_bytes()),
                issuer: (key.fingerprint(), key.legacy_key_id()),
                revoked,
                key: Box::new(key),
                created,
                expires,
            });
        }
        if candidates.is_empty() {
            return Err(err("holds no valid OpenPGP public key".into()));
        }
        if candidates.iter().all(|c| c.revoked.is_some_and(|r| r.hard)) {
            return Err(err(
                "every key it holds was revoked by its owner (compromised or for no stated reason)"
                    .into(),
            ));
        }
        Ok(Keyring {
            path: path.to_path_buf(),
            candidates,
        })
    }

    /// Every signing-capable key kept, as (fingerprint, expiry in seconds since the epoch).
    pub fn expiries(&self) -> Vec<(String, Option<u64>)> {
        self.candidates
            .iter()
            .filter(|c| !c.revoked.is_some_and(|r| r.hard))
            .map(|c| (c.fingerprint.clone(), c.expires))
            .collect()
    }

    /// Checks signatures over `data`; Ok with the signer's fingerprint when one verifies with a
    /// key that was valid at the anchor time.
    fn check(
        &self,
        what: &str,
        sigs: &[Signature],
        data: &[u8],
        anchor: TimeAnchor,
    ) -> Result<String, TrustError> {
        let now = now_secs();
        let mut reasons = Vec::new();
        for sig in sigs {
            let sig_time = sig.created().map(|t| t.as_secs() as u64).unwrap_or(0);
            let mut matched_any = false;
            for cand in self.candidates.iter().filter(|c| may_have_made(sig, c)) {
                if cand.key.verify(sig, data).is_err() {
                    continue;
                }
                matched_any = true;
                let at = match anchor {
                    TimeAnchor::Now => now,
                    TimeAnchor::SignatureTime => sig_time,
                };
                // A live suite takes no signature of a revoked key; a time-anchored check
                // takes those made before the key was retired (not compromised).
                let void = cand.revoked.filter(|r| {
                    r.hard
                        || match anchor {
                            TimeAnchor::Now => true,
                            TimeAnchor::SignatureTime => sig_time >= r.at,
                        }
                });
                if let Some(r) = void {
                    reasons.push(if r.hard {
                        format!(
                            "key {} was revoked by its owner at {} (compromised or for no stated reason: none of its signatures counts)",
                            cand.fingerprint,
                            crate::timefmt::rfc3339(r.at)
                        )
                    } else {
                        format!(
                            "key {} was retired by its owner at {}{}",
                            cand.fingerprint,
                            crate::timefmt::rfc3339(r.at),
                            match anchor {
                                TimeAnchor::Now => "",
                                TimeAnchor::SignatureTime => ", before it signed",
                            }
                        )
                    });
                } else if sig_time < cand.created {
                    reasons.push(format!(
                        "signature by {} predates the key",
                        cand.fingerprint
                    ));
                } else if sig_time > now + 86_400 {
                    reasons.push(format!(
                        "signature by {} is dated in the future",
                        cand.fingerprint
                    ));
                } else if cand.expires.is_some_and(|e| e <= at) {
                    let hint = match anchor {
                        TimeAnchor::Now => {
                            " (if the suite is archived, say `archived = true` in the board)"
                        }
                        TimeAnchor::SignatureTime => "",
                    };
                    reasons.push(format!(
                        "key {} had expired{}{hint}",
                        cand.fingerprint,
                        match anchor {
                            TimeAnchor::Now => "",
                            TimeAnchor::SignatureTime => " when it signed",
                        }
                    ));
                } else if sig
                    .signature_expiration_time()
                    .is_some_and(|d| d.as_secs() > 0 && sig_time + u64::from(d.as_secs()) <= at)
                {
                    reasons.push(format!("signature by {} has expired", cand.fingerprint));
                } else {
                    return Ok(cand.fingerprint.clone());
                }
            }
            if !matched_any {
                let issuer = sig
                    .issuer_fingerprint()
                    .first()
                    .map(|f| hex::encode_upper(f.as_bytes()))
                    .or_else(|| sig.issuer_key_id().first().map(|k| format!("{k:?}")))
                    .unwrap_or_else(|| "an unknown key".into());
                reasons.push(format!(
                    "signature by {issuer} does not verify with any key of the keyring"
                ));
            }
        }
        if sigs.is_empty() {
            reasons.push("no signature".into());
        }
        Err(TrustError::Untrusted {
            what: what.to_string(),
            keyring: self.path.clone(),
            details: reasons.join("; "),
        })
    }
}

/// A verified signed text with who signed it.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Exactly the signed text, with LF line endings; nothing outside the signature.
    pub text: String,
    /// Fingerprint of the key whose signature was accepted.
    pub signer: String,
}

const SIGNATURE_END: &str = "-----END PGP SIGNATURE-----";

/// The digests an `InRelease`'s `Hash:` armor headers declare (upper case), or None when it
/// has none.
fn declared_hashes(text: &str) -> Option<Vec<String>> {
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim_end() != "-----BEGIN PGP SIGNED MESSAGE-----");
    lines.next()?;
    let mut out = Vec::new();
    for line in lines {
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Hash:") {
            out.extend(v.split(',').map(|h| h.trim().to_ascii_uppercase()));
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A parser's message cut to one short line (rpgp may quote the input it choked on).
fn short(e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > 160 {
        format!("{}…", line.chars().take(160).collect::<String>())
    } else {
        line.to_string()
    }
}

/// Verifies an `InRelease` file (cleartext signature) and returns only the signed text.
pub fn verify_inrelease(
    what: &str,
    inrelease: &[u8],
    keyring: &Keyring,
    anchor: TimeAnchor,
) -> Result<Verified, TrustError> {
    let malformed = |reason: String| TrustError::Malformed {
        what: what.to_string(),
        reason,
    };
    let text =
        std::str::from_utf8(inrelease).map_err(|e| malformed(format!("not UTF-8 text ({e})")))?;
    if let Some(end) = text.find(SIGNATURE_END) {
        if !text[end + SIGNATURE_END.len()..].trim().is_empty() {
            return Err(malformed(
                "data follows the signature block (a tampered or concatenated file)".into(),
            ));
        }
    }
    let declared = declared_hashes(text);
    let (msg, _) = CleartextSignedMessage::from_string(text).map_err(|e| malformed(short(e)))?;
    // RFC 4880 7: the Hash armor header names the digests the signatures use; gpgv refuses a
    // signature made with another one (the header is part of what the signer vouched for).
    if let Some(declared) = &declared {
        for sig in msg.signatures() {
            let used = sig
                .hash_alg()
                .map(|h| h.to_string().to_ascii_uppercase())
                .unwrap_or_else(|| "an unknown digest".into());
            if !declared
                .iter()
                .any(|d| d.replace('-', "") == used.replace('-', ""))
            {
                return Err(malformed(format!(
                    "the Hash armor header says {} but a signature uses {used}",
                    declared.join(",")
                )));
            }
        }
    }
    let signed = msg.signed_text();
    let signer = keyring.check(what, msg.signatures(), signed.as_bytes(), anchor)?;
    let mut text = signed.replace("\r\n", "\n");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(Verified { text, signer })
}

/// Verifies a `Release` file against its detached `Release.gpg` signature.
pub fn verify_detached(
    what: &str,
    release: &[u8],
    signature: &[u8],
    keyring: &Keyring,
    anchor: TimeAnchor,
) -> Result<Verified, TrustError> {
    let malformed = |reason: String| TrustError::Malformed {
        what: what.to_string(),
        reason,
    };
    let sigs: Vec<Signature> = if signature.starts_with(b"-----BEGIN") {
        DetachedSignature::from_armor_many(signature)
            .map_err(|e| malformed(short(e)))?
            .0
            .filter_map(Result::ok)
            .map(|d| d.signature)
            .collect()
    } else {
        DetachedSignature::from_bytes_many(signature)
            .map_err(|e| malformed(short(e)))?
            .filter_map(Result::ok)
            .map(|d| d.signature)
            .collect()
    };
    let signer = keyring.check(what, &sigs, release, anchor)?;
    let text = String::from_utf8(release.to_vec()).map_err(|e| malformed(e.to_string()))?;
    Ok(Verified { text, signer })
}

#[cfg(test)]
mod tests {
    use super::Revoked;

    fn soft(at: u64) -> Option<Revoked> {
        Some(Revoked { at, hard: false })
    }

    fn hard(at: u64) -> Option<Revoked> {
        Some(Revoked { at, hard: true })
    }

    /// A primary key's revocation and its subkey's combine: a compromise wins over a
    /// retirement whatever the dates (its time is the one to report), two retirements take
    /// the earlier, and none leaves the key unrevoked.
    #[test]
    fn revocations_of_a_key_and_its_subkey_combine_hard_first_then_earliest() {
        let at = |r: Option<Revoked>| r.map(|r| (r.at, r.hard));
        assert_eq!(at(Revoked::either(soft(10), hard(20))), Some((20, true)));
        assert_eq!(at(Revoked::either(hard(20), soft(10))), Some((20, true)));
        assert_eq!(at(Revoked::either(hard(30), hard(20))), Some((20, true)));
        assert_eq!(at(Revoked::either(soft(30), soft(20))), Some((20, false)));
        assert_eq!(at(Revoked::either(None, soft(5))), Some((5, false)));
        assert_eq!(at(Revoked::either(None, None)), None);
    }
}
