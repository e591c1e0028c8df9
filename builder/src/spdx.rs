//! SPDX 2.3 naming shared by the SBOM's writer ([`crate::pipeline::sbom`]) and its readers
//! (`kiln diff`, `kiln sources`): the ids kiln gives packages, so a reader finds an element by
//! name without a second convention.

/// An SPDX idstring of `s`: letters, digits, `.` and `-` are kept, anything else becomes `-`
/// (SPDX 2.3, clause 7.2: `SPDXRef-[idstring]`).
pub fn idstring(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The SPDX id of a package element: `SPDXRef-KIND-NAME-ARCH` (KIND `deb` or `pypi`; a
/// wheel's ARCH is `BOARDARCH:ENV`, so the env is in its id).
pub fn element_id(kind: &str, name: &str, arch: &str) -> String {
    format!("SPDXRef-{kind}-{}-{}", idstring(name), idstring(arch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_only_what_spdx_allows() {
        assert_eq!(
            element_id("pypi", "zope_interface", "arm64:tele"),
            "SPDXRef-pypi-zope-interface-arm64-tele"
        );
        assert_eq!(idstring("libstdc++6"), "libstdc--6");
    }
}
