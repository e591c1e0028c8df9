//! `kiln diff` and `kiln sources`, the release reviewer's and the compliance officer's
//! commands: thin adapters over [`kiln::diff`] and [`kiln::pipeline::sources`].

use super::DiffFormat;
use crate::cli::report::{error_exit, failed};
use kiln::exit::Exit;
use std::path::Path;
use std::process::ExitCode;

/// `kiln diff OLD NEW`: exit 0 with the report, 1 when a side is no readable image, 2 when the
/// page cannot be written.
pub fn run_diff(old: &Path, new: &Path, format: DiffFormat, output: Option<&Path>) -> ExitCode {
    let sides = kiln::diff::read_side(old).and_then(|o| Ok((o, kiln::diff::read_side(new)?)));
    let (old, new) = match sides {
        Ok(s) => s,
        Err(e) => return failed(&e),
    };
    let diff = match kiln::diff::compare(&old, &new) {
        Ok(d) => d,
        Err(e) => return failed(&e),
    };
    match format {
        DiffFormat::Table => print!("{}", kiln::diff::render::table(&diff)),
        DiffFormat::Json => println!("{}", kiln::diff::render::json(&diff)),
        DiffFormat::Html => {
            let Some(path) = output else {
                return error_exit("--format html needs -o FILE", Exit::CouldNotRun);
            };
            let page = kiln::diff::html::page(&diff);
            if let Err(e) = kiln::output::replace_file(path, page.as_bytes()) {
                return error_exit(format!("{}: {e}", path.display()), Exit::CouldNotRun);
            }
            println!(
                "wrote {}: {}",
                path.display(),
                kiln::diff::render::summary_line(&diff)
            );
        }
    }
    ExitCode::SUCCESS
}

/// What `kiln sources` was asked for.
pub struct SourcesRequest<'a> {
    /// The build's output.
    pub out: &'a Path,
    /// The bundle: a directory or FILE.tar.
    pub output: &'a Path,
    /// The recipe directory.
    pub dir: &'a Path,
    /// `--board`: which board of a recipe listing several.
    pub board: Option<&'a str>,
    /// `--only copyleft`.
    pub copyleft_only: bool,
    /// `--offline`.
    pub offline: bool,
    /// `--allow-unavailable`.
    pub allow_unavailable: bool,
    /// `--cache`.
    pub cache: Option<std::path::PathBuf>,
    /// `--dsc-keyring`: the uploaders' keyrings for the `.dsc` signatures.
    pub dsc_keyrings: Vec<std::path::PathBuf>,
}

/// `kiln sources OUT -o DEST`: exit 0 with a summary, non-zero with one line naming what and
/// where.
pub fn run_sources(r: SourcesRequest) -> ExitCode {
    use kiln::pipeline::sources::{self, bundle, DscSignature, Policy, SourcesOptions};
    use std::io::IsTerminal;
    let cache_dir = r
        .cache
        .unwrap_or_else(kiln::pipeline::fetch::Cache::default_dir);
    let opts = SourcesOptions {
        policy: if r.copyleft_only {
            Policy::Copyleft
        } else {
            Policy::All
        },
        offline: r.offline,
        progress: std::io::stderr().is_terminal(),
        allow_unavailable: r.allow_unavailable,
        dsc_keyrings: r.dsc_keyrings,
    };
    let run = || -> Result<_, sources::SourcesError> {
        let cache = kiln::pipeline::fetch::Cache::open(&cache_dir)?;
        let gathered = sources::gather(r.dir, r.out, r.board, &cache, &opts)?;
        let written = bundle::write(&gathered, r.output)?;
        Ok((gathered, written))
    };
    let (g, written) = match run() {
        Ok(x) => x,
        Err(e) => return failed(&e),
    };
    let debian_bytes: u64 = g
        .debian
        .iter()
        .flat_map(|s| s.files.iter().map(|(f, _)| f.size))
        .sum();
    let verified = g
        .debian
        .iter()
        .filter(|s| matches!(s.dsc_signature, DscSignature::Verified { .. }))
        .count();
    let signed = g
        .debian
        .iter()
        .filter(|s| !matches!(s.dsc_signature, DscSignature::Unsigned))
        .count();
    for u in &g.unavailable {
        eprintln!(
            "kiln: warning: {} {} left out: {}",
            u.name, u.version, u.reason
        );
    }
    for p in g.python.iter().filter(|p| p.sdist.is_none()) {
        eprintln!(
            "kiln: note: {} {} (env {}): no sdist in the bundle: {}",
            p.name,
            p.version,
            p.env,
            p.missing.as_deref().unwrap_or("")
        );
    }
    let mut largest: Vec<_> = g
        .debian
        .iter()
        .map(|s| (s.files.iter().map(|(f, _)| f.size).sum::<u64>(), s))
        .collect();
    largest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.name.cmp(&b.1.name)));
    for (size, s) in largest.iter().take(5) {
        println!(
            "  {:>10}  {} {}",
            kiln::diff::render::human_bytes(*size),
            s.name,
            s.version
        );
    }
    println!(
        "sources of {}: {} Debian source packages ({}, each file verified through the signed Release and Sources; {} of {} signed .dsc verified by their own signature){}, {} of {} Python distributions with an sdist, {} overlay files -> {} ({} files, {})",
        g.image,
        g.debian.len(),
        kiln::diff::render::human_bytes(debian_bytes),
        verified,
        signed,
        [
            (g.excluded.len(), "left out by --only copyleft"),
            (g.unavailable.len(), "unavailable (listed in the index)")
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, why)| format!(", {n} {why}"))
        .collect::<String>(),
        g.python.iter().filter(|p| p.sdist.is_some()).count(),
        g.python.len(),
        g.overlays.len(),
        r.output.display(),
        written.files,
        kiln::diff::render::human_bytes(written.bytes)
    );
    ExitCode::SUCCESS
}
