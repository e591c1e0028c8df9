//! A Python environment as image paths, and what its interpreter sees: where an env's parts
//! are ([`EnvLayout`]), the `sys.path` its interpreter starts with ([`env_sys_path`], run in a
//! sandbox), and which entries of it come from outside the env and the standard library
//! ([`foreign_sys_path`]). Shared by `overlay` (which builds envs and proves them before a
//! layer is packed) and `check` (which inspects them in any image), so it depends on neither.

/// Where an environment's parts are, as image paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvLayout {
    /// The env's root (`/var/lib/python3/envs/NAME`).
    pub prefix: String,
    /// `major.minor` of its interpreter.
    pub version: String,
}

impl EnvLayout {
    /// `PREFIX/lib/pythonX.Y/site-packages`.
    pub fn site_packages(&self) -> String {
        format!("{}/lib/python{}/site-packages", self.prefix, self.version)
    }

    /// The env's interpreter, the one every script of the env names.
    pub fn interpreter(&self) -> String {
        format!("{}/bin/python{}", self.prefix, self.version)
    }
}

/// The rest of the line a successful run printed after `marker`; else all it printed.
pub fn marked_line(ran: &crate::sandbox::Ran, marker: &str) -> Result<String, String> {
    let text = String::from_utf8_lossy(&ran.output);
    text.lines()
        .find_map(|l| l.strip_prefix(marker))
        .filter(|_| ran.status.success())
        .map(str::to_string)
        .ok_or_else(|| text.trim().to_string())
}

/// The `sys.path` of the interpreter that `launch` (a program and its first arguments) starts
/// in `sandbox`; Err with what it printed (or why it could not start) otherwise.
pub fn env_sys_path(
    sandbox: &crate::sandbox::Sandbox,
    launch: &[&str],
) -> Result<Vec<String>, String> {
    const MARKER: &str = "KILN-SYS-PATH ";
    let script = format!("import json, sys; print('{MARKER}' + json.dumps(sys.path))");
    let (program, first) = launch.split_first().ok_or("nothing to start")?;
    let mut args = first.to_vec();
    args.extend(["-c", &script]);
    let ran = sandbox
        .run(program, &args, &[])
        .map_err(|e| e.to_string())?;
    let line = marked_line(&ran, MARKER)?;
    serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))
}

/// The sys.path entries that are neither the standard library (`/usr/lib/pythonX.Y` and its
/// lib-dynload, `/usr/lib/pythonXY.zip`) nor inside the env; '' (the current directory of
/// `-c`) is not a path of either.
pub fn foreign_sys_path(paths: &[String], env: &EnvLayout) -> Vec<String> {
    let stdlib = format!("/usr/lib/python{}", env.version);
    let zip = format!("/usr/lib/python{}.zip", env.version.replace('.', ""));
    paths
        .iter()
        .filter(|p| {
            let p = p.trim_end_matches('/');
            let in_stdlib =
                (p == stdlib || p.starts_with(&format!("{stdlib}/"))) && !p.contains("-packages");
            let in_env = p == env.prefix || p.starts_with(&format!("{}/", env.prefix));
            !(p.is_empty() || in_stdlib || p == zip || in_env)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stdlib_and_the_env_may_be_on_sys_path() {
        let env = EnvLayout {
            prefix: "/var/lib/python3/envs/t".into(),
            version: "3.11".into(),
        };
        let clean: Vec<String> = [
            "",
            "/usr/lib/python311.zip",
            "/usr/lib/python3.11",
            "/usr/lib/python3.11/lib-dynload",
            "/var/lib/python3/envs/t/lib/python3.11/site-packages",
        ]
        .map(String::from)
        .to_vec();
        assert!(foreign_sys_path(&clean, &env).is_empty());
        let mut leaky = clean.clone();
        leaky.push("/usr/lib/python3/dist-packages".into());
        leaky.push("/usr/local/lib/python3.11/dist-packages".into());
        leaky.push("/usr/lib/python3.11/site-packages".into());
        assert_eq!(foreign_sys_path(&leaky, &env).len(), 3);
    }
}
