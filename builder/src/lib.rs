//! kiln fires signed, reproducible Debian firmware images for ARM robots.
//!
//! One module per pipeline stage, data flowing one way (see DESIGN.md):
//! [`spec`] (recipe) -> [`lock`] (resolve against the signed [`archive`]) -> [`fetch`] (cache)
//! -> [`compose`] (unpack + dpkg database) -> [`configure`] (maintainer scripts under qemu, in a
//! [`sandbox`]) -> [`pack`] (layers) + [`oci`] (image layout).
//! [`build`] runs them in order; the rest are the parts they share.

pub mod arch;
pub mod archive;
pub mod build;
pub mod certs;
pub mod check;
pub mod compose;
pub mod configure;
pub mod control;
pub mod deb;
pub mod decompress;
pub mod digest;
pub mod export;
pub mod fetch;
pub mod flash;
pub mod image;
pub mod inroot;
pub mod keys;
pub mod layercache;
pub mod lock;
pub mod oci;
pub mod output;
pub mod overlay;
pub mod pack;
pub mod release;
pub mod resolve;
pub mod sandbox;
pub mod sbom;
pub mod sign;
pub mod spec;
pub mod timefmt;
pub mod transport;
pub mod trust;
pub mod tuf;
pub mod verify;
pub mod version;
