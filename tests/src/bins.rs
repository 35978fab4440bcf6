//! The workspace's binaries for end-to-end tests, built once per test process
//! so that a plain `cargo test` works without a separate build step.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Binaries of other workspace packages, which `cargo test` of this package
/// does not build by itself.
const WORKSPACE_BINS: &[&str] = &["fleetban-server", "fleetban-agent"];

/// Path of a binary in this build's target directory: `fleetban-server` and
/// `fleetban-agent` (built on the first call), or this package's own
/// `fleetban-netcheck` (which cargo builds for the integration tests).
/// Panics with cargo's output if the build fails, or if the binary is missing.
#[track_caller]
pub fn bin(name: &str) -> PathBuf {
    static BUILD: OnceLock<Result<(), String>> = OnceLock::new();
    let dir = profile_dir();
    if WORKSPACE_BINS.contains(&name) {
        if let Err(e) = BUILD.get_or_init(|| build(&dir)) {
            panic!("{e}");
        }
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} does not exist (known binaries: {}, fleetban-netcheck)",
        path.display(),
        WORKSPACE_BINS.join(", ")
    );
    path
}

/// `target/<profile>/` of the running test: its executable lives in
/// `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe.parent().expect("the test executable is in a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn build(profile_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from(env!("CARGO")));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).args(["build", "--bins"]);
    for name in WORKSPACE_BINS {
        cmd.args(["-p", name]);
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    eprintln!(
        "building {} for the end-to-end tests",
        WORKSPACE_BINS.join(" and ")
    );
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo to build the fleetban binaries: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Keep the diagnostics, not the progress lines.
        let diagnostics: Vec<&str> = stderr
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                !(l.starts_with("Compiling ") || l.starts_with("Checking "))
            })
            .collect();
        return Err(format!(
            "`cargo build` of the fleetban binaries failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            diagnostics.join("\n")
        ));
    }
    Ok(())
}
