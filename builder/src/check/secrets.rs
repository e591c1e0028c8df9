//! The `baked-secret` check: private key material left in an image. Every robot flashed from
//! an image holds the same bytes, so a private key in it is a fleet-wide key: whoever holds one
//! unit (or the image) holds every unit's key. Keys that identify a device (SSH host keys, TLS
//! snakeoil certificates) are made on the device at first boot instead
//! ([`crate::pipeline::configure::identity`]); a key a recipe ships on purpose is waived by path, with a
//! reason, where every report shows it.
//!
//! What counts as key material, each recognised by its own framing so that programs which
//! merely *mention* a format (ssh-keygen holds the string `-----BEGIN OPENSSH PRIVATE KEY-----`)
//! are not reported:
//! - a PEM block whose label ends in `PRIVATE KEY` (PKCS#1 `RSA`, SEC1 `EC`, `DSA`, PKCS#8 and
//!   its `ENCRYPTED` form, `OPENSSH`; RFC 7468 §2 for the framing) or is
//!   `PGP PRIVATE KEY BLOCK` (RFC 4880 §6.2), with a body of base64 and its END line;
//! - a binary OpenPGP secret-key packet (tag 5, RFC 4880 §5.5.1.3) at the start of a file;
//! - OpenSSH's SSH-1 key file (`SSH PRIVATE KEY FILE FORMAT 1.1`) and PuTTY's `.ppk`;
//! - a WireGuard `PrivateKey = ` line (wg(8): 32 bytes, base64, 44 characters).

/// Files larger than this are not scanned: key files are a few KB, and scanning every large
/// blob of an image (models, firmware) would cost more than it finds.
pub const MAX_SCANNED: usize = 4 << 20;

/// The least base64 a PEM private key's body holds (an Ed25519 PKCS#8 key has 64 characters).
const MIN_PEM_BODY: usize = 40;

/// What kind of private key `data` holds, if any, as a short phrase for the report.
pub fn private_key_in(data: &[u8]) -> Option<String> {
    if data.len() > MAX_SCANNED {
        return None;
    }
    if let Some(label) = pem_private_key(data) {
        return Some(format!("a PEM \"{label}\" block"));
    }
    if openpgp_secret_key_packet(data) {
        return Some("a binary OpenPGP secret key".into());
    }
    if data.starts_with(b"SSH PRIVATE KEY FILE FORMAT 1.1\n") {
        return Some("an SSH-1 private key".into());
    }
    if data.starts_with(b"PuTTY-User-Key-File-") && find(data, b"\nPrivate-Lines:").is_some() {
        return Some("a PuTTY private key".into());
    }
    if wireguard_private_key(data) {
        return Some("a WireGuard PrivateKey".into());
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The label of the first PEM private-key block of `data` with a real body.
fn pem_private_key(data: &[u8]) -> Option<String> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let mut at = 0;
    while let Some(i) = find(&data[at..], BEGIN) {
        let start = at + i + BEGIN.len();
        at = start;
        let rest = &data[start..];
        let Some(end) = find(&rest[..rest.len().min(64)], b"-----") else {
            continue;
        };
        let Ok(label) = std::str::from_utf8(&rest[..end]) else {
            continue;
        };
        if !(label.ends_with("PRIVATE KEY") || label == "PGP PRIVATE KEY BLOCK") {
            continue;
        }
        // The body: optional headers (Proc-Type, armor headers), then base64 lines.
        let body = &rest[end + 5..];
        let mut base64 = 0;
        let mut closed = false;
        for line in body.split(|&b| b == b'\n').skip(1).take(4096) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.starts_with(b"-----END ") {
                closed = true;
                break;
            }
            if line
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b))
            {
                base64 += line.len();
            } else if !line.contains(&b':') {
                break;
            }
        }
        if closed && base64 >= MIN_PEM_BODY {
            return Some(label.to_string());
        }
    }
    None
}

/// Whether `data` starts with an OpenPGP secret-key packet: tag 5 in the old or new packet
/// format, a v4 or v5 key, a public-key algorithm RFC 4880 §9.1 / RFC 9580 §9.1 defines, and a
/// length that fits the file.
fn openpgp_secret_key_packet(data: &[u8]) -> bool {
    let Some(&first) = data.first() else {
        return false;
    };
    let (len, header) = match first {
        // Old format: 10 tttt ll, tag 5; length type 0, 1 or 2.
        0x94 => (data.get(1).map(|&b| b as usize), 2),
        0x95 => (
            data.get(1..3)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize),
            3,
        ),
        0x96 => (
            data.get(1..5)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize),
            5,
        ),
        // New format: 11 tttttt, tag 5; one- or two-octet length.
        0xc5 => match data.get(1) {
            Some(&l) if l < 192 => (Some(l as usize), 2),
            Some(&l) if l < 224 => (
                data.get(2)
                    .map(|&m| ((l as usize - 192) << 8) + m as usize + 192),
                3,
            ),
            _ => (None, 0),
        },
        _ => (None, 0),
    };
    let Some(len) = len else { return false };
    let Some(body) = data.get(header..) else {
        return false;
    };
    let version = body.first().copied();
    let algorithm = body.get(5).copied();
    len >= 12
        && len <= body.len()
        && matches!(version, Some(4) | Some(5))
        && matches!(
            algorithm,
            Some(1 | 2 | 3 | 16 | 17 | 18 | 19 | 22 | 25 | 26 | 27 | 28)
        )
}

/// Whether `data` has a WireGuard `PrivateKey = <44 characters of base64>` line.
fn wireguard_private_key(data: &[u8]) -> bool {
    if find(data, b"PrivateKey").is_none() {
        return false;
    }
    data.split(|&b| b == b'\n').any(|line| {
        let Ok(line) = std::str::from_utf8(line) else {
            return false;
        };
        let Some((key, value)) = line.split_once('=') else {
            return false;
        };
        let value = value.trim();
        key.trim().eq_ignore_ascii_case("PrivateKey")
            && value.len() == 44
            && value.ends_with('=')
            && value[..43]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\nKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm\n-----END RSA PRIVATE KEY-----\n";

    #[test]
    fn pem_private_keys_of_every_label_are_found() {
        for label in [
            "RSA PRIVATE KEY",
            "EC PRIVATE KEY",
            "PRIVATE KEY",
            "ENCRYPTED PRIVATE KEY",
            "OPENSSH PRIVATE KEY",
        ] {
            let text = RSA.replace("RSA PRIVATE KEY", label);
            assert_eq!(
                private_key_in(text.as_bytes()),
                Some(format!("a PEM \"{label}\" block")),
                "{label}"
            );
        }
        // After a certificate in the same file, with CRLF line ends, with old-style headers.
        let mixed = format!(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n{}",
            RSA.replace('\n', "\r\n").replacen(
                "-----\r\n",
                "-----\r\nProc-Type: 4,ENCRYPTED\r\nDEK-Info: AES-128-CBC,00\r\n\r\n",
                1
            )
        );
        assert!(private_key_in(mixed.as_bytes()).is_some());
        let pgp = RSA
            .replace("RSA PRIVATE KEY", "PGP PRIVATE KEY BLOCK")
            .replacen("-----\n", "-----\nComment: test\n\n", 1);
        assert!(private_key_in(pgp.as_bytes()).is_some());
    }

    #[test]
    fn programs_that_only_name_a_format_are_not_keys() {
        // What ssh-keygen, libcrypto and Python's ssl module carry as strings.
        for text in [
            "\0-----BEGIN OPENSSH PRIVATE KEY-----\n\0-----END OPENSSH PRIVATE KEY-----\n\0",
            "-----BEGIN %s-----\n%s-----END %s-----\n",
            "PEM_HEADER = '-----BEGIN PRIVATE KEY-----'\nPEM_FOOTER = '-----END PRIVATE KEY-----'\n",
            "-----BEGIN CERTIFICATE-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END CERTIFICATE-----\n",
            "-----BEGIN PUBLIC KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END PUBLIC KEY-----\n",
            "# PrivateKey = (hidden)\nPrivateKey = <your key here>\n",
        ] {
            assert_eq!(private_key_in(text.as_bytes()), None, "{text}");
        }
        // A truncated block (no END line) is not reported either.
        assert_eq!(private_key_in(&RSA.as_bytes()[..RSA.len() - 31]), None);
    }

    #[test]
    fn binary_and_other_formats() {
        let wg = "[Interface]\nAddress = 10.0.0.1/24\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n";
        assert_eq!(
            private_key_in(wg.as_bytes()).as_deref(),
            Some("a WireGuard PrivateKey")
        );
        let wg_public = wg.replace("PrivateKey", "PublicKey");
        assert_eq!(private_key_in(wg_public.as_bytes()), None);
        assert!(private_key_in(b"SSH PRIVATE KEY FILE FORMAT 1.1\n\0\0").is_some());
        assert!(
            private_key_in(b"PuTTY-User-Key-File-3: ssh-ed25519\nPrivate-Lines: 1\nAAAA\n")
                .is_some()
        );
        // An old-format v4 Ed25519 (22) secret key packet, two-octet length; and its public
        // counterpart (tag 6, 0x99), which is not a secret.
        let mut packet = vec![0x95, 0x00, 0x20, 4, 0x60, 0, 0, 0, 22];
        packet.resize(3 + 0x20, 0xab);
        assert!(private_key_in(&packet).is_some());
        packet[0] = 0x99;
        assert_eq!(private_key_in(&packet), None);
        // Tag 5's first byte with an implausible version or a length beyond the file.
        assert_eq!(
            private_key_in(&[0x95, 0x00, 0x20, 9, 0, 0, 0, 0, 22, 0, 0, 0]),
            None
        );
        assert_eq!(
            private_key_in(&[0x95, 0xff, 0xff, 4, 0, 0, 0, 0, 22, 0, 0, 0]),
            None
        );
    }
}
