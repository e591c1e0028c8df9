//! Debian package versions and their ordering, as `dpkg --compare-versions` defines it.
//!
//! Hand-written on purpose: the algorithm is forty lines of dpkg's `lib/dpkg/version.c`
//! (`verrevcmp`), while the `debversion` crate brings regex, bignum and chrono along for it.
//! A test compares this module with the real `dpkg` on a generated table of pairs.

use std::cmp::Ordering;
use std::fmt;

/// A parsed `[epoch:]upstream[-revision]` version. Equality is dpkg's (`1.0` equals `1.00` and
/// `0:1.0`); the text is kept as written, so a version is printed back unchanged.
#[derive(Debug, Clone)]
pub struct Version {
    /// The epoch; 0 when absent.
    pub epoch: u32,
    /// The upstream part.
    pub upstream: String,
    /// The Debian revision; empty when absent (dpkg compares it as "").
    pub revision: String,
    /// The version as written.
    text: String,
}

/// Why a version string is not a Debian version.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid version '{text}': {reason}")]
pub struct VersionError {
    /// The offending text.
    pub text: String,
    /// What dpkg would complain about.
    pub reason: &'static str,
}

impl Version {
    /// Parses a version with dpkg's rules (`parseversion`): the epoch is digits before the first
    /// colon, the revision follows the last hyphen, the upstream part starts with a digit.
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        let err = |reason| VersionError {
            text: text.to_string(),
            reason,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(err("empty version"));
        }
        if trimmed.chars().any(char::is_whitespace) {
            return Err(err("contains white space"));
        }
        let (epoch, rest) = match trimmed.split_once(':') {
            Some((e, rest)) => {
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("epoch is not a number"));
                }
                let epoch = e.parse::<u32>().map_err(|_| err("epoch is too big"))?;
                (epoch, rest)
            }
            None => (0, trimmed),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(err("empty upstream version"));
        }
        if !upstream.as_bytes()[0].is_ascii_digit() {
            return Err(err("upstream version does not start with a digit"));
        }
        if !upstream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+-~:".contains(&b))
        {
            return Err(err("invalid character in upstream version"));
        }
        if rest.ends_with('-')
            || !revision
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".+~".contains(&b))
        {
            return Err(err("invalid character in revision"));
        }
        Ok(Version {
            epoch,
            upstream: upstream.to_string(),
            revision: revision.to_string(),
            text: trimmed.to_string(),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(&self.upstream, &other.upstream))
            .then_with(|| verrevcmp(&self.revision, &other.revision))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// dpkg's character weight: `~` sorts before everything, even the end of the string;
/// letters sort before non-letters.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

/// `verrevcmp` from dpkg: alternate non-digit runs (by `order`) and digit runs (numerically).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0;
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied());
            let bc = order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first_diff == 0 {
                first_diff = a[i] as i32 - b[j] as i32;
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

/// A version relation operator of a dependency field (Debian Policy 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// `<<`
    Less,
    /// `<=` (and the obsolete `<`)
    LessEq,
    /// `=`
    Eq,
    /// `>=` (and the obsolete `>`)
    GreaterEq,
    /// `>>`
    Greater,
}

impl Relation {
    /// Parses an operator; the obsolete `<` and `>` mean `<=` and `>=` (Policy 7.1).
    pub fn parse(op: &str) -> Option<Relation> {
        Some(match op {
            "<<" => Relation::Less,
            "<=" | "<" => Relation::LessEq,
            "=" => Relation::Eq,
            ">=" | ">" => Relation::GreaterEq,
            ">>" => Relation::Greater,
            _ => return None,
        })
    }

    /// Whether `candidate OP wanted` holds.
    pub fn holds(self, candidate: &Version, wanted: &Version) -> bool {
        let ord = candidate.cmp(wanted);
        match self {
            Relation::Less => ord == Ordering::Less,
            Relation::LessEq => ord != Ordering::Greater,
            Relation::Eq => ord == Ordering::Equal,
            Relation::GreaterEq => ord != Ordering::Less,
            Relation::Greater => ord == Ordering::Greater,
        }
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Relation::Less => "<<",
            Relation::LessEq => "<=",
            Relation::Eq => "=",
            Relation::GreaterEq => ">=",
            Relation::Greater => ">>",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(a: &str, b: &str) -> Ordering {
        Version::parse(a).unwrap().cmp(&Version::parse(b).unwrap())
    }

    #[test]
    fn tilde_sorts_before_everything() {
        assert_eq!(cmp("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(cmp("1.0~~", "1.0~"), Ordering::Less);
        assert_eq!(cmp("1.0~rc1-1", "1.0-1"), Ordering::Less);
    }

    #[test]
    fn epochs_dominate() {
        assert_eq!(cmp("1:0.1", "9.9"), Ordering::Greater);
        assert_eq!(cmp("0:1.0", "1.0"), Ordering::Equal);
    }

    #[test]
    fn missing_revision_equals_zero_revision() {
        assert_eq!(cmp("1.0", "1.0-0"), Ordering::Equal);
        assert_eq!(cmp("1.0-1", "1.0"), Ordering::Greater);
    }

    #[test]
    fn letters_before_punctuation_and_numbers_numerically() {
        assert_eq!(cmp("1.0a", "1.0+"), Ordering::Less);
        assert_eq!(cmp("1.10", "1.9"), Ordering::Greater);
        assert_eq!(cmp("1.001", "1.1"), Ordering::Equal);
        assert_eq!(cmp("2.36-9+deb12u4", "2.36-9+deb12u10"), Ordering::Less);
    }

    #[test]
    fn invalid_versions_are_refused() {
        assert!(Version::parse("").is_err());
        assert!(Version::parse("a1.0").is_err());
        assert!(Version::parse("x:1.0").is_err());
        assert!(Version::parse("1.0 1").is_err());
        assert!(Version::parse("1.0-").is_err());
        assert!(Version::parse("1.0-a_b").is_err());
    }

    #[test]
    fn display_roundtrips() {
        for v in ["1:2.3-4", "2.3", "0.1~rc1+b1-3.1", "0:3R6:3", "0:1.0"] {
            assert_eq!(Version::parse(v).unwrap().to_string(), v);
        }
        assert_eq!(
            Version::parse("0:1.0").unwrap(),
            Version::parse("1.0").unwrap()
        );
    }
}
