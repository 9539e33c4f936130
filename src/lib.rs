//! gcal-syncd turns Google Calendar push notifications ("something changed on
//! calendar X") into an exact, durable feed of per-event changes.
//!
//! # Layout
//! From a ping to a change record: [`hook`] checks the ping against the
//! channel index of [`channels`] and pokes the calendar's engine in [`sync`];
//! the engine lists changes through [`google`] and hands whole pages to the
//! [`feed`] writer, which gives them seqs and writes them to the [`store`];
//! [`api`] serves them.
//! - [`config`]: the TOML file, validated into [`config::Config`].
//! - [`daemon`]: the composition root: listeners, signals, reload, drain.
//! - [`accounts`]: the accounts' calendars (configured or followed) and their engines.
//! - [`supervisor`]: the task that applies reloads, follows calendar lists
//!   and purges removed calendars.
//! - [`sync`]: one engine per calendar: incremental sync, 410 resync, backoff.
//! - [`google`]: the Calendar API client and OAuth (yup-oauth2).
//! - [`channels`]: watch channels: creation, renewal, the ping index.
//! - [`hook`]: the listener Google's push notifications arrive at.
//! - [`feed`]: the change feed's single writer, retention, the durable head.
//! - [`store`]: the sled store, the only module that sees sled; event
//!   versions, sync tokens, channels and the change log, written atomically.
//! - [`api`]: the local API (`/healthz`, `/v1/changes`, `/v1/calendars`, `/metrics`).
//! - [`status`]: the table `gcal-syncd status` prints.
//! - [`metrics`]: the Prometheus metrics.
//! - [`http`]: the small hyper HTTP/1 server both listeners run on.
//! - [`logging`]: tracing to stderr, shaped for journald.
//! - [`notify`]: systemd `sd_notify` messages and the watchdog.
//! - [`rawjson`]: JSON kept as text (event bodies, end to end).
//! - [`secret`]: a string that never reaches a log line.
//! - [`private_dir`]: 0700 directories and 0600 files (store, demo, emulator).
//! - [`tasks`]: long-lived tasks whose death stops the daemon.
//! - [`tls`]: the rustls crypto provider, installed once.
//! - [`emulator`]: a strict Google Calendar v3 emulator (tests, demo).
//! - [`demo`]: `gcal-syncd demo`, the daemon against the emulator.

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
pub mod supervisor;
pub mod sync;
pub mod tasks;
pub mod tls;
