//! User space of the XDP threat sensor. The modules are the stages of the
//! data flow in DESIGN.md, in the order an event travels through them; a
//! stage imports only from the stages above it in this list.

pub mod alerts;
pub mod capture;
pub mod features;
pub mod model;
pub mod ops;
pub mod run;
pub mod sinks;
