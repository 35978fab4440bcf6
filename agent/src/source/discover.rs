//! Finding files: glob expansion, rotated siblings of a log file, and what
//! is never a log (compressed rotations).

use std::path::{Path, PathBuf};

/// Rotated files compressed by logrotate are never read.
const COMPRESSED: &[&str] = &["gz", "bz2", "xz", "zst", "lz4", "zip"];

/// Whether `path` names a compressed file.
pub fn is_compressed(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| COMPRESSED.iter().any(|c| e.eq_ignore_ascii_case(c)))
}

/// Whether a configured log path is a glob pattern rather than one file.
pub fn is_glob(path: &Path) -> bool {
    path.to_string_lossy().contains(['*', '?', '['])
}

/// The paths that match `pattern` now, compressed files left out, sorted.
/// Paths that cannot be read while expanding are skipped.
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    let Ok(paths) = glob::glob(pattern) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = paths
        .filter_map(Result::ok)
        .filter(|p| !is_compressed(p))
        .collect();
    out.sort();
    out
}

/// The deepest directory of a pattern without glob characters: where new
/// matches appear.
pub fn glob_base(pattern: &Path) -> PathBuf {
    let mut base = PathBuf::new();
    for c in pattern.components() {
        if c.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
            break;
        }
        base.push(c);
    }
    if base == pattern {
        base.parent().map(Path::to_path_buf).unwrap_or(base)
    } else {
        base
    }
}

/// Rotated versions of `path` beside it (`auth.log.1`, `auth.log-20250101`,
/// `auth.log.0`), compressed ones left out.
pub fn rotated_siblings(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.len() > name.len() && n.starts_with(&*name)
            }) && !is_compressed(p)
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_and_globs() {
        for p in [
            "a.log.1.gz",
            "a.log.2.bz2",
            "x.XZ",
            "y.zst",
            "z.lz4",
            "w.zip",
        ] {
            assert!(is_compressed(Path::new(p)), "{p}");
        }
        assert!(!is_compressed(Path::new("a.log.1")));
        assert!(is_glob(Path::new("/var/log/*.log")));
        assert!(!is_glob(Path::new("/var/log/auth.log")));
        assert_eq!(
            glob_base(Path::new("/var/log/nginx/*/access.log")),
            Path::new("/var/log/nginx")
        );
    }

    #[test]
    fn expansion_and_siblings_skip_compressed_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in ["auth.log", "auth.log.1", "auth.log.2.gz", "other.log"] {
            std::fs::write(dir.path().join(n), "x\n").expect("write");
        }
        let pattern = format!("{}/auth.log*", dir.path().display());
        assert_eq!(
            expand(&pattern),
            vec![dir.path().join("auth.log"), dir.path().join("auth.log.1")]
        );
        assert_eq!(
            rotated_siblings(&dir.path().join("auth.log")),
            vec![dir.path().join("auth.log.1")]
        );
    }
}
