//! kiln fires signed, reproducible Debian firmware images for ARM robots.
//!
//! One module per pipeline stage, data flowing one way (the README's "Architecture" names every
//! module and the direction `ci/module-cycles` enforces):
//! [`recipe`] -> [`lock`] (resolve against the signed [`debian::archive`]) -> [`fetch`] (cache)
//! -> [`compose`] (unpack + dpkg database) -> [`configure`] (maintainer scripts under qemu, in a
//! [`sandbox`]) -> [`pack`] (layers) + [`oci`] (image layout).
//! [`build`] runs them in order with [`overlay`] and the [`check`] gate; [`signing`] (sign, release,
//! verify), [`export`] and [`flash`] work on its output; the rest are the parts they share.

pub mod arch;
pub mod build;
pub mod check;
pub mod compose;
pub mod configure;
pub mod debian;
pub mod decompress;
pub mod digest;
pub mod exit;
pub mod export;
pub mod fetch;
pub mod flash;
pub mod image;
pub mod inroot;
pub mod layercache;
pub mod lock;
pub mod oci;
pub mod output;
pub mod overlay;
pub mod pack;
pub mod pyenv;
pub mod recipe;
pub mod sandbox;
pub mod sbom;
pub mod signing;
pub mod timefmt;
pub mod transport;
