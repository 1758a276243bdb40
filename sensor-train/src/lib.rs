//! Training tooling, kept out of the `sensor` library that runs on a
//! gateway: the seeded traffic simulator ([`sim`]) that the models are
//! trained on, and the recorded event fixture ([`fixture`]) the tests replay.
//! The `sensor-dataset` binary turns both into CSV rows with the sensor's own
//! feature extractor.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]
pub mod fixture;
pub mod sim;

// Dependencies of the `sensor-dataset` binary only: a package has one
// dependency list, and `unused_crate_dependencies` checks it against the
// library.
use anyhow as _;
use clap as _;
use serde_json as _;
