//! PEP 508 environment markers (`; python_version < "3.8" and platform_machine == "armv7l"`)
//! of a requirements lock, evaluated for the image's interpreter, not the build host's: a lock
//! compiled for several targets keeps only the lines that apply to this one.
//!
//! Hand-written: the grammar is a dozen lines (PEP 508, "Environment Markers"), and the crates
//! that implement it (pep508_rs) bring a URL parser and a full PEP 440 stack for it. Version
//! comparisons compare release segments numerically (`3.10` > `3.9`, `3.5` == `3.5.0`); pre-
//! and post-release suffixes of the marker's operand are not ordered (markers compare Python
//! versions, which locks write as plain releases).

use std::collections::BTreeMap;

/// The values of the marker variables for one interpreter (PEP 508's table: `python_version`,
/// `python_full_version`, `platform_machine`, `sys_platform`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkerEnv {
    /// Variable name to value.
    pub values: BTreeMap<String, String>,
}

/// A marker kiln cannot evaluate: its text and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("marker '{marker}': {reason}")]
pub struct MarkerError {
    /// The marker as written.
    pub marker: String,
    /// Why.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Str(String),
    Var(String),
    Op(String),
    And,
    Or,
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' || c == ')' {
            out.push(if c == '(' { Token::Open } else { Token::Close });
            i += 1;
        } else if c == '\'' || c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|&d| d == c)
                .ok_or("unterminated string")?;
            out.push(Token::Str(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if "<>=!~".contains(c) {
            let mut op = String::new();
            while i < chars.len() && "<>=!~".contains(chars[i]) {
                op.push(chars[i]);
                i += 1;
            }
            if !["<", "<=", ">", ">=", "==", "!=", "~=", "==="].contains(&op.as_str()) {
                return Err(format!("unknown operator '{op}'"));
            }
            out.push(Token::Op(op));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut word = String::new();
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_.".contains(chars[i])) {
                word.push(chars[i]);
                i += 1;
            }
            match word.as_str() {
                "and" => out.push(Token::And),
                "or" => out.push(Token::Or),
                "in" => out.push(Token::Op("in".into())),
                "not" => {
                    // `not in` is the only use of `not`.
                    let rest: String = chars[i..].iter().collect();
                    let trimmed = rest.trim_start();
                    if !trimmed.starts_with("in")
                        || trimmed[2..].starts_with(|c: char| c.is_ascii_alphanumeric())
                    {
                        return Err("'not' must be followed by 'in'".into());
                    }
                    i += rest.len() - trimmed.len() + 2;
                    out.push(Token::Op("not in".into()));
                }
                _ => out.push(Token::Var(word)),
            }
        } else {
            return Err(format!("unexpected '{c}'"));
        }
    }
    Ok(out)
}

/// Release segments of a version ("3.11.2" → [3, 11, 2]); None when not a plain release.
fn release(v: &str) -> Option<Vec<u64>> {
    let head: String = v
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let parts: Option<Vec<u64>> = head
        .trim_end_matches('.')
        .split('.')
        .map(|p| p.parse().ok())
        .collect();
    parts.filter(|p| !p.is_empty())
}

fn cmp_release(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            a.get(i)
                .copied()
                .unwrap_or(0)
                .cmp(&b.get(i).copied().unwrap_or(0))
        })
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

fn compare(left: &str, op: &str, right: &str) -> Result<bool, String> {
    use std::cmp::Ordering::*;
    match op {
        "in" => return Ok(right.contains(left)),
        "not in" => return Ok(!right.contains(left)),
        "===" => return Ok(left == right),
        _ => {}
    }
    if let (Some(a), Some(b)) = (release(left), release(right)) {
        let o = cmp_release(&a, &b);
        return Ok(match op {
            "<" => o == Less,
            "<=" => o != Greater,
            ">" => o == Greater,
            ">=" => o != Less,
            "==" => o == Equal,
            "!=" => o != Equal,
            // Compatible release: >= V and the same prefix but for V's last segment.
            "~=" => {
                if b.len() < 2 {
                    return Err(format!("'~= {right}' needs at least two segments"));
                }
                o != Less
                    && cmp_release(&a[..(b.len() - 1).min(a.len())], &b[..b.len() - 1]) == Equal
            }
            _ => return Err(format!("unknown operator '{op}'")),
        });
    }
    match op {
        "==" => Ok(left == right),
        "!=" => Ok(left != right),
        _ => Err(format!(
            "'{left}' {op} '{right}' compares strings that are not versions"
        )),
    }
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    env: &'a MarkerEnv,
}

impl Parser<'_> {
    fn or(&mut self) -> Result<bool, String> {
        let mut value = self.and()?;
        while self.tokens.get(self.at) == Some(&Token::Or) {
            self.at += 1;
            let right = self.and()?;
            value = value || right;
        }
        Ok(value)
    }

    fn and(&mut self) -> Result<bool, String> {
        let mut value = self.expr()?;
        while self.tokens.get(self.at) == Some(&Token::And) {
            self.at += 1;
            let right = self.expr()?;
            value = value && right;
        }
        Ok(value)
    }

    fn operand(&mut self) -> Result<String, String> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        match t {
            Some(Token::Str(s)) => Ok(s),
            // `extra` is empty: a lock line's marker is about the target, not about extras.
            Some(Token::Var(v)) if v == "extra" => Ok(String::new()),
            Some(Token::Var(v)) => self
                .env
                .values
                .get(&v)
                .cloned()
                .ok_or_else(|| format!("unknown variable '{v}'")),
            Some(other) => Err(format!("expected a variable or a string, found {other:?}")),
            None => Err("ends too early".into()),
        }
    }

    fn expr(&mut self) -> Result<bool, String> {
        if self.tokens.get(self.at) == Some(&Token::Open) {
            self.at += 1;
            let v = self.or()?;
            if self.tokens.get(self.at) != Some(&Token::Close) {
                return Err("missing ')'".into());
            }
            self.at += 1;
            return Ok(v);
        }
        let left = self.operand()?;
        let op = match self.tokens.get(self.at).cloned() {
            Some(Token::Op(op)) => op,
            _ => return Err("expected a comparison operator".into()),
        };
        self.at += 1;
        let right = self.operand()?;
        compare(&left, &op, &right)
    }
}

/// True when `marker` holds in `env`.
pub fn evaluate(marker: &str, env: &MarkerEnv) -> Result<bool, MarkerError> {
    let fail = |reason: String| MarkerError {
        marker: marker.to_string(),
        reason,
    };
    let tokens = tokenize(marker).map_err(fail)?;
    let mut p = Parser { tokens, at: 0, env };
    let v = p.or().map_err(fail)?;
    if p.at != p.tokens.len() {
        return Err(fail("unexpected text after the expression".into()));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> MarkerEnv {
        let mut values = BTreeMap::new();
        for (k, v) in [
            ("python_version", "3.11"),
            ("python_full_version", "3.11.2"),
            ("platform_machine", "armv7l"),
            ("sys_platform", "linux"),
            ("implementation_name", "cpython"),
        ] {
            values.insert(k.to_string(), v.to_string());
        }
        MarkerEnv { values }
    }

    #[test]
    fn markers_are_evaluated_for_the_target() {
        let e = env();
        for (m, want) in [
            ("python_version < \"3.8\"", false),
            ("python_version >= '3.9'", true),
            ("python_version > \"3.9\"", true), // 3.11 > 3.9, not as strings
            ("python_full_version == '3.11.2'", true),
            ("python_full_version ~= '3.11.0'", true),
            ("python_full_version ~= '3.10.0'", false),
            ("platform_machine == 'aarch64'", false),
            ("platform_machine == 'armv7l' and sys_platform == 'linux'", true),
            ("sys_platform == 'win32' or (platform_machine != 'x86_64' and python_version >= '3')", true),
            ("'arm' in platform_machine", true),
            ("'x86' not in platform_machine", true),
            ("extra == 'test'", false),
        ] {
            assert_eq!(evaluate(m, &e), Ok(want), "{m}");
        }
    }

    #[test]
    fn malformed_markers_are_errors() {
        let e = env();
        for m in [
            "python_version <",
            "python_version < '3.8' and",
            "os_nam == 'posix'",
            "python_version = '3'",
            "(python_version < '3'",
            "python_version < '3' python_version",
            "platform_machine < 'arm'",
            "'unterminated",
        ] {
            assert!(evaluate(m, &e).is_err(), "{m}");
        }
    }
}
