//! Alert stage and its sinks (issue 5).
