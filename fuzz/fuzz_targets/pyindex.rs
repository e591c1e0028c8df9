//! What a Python index and a lock hand kiln: a PEP 503 simple page (from the network), PEP 508
//! markers (from the lock) and a wheel (a zip, from the index or a wheelhouse): parsing never
//! panics, every link kept carries a sha256, and an installed file never leaves the env.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for (_, url, sha) in
        kiln::pipeline::overlay::wheels::parse_simple_page(&text, "https://i.example/simple/x/")
    {
        assert!(sha.len() == 64 && !url.is_empty());
    }
    let mut env = kiln::pipeline::overlay::markers::MarkerEnv::default();
    env.values.insert("python_version".into(), "3.11".into());
    env.values
        .insert("platform_machine".into(), "armv7l".into());
    let _ = kiln::pipeline::overlay::markers::evaluate(&text, &env);
    let dir = std::env::temp_dir().join(format!("kiln-fuzz-wheel-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let wheel = dir.join("x-1-py3-none-any.whl");
    if std::fs::write(&wheel, data).is_ok() {
        let layout = kiln::pyenv::EnvLayout {
            prefix: "/var/lib/python3/envs/x".into(),
            version: "3.11".into(),
        };
        if let Ok(files) =
            kiln::pipeline::overlay::wheelinstall::wheel_files(&wheel, "x-1-py3-none-any.whl", &layout)
        {
            for f in files {
                assert!(f.path.starts_with("/var/lib/python3/envs/x/") && !f.path.contains("/../"));
            }
        }
    }
});
