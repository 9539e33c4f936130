//! One integration-test binary, a module per area (see style.md).

mod config_check;
mod crash;
mod demo;
mod emu;
mod emulator_api;
mod emulator_cli;
mod emulator_push;
mod emulator_python;
mod harness;
mod lifecycle;
mod listeners;
mod ops;
mod push;
mod readme;
mod resilience;
mod retention;
mod store;
mod store_damage;
mod support;
mod sync;
mod systemd;
