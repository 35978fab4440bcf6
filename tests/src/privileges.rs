//! Whether this process may build network namespaces and run nftables in
//! them, which the end-to-end tests need.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Returns true when the caller may build a [`crate::netns::Lab`]: running as
/// root, `ip` and `nft` installed, and `ip netns add` plus `nft` inside the new
/// namespace work. Otherwise panics with the reason under
/// `FLEETBAN_TEST_STRICT=1`, or prints `skipped <test>: <reason>` and returns
/// false. The probe runs once per process.
#[track_caller]
pub fn require_netns(test: &str) -> bool {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    match PROBE.get_or_init(probe_netns) {
        Ok(()) => true,
        Err(reason) => {
            crate::skip(test, reason);
            false
        }
    }
}

/// Whether the effective user is root (read from `/proc`, no libc needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            // Uid: real effective saved fs
            uids.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Finds a system tool on PATH or in the sbin directories, which a non-root
/// PATH often lacks.
pub(crate) fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs a command to completion; returns its stdout, or an error naming the
/// command with its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd
        .output()
        .map_err(|e| format!("`{shown}` could not start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn probe_netns() -> Result<(), String> {
    if !is_root() {
        return Err("needs root for network namespaces and nftables".into());
    }
    let ip = tool("ip").ok_or("`ip` not found (install iproute2)")?;
    let nft = tool("nft").ok_or("`nft` not found (install nftables)")?;
    let name = format!("fbp-{}", std::process::id());
    // A leftover from an earlier process with the same pid.
    let _ = Command::new(&ip).args(["netns", "del", &name]).output();
    run(Command::new(&ip).args(["netns", "add", &name]))
        .map_err(|e| format!("cannot create a network namespace: {e}"))?;
    let nft_works = run(Command::new(&ip)
        .args(["netns", "exec", &name])
        .arg(&nft)
        .args(["list", "ruleset"]));
    let deleted = run(Command::new(&ip).args(["netns", "del", &name]));
    nft_works.map_err(|e| format!("nftables does not work in a namespace: {e}"))?;
    deleted.map_err(|e| format!("cannot delete a network namespace: {e}"))?;
    Ok(())
}
