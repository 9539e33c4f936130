//! One integration-test binary, a module per area (see style.md).

use gcal_syncd::emulator::testkit as emu;

mod config_check;
mod crash;
mod demo;
mod emulator_cli;
mod filters;
mod harness;
mod lifecycle;
mod listeners;
mod migrate;
mod ops;
mod push;
mod readme;
mod resilience;
mod retention;
mod scale;
mod sinks;
mod sinks_command;
mod sinks_crash;
mod sinks_disable;
mod sinks_nats;
mod snapshot;
mod store;
mod store_damage;
mod stream;
mod support;
mod sync;
mod systemd;
