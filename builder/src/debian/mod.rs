//! Debian's own formats and rules, as kiln reads them: deb822 paragraphs and relations
//! ([`control`]), version order ([`version`]), `.deb` files ([`deb`]), OpenPGP keyrings and
//! signatures ([`trust`]), the signed archive index ([`archive`]: InRelease, Packages), source
//! packages ([`sources`]: Sources, .dsc) and dependency resolution ([`resolve`]). Nothing here knows about kiln's pipeline beyond the
//! board's suite and mirror.

pub mod archive;
pub mod control;
pub mod deb;
pub mod resolve;
pub mod sources;
pub mod trust;
pub mod version;
