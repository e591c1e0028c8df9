//! Getting bytes from a mirror: `http(s)://` through ureq (which honours HTTP(S)_PROXY and
//! NO_PROXY), `file://` straight from disk. Nothing fetched here is trusted: callers check
//! signatures and sha256 digests before anything is used.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// A failed transfer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The server or file said the thing is not there.
    #[error("{url}: not found")]
    NotFound {
        /// What was asked for.
        url: String,
    },
    /// Any other failure.
    #[error("{url}: {reason}")]
    Failed {
        /// What was asked for.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// Resolves each host once per build and hands the answer to every later connection.
///
/// glibc's resolver sends the A and AAAA queries of one lookup in parallel; some DNS servers
/// (the one of our CI machines is one) drop one of them, and the lookup then waits the full
/// 5 s `timeout` of resolv.conf. Eight download threads each opening connections hit that
/// several times a build (measured: 15 s to fetch 37 MB that curl gets in under a second).
/// Lookups are serialised, so concurrent first connections wait for one answer.
#[derive(Debug, Default)]
struct CachingResolver {
    inner: DefaultResolver,
    answers: Mutex<HashMap<String, ResolvedSocketAddrs>>,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => return self.inner.resolve(uri, config, timeout),
        };
        let mut answers = self
            .answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = answers.get(&key) {
            return Ok(found.clone());
        }
        let found = self.inner.resolve(uri, config, timeout)?;
        answers.insert(key, found.clone());
        Ok(found)
    }
}

/// The CA certificates of a PEM bundle as TLS roots (for a mirror, an index or a registry with
/// its own CA); the reason when the file is unreadable or holds no certificate.
pub fn ca_bundle_roots(bundle: &std::path::Path) -> Result<ureq::tls::RootCerts, String> {
    let pem = std::fs::read(bundle).map_err(|e| e.to_string())?;
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err("no PEM certificate in the CA bundle".into());
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// A connection-reusing client for one build. Cheap to clone across download threads.
#[derive(Clone)]
pub struct Transport {
    agent: ureq::Agent,
}

impl Default for Transport {
    fn default() -> Self {
        Self::new()
    }
}

/// Upper bound on an index or metadata file held in memory (Packages of a suite is ~50 MB).
const MAX_IN_MEMORY: u64 = 512 << 20;

impl Transport {
    /// A client with conservative time-outs: a stalled mirror fails instead of hanging CI.
    pub fn new() -> Transport {
        Transport::with_roots(ureq::tls::RootCerts::WebPki)
    }

    /// A client that trusts the CA certificates of a PEM bundle instead of Mozilla's roots
    /// (pip's `cert` option: a site whose proxy re-signs TLS gives its own CA this way).
    pub fn with_ca_bundle(bundle: &std::path::Path) -> Result<Transport, TransportError> {
        let roots = ca_bundle_roots(bundle).map_err(|reason| TransportError::Failed {
            url: bundle.display().to_string(),
            reason,
        })?;
        Ok(Transport::with_roots(roots))
    }

    fn with_roots(roots: ureq::tls::RootCerts) -> Transport {
        let config = ureq::Agent::config_builder()
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            // Keep one connection per download thread (fetch runs 8) instead of ureq's 3, so
            // connections are reused rather than opened (and resolved) again.
            .max_idle_connections(32)
            .max_idle_connections_per_host(16)
            .build();
        Transport {
            agent: ureq::Agent::with_parts(
                config,
                DefaultConnector::default(),
                CachingResolver::default(),
            ),
        }
    }

    /// Opens a URL for reading, with its length when known.
    pub fn open(&self, url: &str) -> Result<(Box<dyn Read + Send>, Option<u64>), TransportError> {
        let failed = |reason: String| TransportError::Failed {
            url: url.to_string(),
            reason,
        };
        if let Some(path) = url.strip_prefix("file://") {
            let path = PathBuf::from(path);
            let file = std::fs::File::open(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    TransportError::NotFound {
                        url: url.to_string(),
                    }
                } else {
                    failed(e.to_string())
                }
            })?;
            let len = file.metadata().ok().map(|m| m.len());
            return Ok((Box::new(file), len));
        }
        let response = self
            .agent
            .get(url)
            .call()
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if status == 404 || status == 410 {
            return Err(TransportError::NotFound {
                url: url.to_string(),
            });
        }
        if !status.is_success() {
            return Err(failed(format!("HTTP status {status}")));
        }
        let len = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let reader = response.into_body().into_reader();
        Ok((Box::new(reader), len))
    }

    /// Fetches a whole (metadata) file into memory.
    pub fn get(&self, url: &str) -> Result<Vec<u8>, TransportError> {
        let (reader, _) = self.open(url)?;
        let mut buf = Vec::new();
        reader
            .take(MAX_IN_MEMORY + 1)
            .read_to_end(&mut buf)
            .map_err(|e| TransportError::Failed {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        if buf.len() as u64 > MAX_IN_MEMORY {
            return Err(TransportError::Failed {
                url: url.to_string(),
                reason: "larger than 512 MiB".into(),
            });
        }
        Ok(buf)
    }
}

/// Where the authority part of each `scheme://` URL in `text` starts and ends.
fn authorities(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("://") {
        let start = from + i + 3;
        let end = text[start..]
            .find(|c: char| c == '/' || c.is_whitespace() || "'\"<>`".contains(c))
            .map_or(text.len(), |j| start + j);
        out.push((start, end));
        from = end;
    }
    out
}

/// `text` with the user-info (user name and password) of every URL in it replaced by `***`:
/// a mirror URL may carry credentials (`https://user:token@host/debian`), and neither an error
/// line, a log, the lock nor the image may repeat them.
pub fn redact_userinfo(text: &str) -> String {
    replace_userinfo(text, "***@")
}

/// `url` without its user-info, for places that must hold a usable URL (apt's sources.list
/// takes credentials from auth.conf, never from the URL).
pub fn strip_userinfo(url: &str) -> String {
    replace_userinfo(url, "")
}

/// `text` with each URL's `user:password@` replaced by `with`.
fn replace_userinfo(text: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in authorities(text) {
        if let Some(amp) = text[start..end].rfind('@') {
            out.push_str(&text[at..start]);
            out.push_str(with);
            at = start + amp + 1;
        }
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod userinfo_tests {
    use super::*;

    #[test]
    fn credentials_never_survive() {
        let e = "https://ci:s3cret@mirror.example/debian/dists/x: 401; also http://a:b@h:8080/p";
        let r = redact_userinfo(e);
        assert_eq!(
            r,
            "https://***@mirror.example/debian/dists/x: 401; also http://***@h:8080/p"
        );
        assert!(!r.contains("s3cret"));
        assert_eq!(
            strip_userinfo("https://ci:s3cret@mirror.example/debian"),
            "https://mirror.example/debian"
        );
        // An '@' in the path is not user-info; a URL without any is unchanged.
        let plain = "http://deb.debian.org/debian/pool/a@b.deb and file:///srv/m";
        assert_eq!(redact_userinfo(plain), plain);
        assert_eq!(strip_userinfo(plain), plain);
        assert_eq!(redact_userinfo("no url here"), "no url here");
    }
}
