//! Credentials and the two ways registries ask for them (distribution's token spec,
//! `docs/spec/auth/token.md`): `WWW-Authenticate: Basic` (send the user and password) and
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…` (trade them, or nothing for anonymous
//! pulls, for a token at the realm).
//!
//! Credentials come from where podman, skopeo and docker keep them: `$REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`, each `{"auths": {"HOST[:PORT]": {"auth": base64("user:password")}}}`.
//! A secret never reaches a message: errors name the file and the host, not what was in it.

use base64::Engine;
use std::path::PathBuf;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization: Basic` value.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Why the credentials file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct AuthFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (never its content).
    pub reason: String,
}

/// The files searched, in order; the first that exists is the one read (as podman does).
/// `$REGISTRY_AUTH_FILE`, when set, is the only one.
pub fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        return vec![f];
    }
    let mut files = Vec::new();
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        files.push(d.join("containers/auth.json"));
    }
    if let Some(d) = env("DOCKER_CONFIG") {
        files.push(d.join("config.json"));
    }
    if let Some(h) = env("HOME") {
        files.push(h.join(".docker/config.json"));
    }
    files
}

/// Largest credentials file read.
const MAX_AUTH_FILE: u64 = 1 << 20;

/// The credentials stored for `registry` (`host[:port]`) in the first credentials file that
/// exists, None when there is none or it holds nothing for that host.
pub fn credentials_for(registry: &str) -> Result<Option<Credentials>, AuthFileError> {
    for path in auth_files() {
        let fail = |reason: &str| AuthFileError {
            path: path.clone(),
            reason: reason.to_string(),
        };
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if !meta.is_file() || meta.len() > MAX_AUTH_FILE {
            return Err(fail("is not a regular file of at most 1 MiB"));
        }
        let text = std::fs::read(&path).map_err(|e| fail(&e.to_string()))?;
        let doc: serde_json::Value =
            serde_json::from_slice(&text).map_err(|_| fail("is not JSON"))?;
        let Some(auths) = doc.get("auths").and_then(|a| a.as_object()) else {
            return Ok(None);
        };
        let entry = auths.iter().find(|(key, _)| {
            let k = key
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            k == registry || k.split('/').next() == Some(registry)
        });
        let Some((_, entry)) = entry else {
            return Ok(None);
        };
        let Some(encoded) = entry.get("auth").and_then(|a| a.as_str()) else {
            return Err(fail(&format!(
                "the entry for {registry} has no \"auth\" (credential helpers are not supported)"
            )));
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                fail(&format!(
                    "the \"auth\" of {registry} is not base64 of user:password"
                ))
            })?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| {
            fail(&format!(
                "the \"auth\" of {registry} is not base64 of user:password"
            ))
        })?;
        return Ok(Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    Ok(None)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Send the credentials with every request.
    Basic,
    /// Fetch a token at `realm` for `service` and `scope`.
    Bearer {
        /// The token endpoint (an https URL, or http on loopback).
        realm: String,
        /// The service parameter, when given.
        service: Option<String>,
        /// The scope parameter, when given.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header (RFC 7235: a scheme, then `key="value"` pairs).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = std::collections::HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_string());
        s = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge("Basic realm=\"x\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"https://auth.example.com/token\",service=\"registry.example.com\",scope=\"repository:robots/base:pull,push\""
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:robots/base:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge("Bearer realm=\"unterminated"), None);
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials {
            username: "ci".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
