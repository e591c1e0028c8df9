//! The `kiln` command line: the contract CI scripts and people rely on (DESIGN.md). The
//! definitions are in [`cli`], each command's adapter beside them; exit codes come from one
//! table ([`kiln::exit`]): 0 success, 1 the input is wrong, 2 kiln could not run.

mod cli;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Build { .. }) {
        // Before any thread exists: the build's tmpfs then lives and dies with this process.
        kiln::sandbox::private_mount_namespace();
    }
    match cli.command {
        Command::Lock { dir } => cli::build::run_lock(&dir),
        Command::Build {
            dir,
            locked,
            offline,
            out,
            compression,
            cache,
            timings,
            jobs,
            emulate_all,
            cache_registry,
            inputs,
            builder_id,
            connect,
        } => cli::build::run_build(cli::build::BuildRequest {
            dir,
            locked,
            offline,
            out,
            compression: compression.into(),
            cache,
            timings,
            jobs,
            emulate_all,
            cache_registry,
            inputs,
            builder_id,
            connect: connect.options(),
        }),
        Command::Check {
            path,
            board,
            format,
            run_envs,
            cache,
        } => cli::image::run_check(
            &path,
            &board,
            format.into(),
            run_envs.then(|| cache.unwrap_or_else(kiln::pipeline::fetch::Cache::default_dir)),
        ),
        Command::Keygen { out } => cli::signing::run_keygen(&out),
        Command::Sign {
            out,
            key,
            sign_command,
            public_key,
        } => cli::signing::run_sign(
            &out,
            key.as_deref(),
            sign_command.as_deref(),
            public_key.as_deref(),
        ),
        Command::Verify {
            out,
            root,
            target,
            state,
            key,
            compatible,
            installed_version,
            format,
            board,
            provenance,
            builder_id,
            connect,
        } => cli::signing::run_verify(cli::signing::VerifyRequest {
            out: &out,
            root: root.as_deref(),
            state: state.as_deref(),
            target: target.as_deref(),
            keys: &key,
            compatible,
            installed_version,
            format,
            board: board.as_deref(),
            provenance,
            builder_ids: builder_id,
            connect: connect.options(),
        }),
        Command::Export {
            out,
            format,
            output,
            board,
            key,
            signing_key,
            cert,
        } => cli::image::run_export(
            &out,
            format.into(),
            &output,
            board.as_deref(),
            &key,
            signing_key.as_deref().zip(cert.as_deref()),
        ),
        Command::Cert { action } => cli::signing::run_cert(action),
        Command::Flash {
            image,
            device,
            key,
            board,
            force,
            cache,
        } => cli::image::run_flash(&image, &device, &key, &board, force, cache),
        Command::Release {
            out,
            key,
            keys,
            to,
            min_version,
            expires_days,
        } => cli::trust::run_release(cli::trust::ReleaseRequest {
            out: &out,
            key: key.as_deref(),
            keys: &keys,
            to: &to,
            min_version,
            expires_days,
        }),
        Command::Trust { action } => cli::trust::run_trust(action),
        Command::Diff {
            old,
            new,
            format,
            output,
        } => cli::review::run_diff(&old, &new, format, output.as_deref()),
        Command::Sources {
            out,
            output,
            dir,
            only,
            offline,
            allow_unavailable,
            cache,
            board,
            dsc_keyrings,
        } => cli::review::run_sources(cli::review::SourcesRequest {
            out: &out,
            output: &output,
            dir: &dir,
            board: board.as_deref(),
            copyleft_only: only.is_some(),
            offline,
            allow_unavailable,
            cache,
            dsc_keyrings,
        }),
        Command::Push {
            out,
            reference,
            mount_from,
            connect,
        } => cli::registry::run_push(&out, &reference, mount_from.as_deref(), &connect.options()),
        Command::Vendor {
            reference,
            dir,
            cache,
            connect,
        } => cli::registry::run_vendor(&reference, &dir, cache, &connect.options()),
        Command::Pull {
            reference,
            out,
            board,
            connect,
        } => cli::registry::run_pull(&reference, &out, board.as_deref(), &connect.options()),
        Command::Completions { shell } => cli::docs::run_completions(shell),
        Command::Manpages { output } => cli::docs::run_manpages(&output),
    }
}
