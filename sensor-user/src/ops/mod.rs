//! Operations: what the operator reads about a run (end-of-run report,
//! counters of a running sensor, output files).

pub mod metrics;
pub mod report;
pub mod stats;
