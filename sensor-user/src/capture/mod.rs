//! Capture: loads and attaches the XDP program, reads its rings on pinned
//! workers and its sketches on the control thread. Everything later stages
//! learn about packets comes through here.

pub mod collector;
pub mod blocklist;
pub mod control;
pub mod error;
pub mod gateway;
pub mod live;
pub mod loader;
pub mod pins;
pub mod privileges;
pub mod sketch;
pub mod volume;
pub mod workers;

pub use error::SensorError;

/// The compiled XDP object, built by `build.rs`.
pub static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor-ebpf"));
