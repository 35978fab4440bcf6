//! Configuration files read from the file system, for the engine's
//! fail2ban reader.

use std::path::{Path, PathBuf};

use fleetban_engine::fail2ban::SourceFiles;

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsFiles;

impl SourceFiles for FsFiles {
    fn read(&self, path: &Path) -> Option<Result<String, String>> {
        match std::fs::read(path) {
            Ok(bytes) => Some(Ok(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(format!("cannot read: {e}"))),
        }
    }

    fn list(&self, dir: &Path, suffix: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}
