//! gcal-syncd turns Google Calendar push notifications ("something changed on
//! calendar X") into an exact, durable feed of per-event changes.
//!
//! # What the library exports
//! Only what `main.rs`, the tests and the benches use:
//! - [`config`]: the TOML file, validated into [`config::Config`];
//!   [`config::ConfigText`] writes one.
//! - [`daemon`]: the composition root (listeners, signals, reload, drain);
//!   [`daemon::spawn`] starts it in-process.
//! - [`api`]: the local API (`/healthz`, `/v1/changes`, `/v1/snapshot`,
//!   `/v1/calendars`, `/metrics`), and the client `status` uses.
//! - [`status`]: the `/v1/calendars` answer and the table `status` prints.
//! - [`store`]: the sled store, the only module that sees sled.
//! - [`emulator`]: a strict Google Calendar v3 emulator; [`demo`] runs the
//!   daemon against it.
//! - [`http`], [`logging`], [`tls`], [`private_dir`], [`rawjson`], [`secret`]:
//!   the HTTP/1 server, journald-shaped logs, the rustls provider, 0700
//!   directories, JSON kept as text, a string that never reaches a log.
//! - [`time`]: [`time::Timestamp`], the times of store records and the API.
//!
//! # Inside
//! From a ping to a change record: `hook` checks the ping against the
//! channel index of `channels` and pokes the calendar's engine in `sync`;
//! the engine lists changes through `google`, plans each page with the pure
//! `sync::plan`, and hands it to the `feed` writer, which gives the records
//! seqs, writes them to the store and publishes the durable head; `api`
//! serves them, and `snapshot` streams a calendar's stored events. `supervisor` applies reloads and follows calendar lists
//! (`accounts` keeps the running calendars), `metrics` is Prometheus,
//! `sinks` pushes the feed to webhooks, commands and NATS JetStream, `notify` talks to systemd, `tasks` makes a dead task stop the daemon.
//! Items nothing outside the crate can reach are `pub(crate)`; the
//! `unreachable_pub` lint (an error under CI's `-D warnings`) keeps it so.

#![warn(unreachable_pub)]

pub(crate) mod accounts;
pub mod api;
pub(crate) mod channels;
pub mod config;
pub mod daemon;
pub mod demo;
pub(crate) mod feed;
pub(crate) mod google;
pub(crate) mod hook;
pub mod http;
pub mod logging;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod notify;
pub mod private_dir;
pub(crate) mod progress;
pub mod rawjson;
pub mod secret;
pub(crate) mod sinks;
pub(crate) mod snapshot;
pub mod status;
pub mod store;
pub(crate) mod supervisor;
pub(crate) mod sync;
pub(crate) mod tasks;
pub mod time;
pub mod tls;

/// The Google Calendar emulator (the `gcal-emulator` package).
pub use gcal_emulator as emulator;
