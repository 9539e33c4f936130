//! The emulator's conformance tests, over real HTTP: one binary, a module
//! per area. `cargo test` at the workspace root runs them with the daemon's.

use gcal_emulator::testkit as emu;

mod api;
mod push;
mod python;
