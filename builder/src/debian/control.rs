//! Debian control-file syntax (deb822): the paragraphs of `Packages`, `Release`, `DEBIAN/control`
//! and `var/lib/dpkg/status`, and the dependency fields inside them.
//!
//! Hand-written: the format is a dozen lines of rules (Debian Policy 5.1), and the crates for it
//! either pull an async stack (`debian-packaging`, which does not build here) or a lossless
//! syntax tree we do not need. Field order and continuation lines are kept as they were, so a
//! paragraph can be written back into the dpkg database unchanged.

use crate::debian::version::{Relation, Version, VersionError};
use std::fmt;

/// One paragraph: fields in their original order, values as written (continuation lines keep
/// their leading space).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Paragraph {
    /// `(name, value)` pairs in file order.
    pub fields: Vec<(String, String)>,
    /// 1-based line number where the paragraph starts in its file.
    pub line: usize,
}

/// A syntax error in a control file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct ControlError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl Paragraph {
    /// The value of a field without surrounding white space, matched case-insensitively as
    /// Policy 5.1 requires.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_raw(name).map(str::trim)
    }

    /// The value exactly as written after `Field:` and its leading space.
    pub fn get_raw(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets a field, replacing an existing one in place or appending it.
    pub fn set(&mut self, name: &str, value: &str) {
        match self
            .fields
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value.to_string(),
            None => self.fields.push((name.to_string(), value.to_string())),
        }
    }

    /// Removes a field if present.
    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
}

impl fmt::Display for Paragraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.fields {
            if v.starts_with('\n') {
                writeln!(f, "{k}:{v}")?;
            } else {
                writeln!(f, "{k}: {v}")?;
            }
        }
        Ok(())
    }
}

/// Whether `name` is a valid Debian package name (Debian Policy 5.6.1: lower-case letters,
/// digits, `+`, `-` and `.`, at least two characters, starting with a letter or digit). Package
/// names become file names in the dpkg database, so anything else is refused.
pub fn valid_package_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+-.".contains(c))
}

/// Whether `arch` is a valid Debian architecture name (lower-case letters, digits and `-`, as
/// dpkg-architecture's tables spell them; `all` included).
pub fn valid_arch_name(arch: &str) -> bool {
    !arch.is_empty()
        && arch
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Parses every paragraph of a control file. Paragraphs are separated by blank lines; lines
/// starting with `#` are comments only where Policy allows them (we accept them everywhere
/// outside a value, as dpkg does for `debian/control`).
pub fn parse(text: &str) -> Result<Vec<Paragraph>, ControlError> {
    let mut out = Vec::new();
    let mut current = Paragraph::default();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            if !current.fields.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            match current.fields.last_mut() {
                Some((_, v)) => {
                    v.push('\n');
                    v.push_str(line);
                }
                None => {
                    return Err(ControlError {
                        line: line_no,
                        reason: "continuation line without a field".into(),
                    })
                }
            }
            continue;
        }
        if line.starts_with('#') && current.fields.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ControlError {
                line: line_no,
                reason: format!("expected 'Field: value', found '{}'", truncate(line)),
            });
        };
        if name.is_empty() || name.contains(char::is_whitespace) || name.starts_with('-') {
            return Err(ControlError {
                line: line_no,
                reason: format!("invalid field name '{}'", truncate(name)),
            });
        }
        if current.fields.is_empty() {
            current.line = line_no;
        }
        if current.get(name).is_some() {
            return Err(ControlError {
                line: line_no,
                reason: format!("duplicate field '{name}'"),
            });
        }
        current
            .fields
            // Only leading space is syntax; dpkg keeps trailing space in values (status files
            // must stay byte-identical to what dpkg writes).
            .push((name.to_string(), value.trim_start().to_string()));
    }
    if !current.fields.is_empty() {
        out.push(current);
    }
    Ok(out)
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

/// One alternative of a dependency: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// Package (or virtual package) name.
    pub name: String,
    /// Architecture qualifier such as `any` or `native`, if given.
    pub arch_qualifier: Option<String>,
    /// Version constraint, if given.
    pub constraint: Option<(Relation, Version)>,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(q) = &self.arch_qualifier {
            write!(f, ":{q}")?;
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({op} {v})")?;
        }
        Ok(())
    }
}

/// A dependency field is a list of these groups, each satisfied by any one alternative.
pub type AlternativeGroup = Vec<Dependency>;

/// Why a dependency field does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DependencyError {
    /// The relation is malformed.
    #[error("malformed relation '{0}'")]
    Syntax(String),
    /// The version inside a relation is not a Debian version.
    #[error(transparent)]
    Version(#[from] VersionError),
}

/// Parses a binary package relationship field (Policy 7.1), such as `Depends` or `Provides`.
pub fn parse_relations(field: &str) -> Result<Vec<AlternativeGroup>, DependencyError> {
    let mut groups = Vec::new();
    for group in field.split(',') {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for alt in group.split('|') {
            alts.push(parse_one(alt.trim())?);
        }
        groups.push(alts);
    }
    Ok(groups)
}

fn parse_one(text: &str) -> Result<Dependency, DependencyError> {
    let syntax = || DependencyError::Syntax(text.to_string());
    // Architecture restrictions `[...]` and build profiles `<...>` only occur in source
    // packages; a binary index carrying them is malformed for our purposes.
    let (head, constraint) = match text.find('(') {
        Some(open) => {
            let close = text.rfind(')').ok_or_else(syntax)?;
            if close < open || !text[close + 1..].trim().is_empty() {
                return Err(syntax());
            }
            let inner = text[open + 1..close].trim();
            let split = inner
                .find(|c: char| !"<>=".contains(c))
                .ok_or_else(syntax)?;
            let op = Relation::parse(inner[..split].trim()).ok_or_else(syntax)?;
            let version = Version::parse(inner[split..].trim())?;
            (text[..open].trim(), Some((op, version)))
        }
        None => (text.trim(), None),
    };
    let (name, arch_qualifier) = match head.split_once(':') {
        Some((n, q)) => (n, Some(q.to_string())),
        None => (head, None),
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
    {
        return Err(syntax());
    }
    Ok(Dependency {
        name: name.to_string(),
        arch_qualifier,
        constraint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_and_continuations() {
        let text =
            "Package: a\nDescription: short\n long line\n .\n more\n\n\nPackage: b\nVersion: 1\n";
        let ps = parse(text).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(
            ps[0].get("description"),
            Some("short\n long line\n .\n more")
        );
        assert_eq!(ps[1].line, 8);
        assert_eq!(
            ps[0].to_string(),
            "Package: a\nDescription: short\n long line\n .\n more\n"
        );
    }

    #[test]
    fn multiline_field_with_empty_first_line_roundtrips() {
        let text = "Package: a\nConffiles:\n /etc/x 0123\n";
        let ps = parse(text).unwrap();
        assert_eq!(ps[0].get_raw("Conffiles"), Some("\n /etc/x 0123"));
        assert_eq!(ps[0].to_string(), text);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("Package: a\n continued\nbroken line\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(parse(" lone\n").unwrap_err().line, 1);
        assert!(parse("A: 1\na: 2\n")
            .unwrap_err()
            .reason
            .contains("duplicate"));
    }

    #[test]
    fn relations() {
        let groups =
            parse_relations("libc6 (>= 2.36), gpgv | gpgv2, python3:any (<< 3.12~), x (>2)")
                .unwrap();
        assert_eq!(groups.len(), 4);
        assert_eq!(groups[1].len(), 2);
        assert_eq!(
            groups[0][0].constraint.as_ref().unwrap().0,
            Relation::GreaterEq
        );
        assert_eq!(groups[2][0].arch_qualifier.as_deref(), Some("any"));
        assert_eq!(
            groups[3][0].constraint.as_ref().unwrap().0,
            Relation::GreaterEq
        );
        assert!(parse_relations("a (>= )").is_err());
        assert!(parse_relations("a (~ 1)").is_err());
        assert!(parse_relations("A_B").is_err());
    }
}
