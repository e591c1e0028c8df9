//! The OCI distribution API (distribution-spec v1.1) as kiln needs it: blob HEAD, upload and
//! streaming download, manifest PUT and GET. Written on ureq, kiln's HTTP stack, rather than
//! `oci-client`, which brings reqwest and an async runtime for the same dozen requests.
//!
//! Nothing the registry says is trusted: every manifest and blob is hashed by kiln as it is
//! read and compared with the digest it was asked for; the `Docker-Content-Digest` header is
//! never used as proof.

use super::reference::Reference;
use crate::digest::sha256_hex;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::time::Duration;

/// Largest manifest or index kiln accepts (the distribution spec lets registries refuse more).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// Media types a manifest GET accepts.
const ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// A failed exchange with the registry, naming what was asked and why it failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached or answered something unusable.
    #[error("{what}: {reason}")]
    Failed {
        /// The request, e.g. `GET 127.0.0.1:5000/robots/base manifest 1.0`.
        what: String,
        /// Why.
        reason: String,
    },
    /// The registry holds something other than what was asked for.
    #[error("{what}: {reason}")]
    Corrupt {
        /// The blob or manifest.
        what: String,
        /// How it differs.
        reason: String,
    },
    /// The registry wants credentials kiln was not given, or refused them.
    #[error("{what}: {reason}")]
    Denied {
        /// The request.
        what: String,
        /// The registry's answer, without any secret.
        reason: String,
    },
}

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Plain HTTP; allowed only for a registry on this machine.
    pub insecure: bool,
}

/// A connection to one repository of one registry.
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    repository: String,
    name: String,
}

fn status_reason(status: u16, body: &str) -> String {
    // The distribution spec's error body: {"errors":[{"code":..,"message":..}]}.
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("errors")?.get(0)?;
            Some(format!(
                "{} {}",
                e.get("code")?.as_str()?,
                e.get("message").and_then(|m| m.as_str()).unwrap_or("")
            ))
        })
        .unwrap_or_default();
    format!("HTTP {status} {}", message.trim())
        .trim()
        .to_string()
}

impl Registry {
    /// Connects to the repository `reference` names. HTTPS unless `insecure`, which is
    /// refused for any host but this machine.
    pub fn connect(
        reference: &Reference,
        opts: &ConnectOptions,
    ) -> Result<Registry, RegistryError> {
        if opts.insecure && !reference.is_loopback() {
            return Err(RegistryError::Failed {
                what: reference.registry.clone(),
                reason: "--insecure (plain HTTP) is only for a registry on this machine (localhost, 127.0.0.1, ::1)".into(),
            });
        }
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .timeout_send_body(Some(Duration::from_secs(600)))
            .http_status_as_error(false)
            .max_redirects(0)
            .build();
        let scheme = if opts.insecure { "http" } else { "https" };
        Ok(Registry {
            agent: config.into(),
            base: format!("{scheme}://{}", reference.registry),
            repository: reference.repository.clone(),
            name: format!("{}/{}", reference.registry, reference.repository),
        })
    }

    /// `HOST/REPO`, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.repository)
    }

    fn failed(&self, what: &str, reason: impl std::fmt::Display) -> RegistryError {
        RegistryError::Failed {
            what: format!("{} {what}", self.name),
            reason: reason.to_string(),
        }
    }

    fn refused(&self, what: &str, mut response: ureq::http::Response<ureq::Body>) -> RegistryError {
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_string()
            .unwrap_or_default();
        let reason = status_reason(status, &body);
        if status == 401 || status == 403 {
            RegistryError::Denied {
                what: format!("{} {what}", self.name),
                reason,
            }
        } else {
            self.failed(what, reason)
        }
    }

    /// The size of blob `digest` when the repository holds it.
    pub fn blob_size(&self, digest: &str) -> Result<Option<u64>, RegistryError> {
        let what = format!("blob {digest}");
        let response = self
            .agent
            .head(self.url(&format!("blobs/{digest}")))
            .call()
            .map_err(|e| self.failed(&what, e))?;
        match response.status().as_u16() {
            200 => Ok(response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            404 => Ok(None),
            _ => Err(self.refused(&what, response)),
        }
    }

    /// Uploads `file` (read from its start) as blob `digest` unless the repository has it already;
    /// returns whether bytes were sent. The registry checks the digest before it commits.
    pub fn push_blob(
        &self,
        digest: &str,
        size: u64,
        file: &std::fs::File,
    ) -> Result<bool, RegistryError> {
        if self.blob_size(digest)? == Some(size) {
            return Ok(false);
        }
        let what = format!("upload of blob {digest}");
        let response = self
            .agent
            .post(self.url("blobs/uploads/"))
            .send_empty()
            .map_err(|e| self.failed(&what, e))?;
        if response.status().as_u16() != 202 {
            return Err(self.refused(&what, response));
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.failed(&what, "the registry gave no upload location"))?
            .to_string();
        let mut url = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        let response = self
            .agent
            .put(&url)
            .header("content-type", "application/octet-stream")
            .send(file)
            .map_err(|e| self.failed(&what, e))?;
        if response.status().as_u16() != 201 {
            return Err(self.refused(&what, response));
        }
        Ok(true)
    }

    /// Stores `bytes` as a manifest of `media_type` under `reference` (a tag or its digest).
    pub fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let what = format!("manifest {reference}");
        let response = self
            .agent
            .put(self.url(&format!("manifests/{reference}")))
            .header("content-type", media_type)
            .send(bytes)
            .map_err(|e| self.failed(&what, e))?;
        match response.status().as_u16() {
            200 | 201 => Ok(()),
            _ => Err(self.refused(&what, response)),
        }
    }

    /// The manifest at `reference` (tag or digest): its media type and bytes, None when the
    /// repository has none. When `reference` is a digest the bytes are proven to hash to it.
    pub fn get_manifest(
        &self,
        reference: &str,
    ) -> Result<Option<(String, Vec<u8>)>, RegistryError> {
        let what = format!("manifest {reference}");
        let mut response = self
            .agent
            .get(self.url(&format!("manifests/{reference}")))
            .header("accept", ACCEPT)
            .call()
            .map_err(|e| self.failed(&what, e))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.refused(&what, response)),
        }
        let media_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST)
            .read_to_vec()
            .map_err(|e| self.failed(&what, e))?;
        if let Some(hex) = reference.strip_prefix("sha256:") {
            let got = sha256_hex(&bytes);
            if got != hex {
                return Err(RegistryError::Corrupt {
                    what: format!("{} {what}", self.name),
                    reason: format!("the registry's bytes hash to sha256:{got}"),
                });
            }
        }
        Ok(Some((media_type, bytes)))
    }

    /// Streams blob `digest` of `size` bytes into `out`, hashing as it goes; fails, naming the
    /// blob, when the bytes differ in size or digest (`out` then holds garbage to discard).
    pub fn get_blob(
        &self,
        digest: &str,
        size: u64,
        out: &mut dyn Write,
    ) -> Result<(), RegistryError> {
        let what = format!("blob {digest}");
        let mut response = self
            .agent
            .get(self.url(&format!("blobs/{digest}")))
            .call()
            .map_err(|e| self.failed(&what, e))?;
        if response.status().as_u16() != 200 {
            return Err(self.refused(&what, response));
        }
        let mut reader = response.body_mut().as_reader().take(size + 1);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.failed(&what, e)),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| self.failed(&what, e))?;
            read += n as u64;
        }
        let corrupt = |reason: String| RegistryError::Corrupt {
            what: format!("{} {what}", self.name),
            reason,
        };
        if read != size {
            return Err(corrupt(format!(
                "the registry sent {read} bytes, the manifest says {size}"
            )));
        }
        let got = hex::encode(hasher.finalize());
        if format!("sha256:{got}") != digest {
            return Err(corrupt(format!(
                "the registry's bytes hash to sha256:{got}"
            )));
        }
        Ok(())
    }
}

impl Registry {
    /// Whether the registry answers the referrers API (OCI distribution 1.1) for `digest`;
    /// registries without it (distribution 2.8) answer 404, and clients use the tag schema.
    pub fn has_referrers_api(&self, digest: &str) -> Result<bool, RegistryError> {
        let what = format!("referrers of {digest}");
        let response = self
            .agent
            .get(self.url(&format!("referrers/{digest}")))
            .header("accept", "application/vnd.oci.image.index.v1+json")
            .call()
            .map_err(|e| self.failed(&what, e))?;
        let is_index = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/vnd.oci.image.index.v1+json"));
        Ok(response.status().as_u16() == 200 && is_index)
    }
}
