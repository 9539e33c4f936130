//! gcal-syncd turns Google Calendar push notifications ("something changed on
//! calendar X") into an exact, durable feed of per-event changes.
//!
//! # Layout
//! - [`config`]: the TOML file, validated into [`config::Config`].
//! - [`store`]: the sled store, the only module that sees sled; event
//!   versions, sync tokens, channels and the change log, written atomically.
//! - [`daemon`]: the composition root: listeners, signals, reload, drain.
//! - [`http`]: the small hyper HTTP/1 server both listeners run on.
//! - [`api`]: the local API (`/healthz`, later the change feed).
//! - [`hook`]: the listener Google's push notifications arrive at.
//! - [`logging`]: tracing to stderr, shaped for journald.
//! - [`notify`]: systemd `sd_notify` messages and the watchdog.
//! - [`rawjson`]: JSON kept as text (event bodies, end to end).
//! - [`secret`]: a string that never reaches a log line.
//! - [`private_dir`]: 0700 directories and 0600 files (store, demo, emulator).
//! - [`emulator`]: a strict Google Calendar v3 emulator (tests, demo).
//! - [`tasks`]: long-lived tasks whose death stops the daemon.
//! - [`tls`]: the rustls crypto provider, installed once.

pub mod accounts;
pub mod api;
pub mod channels;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod emulator;
pub mod feed;
pub mod google;
pub mod hook;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod private_dir;
pub mod rawjson;
pub mod secret;
pub mod status;
pub mod store;
pub mod sync;
pub mod tasks;
pub mod tls;
