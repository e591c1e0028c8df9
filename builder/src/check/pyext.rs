//! The `pyext` check: a CPython extension module's file name carries the interpreter it was
//! built for and the platform (PEP 3149; `EXT_SUFFIX`), e.g. `_ssl.cpython-35m-arm-linux-gnueabihf.so`
//! or `_foo.cpython-311-aarch64-linux-gnu.so`; the stable ABI uses `.abi3.so`. Python imports
//! a module only when the tag is its own, so a tag for another version or platform is a module
//! that will not load on the robot.

use super::findings::{Check, Finding};
use crate::arch::DebianArch;
use crate::image::ImageTree;

/// The Python 3 versions of the image ("3.11"): each /usr/lib/python3.X with its os.py, and the
/// `version` of every venv's pyvenv.cfg is matched separately.
pub fn image_pythons(image: &ImageTree) -> Vec<String> {
    image
        .children("/usr/lib")
        .into_iter()
        .filter(|n| n.starts_with("python3.") && n[8..].chars().all(|c| c.is_ascii_digit()))
        .filter(|n| image.lookup(&format!("/usr/lib/{n}/os.py")).is_some())
        .map(|n| n.trim_start_matches("python").to_string())
        .collect()
}

/// A parsed `cpython-XY[m]-TRIPLET` tag.
#[derive(Debug, PartialEq, Eq)]
pub struct ExtTag {
    /// "3.11".
    pub version: String,
    /// The multiarch triplet, when the tag has one.
    pub triplet: Option<String>,
}

/// Reads the tag of an extension module's file name, None when it has none (plain `.so`,
/// `.abi3.so`).
pub fn ext_tag(name: &str) -> Option<ExtTag> {
    let stem = name.strip_suffix(".so")?;
    let (_, tag) = stem.rsplit_once(".cpython-")?;
    let (ver, triplet) = match tag.split_once('-') {
        Some((v, t)) => (v, Some(t.to_string())),
        None => (tag, None),
    };
    let digits: String = ver.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.len() < 2 {
        return None;
    }
    Some(ExtTag {
        version: format!("{}.{}", &digits[..1], &digits[1..]),
        triplet,
    })
}

/// Checks one extension module at `path`.
pub fn check_pyext(
    path: &str,
    arch: DebianArch,
    pythons: &[String],
    env_python: Option<&str>,
    out: &mut Vec<Finding>,
) {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some(tag) = ext_tag(name) else { return };
    if let Some(t) = &tag.triplet {
        if t != arch.multiarch_triplet() {
            out.push(Finding::new(
                Check::Pyext,
                path,
                format!(
                    "extension built for {t}; the board is {}",
                    arch.multiarch_triplet()
                ),
            ));
        }
    }
    let wanted: Vec<String> = match env_python {
        Some(v) => vec![v.to_string()],
        None => pythons.to_vec(),
    };
    if !wanted.contains(&tag.version) {
        out.push(Finding::new(
            Check::Pyext,
            path,
            format!(
                "extension built for Python {}; the {} has {}",
                tag.version,
                if env_python.is_some() {
                    "environment"
                } else {
                    "image"
                },
                if wanted.is_empty() {
                    "no Python 3".to_string()
                } else {
                    format!("Python {}", wanted.join(", "))
                }
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(
            ext_tag("_ssl.cpython-35m-arm-linux-gnueabihf.so"),
            Some(ExtTag {
                version: "3.5".into(),
                triplet: Some("arm-linux-gnueabihf".into())
            })
        );
        assert_eq!(
            ext_tag("x.cpython-311-aarch64-linux-gnu.so"),
            Some(ExtTag {
                version: "3.11".into(),
                triplet: Some("aarch64-linux-gnu".into())
            })
        );
        assert_eq!(ext_tag("x.abi3.so"), None);
        assert_eq!(ext_tag("libfoo.so"), None);
    }
}
