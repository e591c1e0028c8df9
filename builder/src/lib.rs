//! kiln fires signed, reproducible Debian firmware images for ARM robots.
//!
//! The build is the [`pipeline`], one module per stage, data flowing one way (the README's
//! "Architecture" names every folder and the direction `ci/module-cycles` enforces):
//! [`recipe`] -> lock (resolve against the signed [`debian::archive`]) -> fetch (cache) ->
//! compose (unpack + dpkg database) -> configure (maintainer scripts under qemu, in a
//! [`sandbox`]) -> overlay (one layer per daemon) -> the [`check`] gate -> layers and the OCI
//! layout ([`image::pack`], [`image::oci`]). [`signing`] (sign, release, verify), [`export`] and
//! [`flash`] work on its output; the rest are the parts they share.

pub mod arch;
pub mod check;
pub mod debian;
pub mod decompress;
pub mod diff;
pub mod digest;
pub mod exit;
pub mod export;
pub mod flash;
pub mod image;
pub mod inroot;
pub mod output;
pub mod pipeline;
pub mod pyenv;
pub mod recipe;
pub mod registry;
pub mod sandbox;
pub mod signing;
pub mod spdx;
pub mod timefmt;
pub mod transport;
