//! The build's provenance: an in-toto Statement (v1) whose predicate is SLSA Provenance v1
//! (<https://slsa.dev/spec/v1.0/provenance>), naming the image manifest as its subject and
//! every input by digest: the recipe, board and lock files, each .deb and wheel the image
//! holds, each Python file the cache supplied (build backends too), envrun, and the overlays'
//! own files. `kiln sign` wraps it in a signed DSSE envelope attached to the image as a
//! referrer (see `signing::attest`); `kiln verify --provenance` checks it.
//!
//! It is written beside the layout (`OUT/provenance.json`), not into it: the build's start
//! and end times (`runDetails.metadata`) are the one thing in it that changes from run to
//! run, and the image digest must not.

use crate::pipeline::fetch::Cache;
use crate::pipeline::lock::Pinned;
use crate::pipeline::sbom::{Ecosystem, SbomPackage};
use crate::recipe::overlay::Kind;
use crate::recipe::Recipe;
use crate::timefmt::rfc3339;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::image::provenance::{FILE_NAME, PREDICATE_TYPE, STATEMENT_TYPE};
/// What kind of build this is: a kiln image from a recipe and its lock.
pub const BUILD_TYPE: &str = "https://kiln.invalid/provenance/image/v1";
/// The builder id when none is given: a build on someone's machine, which a policy that
/// trusts only its CI's id (`kiln verify --builder-id`) refuses.
pub const LOCAL_BUILDER_ID: &str = "https://kiln.invalid/builders/local";

/// Everything the statement describes.
#[derive(Debug, Clone, Copy)]
pub struct BuildFacts<'a> {
    /// The recipe built (for this board).
    pub recipe: &'a Recipe,
    /// Its lock.
    pub lock: &'a Pinned,
    /// The cache the inputs came from.
    pub cache: &'a Cache,
    /// `sha256:` digest of the image manifest.
    pub image_digest: &'a str,
    /// The packages and wheels in the image (what the SBOM lists).
    pub packages: &'a [SbomPackage],
    /// envrun's SHA-256, hex, when the image has the envrun layer.
    pub envrun_sha256: Option<&'a str>,
    /// Who built it (SLSA `builder.id`).
    pub builder_id: &'a str,
    /// SOURCE_DATE_EPOCH of the image.
    pub source_date_epoch: u64,
    /// Layer compression's media type.
    pub compression: &'a str,
    /// When the build started and finished, seconds since the epoch.
    pub started: u64,
    /// See `started`.
    pub finished: u64,
}

/// Why the statement could not be made or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ProvenanceError {
    /// The file concerned.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

fn file_digest(path: &Path) -> Result<String, ProvenanceError> {
    std::fs::File::open(path)
        .and_then(crate::digest::sha256_reader)
        .map(|(hex, _)| hex)
        .map_err(|e| ProvenanceError {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// A resource descriptor (in-toto's): a name or URI and the digest.
fn resource(name: &str, uri: Option<String>, sha256: &str) -> Value {
    let mut v = json!({"name": name, "digest": {"sha256": sha256}});
    if let Some(u) = uri {
        v["uri"] = json!(u);
    }
    v
}

/// Percent-encodes what a package URL's name or version may not hold as is.
fn purl_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-~".contains(c) {
                c.to_string()
            } else {
                format!("%{:02X}", c as u32)
            }
        })
        .collect()
}

/// The in-toto Statement for one build.
pub fn statement(facts: &BuildFacts) -> Result<Value, ProvenanceError> {
    let recipe = facts.recipe;
    let recipe_file = recipe.dir.join("kiln.toml");
    let board_file = recipe.dir.join(&recipe.board_ref);
    let lock_file = recipe.lock_path();
    // Resolved dependencies by digest, in a stable order (name, then digest).
    let mut deps: BTreeMap<(String, String), Value> = BTreeMap::new();
    for p in facts.packages {
        let (uri, kind) = match p.ecosystem {
            Ecosystem::Debian => (
                format!(
                    "pkg:deb/debian/{}@{}?arch={}",
                    purl_part(&p.name),
                    purl_part(&p.version),
                    purl_part(&p.arch)
                ),
                "deb",
            ),
            Ecosystem::PyPI => (
                format!(
                    "pkg:pypi/{}@{}",
                    purl_part(&p.name.to_lowercase()),
                    purl_part(&p.version)
                ),
                "wheel",
            ),
        };
        let name = format!("{kind}:{}", p.name);
        deps.insert(
            (name.clone(), p.sha256.clone()),
            resource(&name, Some(uri), &p.sha256),
        );
    }
    for (file, _) in crate::pipeline::inputs::python_inputs(recipe, facts.cache).0 {
        let hex = file.digest.trim_start_matches("sha256:").to_string();
        let name = format!("python-file:{}", file.title);
        deps.insert((name.clone(), hex.clone()), resource(&name, None, &hex));
    }
    if let Some(sha) = facts.envrun_sha256 {
        deps.insert(
            ("envrun".into(), sha.into()),
            resource("envrun", Some("file:/usr/bin/envrun".into()), sha),
        );
    }
    let mut overlays = Vec::new();
    for o in &recipe.overlays {
        for f in &o.files {
            let sha = file_digest(&f.source)?;
            let name = format!("overlay:{}:{}", o.name, f.dest);
            deps.insert((name.clone(), sha.clone()), resource(&name, None, &sha));
        }
        let mut entry = json!({"name": o.name});
        if let Kind::PythonVenv {
            requirements,
            build_requirements,
            ..
        } = &o.kind
        {
            entry["requirements"] =
                json!({"name": requirements.label, "digest": {"sha256": requirements.sha256}});
            if let Some(b) = build_requirements {
                entry["buildRequirements"] =
                    json!({"name": b.label, "digest": {"sha256": b.sha256}});
            }
        }
        overlays.push(entry);
    }
    let file_param = |path: &Path, name: &str| -> Result<Value, ProvenanceError> {
        Ok(json!({"name": name, "digest": {"sha256": file_digest(path)?}}))
    };
    let title = &recipe.name;
    Ok(json!({
        "_type": STATEMENT_TYPE,
        "subject": [{
            "name": title,
            "digest": {"sha256": facts.image_digest.trim_start_matches("sha256:")},
        }],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "recipe": file_param(&recipe_file, "kiln.toml")?,
                    "board": file_param(&board_file, &recipe.board_ref)?,
                    "lock": file_param(&lock_file, &recipe.lock_name)?,
                    "name": recipe.name,
                    "version": recipe.version,
                    "boardName": recipe.board.name,
                    "suite": recipe.board.suite,
                    "overlays": overlays,
                },
                "internalParameters": {
                    "lockDigest": facts.lock.digest(),
                    "releaseInRelease": {"sha256": facts.lock.release.inrelease_sha256},
                    "sourceDateEpoch": facts.source_date_epoch,
                    "layerMediaType": facts.compression,
                },
                "resolvedDependencies": deps.into_values().collect::<Vec<_>>(),
            },
            "runDetails": {
                "builder": {
                    "id": facts.builder_id,
                    "version": {"kiln": env!("CARGO_PKG_VERSION")},
                },
                "metadata": {
                    "startedOn": rfc3339(facts.started),
                    "finishedOn": rfc3339(facts.finished),
                },
            },
        },
    }))
}

/// Writes the statement to `out/provenance.json` in one step (a new file renamed into place).
pub fn write(out: &Path, statement: &Value) -> Result<PathBuf, ProvenanceError> {
    let path = out.join(FILE_NAME);
    let fail = |e: &dyn std::fmt::Display| ProvenanceError {
        path: path.clone(),
        reason: e.to_string(),
    };
    let mut bytes = serde_json::to_vec_pretty(statement).map_err(|e| fail(&e))?;
    bytes.push(b'\n');
    crate::output::replace_file(&path, &bytes).map_err(|e| fail(&e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_urls_escape_what_they_must() {
        assert_eq!(purl_part("1:2.3+dfsg-1~deb9u1"), "1%3A2.3%2Bdfsg-1~deb9u1");
        assert_eq!(purl_part("libc6"), "libc6");
    }
}
