//! `envrun`: see the library documentation. Exit codes: 0 ok, 2 usage, 126 cannot execute,
//! 127 unknown environment or executable.

use envrun::{parse, registry_dir, Failure, Invocation, Registry, SCRUBBED};
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if f.code == 0 {
                println!("{}", f.message);
            } else {
                eprintln!("envrun: {}", f.message);
            }
            ExitCode::from(f.code.clamp(0, 255) as u8)
        }
    }
}

fn run(args: &[std::ffi::OsString]) -> Result<(), Failure> {
    let registry = Registry::new(registry_dir());
    match parse(args)? {
        Invocation::List => {
            for name in registry.names() {
                match registry.get(&name) {
                    Ok(env) => println!("{name}\t{}", env.prefix.display()),
                    Err(f) => eprintln!("envrun: {}", f.message),
                }
            }
            Ok(())
        }
        Invocation::Which { env, exe } => {
            let path = registry.get(&env)?.which(&exe)?;
            println!("{}", path.display());
            Ok(())
        }
        Invocation::Run { env, exe, args } => {
            let env = registry.get(&env)?;
            let path = env.which(&exe)?;
            let mut cmd = std::process::Command::new(&path);
            // argv[0] is the environment's path: a venv's python finds pyvenv.cfg from it.
            cmd.arg0(&path).args(&args);
            for var in SCRUBBED {
                cmd.env_remove(var);
            }
            cmd.env("PATH", env.path_var(std::env::var_os("PATH").as_deref()));
            // Only returns on failure: on success this process becomes the daemon.
            let e = cmd.exec();
            Err(Failure {
                message: format!("cannot execute {}: {e}", path.display()),
                code: 126,
            })
        }
    }
}
