//! Policy for tests that need root (or a tool a root test drives): skip
//! loudly on a developer machine, fail in CI where a silent skip would hide a
//! broken test. Tests, unit tests and benches all skip through here.

use std::io::Write as _;

/// Environment variable that turns every skip into a failure (CI sets it).
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
    require(test_name, "root", is_root())
}

/// Returns `available`. When false, prints `skipped: needs <what>
/// (<test_name>)` to stderr, unless `SENSOR_REQUIRE_ROOT_TESTS=1`, in which
/// case it panics: a machine that runs the root tests must also have what
/// they drive (`cargo xtask setup` installs it).
///
/// # Panics
/// When `available` is false and `SENSOR_REQUIRE_ROOT_TESTS=1`.
#[must_use]
pub fn require(test_name: &str, what: &str, available: bool) -> bool {
    available
        || skip(
            test_name,
            what,
            std::env::var(REQUIRE_ROOT_ENV).as_deref() == Ok("1"),
        )
}

/// The skip itself: loud, or a panic when `every_test_required`. Returns
/// false (the test does not run).
fn skip(test_name: &str, what: &str, every_test_required: bool) -> bool {
    assert!(
        !every_test_required,
        "{test_name} needs {what} (running as uid {}); {REQUIRE_ROOT_ENV}=1 forbids skipping it",
        // SAFETY: as in `is_root`.
        unsafe { libc::geteuid() }
    );
    // Written to the stderr file descriptor directly: the test harness
    // captures `eprintln!` of passing tests, which would hide the skip.
    let banner = "*".repeat(60);
    let _ = writeln!(
        std::io::stderr(),
        "{banner}\nskipped: needs {what} ({test_name})\n{banner}"
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_available_runs() {
        assert!(require("what_is_available_runs", "nothing", true));
    }

    #[test]
    fn a_skip_is_loud_and_fails_when_every_test_is_required() {
        assert!(!skip("a_skip", "a tool", false));
        let failed = std::panic::catch_unwind(|| skip("a_skip", "a tool", true))
            .expect_err("a skip must fail under SENSOR_REQUIRE_ROOT_TESTS=1");
        let msg = failed
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(
            msg.contains("a_skip needs a tool") && msg.contains(REQUIRE_ROOT_ENV),
            "{msg}"
        );
    }
}
