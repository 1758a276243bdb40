//! User space of the XDP threat sensor. After `files` (file handling every
//! stage shares), the modules are the stages of the data flow in DESIGN.md,
//! in the order an event travels through them; a module imports only from
//! the modules above it in this list.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]
/// Files with explicit modes, outputs renamed into place: used by every stage.
pub mod files;
/// XDP program, rings, pinned workers, sketch epochs.
pub mod capture;
/// Streaming per-flow and per-host features, one row per event.
pub mod features;
/// ONNX inference with tract, model cards, scored rows.
pub mod model;
/// Guards, rules, dedup, incidents, EVE records, feedback.
pub mod alerts;
/// Where alert lines and recorded rows go.
pub mod sinks;
/// What the operator reads about a run: report, stats.
pub mod ops;
/// The command line and the composition of a running sensor.
pub mod run;

// Dependencies of the `sensor` binary only: a package has one dependency
// list, and `unused_crate_dependencies` checks it against the library.
use anyhow as _;
use tracing_subscriber as _;
