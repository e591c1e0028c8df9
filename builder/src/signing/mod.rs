//! Trust in what kiln ships: release keys ([`keys`], ECDSA P-256) and their X.509
//! certificates ([`certs`]), the cosign-compatible image signature and SBOM referrer
//! ([`sign`]), the signed build provenance ([`attest`]), TUF release metadata ([`tuf`]) and the repository `kiln release` publishes
//! ([`release`]), and the offline verification an OTA server runs ([`verify`]).

pub mod attest;
pub mod certs;
pub mod keys;
pub mod release;
pub mod sign;
pub mod tuf;
pub mod verify;
