//! Composes the stages into a running sensor: the command line, signal
//! handling, the scoring and alert threads and the capture loop.

pub mod cli;
pub mod runner;
pub mod scoring;
