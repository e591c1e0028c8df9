//! The build pipeline, one module per stage, each taking the previous stage's typed output:
//! [`lock`] (a [`lock::Pinned`] lock) -> [`fetch`] ([`fetch::Fetched`] .debs in the cache) ->
//! [`compose`] (the unpacked root and its dpkg database) -> [`configure`] (maintainer scripts
//! under qemu) -> [`overlay`] (one layer per daemon) -> the check gate -> packed layers.
//! [`build`] wires them together; [`layercache`] reuses finished layers across builds and
//! [`sbom`] describes what went in.
//!
//! Nothing outside this folder but the command-line adapters and the exit table uses it: the
//! checks, signing, export and flash work on an image, not on how it was built.

pub mod build;
pub mod compose;
pub mod configure;
pub mod fetch;
pub mod inputs;
pub mod layercache;
pub mod lock;
pub mod overlay;
pub mod provenance;
pub mod sbom;
pub mod sources;
