//! What the README promises about where crew runs is what the build
//! enforces: the minimum Rust version it names is `rust-version` in
//! `Cargo.toml`, and every crate that needs Linux stops a build for another
//! system with the message the README quotes.

use std::path::Path;

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_readme_names_the_rust_version_cargo_enforces() {
    let manifest = read("Cargo.toml");
    let msrv = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("rust-version in [workspace.package]");
    assert_eq!(env!("CARGO_PKG_RUST_VERSION"), msrv);
    let readme = read("README.md");
    let section = readme
        .split("## Supported systems")
        .nth(1)
        .expect("a \"Supported systems\" section");
    assert!(
        section.contains(&format!("**Rust {msrv} or later**")),
        "the README's minimum Rust version is not {msrv}"
    );
    for needed in [
        "memfd",
        "robust futexes",
        "PR_SET_PDEATHSIG",
        "pidfd",
        "Linux 3.17",
    ] {
        assert!(
            section.contains(needed),
            "the README does not name {needed}"
        );
    }
}

#[test]
fn every_linux_only_crate_refuses_other_systems_with_one_message() {
    let readme = read("README.md");
    for lib in [
        "src/lib.rs",
        "crates/crew-process/src/lib.rs",
        "crates/crew-shm/src/lib.rs",
    ] {
        let text = read(lib);
        let gate = text
            .split("#[cfg(not(target_os = \"linux\"))]\ncompile_error!(")
            .nth(1)
            .unwrap_or_else(|| panic!("{lib} has no compile_error! for other systems"));
        assert!(
            gate.trim_start().starts_with("\"crew runs on Linux only"),
            "{lib}: {gate:.120}"
        );
        assert!(gate.contains("this target is not supported"), "{lib}");
    }
    assert!(readme.contains("crew runs on Linux only (…): this\ntarget is not supported"));
}
