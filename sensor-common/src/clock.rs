//! The one clock helper of user space. `CLOCK_MONOTONIC` is the clock of
//! `bpf_ktime_get_ns`, so event timestamps, worker time and lab timings
//! compare directly; `CLOCK_REALTIME` is read only to map them to wall time.

/// Reads `clock` in nanoseconds. Served by the vDSO, no syscall.
#[must_use]
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clocks read here
    // (monotonic, realtime, thread CPU time) always exist on Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// `CLOCK_MONOTONIC` now, in ns: the clock the kernel stamps events with.
#[must_use]
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` now, in ns since the Unix epoch.
#[must_use]
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_never_goes_back() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a, "{a} then {b}");
        assert!(
            realtime_ns() > 1_600_000_000_000_000_000,
            "realtime is after 2020"
        );
    }
}
