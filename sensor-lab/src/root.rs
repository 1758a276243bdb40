//! Policy for tests that need root: skip loudly on a developer machine, fail
//! in CI where a silent skip would hide a broken test.

use std::io::Write as _;

/// Environment variable that turns a root skip into a failure (CI sets it).
pub const REQUIRE_ROOT_ENV: &str = "SENSOR_REQUIRE_ROOT_TESTS";

/// True when the effective user is root.
#[must_use]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns true when `test_name` can run (effective uid 0). Otherwise prints
/// `skipped: needs root (<test_name>)` to stderr and returns false, unless
/// `SENSOR_REQUIRE_ROOT_TESTS=1`, in which case it panics.
///
/// # Panics
/// When not root and `SENSOR_REQUIRE_ROOT_TESTS=1`.
#[must_use]
pub fn require_root(test_name: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var(REQUIRE_ROOT_ENV).as_deref() != Ok("1"),
        "{test_name} needs root (network namespaces, XDP) but runs as uid {}; \
         {REQUIRE_ROOT_ENV}=1 forbids skipping it",
        // SAFETY: as above.
        unsafe { libc::geteuid() }
    );
    // Written to the stderr file descriptor directly: the test harness
    // captures `eprintln!` of passing tests, which would hide the skip.
    let banner = "*".repeat(60);
    let _ = writeln!(
        std::io::stderr(),
        "{banner}\nskipped: needs root ({test_name})\n{banner}"
    );
    false
}
