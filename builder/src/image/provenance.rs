//! The names a build's provenance is known by, shared by the build that writes it
//! (`pipeline::provenance`) and the signing and verification that read it
//! (`signing::attest`): an in-toto Statement v1 with a SLSA Provenance v1 predicate, in
//! `OUT/provenance.json`.

/// in-toto's Statement type (<https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md>).
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA Provenance v1's predicate type (<https://slsa.dev/spec/v1.0/provenance>).
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The statement's file name in a build's output directory, beside the layout.
pub const FILE_NAME: &str = "provenance.json";
