//! Training tooling, kept out of the `sensor` library that runs on a
//! gateway: the seeded traffic simulator ([`sim`]) that the models are
//! trained on, and the recorded event fixture ([`fixture`]) the tests replay.
//! The `sensor-dataset` binary turns both into CSV rows with the sensor's own
//! feature extractor.

pub mod fixture;
pub mod sim;
