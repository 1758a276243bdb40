//! Owned by the foundation work (issue 2).
