//! Embeds the web console's built files (`web/dist`, made by
//! `scripts/build-web`) into the server, so no Node is needed at run time.
//! Without a build, the server embeds nothing and `/` explains how to build
//! the console: `cargo build` works on a fresh clone without Node.
//!
//! Writes `$OUT_DIR/console_files.rs`: a sorted table of
//! `(path relative to dist, bytes)` with one `include_bytes!` per file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let dist = manifest.join("../web/dist");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("console_files.rs");

    println!("cargo:rerun-if-changed=build.rs");
    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        // A directory is scanned as a whole: any rebuild of the console
        // re-embeds it. A missing path would rerun this script on every
        // build, so it is only named when present; scripts/build-web touches
        // this file when it creates dist/ for the first time.
        println!("cargo:rerun-if-changed={}", dist.display());
        collect(&dist, &dist, &mut files);
        files.sort();
    }

    let mut code = String::from("/// The console's files, from `web/dist` at build time.\npub static FILES: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        writeln!(code, "    ({rel:?}, include_bytes!({abs:?})),").expect("write to string");
    }
    code.push_str("];\n");
    std::fs::write(&out, code).expect("write console_files.rs");
}

/// Every regular file under `dir`, as (path relative to `root` with `/`
/// separators, absolute path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        let path = entry.path();
        let kind = entry
            .file_type()
            .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        if kind.is_dir() {
            collect(root, &path, files);
        } else if kind.is_file() {
            let rel = path
                .strip_prefix(root)
                .expect("under dist")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let abs = path
                .canonicalize()
                .unwrap_or_else(|e| panic!("resolve {}: {e}", path.display()));
            files.push((rel, abs.to_string_lossy().into_owned()));
        }
    }
}
