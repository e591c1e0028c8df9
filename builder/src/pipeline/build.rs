//! The build pipeline: recipe -> lock -> fetch -> compose -> configure -> check -> pack, in that order, into an atomic
//! output directory. Each stage is a module of its own; this one only wires them together and
//! decides which lock to build from.

use crate::check::report::{render, Format};
use crate::check::CheckOptions;
use crate::image::oci::{self, ImageMeta, ImageRef, OciError};
use crate::image::pack::{self, LayerCompression, PackError};
use crate::image::ImageTree;
use crate::output::StagedDir;
use crate::pipeline::compose::{self, ComposeError};
use crate::pipeline::configure::{self, ConfigureError, ConfigureOptions};
use crate::pipeline::fetch::{self, Cache, FetchError};
use crate::pipeline::layercache;
use crate::pipeline::lock::{self, Lock, LockError, Pinned};
use crate::recipe::{Recipe, RecipeError};
use crate::transport::Transport;
use std::path::{Path, PathBuf};

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Bad recipe or board.
    #[error(transparent)]
    Spec(#[from] RecipeError),
    /// Locking failed or the lock is unusable.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A package could not be fetched or verified.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A package could not be unpacked.
    #[error(transparent)]
    Compose(#[from] ComposeError),
    /// Configuring failed (a maintainer script, or no emulator).
    #[error(transparent)]
    Configure(#[from] ConfigureError),
    /// A layer could not be packed.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// The layout could not be written.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// The layer cache is unusable.
    #[error(transparent)]
    LayerCache(#[from] crate::pipeline::layercache::LayerCacheError),
    /// The registry behind the layer cache cannot be used (its CA or credentials file).
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// The inputs archive could not be restored.
    #[error(transparent)]
    Inputs(#[from] crate::pipeline::inputs::InputsError),
    /// An overlay could not be built, or broke its rules.
    #[error(transparent)]
    Overlay(#[from] crate::pipeline::overlay::OverlayError),
    /// The output directory could not be written.
    #[error("output {path}: {reason}")]
    Output {
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `--offline` without a usable lock.
    #[error("{0}")]
    Offline(String),
    /// `kiln check` found errors in a layer.
    #[error("check: {errors} error finding(s) in the {layer} layer; first: {first}")]
    Check {
        /// Which layer.
        layer: String,
        /// Unwaived errors.
        errors: usize,
        /// The first one, in one line.
        first: String,
        /// The whole report as a table, for the terminal.
        report: String,
    },
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Fail unless kiln.lock exists and matches the recipe; never write it.
    pub locked: bool,
    /// No network: build from the lock and the cache.
    pub offline: bool,
    /// Output directory (the layout goes to `OUT/oci`).
    pub out: PathBuf,
    /// Layer compression.
    pub compression: LayerCompression,
    /// Cache directory.
    pub cache_dir: PathBuf,
    /// Show progress bars.
    pub progress: bool,
    /// Override of SOURCE_DATE_EPOCH (default: the Release date recorded in the lock).
    pub source_date_epoch: Option<u64>,
    /// Print how long each stage took to stderr.
    pub timings: bool,
    /// How many maintainer scripts may run at once (see [`ConfigureOptions::jobs`]).
    pub jobs: usize,
    /// No generator runs natively (see [`ConfigureOptions::emulate_all`]).
    pub emulate_all: bool,
    /// The registry repository a fleet of runners shares as its layer cache.
    pub cache_registry: Option<(crate::registry::Reference, crate::registry::ConnectOptions)>,
    /// An inputs archive (`kiln vendor`) to restore into the cache before building.
    pub inputs: Option<(crate::registry::Reference, crate::registry::ConnectOptions)>,
    /// Who builds, as the provenance states it (SLSA `builder.id`); default
    /// [`crate::pipeline::provenance::LOCAL_BUILDER_ID`].
    pub builder_id: Option<String>,
}

/// Prints a stage's wall time when asked to.
struct StageClock {
    enabled: bool,
    started: std::time::Instant,
}

impl StageClock {
    fn new(enabled: bool) -> StageClock {
        StageClock {
            enabled,
            started: std::time::Instant::now(),
        }
    }

    fn lap(&mut self, stage: &str) {
        if self.enabled {
            eprintln!(
                "kiln: {stage:<10} {:>7.2} s",
                self.started.elapsed().as_secs_f64()
            );
        }
        self.started = std::time::Instant::now();
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The image.
    pub image: ImageRef,
    /// The layout directory.
    pub layout: PathBuf,
    /// Number of packages.
    pub packages: usize,
    /// The SOURCE_DATE_EPOCH used.
    pub source_date_epoch: u64,
    /// The base layer came from the layer cache (nothing was fetched, composed or configured).
    pub base_reused: bool,
    /// The layers above the base (envrun, then one per overlay): name and whether reused.
    pub overlays: Vec<(String, bool)>,
    /// What the inputs archive put back, when one was given.
    pub inputs: Option<crate::pipeline::inputs::Restored>,
}

/// Resolves the recipe and writes its lock, one per board (the `kiln lock` command).
pub fn lock_recipe(recipe_dir: &Path) -> Result<Vec<(Lock, PathBuf)>, BuildError> {
    let transport = Transport::new();
    let mut locked = Vec::new();
    for recipe in Recipe::load_all(recipe_dir)? {
        let lock = lock::resolve_lock(&recipe, &transport)?;
        let path = recipe.lock_path();
        lock.write(&path)?;
        locked.push((lock, path));
    }
    Ok(locked)
}

/// Picks the lock to build from: the existing one when it matches the recipe; otherwise a new
/// resolution (written back), unless `--locked` or `--offline` forbid it.
fn lock_for_build(recipe: &Recipe, opts: &BuildOptions) -> Result<Pinned, BuildError> {
    let path = recipe.lock_path();
    if opts.locked {
        return Ok(Lock::read(&path)?.pin(recipe, &path)?);
    }
    if path.exists() {
        match Lock::read(&path)?.pin(recipe, &path) {
            Ok(pinned) => return Ok(pinned),
            Err(e) if opts.offline => return Err(e.into()),
            Err(_) => {}
        }
    } else if opts.offline {
        return Err(BuildError::Offline(format!(
            "{}: no lock, and --offline cannot resolve one; run `kiln lock` while online",
            path.display()
        )));
    }
    let lock = lock::resolve_lock(recipe, &Transport::new())?;
    lock.write(&path)?;
    Ok(lock.pin(recipe, &path)?)
}

/// Runs the whole pipeline for the recipe in `recipe_dir`. A failed build leaves no trace in
/// the output: the output directories it created are removed again (when still empty).
pub fn build(recipe_dir: &Path, opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    crate::output::removing_created_on_failure(&opts.out, || {
        let restored = restore_inputs(recipe_dir, opts)?;
        build_pipeline(Recipe::load(recipe_dir)?, restored, opts)
    })
}

/// Builds the recipe for every board it lists: one board into `OUT` as [`build`] does;
/// several each into `OUT/BOARD` (its name), one after the other, sharing the cache (a .deb
/// or wheel two boards use is fetched once). Each board's output is complete on its own; a
/// failing board stops the build with the boards before it built.
pub fn build_all(recipe_dir: &Path, opts: &BuildOptions) -> Result<Vec<BuildReport>, BuildError> {
    let recipes = Recipe::load_all(recipe_dir)?;
    if recipes.len() == 1 {
        return build(recipe_dir, opts).map(|r| vec![r]);
    }
    if opts.inputs.is_some() {
        return Err(BuildError::Offline(format!(
            "--inputs: {} lists {} boards; an inputs archive is made and used per board",
            recipe_dir.join("kiln.toml").display(),
            recipes.len()
        )));
    }
    crate::output::removing_created_on_failure(&opts.out, || {
        let mut reports = Vec::new();
        for recipe in recipes {
            let board_opts = BuildOptions {
                out: opts.out.join(&recipe.board.name),
                ..opts.clone()
            };
            let report = crate::output::removing_created_on_failure(&board_opts.out, || {
                build_pipeline(recipe, None, &board_opts)
            })?;
            reports.push(report);
        }
        Ok(reports)
    })
}

/// Restores the inputs archive `--inputs` names, when one is given.
fn restore_inputs(
    recipe_dir: &Path,
    opts: &BuildOptions,
) -> Result<Option<crate::pipeline::inputs::Restored>, BuildError> {
    let Some((reference, connect)) = &opts.inputs else {
        return Ok(None);
    };
    let cache = Cache::open(&opts.cache_dir)?;
    let registry = crate::registry::Registry::connect(reference, connect)?;
    let tag = reference.tag.as_deref().ok_or_else(|| {
        BuildError::Offline(format!(
            "--inputs {reference}: name the archive's tag (HOST/REPO:TAG)"
        ))
    })?;
    Ok(Some(crate::pipeline::inputs::restore(
        recipe_dir, &cache, &registry, tag,
    )?))
}

fn build_pipeline(
    recipe: Recipe,
    restored: Option<crate::pipeline::inputs::Restored>,
    opts: &BuildOptions,
) -> Result<BuildReport, BuildError> {
    let mut clock = StageClock::new(opts.timings);
    let started = crate::timefmt::now();
    let mut cache = Cache::open(&opts.cache_dir)?;
    let lock = lock_for_build(&recipe, opts)?;
    clock.lap("lock");
    if let Some((reference, connect)) = &opts.cache_registry {
        cache = cache.with_remote(crate::registry::Registry::connect(reference, connect)?);
    }
    let sde = opts.source_date_epoch.unwrap_or(lock.release.date_epoch);
    // A lock dated in the future would date the image there and break reproducibility the
    // day that date passes (the Release check refuses such a Date; a hand-edited lock too).
    let now = crate::timefmt::now();
    if opts.source_date_epoch.is_none()
        && lock.release.date_epoch > now + crate::debian::archive::FUTURE_TOLERANCE
    {
        return Err(BuildError::Output {
            path: recipe.lock_path(),
            reason: format!(
                "the Release date it records ({}) lies in the future; re-lock",
                lock.release.date
            ),
        });
    }

    let out_err = |path: &Path, e: std::io::Error| BuildError::Output {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(&opts.out).map_err(|e| out_err(&opts.out, e))?;
    let _claim = crate::output::claim(&opts.out).map_err(|e| out_err(&opts.out, e))?;
    let layout_path = opts.out.join("oci");
    let staged = StagedDir::new(&layout_path).map_err(|e| out_err(&layout_path, e))?;
    let blobs = staged.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| out_err(&blobs, e))?;

    // The base layer depends only on these; an unchanged base is reused, not rebuilt.
    let base_key = layercache::key(&[
        &lock.digest(),
        &format!("configure={}", recipe.configure),
        &format!("debconf={:?}", recipe.debconf),
        &format!("merged-usr={}", recipe.board.merged_usr),
        &format!("source-date-epoch={sde}"),
        opts.compression.media_type(),
    ]);
    let cached = layercache::restore(&cache, &base_key, &blobs)?;
    if cached.is_some() {
        clock.lap("reuse");
    }
    let base_reused = cached.is_some();
    let (layer, mut debs) = match cached {
        Some(found) => found,
        None => {
            let (layer, debs) =
                build_base_layer(&recipe, &lock, &cache, opts, sde, &blobs, &mut clock)?;
            layercache::store(&cache, &base_key, &layer, &debs, &blobs)?;
            (layer, debs)
        }
    };
    // The overlays, each a layer of its own on top of the base (and envrun).
    let overlay_work = tempfile::Builder::new()
        .prefix(".kiln-overlays-")
        .tempdir_in(&opts.out)
        .map_err(|e| out_err(&opts.out, e))?;
    // In memory when kiln may mount: thousands of files are created and removed per build.
    let scratch = crate::sandbox::ScratchMount::over(overlay_work.path());
    let added =
        crate::pipeline::overlay::stage::build_overlays(&crate::pipeline::overlay::StageInput {
            recipe: &recipe,
            overlays: &recipe.overlays,
            base_blob: &blobs.join(&layer.digest),
            base_diff_id: &layer.diff_id,
            blobs: &blobs,
            work: overlay_work.path(),
            cache: &cache,
            sde,
            compression: opts.compression,
            offline: opts.offline,
        });
    drop(scratch);
    drop(overlay_work);
    let added = added?;
    // The SBOM lists the overlays' packages too.
    debs.extend(added.iter().flat_map(|a| a.debs.iter().cloned()));
    if !added.is_empty() {
        clock.lap("overlays");
    }
    let meta = ImageMeta {
        name: recipe.name.clone(),
        version: recipe.version.clone(),
        arch: recipe.board.arch,
        created: sde,
        board: recipe.board.name.clone(),
        suite: recipe.board.suite.clone(),
        compatible: recipe.board.compatible.clone(),
        lock_digest: lock.digest(),
        history: vec![format!(
            "kiln {}: {} {} {} packages from {} (InRelease sha256:{})",
            if recipe.configure {
                "configure"
            } else {
                "compose (unpacked)"
            },
            recipe.board.suite,
            recipe.variant,
            lock.packages.len(),
            crate::transport::redact_userinfo(&recipe.board.mirror),
            lock.release.inrelease_sha256
        )],
    };
    let mut meta = meta;
    let mut layers = vec![layer];
    for a in &added {
        layers.push(a.layer.clone());
        meta.history.push(a.history.clone());
    }
    let image = oci::write_layout(staged.path(), &layers, &meta)?;
    let sbom = crate::pipeline::sbom::spdx_document(
        &crate::pipeline::sbom::Described {
            name: &recipe.name,
            version: &recipe.version,
            lock_digest: &lock.digest(),
            created: sde,
        },
        &debs,
    );
    crate::pipeline::sbom::attach(staged.path(), &image.manifest_digest, &sbom, sde).map_err(
        |e| BuildError::Output {
            path: e.path,
            reason: e.reason,
        },
    )?;
    // The statement of how it was built: beside the layout, never naming a previous image.
    let provenance_path = opts.out.join(crate::pipeline::provenance::FILE_NAME);
    match std::fs::remove_file(&provenance_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(out_err(&provenance_path, e))
        }
        _ => {}
    }
    let check_path = opts.out.join(crate::check::report::RECORD_FILE);
    match std::fs::remove_file(&check_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(out_err(&check_path, e)),
        _ => {}
    }
    let checked = check_image_as_built(
        staged.path(),
        &image.manifest_digest,
        &opts.out,
        &recipe,
        &cache,
    )?;
    clock.lap("check image");
    staged.commit().map_err(|e| out_err(&layout_path, e))?;
    crate::output::replace_file(&check_path, &checked).map_err(|e| out_err(&check_path, e))?;
    let envrun_sha256 = added.iter().find_map(|a| a.file_sha256.as_deref());
    let statement =
        crate::pipeline::provenance::statement(&crate::pipeline::provenance::BuildFacts {
            recipe: &recipe,
            lock: &lock,
            cache: &cache,
            image_digest: &image.manifest_digest,
            packages: &debs,
            envrun_sha256,
            builder_id: opts
                .builder_id
                .as_deref()
                .unwrap_or(crate::pipeline::provenance::LOCAL_BUILDER_ID),
            source_date_epoch: sde,
            compression: opts.compression.media_type(),
            started,
            finished: crate::timefmt::now(),
        })
        .and_then(|s| crate::pipeline::provenance::write(&opts.out, &s))
        .map_err(|e| BuildError::Output {
            path: e.path,
            reason: e.reason,
        });
    statement?;
    clock.lap("image");
    Ok(BuildReport {
        image,
        layout: layout_path,
        packages: lock.packages.len(),
        source_date_epoch: sde,
        base_reused,
        overlays: added.iter().map(|a| (a.name.clone(), a.reused)).collect(),
        inputs: restored,
    })
}

/// Runs `kiln check` on a staged layer's tree; errors that no waiver accepts fail the build.
fn check_layer(layer: &str, root: &Path, recipe: &Recipe) -> Result<(), BuildError> {
    let mut tree = ImageTree::from_dir(root).map_err(|e| BuildError::Output {
        path: root.to_path_buf(),
        reason: e.to_string(),
    })?;
    tree.source = format!("{layer} layer");
    let mut opts = CheckOptions::new(recipe.board.arch);
    opts.waivers = recipe.all_waivers();
    match crate::check::gate(&tree, &opts, |_| true) {
        Ok(_) => Ok(()),
        Err(blocked) => Err(BuildError::Check {
            layer: layer.to_string(),
            errors: blocked.errors,
            first: blocked.first,
            report: render(&blocked.report, Format::Table),
        }),
    }
}

/// Checks the whole image as built (every layer stacked, the recipe's and board's waivers):
/// the findings, in JSON lines, that the build records beside the layout
/// ([`crate::check::report::RECORD_FILE`]) so that `kiln diff` tells new, resolved and waived
/// findings between two releases without unpacking either.
/// The findings are a function of the image (its manifest digest names every byte), the
/// board's architecture, the waivers and today's date (waivers expire), so a rebuild that
/// changed none of them takes them from the cache instead of reading the image again.
/// File contents go to an unlinked file in `spool_dir`, never all into memory.
fn check_image_as_built(
    layout: &Path,
    manifest_digest: &str,
    spool_dir: &Path,
    recipe: &Recipe,
    cache: &Cache,
) -> Result<Vec<u8>, BuildError> {
    let mut opts = CheckOptions::new(recipe.board.arch);
    opts.waivers = recipe.all_waivers();
    // Every field a waiver holds, in order, so that any edit to one (even its reason, which
    // the report prints) is a different key.
    let waivers_key = serde_json::to_string(
        &opts
            .waivers
            .iter()
            .map(|w| {
                [
                    w.path.as_str(),
                    w.check.id(),
                    w.reason.as_str(),
                    w.expires.as_str(),
                    w.origin.as_str(),
                ]
            })
            .collect::<Vec<_>>(),
    )
    .map_err(|e| BuildError::Output {
        path: layout.to_path_buf(),
        reason: e.to_string(),
    })?;
    let key = layercache::key(&[
        "image-check",
        manifest_digest,
        &recipe.board.arch.to_string(),
        &waivers_key,
        &opts.daemon_prefixes.join("\n"),
        &opts.today.to_string(),
    ]);
    if let Some(findings) = layercache::restore_check(cache, &key)? {
        return Ok(findings);
    }
    let spool = tempfile::tempfile_in(spool_dir).map_err(|e| BuildError::Output {
        path: spool_dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let tree =
        ImageTree::from_oci_layout_spooled(layout, spool).map_err(|e| BuildError::Output {
            path: layout.to_path_buf(),
            reason: e.to_string(),
        })?;
    let findings = render(&crate::check::check_image(&tree, &opts), Format::Json).into_bytes();
    layercache::store_check(cache, &key, &findings)?;
    Ok(findings)
}

/// Fetches, composes, configures and packs the base layer into `blobs`.
fn build_base_layer(
    recipe: &Recipe,
    lock: &Pinned,
    cache: &Cache,
    opts: &BuildOptions,
    sde: u64,
    blobs: &Path,
    clock: &mut StageClock,
) -> Result<(pack::Layer, Vec<crate::pipeline::sbom::SbomPackage>), BuildError> {
    let fetched = fetch::fetch_all(
        cache,
        &Transport::new(),
        &recipe.board.mirror,
        &lock.packages,
        opts.offline,
        opts.progress,
    )?;
    clock.lap("fetch");
    // The staging root lives beside the output (same filesystem) and is removed when done.
    let work = tempfile::Builder::new()
        .prefix(".kiln-rootfs-")
        .tempdir_in(&opts.out)
        .map_err(|e| BuildError::Output {
            path: opts.out.clone(),
            reason: e.to_string(),
        })?;
    let root = work.path().join("root");
    std::fs::create_dir(&root).map_err(|e| BuildError::Output {
        path: root.clone(),
        reason: e.to_string(),
    })?;
    // Dropped before `work`, so the tmpfs is gone before the directory is removed.
    let _scratch = crate::sandbox::ScratchMount::over(&root);
    let composed = compose::compose(&root, &recipe.board, &fetched)?;
    clock.lap("compose");
    if recipe.configure {
        let configured = configure::configure(
            &composed,
            &recipe.board,
            &ConfigureOptions {
                source_date_epoch: sde,
                timings: opts.timings,
                debconf: recipe.debconf.clone(),
                jobs: opts.jobs,
                emulate_all: opts.emulate_all,
            },
        )?;
        for unit in &configured.identity.units {
            println!("first boot: {unit} makes this device's own keys (none are in the image)");
        }
        for note in &configured.identity.notes {
            eprintln!("kiln: warning: {note}");
        }
        for c in &configured.bytecode {
            println!(
                "python{}: {} modules byte-compiled, the same in every build",
                c.version, c.modules
            );
            for failed in &c.failed {
                eprintln!(
                    "kiln: note: python{} cannot compile {failed}; it has no pyc",
                    c.version
                );
            }
        }
        clock.lap("configure");
    }
    check_layer("base", &composed.root, recipe)?;
    clock.lap("check");
    let layer = pack::pack_layer(&composed.root, blobs, sde, opts.compression)?;
    let debs = crate::pipeline::sbom::debian_entries(&composed, &lock.packages);
    clock.lap("pack");
    Ok((layer, debs))
}
