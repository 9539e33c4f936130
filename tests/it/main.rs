//! One integration-test binary, a module per area (see style.md).

mod config_check;
mod lifecycle;
mod store;
mod support;
mod systemd;
