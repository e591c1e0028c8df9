//! kiln's end-to-end tests, one module per part of the pipeline, in one test binary: kiln's
//! library is linked and the shared fixture (`fixture`: generated archives, signed Release
//! files, real Debian packages fetched once) compiled once, not once per file.
//!
//! Each module drives the real `kiln` binary; run one part with `cargo test --test it PART::`.

mod fixture;

mod check;
mod cli;
mod configure;
mod diff;
mod export;
mod foundation;
mod overlay;
mod provenance;
mod registry;
mod sign;
mod sources;
mod trust;
