//! Configuration: one TOML file, read into spanned raw structs
//! (`raw`), then validated into [`Config`], whose values are ready to use
//! (durations, socket addresses, URLs, parsed credentials).
//!
//! Every problem is reported with file, line:column and dotted key, and all
//! problems of a file are reported together. Relative paths in the file are
//! relative to the directory of the file. Never touches sockets or the store.

mod credentials;
mod raw;
mod source;
mod text;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

pub use credentials::{Credentials, DEFAULT_TOKEN_URI};
pub use source::{ConfigError, ConfigErrors};
pub use text::ConfigText;

use crate::secret::Secret;

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/gcal-syncd/config.toml";
/// The environment variable that names the configuration file.
pub const PATH_ENV: &str = "GCAL_SYNCD_CONFIG";

/// The validated configuration of one daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    /// Log filter (`info`, `debug,sled=warn`); `RUST_LOG` overrides it.
    pub log_level: String,
    pub google: GoogleConfig,
    pub hook: HookConfig,
    pub api: ApiConfig,
    pub store: StoreConfig,
    pub channels: ChannelsConfig,
    pub sync: SyncConfig,
    pub accounts: Vec<Account>,
    pub feed: FeedConfig,
    pub sinks: Vec<Sink>,
}

#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// Calendar v3 root, e.g. `https://www.googleapis.com/calendar/v3`.
    pub api_base_url: Url,
}

#[derive(Debug, Clone)]
pub struct HookConfig {
    pub listen: SocketAddr,
    /// The address given to `events.watch`; its path is the one served.
    pub public_url: Url,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Bearer token every `/v1` request must carry, read from `token_file`.
    pub token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ChannelsConfig {
    pub ttl: Duration,
    pub renew_before: Duration,
    /// A tokio-cron-scheduler expression (seconds first), checked to parse.
    pub check_schedule: String,
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub poll_interval: Duration,
    pub page_size: u32,
    pub debounce: Duration,
    /// Ask Google to expand recurring series into instances.
    pub single_events: bool,
    /// Calendars synced at the same time, across all accounts.
    pub max_concurrent: usize,
    /// First retry delay after a transient Google error (doubles to 5 min).
    pub retry_base: Duration,
}

#[derive(Debug, Clone)]
pub struct FeedConfig {
    pub retention: Duration,
}

/// One Google account and the calendars followed through it.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub credentials_file: PathBuf,
    pub credentials: Credentials,
    /// The user a service account impersonates (domain-wide delegation).
    pub subject: Option<String>,
    pub calendars: CalendarSelection,
    pub on_calendar_removed: OnCalendarRemoved,
    /// Request the read-write scope instead of `calendar.readonly`.
    pub write: bool,
    /// Google's per-user quota that this account must stay under.
    pub requests_per_minute: u32,
}

/// Which calendars of an account are followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalendarSelection {
    /// These calendar ids (`primary` allowed).
    List(Vec<String>),
    /// Every calendar in the account's calendarList, followed as it changes.
    All,
}

/// What happens to a calendar's events when it leaves the configuration or
/// the account's calendarList.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCalendarRemoved {
    EmitDeletes,
    Keep,
}

/// A consumer that the feed is pushed to.
/// Compared on reload: a sink that differs in anything is restarted.
#[derive(Debug, Clone, PartialEq)]
pub struct Sink {
    pub name: String,
    pub target: SinkTarget,
    pub secret: Option<Secret>,
    /// The records it wants.
    pub filter: crate::store::Filter,
    /// Records per delivery.
    pub batch_max: usize,
    /// How long one delivery may take.
    pub timeout: Duration,
    /// A sink whose oldest undelivered record is older than this is
    /// disabled, so that it does not hold the feed forever.
    pub max_lag: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkTarget {
    Webhook(Url),
    Command(Vec<String>),
    /// JetStream; the sink's `secret` holds the credentials file, if any.
    Nats(NatsTarget),
}

/// Where a NATS sink publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsTarget {
    /// `nats://` or `tls://` server address.
    pub url: String,
    /// The JetStream stream that must store the messages.
    pub stream: String,
    /// Subjects are `<subject_prefix>.<account>.<calendar>`.
    pub subject_prefix: String,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                position: None,
                key: String::new(),
                message: format!("cannot read the configuration file: {e}"),
            }])
        })?;
        Config::parse(path, &text)
    }

    /// Validates configuration text; `path` names it in errors and anchors
    /// relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
        validate::validate(path, text)
    }

    /// The non-fatal remarks worth logging at startup.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.hook.public_url.scheme() != "https" {
            out.push(format!(
                "hook.public_url {} is not https: Google only delivers push notifications to https addresses",
                self.hook.public_url
            ));
        }
        out
    }
}

/// The configuration path: `--config`, else `$GCAL_SYNCD_CONFIG`, else
/// `/etc/gcal-syncd/config.toml`.
pub fn resolve_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| {
        std::env::var_os(PATH_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

impl Config {
    /// Keys whose value in `new` differs from this configuration's and only
    /// takes effect after a restart.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let old = self;
        let mut out = Vec::new();
        if old.hook.listen != new.hook.listen {
            out.push("hook.listen");
        }
        if old.api.listen != new.api.listen {
            out.push("api.listen");
        }
        if old.store.path != new.store.path {
            out.push("store.path");
        }
        if old.api.token != new.api.token {
            out.push("api.token_file");
        }
        if old.hook.public_url != new.hook.public_url
            || old.hook.max_body_bytes != new.hook.max_body_bytes
        {
            out.push("hook.public_url/max_body_bytes");
        }
        if old.channels.check_schedule != new.channels.check_schedule
            || old.channels.ttl != new.channels.ttl
            || old.channels.renew_before != new.channels.renew_before
        {
            out.push("channels");
        }
        if old.feed.retention != new.feed.retention {
            out.push("feed.retention");
        }
        if old.sync.poll_interval != new.sync.poll_interval
            || old.sync.debounce != new.sync.debounce
            || old.sync.page_size != new.sync.page_size
        {
            out.push("sync (for calendars already running)");
        }
        out
    }
}
