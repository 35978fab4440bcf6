//! Configuration files read from the file system, for the engine's tests
//! and benches (the engine itself does no I/O).

use std::path::{Path, PathBuf};

use fleetban_engine::fail2ban::SourceFiles;

pub struct Fs;

impl SourceFiles for Fs {
    fn read(&self, path: &Path) -> Option<Result<String, String>> {
        match std::fs::read(path) {
            Ok(b) => Some(Ok(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }

    fn list(&self, dir: &Path, suffix: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().ends_with(suffix))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}
