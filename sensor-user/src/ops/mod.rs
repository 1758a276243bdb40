//! Operations: what the operator reads about a run (end-of-run report,
//! counters of a running sensor, output files) and what they change in it
//! (its blocklists).

pub mod block;
pub mod metrics;
pub mod report;
pub mod stats;
pub mod top;
