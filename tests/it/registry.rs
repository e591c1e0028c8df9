//! kiln and a real registry: Debian's `docker-registry` (the CNCF distribution server, 2.8),
//! started by the test on 127.0.0.1 with a random port and stopped afterwards. A signed fixture
//! image goes up with `kiln push` and comes back with `kiln pull`; skopeo, which kiln did not
//! write, must agree both ways; and a registry that lies about a blob is refused by name.

use crate::fixture::{stderr, text};
use crate::sign::{pub_of, signed_copy};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// A registry process on 127.0.0.1:PORT with its storage in a temporary directory.
struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        Registry::start_with(|_| String::new())
    }

    /// A registry whose config gets `extra(dir)` appended (TLS, auth).
    fn start_with(extra: impl Fn(&Path) -> String) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        // A port the kernel just handed out and took back.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{}",
                storage.display(),
                extra(dir.path())
            ),
        )
        .unwrap();
        let registry = Registry {
            child: Registry::spawn(&config),
            port,
            storage,
            config,
            _dir: dir,
        };
        registry.wait_listening();
        registry
    }

    fn spawn(config: &Path) -> Child {
        Command::new("docker-registry")
            .arg("serve")
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (ci/setup installs it)")
    }

    fn wait_listening(&self) {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("docker-registry did not listen on 127.0.0.1:{}", self.port);
    }

    /// Kills the registry (SIGKILL, as a crash) and starts it again on the same storage.
    fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Registry::spawn(&self.config);
        self.wait_listening();
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file holding blob `digest` in the registry's storage.
    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kiln(args: &[&str], paths: &[&Path]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.args(args);
    for p in paths {
        c.arg(p);
    }
    c.output().unwrap()
}

/// `kiln verify REF --insecure --key PUB` must accept `digest`.
fn assert_registry_verifies(reference: &str, key: &Path, digest: &str) {
    let o = kiln(
        &["verify", reference, "--insecure", "--key"],
        &[&pub_of(key)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("accepted {digest}")),
        "{}",
        text(&o)
    );
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").args(args).output().unwrap()
}

/// What `skopeo inspect --raw` reads at `reference` (a manifest or an index), as JSON.
fn skopeo_raw(reference: &str) -> serde_json::Value {
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]);
    assert!(raw.status.success(), "{}", text(&raw));
    serde_json::from_slice(&raw.stdout).unwrap()
}

fn index(layout: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap()
}

/// The digest of the one image manifest of a layout (the entry with no artifactType).
fn image_digest(layout: &Path) -> String {
    index(layout)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d.get("artifactType").is_none())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn push_and_pull_round_trip_agree_with_skopeo_and_refuse_a_lying_registry() {
    let registry = Registry::start();
    let (dir, out, key) = signed_copy();
    let built = image_digest(&out.join("oci"));
    let reference = format!("{}/robots/fixture:1.0", registry.host());

    // Push: image, signature, SBOM; the tag last.
    let o = kiln(&["push", "--insecure"], &[&out, Path::new(&reference)]);
    assert!(o.status.success(), "{}", text(&o));
    let sig_tag = format!("{}.sig", built.replace(':', "-"));
    assert!(text(&o).contains(&sig_tag), "{}", text(&o));

    // skopeo sees the image by tag with kiln's digest, and the cosign signature's tag.
    let docker = format!("docker://{reference}");
    let o = skopeo(&["inspect", "--tls-verify=false", "--raw", &docker]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        format!("sha256:{}", crate::fixture::sha256(&o.stdout)),
        built
    );
    let o = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/robots/fixture", registry.host()),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let tags = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(tags.contains(&sig_tag), "{tags}");
    assert!(
        tags.contains(&format!("{}.sbom", built.replace(':', "-"))),
        "{tags}"
    );
    assert!(
        tags.contains(&format!("\"{}\"", built.replace(':', "-"))),
        "the referrers tag: {tags}"
    );

    // skopeo copies it out with the same manifest digest.
    let copied = dir.path().join("skopeo-copy");
    let o = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &docker,
        &format!("oci:{}:1.0", copied.display()),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(image_digest(&copied), built);

    // A second push uploads nothing: every blob is there already.
    let o = kiln(&["push", "--insecure"], &[&out, Path::new(&reference)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(" 0 blobs uploaded (0 bytes)"),
        "{}",
        text(&o)
    );

    // Pull on a clean machine: the same digest, and `kiln verify` accepts it offline.
    let pulled = dir.path().join("pulled");
    let o = kiln(&["pull", "--insecure", &reference, "-o"], &[&pulled]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("signed, with its SBOM"), "{}", text(&o));
    assert_eq!(image_digest(&pulled.join("oci")), built);
    // The signed provenance came along (cosign's .att tag).
    let o = kiln(
        &["verify", "--provenance"],
        &[&pulled, Path::new("--key"), &pub_of(&key)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("accepted {built}")),
        "{}",
        text(&o)
    );

    // The OTA server's check, straight from the registry.
    assert_registry_verifies(&reference, &key, &built);

    // Four runners pushing the same image at once: all finish, and the tag names an image
    // whose every blob is there.
    let twice = format!("{}/robots/twice:1.0", registry.host());
    let runners: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_kiln"))
                .args(["push", "--insecure"])
                .arg(&out)
                .arg(&twice)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in runners {
        let o = r.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = kiln(&["verify", &twice, "--insecure", "--key"], &[&pub_of(&key)]);
    assert!(o.status.success(), "{}", text(&o));

    // kiln pulls what skopeo pushed (an image kiln did not upload itself).
    let other = format!("{}/robots/by-skopeo:2", registry.host());
    let o = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:1.0", out.join("oci").display()),
        &format!("docker://{other}"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let by_skopeo = dir.path().join("by-skopeo");
    let o = kiln(&["pull", "--insecure", &other, "-o"], &[&by_skopeo]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(image_digest(&by_skopeo.join("oci")), built);

    // A layer corrupted in the registry's storage: pull refuses, naming the blob, and leaves
    // no layout behind.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            out.join("oci/blobs/sha256")
                .join(built.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let data = registry.blob_data(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let damaged = dir.path().join("damaged/nested");
    let o = kiln(&["pull", "--insecure", &reference, "-o"], &[&damaged]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains(&format!("blob {layer}")),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("hash to"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(
        !dir.path().join("damaged").exists(),
        "no partial layout, not even the directories the pull made"
    );
    let o = kiln(
        &["verify", &reference, "--insecure", "--key"],
        &[&pub_of(&key)],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains(&format!("blob {layer}")),
        "{}",
        stderr(&o)
    );

    // Plain HTTP is for this machine only; a malformed reference is named.
    let o = kiln(
        &["pull", "--insecure", "registry.example.com/x:1", "-o"],
        &[&damaged],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("only for a registry on this machine"),
        "{}",
        stderr(&o)
    );
    let o = kiln(&["push"], &[&out, Path::new("fixture:1.0")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("image reference 'fixture:1.0'"),
        "{}",
        stderr(&o)
    );
}

fn sh(script: &str, dir: &Path) {
    let o = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
}

/// A CA and a server certificate for 127.0.0.1 made with openssl, and an htpasswd file
/// (bcrypt, as distribution requires) for `ci` / `s3cret-robot-pass`.
fn tls_and_htpasswd(dir: &Path) -> String {
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
           -subj /CN=kiln-test-ca -keyout ca.key -out ca.pem 2>/dev/null
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
           -keyout server.key -out server.csr 2>/dev/null
         printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
           -extfile ext -out server.pem 2>/dev/null
         htpasswd -Bbn ci s3cret-robot-pass > htpasswd",
        dir,
    );
    format!(
        "  tls:\n    certificate: {d}/server.pem\n    key: {d}/server.key\nauth:\n  htpasswd:\n    realm: kiln-test\n    path: {d}/htpasswd\n",
        d = dir.display()
    )
}

fn auth_file(dir: &Path, host: &str, user: &str, password: &str) -> PathBuf {
    use base64::Engine;
    let file = dir.join(format!("auth-{user}-{}.json", password.len()));
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        &file,
        format!("{{\"auths\": {{\"{host}\": {{\"auth\": \"{auth}\"}}}}}}"),
    )
    .unwrap();
    file
}

fn kiln_with_auth(auth: &Path, args: &[&str], paths: &[&Path]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.env("REGISTRY_AUTH_FILE", auth).args(args);
    for p in paths {
        c.arg(p);
    }
    c.output().unwrap()
}

#[test]
fn push_and_pull_through_tls_and_htpasswd_keep_the_secret_out_of_every_message() {
    let certs = tempfile::tempdir().unwrap();
    let certs_dir = certs.path().to_path_buf();
    let registry = Registry::start_with(|_| tls_and_htpasswd(&certs_dir));
    let ca = certs.path().join("ca.pem");
    let (dir, out, key) = signed_copy();
    let built = image_digest(&out.join("oci"));
    let reference = format!("{}/robots/fixture:1.0", registry.host());
    let ca_args = ["--ca-file", ca.to_str().unwrap()];

    // No credentials stored for the host: refused in one line, exit 2.
    let none = dir.path().join("no-such-auth.json");
    let mut args = vec!["push"];
    args.extend(ca_args);
    let o = kiln_with_auth(&none, &args, &[&out, Path::new(&reference)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("none are stored for 127.0.0.1"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));

    // A wrong password: exit 2, one line, and neither password anywhere in the output.
    let wrong = auth_file(dir.path(), &registry.host(), "ci", "not-the-password");
    let o = kiln_with_auth(&wrong, &args, &[&out, Path::new(&reference)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stderr(&o).contains("HTTP 401"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    for secret in ["not-the-password", "s3cret-robot-pass"] {
        assert!(!text(&o).contains(secret), "{}", text(&o));
    }

    // Without the CA the registry's certificate is not trusted.
    let right = auth_file(dir.path(), &registry.host(), "ci", "s3cret-robot-pass");
    let o = kiln_with_auth(&right, &["push"], &[&out, Path::new(&reference)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));

    // With both: push, skopeo (with the same credentials) sees it, pull and verify accept.
    let o = kiln_with_auth(&right, &args, &[&out, Path::new(&reference)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("s3cret-robot-pass"));
    // skopeo reads a directory of *.crt CAs (and takes *.key there for client keys).
    let skopeo_certs = dir.path().join("skopeo-certs");
    std::fs::create_dir_all(&skopeo_certs).unwrap();
    std::fs::copy(&ca, skopeo_certs.join("ca.crt")).unwrap();
    let o = skopeo(&[
        "inspect",
        "--raw",
        "--authfile",
        right.to_str().unwrap(),
        "--cert-dir",
        skopeo_certs.to_str().unwrap(),
        &format!("docker://{reference}"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        format!("sha256:{}", crate::fixture::sha256(&o.stdout)),
        built
    );
    let pulled = dir.path().join("pulled");
    let mut pull_args = vec!["pull", &reference as &str];
    pull_args.extend(ca_args);
    pull_args.push("-o");
    let o = kiln_with_auth(&right, &pull_args, &[&pulled]);
    assert!(o.status.success(), "{}", text(&o));
    let o = kiln(&["verify"], &[&pulled, Path::new("--key"), &pub_of(&key)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("accepted {built}")),
        "{}",
        text(&o)
    );
}

#[test]
fn a_fresh_runner_builds_from_the_registry_layer_cache_with_the_same_digest() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let (archive, recipe) = crate::fixture::hello_recipe(work.path());
    let cache_repo = format!("{}/ci/layer-cache", registry.host());
    let build = |cache: &str, out: &str, extra: &[&str], env: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.current_dir(&recipe)
            .env("KILN_CACHE_DIR", work.path().join(cache))
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("KILN_CACHE_REGISTRY")
            .args(["build", "-o", out, "--insecure"])
            .args(extra);
        if let Some(r) = env {
            c.env("KILN_CACHE_REGISTRY", r);
        }
        c.output().unwrap()
    };

    // Runner 1 builds and fills the registry cache.
    let o = build("cache-1", "out-1", &["--cache-registry", &cache_repo], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("reused"), "{}", text(&o));
    let first = image_digest(&recipe.join("out-1/oci"));

    // Runner 2: an empty local cache, the mirror gone and --offline; the base layer comes
    // from the registry (named through the environment, as CI sets it) and the image is the
    // same to the bit.
    std::fs::rename(&archive.mirror, work.path().join("mirror-gone")).unwrap();
    let o = build("cache-2", "out-2", &["--offline"], Some(&cache_repo));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("base layer reused from the layer cache"),
        "{}",
        text(&o)
    );
    assert_eq!(image_digest(&recipe.join("out-2/oci")), first);

    // A registry that is down costs a rebuild, never a wrong image: runner 3 with an empty
    // cache, the registry stopped and the mirror back builds the same digest with a warning.
    std::fs::rename(work.path().join("mirror-gone"), &archive.mirror).unwrap();
    drop(registry);
    let o = build("cache-3", "out-3", &["--cache-registry", &cache_repo], None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o).contains("warning: layer cache"),
        "{}",
        stderr(&o)
    );
    assert_eq!(image_digest(&recipe.join("out-3/oci")), first);
}

/// A signed layout whose one layer is `mib` MiB of random bytes (a push that takes a while).
fn big_signed_layout(dir: &Path, mib: usize) -> (PathBuf, PathBuf) {
    let out = dir.join("big");
    let oci = out.join("oci");
    std::fs::create_dir_all(oci.join("blobs/sha256")).unwrap();
    let put = |bytes: &[u8]| -> String {
        let hex = crate::fixture::sha256(bytes);
        std::fs::write(oci.join("blobs/sha256").join(&hex), bytes).unwrap();
        hex
    };
    let mut layer = vec![0u8; mib << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in layer.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let layer_hex = put(&layer);
    let config = format!(
        "{{\"architecture\":\"arm64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"sha256:{layer_hex}\"]}}}}"
    );
    let config_hex = put(config.as_bytes());
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:{config_hex}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\",\"digest\":\"sha256:{layer_hex}\",\"size\":{}}}],\"annotations\":{{\"org.opencontainers.image.version\":\"1.0\"}}}}",
        config.len(),
        layer.len()
    );
    let manifest_hex = put(manifest.as_bytes());
    std::fs::write(
        oci.join("index.json"),
        format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:{manifest_hex}\",\"size\":{},\"annotations\":{{\"org.opencontainers.image.ref.name\":\"1.0\"}}}}]}}",
            manifest.len()
        ),
    )
    .unwrap();
    std::fs::write(oci.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}").unwrap();
    let key = dir.join("big.key");
    let o = kiln(&["keygen", "-o"], &[&key]);
    assert!(o.status.success(), "{}", text(&o));
    let o = kiln(&["sign"], &[&out, Path::new("--key"), &key]);
    assert!(o.status.success(), "{}", text(&o));
    (out, key)
}

#[test]
fn a_registry_killed_mid_push_never_shows_a_tag_with_missing_blobs_and_the_next_push_completes() {
    let mut registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (out, key) = big_signed_layout(dir.path(), 192);
    let built = image_digest(&out.join("oci"));
    let reference = format!("{}/robots/big:1.0", registry.host());

    // The registry dies (SIGKILL) while the push is under way.
    let push = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["push", "--insecure"])
        .arg(&out)
        .arg(&reference)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    registry.crash_and_restart();
    let o = push.wait_with_output().unwrap();
    if o.status.success() {
        eprintln!("note: the push finished before the registry was killed");
    } else {
        // One line, exit 2, and the tag was never written.
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        let o = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{reference}"),
        ]);
        assert!(
            !o.status.success(),
            "a tag exists after a failed push: {}",
            text(&o)
        );
    }

    // The next push completes; what the tag names is all there (pull hashes every blob).
    let o = kiln(&["push", "--insecure"], &[&out, Path::new(&reference)]);
    assert!(o.status.success(), "{}", text(&o));
    assert_registry_verifies(&reference, &key, &built);
}

/// The inputs archive: after a build, `kiln vendor` stores every .deb of the lock (and the
/// lock) as one artifact; a checkout without kiln.lock, an empty cache and the mirror gone
/// rebuild the same image from it with `--offline --inputs`. An archive for another lock, a
/// corrupted blob and a missing tag are refused with nothing left in the cache.
#[test]
fn an_inputs_archive_rebuilds_the_same_image_with_the_mirror_gone() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let (archive, recipe) = crate::fixture::hello_recipe(work.path());
    let reference = format!("{}/robots/hello-inputs:1.0", registry.host());
    let run = |cache: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .current_dir(&recipe)
            .env("KILN_CACHE_DIR", work.path().join(cache))
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("KILN_CACHE_REGISTRY")
            .args(args)
            .output()
            .unwrap()
    };
    let o = run("cache-1", &["build", "-o", "out-1"]);
    assert!(o.status.success(), "{}", text(&o));
    let first = image_digest(&recipe.join("out-1/oci"));
    let lock = std::fs::read(recipe.join("kiln.lock")).unwrap();
    let packages = kiln::pipeline::lock::Lock::read(&recipe.join("kiln.lock"))
        .unwrap()
        .packages
        .len();
    assert!(packages > 0);

    let o = run("cache-1", &["vendor", &reference, "--insecure"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("archived {packages} inputs")),
        "{}",
        text(&o)
    );
    // Archiving again uploads nothing and writes the same manifest.
    let again = run("cache-1", &["vendor", &reference, "--insecure"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains(", 0 uploaded)"), "{}", text(&again));
    let manifest_of = |o: &Output| text(o).trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(manifest_of(&again), manifest_of(&o));
    // A client kiln did not write sees an OCI artifact with one layer per .deb.
    let m = skopeo_raw(&reference);
    assert_eq!(
        m["artifactType"],
        kiln::registry::inputs::INPUTS_ARTIFACT_TYPE
    );
    assert_eq!(m["layers"].as_array().unwrap().len(), packages);

    // A fresh checkout (no kiln.lock), an empty cache, the mirror gone.
    std::fs::remove_file(recipe.join("kiln.lock")).unwrap();
    std::fs::rename(&archive.mirror, work.path().join("mirror-gone")).unwrap();
    let o = run(
        "cache-2",
        &[
            "build",
            "-o",
            "out-2",
            "--offline",
            "--inputs",
            &reference,
            "--insecure",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("{packages} files, {packages} downloaded into the cache, kiln.lock written from the archive")),
        "{}",
        text(&o)
    );
    assert_eq!(image_digest(&recipe.join("out-2/oci")), first);
    assert_eq!(std::fs::read(recipe.join("kiln.lock")).unwrap(), lock);

    let cache_entries = |cache: &str| {
        std::fs::read_dir(work.path().join(cache).join("blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // A recipe whose lock is another one: refused before anything is downloaded.
    let mut other = lock.clone();
    other.extend_from_slice(b"# edited\n");
    std::fs::write(recipe.join("kiln.lock"), &other).unwrap();
    let o = run(
        "cache-3",
        &[
            "build",
            "-o",
            "out-3",
            "--offline",
            "--inputs",
            &reference,
            "--insecure",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains("archives the inputs of another lock"),
        "{}",
        stderr(&o)
    );
    assert_eq!(cache_entries("cache-3"), 0);
    assert!(!recipe.join("out-3").exists());
    std::fs::write(recipe.join("kiln.lock"), &lock).unwrap();

    // An archive for this lock that also carries a file the lock does not pin (made with the
    // library, as a hostile or broken archiver would): refused before anything is cached.
    let extra = work.path().join("evil_1.0_arm64.deb");
    std::fs::write(&extra, b"not in the lock").unwrap();
    let evil_ref = format!("{}/robots/hello-inputs:evil", registry.host());
    let evil = kiln::registry::Reference::parse(&evil_ref).unwrap();
    let connection = kiln::registry::Registry::connect(
        &evil,
        &kiln::registry::ConnectOptions {
            insecure: true,
            ..Default::default()
        },
    )
    .unwrap();
    let file = kiln::registry::inputs::ArchivedFile {
        media_type: kiln::registry::inputs::DEB_MEDIA_TYPE.into(),
        title: "evil_1.0_arm64.deb".into(),
        digest: format!("sha256:{}", crate::fixture::sha256(b"not in the lock")),
        size: 15,
    };
    kiln::registry::inputs::store(&connection, "evil", &lock, &[file], &|_| {
        std::fs::File::open(&extra)
    })
    .unwrap();
    let o = run(
        "cache-6",
        &[
            "build",
            "-o",
            "out-6",
            "--offline",
            "--inputs",
            &evil_ref,
            "--insecure",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains("evil_1.0_arm64.deb")
            && stderr(&o).contains("is not an input the lock pins"),
        "{}",
        stderr(&o)
    );
    assert_eq!(cache_entries("cache-6"), 0);

    // A .deb corrupted in the registry's storage: refused, naming it, and not cached.
    let layer = m["layers"][0].clone();
    let digest = layer["digest"].as_str().unwrap();
    let data = registry.blob_data(digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&data, bytes).unwrap();
    let o = run(
        "cache-4",
        &[
            "build",
            "-o",
            "out-4",
            "--offline",
            "--inputs",
            &reference,
            "--insecure",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let title = layer["annotations"]["org.opencontainers.image.title"]
        .as_str()
        .unwrap();
    assert!(
        stderr(&o).contains(title) && stderr(&o).contains(digest),
        "{}",
        stderr(&o)
    );
    assert!(!work
        .path()
        .join("cache-4/blobs/sha256")
        .join(&digest[7..])
        .exists());
    assert!(!recipe.join("out-4").exists());

    // A tag that is not there (or not an archive) is one line, exit 2 / 1.
    let missing = format!("{}/robots/hello-inputs:nope", registry.host());
    let o = run(
        "cache-5",
        &[
            "build",
            "-o",
            "out-5",
            "--offline",
            "--inputs",
            &missing,
            "--insecure",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stderr(&o).contains("no such tag"), "{}", stderr(&o));
}

/// One release for two boards (an arm64 and an armhf robot): one recipe lists both boards and
/// one `kiln build` makes `OUT/BOARD` for each (a lock each); `kiln push OUT REF` writes an
/// OCI image index under the tag, one manifest per board with its platform; skopeo
/// sees both platforms; `kiln pull --board` and `kiln verify REF --board` take the board's
/// image (the same digest as its build), and without a board, or with one the release lacks,
/// they say which boards there are.
#[test]
fn a_release_for_two_boards_is_one_index_and_pull_and_verify_pick_the_board() {
    use crate::fixture::Signer;
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let signer = Signer::new("kiln fixture archive <archive@kiln.invalid>", "never", None);
    let key = work.path().join("release.key");
    let o = kiln(&["keygen", "-o"], &[&key]);
    assert!(o.status.success(), "{}", text(&o));
    // One recipe listing both boards, each board file naming its own archive.
    let recipe = work.path().join("recipe");
    let boards = crate::fixture::write_two_board_recipe(work.path(), &recipe, &signer, false);
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(&recipe)
        .env("KILN_CACHE_DIR", work.path().join("cache"))
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("KILN_CACHE_REGISTRY")
        .args(["build", "-o", "out"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let outs: Vec<PathBuf> = boards.iter().map(|b| recipe.join("out").join(b)).collect();
    for (board, out) in boards.iter().zip(&outs) {
        assert!(recipe.join(format!("kiln.{board}.lock")).is_file());
        assert!(
            text(&o).contains(&format!("built out/{board}/oci:1.0")),
            "{}",
            text(&o)
        );
        let o = kiln(&["sign"], &[out, Path::new("--key"), &key]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // Export (and flash) take the build's output and the board file, and find that board's
    // image in it.
    let tars: Vec<PathBuf> = ["whole", "board"]
        .iter()
        .map(|n| work.path().join(format!("{n}.tar")))
        .collect();
    let o = kiln(
        &["export", "--format", "tar", "--board"],
        &[
            &recipe.join("boards/armhf.toml"),
            &recipe.join("out"),
            Path::new("-o"),
            &tars[0],
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = kiln(&["export", "--format", "tar", "-o"], &[&tars[1], &outs[1]]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(&tars[0]).unwrap(),
        std::fs::read(&tars[1]).unwrap()
    );

    // A command made for one board says so.
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(&recipe)
        .env("KILN_CACHE_DIR", work.path().join("cache"))
        .args(["vendor", "127.0.0.1:1/x:y", "--insecure"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("lists 2 boards"), "{}", stderr(&o));
    let built: Vec<String> = outs.iter().map(|o| image_digest(&o.join("oci"))).collect();
    let reference = format!("{}/robots/fleet:2.0", registry.host());
    // The build's output (one directory per board) goes under one tag.
    let o = kiln(
        &["push", "--insecure"],
        &[&recipe.join("out"), Path::new(&reference)],
    );
    assert!(o.status.success(), "{}", text(&o));

    // Any OCI client sees one index with a manifest per platform.
    let index = skopeo_raw(&reference);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    let platforms: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["annotations"]["dev.kiln.board"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                e["platform"]["architecture"].as_str().unwrap().to_string(),
                e["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        vec![
            ("robot-arm64".into(), "arm64".into(), built[0].clone()),
            ("robot-armhf".into(), "arm".into(), built[1].clone()),
        ]
    );
    let o = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--override-arch",
        "arm",
        &format!("docker://{reference}"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let chosen: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(chosen["Architecture"], "arm", "{}", text(&o));

    // pull --board takes that board's image, signature and SBOM.
    let pulled = work.path().join("pulled");
    let o = kiln(
        &[
            "pull",
            "--insecure",
            "--board",
            "robot-armhf",
            &reference,
            "-o",
        ],
        &[&pulled],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(image_digest(&pulled.join("oci")), built[1]);
    assert!(text(&o).contains("signed"), "{}", text(&o));
    // verify REF --board: accepted for the board, and a local verify with another board refused.
    let o = kiln(
        &[
            "verify",
            &reference,
            "--insecure",
            "--board",
            "robot-arm64",
            "--key",
        ],
        &[&pub_of(&key)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&built[0]), "{}", text(&o));
    let o = kiln(
        &["verify", "--board", "robot-arm64", "--key"],
        &[&pub_of(&key), &pulled],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("the image is for board \"robot-armhf\", not \"robot-arm64\""),
        "{}",
        text(&o)
    );

    // No board, or one the release lacks: one line naming the boards, exit 1, nothing written.
    for (args, says) in [
        (
            vec![],
            "is a release for several boards (robot-arm64, robot-armhf); choose one with --board",
        ),
        (
            vec!["--board", "robot-riscv"],
            "has no image for board \"robot-riscv\" (it has: robot-arm64, robot-armhf)",
        ),
    ] {
        let target = work.path().join("not-pulled");
        let mut a = vec!["pull", "--insecure", reference.as_str()];
        a.extend(args);
        a.push("-o");
        let o = kiln(&a, &[&target]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        assert!(!target.exists());
    }
    // Two layouts for the same board are refused before the tag is written.
    let o = kiln(
        &["push", "--insecure"],
        &[
            &outs[0],
            &outs[0],
            Path::new(&format!("{}/robots/fleet:dup", registry.host())),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("one image per board"), "{}", stderr(&o));
}

/// A TCP proxy to the registry on `target` that cuts, once, the first connection that has
/// carried more than `cut_after` bytes towards the registry (a network dropping mid-upload).
fn dropping_proxy(target: u16, cut_after: u64) -> u16 {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = std::sync::Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let (mut server_read, mut client_write) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_read, &mut client_write);
                let _ = client_write.shutdown(std::net::Shutdown::Both);
            });
            let cut = cut.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                let mut carried = 0u64;
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    carried += n as u64;
                    if carried > cut_after && !cut.swap(true, Ordering::SeqCst) {
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        let _ = server.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// A 40 MiB layer goes up in 16 MiB chunks; the network drops 20 MiB in, in the middle of the
/// second chunk. The push asks the registry where the upload stands; distribution 2.8 has
/// dropped it (the bytes of the cut PATCH no longer match its state token), so the blob starts
/// again, once, and the image arrives whole and verified. (A registry that answers the
/// status goes on from its `Range` instead; none such is packaged in Debian to test here.)
#[test]
fn an_upload_cut_mid_chunk_is_taken_up_again_and_the_image_arrives_whole() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (out, key) = big_signed_layout(dir.path(), 40);
    let proxy = dropping_proxy(registry.port, 20 << 20);
    let through_proxy = format!("127.0.0.1:{proxy}/robots/big:1.0");
    let o = kiln(&["push", "--insecure"], &[&out, Path::new(&through_proxy)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("after a dropped connection 0 upload(s) resumed, 1 started again"),
        "{}",
        text(&o)
    );
    let direct = format!("{}/robots/big:1.0", registry.host());
    assert_registry_verifies(&direct, &key, &image_digest(&out.join("oci")));

    // The same image into another repository of the registry: every blob is linked by a
    // cross-repository mount, none uploaded.
    let copy = format!("{}/robots/copy:1.0", registry.host());
    let from = format!("{}/robots/big", registry.host());
    let o = kiln(
        &["push", "--insecure", "--mount-from", &from],
        &[&out, Path::new(&copy)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(": 0 blobs uploaded (0 bytes), 4 already there (4 mounted)"),
        "{}",
        text(&o)
    );
    assert_registry_verifies(&copy, &key, &image_digest(&out.join("oci")));
}
