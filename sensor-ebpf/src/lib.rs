#![no_std]
// The library target exists so `cargo check` on the workspace works on the host.
