//! OTA release metadata in The Update Framework's format (spec 1.0.31,
//! <https://theupdateframework.github.io/specification/latest/>), as Uptane and Bottlerocket's
//! tough use it to secure fleets: an offline root that says which keys sign which role and how
//! many must agree (thresholds), targets (the image archives with length, SHA-256 and kiln's
//! `custom` fields, or per-board delegations to each board team's keys), snapshot and
//! timestamp (online, short-lived: a frozen mirror is told from a quiet one).
//!
//! [`metadata`] holds the shared pieces (canonical JSON, key ids, signatures and threshold
//! checks), [`repository`] writes (init, release, delegate, refresh the timestamp, rotate the
//! root) and [`client`] verifies as the specification's client workflow says (5.3 to 5.6):
//! walk the root chain from the pinned root, then timestamp, snapshot, targets and the
//! delegated roles, refusing rollbacks against the state it trusted before.
//! python-tuf's `ngclient` reads what this writes (ci/verify-tuf).
//!
//! Written here rather than with a TUF crate: `tough` (the maintained Rust one) needs tokio,
//! ring and an async transport for what are a handful of small JSON documents, which does not
//! fit a 2-core CI build; its canonical JSON crate, `olpc-cjson`, is used for the bytes that
//! are signed. Keys are ECDSA P-256 (`keytype` "ecdsa", scheme "ecdsa-sha2-nistp256", PEM
//! public key), signatures hex-encoded ASN.1 DER, as securesystemslib makes them.

pub mod client;
pub mod metadata;
pub mod repository;
#[cfg(test)]
mod tests;

pub use client::{
    update, verify_repository, DirSource, Found, MemorySource, Trusted, TrustedState,
};
pub use metadata::{
    canonical, key_id, key_object, ReleaseInfo, Role, RoleSigner, TufError, SPEC_VERSION,
};
pub use repository::{
    add_release, delegate, init, refresh_timestamp, rotate_root, Expiry, NewTarget, Recorded,
    ReleaseSigners, RoleChange, RoleKeys,
};
