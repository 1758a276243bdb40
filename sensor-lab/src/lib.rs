//! A self-contained network lab for the sensor.
//!
//! - [`netns`]: network namespaces and veth pairs with unique names, removed on
//!   drop (also when a test panics), so tests never touch the host's network.
//! - [`generator`]: the project's own traffic generator. It writes raw Ethernet
//!   frames through `AF_PACKET` with `sendmmsg` batching and returns the exact
//!   ground truth (per-flow packets, bytes and TCP flag counts) of what it sent.
//! - [`sensor`]: starts the `sensor` binary inside a namespace, waits until its
//!   XDP program is attached, stops it and parses its output files.
//! - [`replay`]: replays real captures (pcap/pcapng) through `AF_PACKET`,
//!   paced by their timestamps, and records when the first attack frame left.
//! - [`manifest`]: the capture manifest (`tests/data/pcaps/MANIFEST.tsv`):
//!   files, checksums and labels.
//! - [`detection`]: judges the sensor's alerts against ground truth
//!   (correct detections, false ones, time to detect).
//! - [`lab`]: the traffic lab: clients, attacker, gateway, servers and a
//!   monitor port, with labelled scenarios driven by real tools.
//! - [`root`]: the skip-or-fail policy for tests that need root.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]
pub mod collect;
pub mod detection;
pub mod error;
pub mod generator;
pub mod lab;
pub mod manifest;
pub mod netns;
pub mod replay;
pub mod root;
pub mod sensor;

pub use error::LabError;
pub use netns::{Lab, Netns, VethPair};
pub use root::{require, require_root};
