//! An image reference as registries and their clients write it: `HOST[:PORT]/REPO[:TAG][@DIGEST]`
//! (the distribution reference grammar, `distribution/reference/regexp.go`), with the host
//! always spelled out: kiln never guesses Docker Hub for a bare name.

use std::fmt;

/// A parsed `HOST[:PORT]/REPO[:TAG][@sha256:HEX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host` or `host:port`.
    pub registry: String,
    /// The repository path, lower case, `/`-separated.
    pub repository: String,
    /// The tag, when given.
    pub tag: Option<String>,
    /// The `sha256:` digest, when given.
    pub digest: Option<String>,
}

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image reference '{text}': {reason}")]
pub struct ReferenceError {
    /// The reference as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A repository path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        let run = b[i..]
            .iter()
            .take_while(|x| x.is_ascii_lowercase() || x.is_ascii_digit())
            .count();
        if run == 0 {
            return false;
        }
        i += run;
        if i == b.len() {
            return true;
        }
        let sep = match b[i] {
            b'.' => 1,
            b'_' => b[i..].iter().take(2).take_while(|&&x| x == b'_').count(),
            b'-' => b[i..].iter().take_while(|&&x| x == b'-').count(),
            _ => return false,
        };
        i += sep;
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// A `sha256:` digest of 64 lower-case hex digits.
pub fn valid_digest(d: &str) -> bool {
    crate::digest::sha256_digest_hex(d).is_some()
}

impl Reference {
    /// Parses `text`; the host part must be one (it has a `.` or a `:`, or is `localhost`).
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        Reference::parse_inner(text, false)
    }

    /// Parses a repository without tag or digest, `HOST[:PORT]/REPOSITORY` (a layer cache).
    pub fn parse_repository(text: &str) -> Result<Reference, ReferenceError> {
        Reference::parse_inner(text, true)
    }

    fn parse_inner(text: &str, repository_only: bool) -> Result<Reference, ReferenceError> {
        let err = |reason: &str| ReferenceError {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) if valid_digest(d) => (r, Some(d.to_string())),
            Some(_) => return Err(err("the digest after '@' is not sha256:<64 hex digits>")),
            None => (text, None),
        };
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| err("name the registry: HOST[:PORT]/REPOSITORY[:TAG]"))?;
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost")
            || registry.is_empty()
            || !registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return Err(err(
                "the first part must be a registry host (with a '.' or a port, or localhost)",
            ));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        if repository.len() > 255 || !repository.split('/').all(valid_component) {
            return Err(err(
                "the repository must be lower-case components of a-z, 0-9 and single separators",
            ));
        }
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(err(
                    "the tag must be 1-128 of A-Z a-z 0-9 _ . - (not starting with . or -)",
                ));
            }
        }
        if tag.is_none() && digest.is_none() && !repository_only {
            return Err(err("give a tag (REPO:TAG) or a digest (REPO@sha256:...)"));
        }
        if repository_only && (tag.is_some() || digest.is_some()) {
            return Err(err(
                "name a repository (HOST[:PORT]/REPOSITORY), without a tag",
            ));
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest when given, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// Whether the host is this machine (the only place `--insecure` plain HTTP is allowed).
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_registries_accept_and_refuses_the_rest() {
        let r = Reference::parse("127.0.0.1:5000/robots/arm64-base:1.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "robots/arm64-base");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "127.0.0.1:5000/robots/arm64-base:1.0");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("registry.example.com/x@{d}")).unwrap();
        assert_eq!(r.manifest_reference(), d);
        assert!(!r.is_loopback());
        assert!(Reference::parse("localhost/x:1").unwrap().is_loopback());
        assert!(Reference::parse("[::1]:5000/x:1").unwrap().is_loopback());
        for bad in [
            "ubuntu:22.04",            // no registry host
            "example.com/UPPER:1",     // upper case
            "example.com/a//b:1",      // empty component
            "example.com/a:-bad",      // tag starting with '-'
            "example.com/a",           // neither tag nor digest
            "example.com/a@sha256:12", // short digest
            "example.com/../x:1",      // dots are no path
            "example.com/a___b:1",     // three underscores
            "exa mple.com/a:1",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
