//! Test infrastructure for fleetban's end-to-end tests: a fresh Postgres
//! database per test, the workspace binaries, and a lab of network namespaces
//! where agents really drop packets.
//!
//! Tests that need something this machine lacks (root, nftables, Postgres)
//! skip with a printed reason; with `FLEETBAN_TEST_STRICT=1` (set by CI) they
//! fail instead, so that nothing silently passes where it should have run.

#![forbid(unsafe_code)]

pub mod bins;
pub mod netns;
pub mod pg;
pub mod privileges;

/// Environment variable that turns skips into failures (CI sets it to `1`).
pub const STRICT_ENV: &str = "FLEETBAN_TEST_STRICT";

/// Whether a test that cannot run must fail rather than skip.
pub fn strict() -> bool {
    std::env::var(STRICT_ENV).is_ok_and(|v| v == "1")
}

/// Reports that `test` cannot run here because of `reason`: panics under
/// `FLEETBAN_TEST_STRICT=1`, otherwise prints `skipped <test>: <reason>` to
/// stderr. The caller returns early after it.
#[track_caller]
pub fn skip(test: &str, reason: &str) {
    if strict() {
        panic!("{test} cannot run ({reason}) and {STRICT_ENV}=1 forbids skipping it");
    }
    eprintln!("skipped {test}: {reason}");
}
