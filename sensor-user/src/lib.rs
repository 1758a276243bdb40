//! User space of the XDP threat sensor: loads the XDP program, consumes its
//! rings on pinned workers, scores what it sees and raises alerts. Modules
//! follow the data flow in DESIGN.md.

pub mod alerts;
pub mod cli;
pub mod control;
pub mod error;
pub mod features;
pub mod loader;
pub mod model;
pub mod recorder;
pub mod report;
pub mod runner;
pub mod scored;
pub mod scoring;
pub mod sinks;
pub mod sketch;
pub mod workers;

/// The compiled XDP object, built by `build.rs`.
pub static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor-ebpf"));
