//! The OCI distribution API (distribution-spec v1.1) as kiln needs it: blob HEAD, upload and
//! streaming download, manifest PUT and GET. Written on ureq, kiln's HTTP stack, rather than
//! `oci-client`, which brings reqwest and an async runtime for the same dozen requests.
//!
//! Nothing the registry says is trusted: every manifest and blob is hashed by kiln as it is
//! read and compared with the digest it was asked for; the `Docker-Content-Digest` header is
//! never used as proof.

use super::auth::{credentials_for, parse_challenge, Challenge, Credentials};
use super::reference::Reference;
use crate::digest::sha256_hex;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::time::Duration;

/// Largest manifest or index kiln accepts (the distribution spec lets registries refuse more).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// How often a manifest PUT is tried when the registry fails in a way that is not about the
/// bytes sent.
const PUT_ATTEMPTS: u32 = 4;

/// A failure worth another try with the same bytes: a server error, or distribution's
/// `DIGEST_INVALID` for content kiln hashed itself, which its filesystem driver answers when
/// two clients write the same manifest at the same moment (two CI runners pushing one image).
/// The bytes an upload holds, from its `Range: 0-N` header: N + 1, but 0 for `0-0` (see
/// [`Registry::upload_chunked`]); none when it has none.
fn received(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    received_of(response.headers().get("range")?.to_str().ok()?)
}

fn received_of(range: &str) -> Option<u64> {
    let (start, end) = range.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    match end.trim().parse::<u64>().ok()? {
        0 => Some(0),
        n => Some(n + 1),
    }
}

fn transient(status: u16, err: &RegistryError) -> bool {
    status >= 500 || (status == 400 && err.to_string().contains("DIGEST_INVALID"))
}

/// Blobs bigger than this go up in chunks of this size (PATCH with `Content-Range`), so a
/// connection dropped mid-upload costs one chunk at most: the upload resumes where the
/// registry says it stopped.
const CHUNK: u64 = 16 << 20;

/// How many dropped connections one blob upload survives.
const RESUMES: u32 = 8;

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
    /// Trust the CA certificates of this PEM file instead of the system's web roots (a
    /// registry with a company or self-made CA).
    pub ca_file: Option<std::path::PathBuf>,
}

/// A request body: none, bytes in memory, or a file sent from its start (again on a retry).
#[derive(Clone, Copy)]
enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
    File(&'a std::fs::File),
    /// `len` bytes of the file from `offset` (one chunk of an upload).
    FileRange(&'a std::fs::File, u64, u64),
}

/// A connection to one repository of one registry.
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    repository: String,
    name: String,
    credentials: Option<Credentials>,
    /// The `Authorization` value the last challenge earned, sent with every later request.
    authorization: std::sync::Mutex<Option<String>>,
    resumed: std::sync::atomic::AtomicU32,
    restarted: std::sync::atomic::AtomicU32,
    mounted: std::sync::atomic::AtomicU32,
    mount_from: Option<String>,
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
        let roots = match &opts.ca_file {
            Some(path) => {
                crate::transport::ca_bundle_roots(path).map_err(|reason| RegistryError::Failed {
                    what: path.display().to_string(),
                    reason,
                })?
            }
            None => ureq::tls::RootCerts::WebPki,
        };
        let credentials =
            credentials_for(&reference.registry).map_err(|e| RegistryError::Failed {
                what: e.path.display().to_string(),
                reason: e.reason,
            })?;
        let config = ureq::Agent::config_builder()
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
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
            credentials,
            authorization: std::sync::Mutex::new(None),
            resumed: std::sync::atomic::AtomicU32::new(0),
            restarted: std::sync::atomic::AtomicU32::new(0),
            mounted: std::sync::atomic::AtomicU32::new(0),
            mount_from: None,
        })
    }

    fn current_authorization(&self) -> Option<String> {
        self.authorization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sends one request with the authorization earned so far; on a 401 answers the
    /// challenge once and sends it again.
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        payload: Payload,
        what: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let mut answered = false;
        let mut server_errors = 0u32;
        loop {
            let mut request = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            if let Some(a) = self.current_authorization() {
                request = request.header("authorization", a);
            }
            let bad = |e: ureq::http::Error| self.failed(what, e);
            let sent = match payload {
                Payload::None => self.agent.run(request.body(()).map_err(bad)?),
                Payload::Bytes(b) => self.agent.run(request.body(b).map_err(bad)?),
                Payload::File(mut f) => {
                    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))
                        .map_err(|e| self.failed(what, e))?;
                    self.agent.run(request.body(f).map_err(bad)?)
                }
                Payload::FileRange(mut f, offset, len) => {
                    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))
                        .map_err(|e| self.failed(what, e))?;
                    let mut chunk = f.take(len);
                    let body = ureq::SendBody::from_reader(&mut chunk);
                    self.agent.run(request.body(body).map_err(bad)?)
                }
            }
            .map_err(|e| self.failed(what, e))?;
            // A read the registry failed (distribution answers 500 while another client is
            // linking the same blob) is asked again; writes are retried by their callers.
            if sent.status().as_u16() >= 500
                && (method == "GET" || method == "HEAD")
                && server_errors + 1 < PUT_ATTEMPTS
            {
                server_errors += 1;
                std::thread::sleep(Duration::from_millis(200 * u64::from(server_errors)));
                continue;
            }
            if sent.status().as_u16() != 401 || answered {
                return Ok(sent);
            }
            let challenge = sent
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge);
            let Some(challenge) = challenge else {
                return Ok(sent);
            };
            self.answer(&challenge, what)?;
            answered = true;
        }
    }

    /// Earns an `Authorization` value for `challenge`: the credentials themselves (Basic), or
    /// a token from the realm (Bearer).
    fn answer(&self, challenge: &Challenge, what: &str) -> Result<(), RegistryError> {
        let denied = |reason: String| RegistryError::Denied {
            what: format!("{} {what}", self.name),
            reason,
        };
        let value = match challenge {
            Challenge::Basic => match &self.credentials {
                Some(c) => c.basic(),
                None => {
                    return Err(denied(format!(
                        "the registry asks for credentials and none are stored for {} (in $REGISTRY_AUTH_FILE, auth.json or ~/.docker/config.json)",
                        self.name.split('/').next().unwrap_or("")
                    )))
                }
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let https = realm.starts_with("https://");
                let loopback_http = realm.starts_with("http://") && self.base.starts_with("http://");
                if !https && !loopback_http {
                    return Err(denied(format!(
                        "the token realm {realm} is not https; refusing to send credentials there"
                    )));
                }
                let mut url = realm.clone();
                let mut sep = if url.contains('?') { '&' } else { '?' };
                for (k, v) in [("service", service), ("scope", scope)] {
                    if let Some(v) = v {
                        url.push(sep);
                        url.push_str(k);
                        url.push('=');
                        url.push_str(&percent_encode(v));
                        sep = '&';
                    }
                }
                let mut request = self.agent.get(&url);
                if let Some(c) = &self.credentials {
                    request = request.header("authorization", c.basic());
                }
                let mut response = request.call().map_err(|e| self.failed(what, e))?;
                if response.status().as_u16() != 200 {
                    return Err(denied(format!(
                        "the token service refused: HTTP {}",
                        response.status().as_u16()
                    )));
                }
                let body: serde_json::Value = response
                    .body_mut()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_vec()
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .ok_or_else(|| denied("the token service did not answer JSON".into()))?;
                let token = body
                    .get("token")
                    .or_else(|| body.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| denied("the token service gave no token".into()))?;
                format!("Bearer {token}")
            }
        };
        *self
            .authorization
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(value);
        Ok(())
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
        let response = self.send(
            "HEAD",
            &self.url(&format!("blobs/{digest}")),
            &[],
            Payload::None,
            &what,
        )?;
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

    /// Uploads `file` (read from its start) as blob `digest` unless the repository has it already
    /// or can mount it from the repository set with [`Registry::mounting_from`]; returns whether
    /// bytes were sent. The registry checks the digest before it commits.
    pub fn push_blob(
        &self,
        digest: &str,
        size: u64,
        file: &std::fs::File,
    ) -> Result<bool, RegistryError> {
        if self.blob_size(digest)? == Some(size) {
            return Ok(false);
        }
        if self.mount(digest)? {
            return Ok(false);
        }
        let mut attempt = 1;
        loop {
            let outcome = if size > CHUNK {
                self.upload_chunked(digest, size, file)?
            } else {
                self.upload_once(digest, file)?
            };
            match outcome {
                Ok(()) => return Ok(true),
                Err((status, err)) => {
                    if attempt >= PUT_ATTEMPTS || !transient(status, &err) {
                        return Err(err);
                    }
                    // Another runner may have finished the same blob meanwhile.
                    if self.blob_size(digest)? == Some(size) {
                        return Ok(false);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
            attempt += 1;
        }
    }

    /// One monolithic upload (POST, then PUT of the whole file); the inner error, with its
    /// HTTP status, is the registry's refusal.
    #[allow(clippy::type_complexity)]
    fn upload_once(
        &self,
        digest: &str,
        file: &std::fs::File,
    ) -> Result<Result<(), (u16, RegistryError)>, RegistryError> {
        let what = format!("upload of blob {digest}");
        let location = match self.start_upload(&what)? {
            Ok(l) => l,
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.finish_upload(
            &location,
            digest,
            &[("content-type", "application/octet-stream")],
            Payload::File(file),
            &what,
        )
    }

    /// Opens an upload session (POST); its location, or the refusal with its HTTP status.
    #[allow(clippy::type_complexity)]
    fn start_upload(
        &self,
        what: &str,
    ) -> Result<Result<String, (u16, RegistryError)>, RegistryError> {
        let response = self.send(
            "POST",
            &self.url("blobs/uploads/"),
            &[],
            Payload::None,
            what,
        )?;
        let status = response.status().as_u16();
        if status != 202 {
            return Ok(Err((status, self.refused(what, response))));
        }
        self.location_of(&response, what).map(Ok)
    }

    /// Closes the upload at `location` as blob `digest` (PUT, with the last bytes if any); the
    /// registry checks the digest before it commits.
    #[allow(clippy::type_complexity)]
    fn finish_upload(
        &self,
        location: &str,
        digest: &str,
        headers: &[(&str, &str)],
        payload: Payload,
        what: &str,
    ) -> Result<Result<(), (u16, RegistryError)>, RegistryError> {
        let mut url = location.to_string();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        let response = self.send("PUT", &url, headers, payload, what)?;
        let status = response.status().as_u16();
        if status != 201 {
            return Ok(Err((status, self.refused(what, response))));
        }
        Ok(Ok(()))
    }

    /// An upload location as a URL (registries answer a path or a full URL).
    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        }
    }

    fn location_of(
        &self,
        response: &ureq::http::Response<ureq::Body>,
        what: &str,
    ) -> Result<String, RegistryError> {
        response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| self.absolute(l))
            .ok_or_else(|| self.failed(what, "the registry gave no upload location"))
    }

    /// A chunked upload (POST, a PATCH per [`CHUNK`], then the closing PUT); after a dropped
    /// connection it asks the registry how many bytes it holds (GET on the upload, `Range:
    /// 0-N`) and goes on from there, or starts a new upload when the registry has dropped that
    /// one. The inner error, with its HTTP status, is a refusal.
    #[allow(clippy::type_complexity)]
    fn upload_chunked(
        &self,
        digest: &str,
        size: u64,
        file: &std::fs::File,
    ) -> Result<Result<(), (u16, RegistryError)>, RegistryError> {
        let what = format!("upload of blob {digest}");
        let mut location = match self.start_upload(&what)? {
            Ok(l) => l,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let mut offset = 0u64;
        let mut resumes = 0u32;
        let mut from_one = false;
        while offset < size {
            let len = CHUNK.min(size - offset);
            let range = format!("{offset}-{}", offset + len - 1);
            let length = len.to_string();
            let sent = self.send(
                "PATCH",
                &location,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", &range),
                    ("content-length", &length),
                ],
                Payload::FileRange(file, offset, len),
                &what,
            );
            match sent {
                Ok(response) if response.status().as_u16() == 202 => {
                    location = self.location_of(&response, &what)?;
                    offset = received(&response).unwrap_or(offset + len);
                }
                // `Range: 0-0` is both "nothing" and "one byte" (distribution writes 0-0 for
                // either): when the registry holds one byte, the chunk from 0 is refused with
                // 416 and the upload goes on from 1.
                Ok(response) if response.status().as_u16() == 416 && offset == 0 && !from_one => {
                    from_one = true;
                    offset = 1;
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    return Ok(Err((status, self.refused(&what, response))));
                }
                Err(e) if matches!(e, RegistryError::Failed { .. }) && resumes < RESUMES => {
                    // The connection dropped: ask where the upload stands and go on from there.
                    resumes += 1;
                    std::thread::sleep(Duration::from_millis(200 * u64::from(resumes)));
                    let status = self.send("GET", &location, &[], Payload::None, &what)?;
                    if status.status().as_u16() == 204 {
                        location = self.location_of(&status, &what)?;
                        offset = received(&status).unwrap_or(0);
                        self.resumed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        // distribution 2.8 keeps the bytes of a cut PATCH but not the state that
                        // would let the upload go on (its `_state` token no longer matches):
                        // the upload is gone, and a new one starts from the first byte.
                        location = match self.start_upload(&what)? {
                            Ok(l) => l,
                            Err(refusal) => return Ok(Err(refusal)),
                        };
                        offset = 0;
                        from_one = false;
                        self.restarted
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.finish_upload(
            &location,
            digest,
            &[("content-length", "0")],
            Payload::None,
            &what,
        )
    }

    /// Blobs of this registry's other repository `from` (a path on the same registry) are linked
    /// into this one by a cross-repository mount instead of being uploaded again (a release
    /// pushed next to the CI fleet's layer cache).
    pub fn mounting_from(mut self, from: &str) -> Registry {
        self.mount_from = Some(from.to_string());
        self
    }

    /// Mounts blob `digest` from the mount repository; true when the registry linked it (201).
    /// A registry that cannot (it answers 202, an upload session) is left to the upload.
    fn mount(&self, digest: &str) -> Result<bool, RegistryError> {
        let Some(from) = &self.mount_from else {
            return Ok(false);
        };
        let what = format!("mount of blob {digest} from {from}");
        let response = self.send(
            "POST",
            &self.url(&format!(
                "blobs/uploads/?mount={digest}&from={}",
                percent_encode(from)
            )),
            &[("content-length", "0")],
            Payload::None,
            &what,
        )?;
        match response.status().as_u16() {
            201 => {
                self.mounted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(true)
            }
            202 => {
                // An upload session the mount turned into: closed again, the upload makes its own.
                if let Ok(location) = self.location_of(&response, &what) {
                    let _ = self.send("DELETE", &location, &[], Payload::None, &what);
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Blobs linked by a cross-repository mount instead of uploaded.
    pub fn mounted_blobs(&self) -> u32 {
        self.mounted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many times an upload went on after a dropped connection, and how many times one
    /// had to start again because the registry had dropped it (for the push report).
    pub fn interrupted_uploads(&self) -> (u32, u32) {
        (
            self.resumed.load(std::sync::atomic::Ordering::Relaxed),
            self.restarted.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Stores `bytes` as a manifest of `media_type` under `reference` (a tag or its digest).
    pub fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let what = format!("manifest {reference}");
        let mut attempt = 1;
        loop {
            let response = self.send(
                "PUT",
                &self.url(&format!("manifests/{reference}")),
                &[("content-type", media_type)],
                Payload::Bytes(bytes),
                &what,
            )?;
            let status = response.status().as_u16();
            if status == 200 || status == 201 {
                return Ok(());
            }
            let err = self.refused(&what, response);
            if attempt >= PUT_ATTEMPTS || !transient(status, &err) {
                return Err(err);
            }
            std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
            attempt += 1;
        }
    }

    /// The manifest at `reference` (tag or digest): its media type and bytes, None when the
    /// repository has none. When `reference` is a digest the bytes are proven to hash to it.
    pub fn get_manifest(
        &self,
        reference: &str,
    ) -> Result<Option<(String, Vec<u8>)>, RegistryError> {
        let what = format!("manifest {reference}");
        let mut response = self.send(
            "GET",
            &self.url(&format!("manifests/{reference}")),
            &[("accept", ACCEPT)],
            Payload::None,
            &what,
        )?;
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

    /// Blob `digest` of `size` bytes (at most [`MAX_MANIFEST`]) in memory, verified.
    pub fn get_small_blob(&self, digest: &str, size: u64) -> Result<Vec<u8>, RegistryError> {
        if size > MAX_MANIFEST {
            return Err(self.failed(
                &format!("blob {digest}"),
                format!("{size} bytes is more than a record may be"),
            ));
        }
        let mut out = Vec::new();
        self.get_blob(digest, size, &mut out)?;
        Ok(out)
    }

    /// Uploads `bytes` as a blob unless the repository holds it.
    pub fn push_bytes(&self, bytes: &[u8]) -> Result<String, RegistryError> {
        let digest = format!("sha256:{}", sha256_hex(bytes));
        let mut tmp = tempfile::tempfile().map_err(|e| self.failed("blob", e))?;
        tmp.write_all(bytes).map_err(|e| self.failed("blob", e))?;
        self.push_blob(&digest, bytes.len() as u64, &tmp)?;
        Ok(digest)
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
        let mut response = self.send(
            "GET",
            &self.url(&format!("blobs/{digest}")),
            &[],
            Payload::None,
            &what,
        )?;
        // Registries on object storage redirect blob reads to a signed URL; it carries its
        // own authorization, so none of the registry's goes with it.
        if matches!(response.status().as_u16(), 302 | 303 | 307) {
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| self.failed(&what, "a redirect with no location"))?
                .to_string();
            response = self
                .agent
                .get(&location)
                .call()
                .map_err(|e| self.failed(&what, e))?;
        }
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
        let response = self.send(
            "GET",
            &self.url(&format!("referrers/{digest}")),
            &[("accept", crate::image::oci::INDEX_MEDIA_TYPE)],
            Payload::None,
            &what,
        )?;
        let is_index = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with(crate::image::oci::INDEX_MEDIA_TYPE));
        Ok(response.status().as_u16() == 200 && is_index)
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn percent_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uploads_range_says_how_many_bytes_it_holds() {
        assert_eq!(received_of("0-16777215"), Some(16 << 20));
        assert_eq!(received_of("0-0"), Some(0));
        assert_eq!(received_of("0-9"), Some(10));
        for bad in ["5-9", "0-", "bytes", "0-x", "-1"] {
            assert_eq!(received_of(bad), None, "{bad}");
        }
    }
}
