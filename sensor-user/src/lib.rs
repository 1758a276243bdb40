//! User space of the XDP threat sensor: loads the XDP program, consumes its
//! rings on pinned workers and reports what it saw. Modules follow the data
//! flow in DESIGN.md.

/// The compiled XDP object, built by `build.rs`.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor-ebpf"));
