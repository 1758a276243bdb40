//! Shared by the XDP table tests and the XDP bench: one way to drive a
//! loaded program through `BPF_PROG_TEST_RUN`.

use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions, TestRunResult, Xdp},
};

/// Runs the loaded XDP program `name` on `frame`, `repeat` times in the
/// kernel (the result's duration is then the mean of one run).
pub(crate) fn test_run(ebpf: &Ebpf, name: &str, frame: &[u8], repeat: u32) -> TestRunResult {
    let prog: &Xdp = ebpf
        .program(name)
        .unwrap_or_else(|| panic!("program {name} missing"))
        .try_into()
        .expect("an XDP program");
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("test_run {name}: {e}"))
}
