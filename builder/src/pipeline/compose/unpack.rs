//! Names inside a package's data.tar: what a member may be called, and the error that names a
//! refused member. The writing itself goes through [`crate::inroot`], which resolves every
//! path inside the staging root in the kernel, so nothing a package says can make kiln write
//! outside it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// What is wrong with one member of a package.
#[derive(Debug, thiserror::Error)]
#[error("{package}: member '{member}': {reason}")]
pub struct UnpackError {
    /// Package name.
    pub package: String,
    /// The tar member as written in the package.
    pub member: String,
    /// Why it was refused or failed.
    pub reason: String,
}

/// Splits a tar member name into normal components, refusing absolute paths and `..`.
pub fn member_components(name: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if name.first() == Some(&b'/') {
        return Err("absolute path".into());
    }
    let mut out = Vec::new();
    for c in Path::new(OsStr::from_bytes(name)).components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => out.push(n.as_bytes().to_vec()),
            Component::ParentDir => return Err("path contains '..'".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    Ok(out)
}

pub use crate::inroot::Owner;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(
            member_components(b"./usr/bin/x").unwrap(),
            vec![b"usr".to_vec(), b"bin".to_vec(), b"x".to_vec()]
        );
        assert!(member_components(b"./").unwrap().is_empty());
        assert!(member_components(b"/etc/passwd").is_err());
        assert!(member_components(b"./usr/../../etc").is_err());
    }
}
