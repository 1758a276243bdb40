//! `cargo xtask setup`: everything a fresh Debian/Ubuntu machine with only
//! the Rust toolchains needs to build, test, bench and demo the sensor.
//! Idempotent: each step checks first and says "already present".

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{has_binary, run_status, target_dir};

/// Debian packages and a binary (or, for an absolute path, a file) that
/// proves each is installed.
const APT_PACKAGES: [(&str, &str); 26] = [
    ("clang-19", "clang-19"),
    // Headers of the XDP bench's C reference (`bpf/bpf_helpers.h`).
    ("libbpf-dev", "/usr/include/bpf/bpf_helpers.h"),
    ("bpftool", "bpftool"),
    ("iproute2", "ip"),
    ("netsniff-ng", "trafgen"),
    ("hping3", "hping3"),
    ("nmap", "nmap"),
    ("tcpreplay", "tcpreplay"),
    ("tshark", "tshark"),
    ("iperf3", "iperf3"),
    // The traffic lab (`cargo xtask lab`): services, clients, attack tools.
    ("ethtool", "ethtool"),
    ("dnsmasq-base", "dnsmasq"),
    ("bind9-dnsutils", "dig"),
    ("iputils-ping", "ping"),
    ("curl", "curl"),
    ("openssh-server", "sshd"),
    ("hydra", "hydra"),
    ("slowhttptest", "slowhttptest"),
    ("arp-scan", "arp-scan"),
    ("python3", "python3"),
    // Real flow exporters watching a lab interface for the collector's
    // tests (`sensor collect`): NetFlow v5/v9 and IPFIX.
    ("softflowd", "softflowd"),
    ("pmacct", "pmacctd"),
    // `systemd-analyze verify` checks the installed unit (tests/install.rs),
    // with `man` finding the page its Documentation= names.
    ("systemd", "systemd-analyze"),
    ("man-db", "man"),
    // `--metrics-addr` is scraped by a real Prometheus server and its
    // output checked by `promtool check metrics` (tests/netns_metrics.rs).
    // Without systemd as init nothing starts the packaged service: the
    // test starts its own server with its own config and data directory.
    ("prometheus", "promtool"),
    // `sensor top` runs in a detached tmux session whose pane the test
    // reads (tests/netns_top.rs).
    ("tmux", "tmux"),
];

/// The cargo-fuzz release `cargo xtask fuzz` is known to work with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The bpf-linker release the eBPF build is known to work with.
const BPF_LINKER_VERSION: &str = "0.13.0";

fn step(name: &str, outcome: &str) {
    println!("setup: {name:<28} {outcome}");
}

/// Runs every step.
pub(crate) fn setup() -> Result<()> {
    apt()?;
    nightly()?;
    bpf_linker()?;
    cargo_fuzz()?;
    if has_binary("cargo-nextest") {
        step("cargo-nextest", "already present");
    } else {
        step("cargo-nextest", "absent (tests fall back to cargo test)");
    }
    Ok(())
}

/// True when every tool `setup` installs is already there, without running
/// anything slow; used by `build` to print a helpful hint.
pub(crate) fn is_complete() -> bool {
    nightly_sysroot().is_ok()
        && bpf_linker_version().is_some_and(|v| v.contains(BPF_LINKER_VERSION))
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, probe)| {
            if probe.starts_with('/') {
                !Path::new(probe).exists()
            } else {
                !has_binary(probe)
            }
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        step("apt packages", "already present");
        return Ok(());
    }
    if !sensor_lab::root::is_root() {
        bail!(
            "missing Debian packages {missing:?}; run `cargo xtask setup` as root \
             (or `sudo apt-get install {}`)",
            missing.join(" ")
        );
    }
    run_status(
        Command::new("apt-get")
            .args(["-q", "update"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    // tshark asks whether non-root users may capture; answer "no" up front
    // so the install never waits for a terminal.
    let mut preseed = Command::new("debconf-set-selections")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running debconf-set-selections")?;
    {
        use std::io::Write as _;
        let stdin = preseed.stdin.as_mut().context("debconf stdin")?;
        stdin.write_all(b"wireshark-common wireshark-common/install-setuid boolean false\n")?;
    }
    preseed.wait()?;
    run_status(
        Command::new("apt-get")
            .args(["-q", "-y", "--no-install-recommends", "install"])
            .args(missing.iter())
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    step("apt packages", &format!("done ({})", missing.join(" ")));
    Ok(())
}

/// The nightly toolchain's sysroot.
fn nightly_sysroot() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .context("running rustc +nightly")?;
    if !out.status.success() {
        bail!(
            "no nightly toolchain: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn nightly() -> Result<()> {
    if nightly_sysroot().is_err() {
        run_status(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
        step("nightly toolchain", "done");
    } else {
        step("nightly toolchain", "already present");
    }
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup component list")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == "rust-src" || l.starts_with("rust-src-"))
    {
        step("nightly rust-src", "already present");
    } else {
        run_status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
        step("nightly rust-src", "done");
    }
    Ok(())
}

/// The `libLLVM.so.*` shipped with nightly (its version is in the name, so
/// it is found by glob rather than hard-coded).
fn nightly_libllvm(sysroot: &Path) -> Result<PathBuf> {
    let lib = sysroot.join("lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .collect();
    found.sort();
    found
        .pop()
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))
}

/// `bpf-linker --version`, run with nightly's lib directory on the loader
/// path (that is where its libLLVM lives, and where rustc finds it too).
fn bpf_linker_version() -> Option<String> {
    let sysroot = nightly_sysroot().ok()?;
    let out = Command::new("bpf-linker")
        .arg("--version")
        .env("LD_LIBRARY_PATH", sysroot.join("lib"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_version().is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        step("bpf-linker", "already present");
        return Ok(());
    }
    // bpf-linker must use the very LLVM that nightly rustc emits bitcode for,
    // so it links against nightly's own libLLVM through a prefix directory
    // whose lib/libLLVM.so points at it.
    let sysroot = nightly_sysroot()?;
    let libllvm = nightly_libllvm(&sysroot)?;
    let prefix = target_dir().join("xtask-llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let link = lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)
        .with_context(|| format!("linking {} -> {}", link.display(), libllvm.display()))?;
    run_status(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
                "--locked",
            ])
            .env("LLVM_PREFIX", &prefix),
    )?;
    if !bpf_linker_version().is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        bail!(
            "bpf-linker was installed but `bpf-linker --version` does not report {BPF_LINKER_VERSION}"
        );
    }
    step("bpf-linker", &format!("done ({BPF_LINKER_VERSION})"));
    Ok(())
}

/// `cargo fuzz --version`, if cargo-fuzz is installed.
fn cargo_fuzz_version() -> Option<String> {
    let out = Command::new("cargo-fuzz").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// cargo-fuzz, for `cargo xtask fuzz` (the targets build with nightly,
/// which `nightly` installs; the tool itself builds with stable).
fn cargo_fuzz() -> Result<()> {
    if cargo_fuzz_version().is_some_and(|v| v.contains(CARGO_FUZZ_VERSION)) {
        step("cargo-fuzz", "already present");
        return Ok(());
    }
    run_status(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))?;
    if !cargo_fuzz_version().is_some_and(|v| v.contains(CARGO_FUZZ_VERSION)) {
        bail!(
            "cargo-fuzz was installed but `cargo-fuzz --version` does not report {CARGO_FUZZ_VERSION}"
        );
    }
    step("cargo-fuzz", &format!("done ({CARGO_FUZZ_VERSION})"));
    Ok(())
}
