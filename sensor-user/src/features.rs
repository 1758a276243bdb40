//! Streaming features and inference (issue 3).
