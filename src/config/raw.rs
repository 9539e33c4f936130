//! The configuration file as written: every leaf optional and spanned, so
//! that serde fails only on unknown keys and wrong types, and every other
//! problem (missing keys, bad values, bad combinations) is found by the
//! validation pass in `super`, which reports them all at once.

use serde::Deserialize;
use toml::Spanned;

pub(super) type S<T> = Option<Spanned<T>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub log_level: S<String>,
    pub google: S<RawGoogle>,
    pub hook: S<RawHook>,
    pub api: S<RawApi>,
    pub store: S<RawStore>,
    pub channels: S<RawChannels>,
    pub sync: S<RawSync>,
    pub accounts: S<Vec<Spanned<RawAccount>>>,
    pub feed: S<RawFeed>,
    pub sinks: S<Vec<Spanned<RawSink>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGoogle {
    pub api_base_url: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    pub listen: S<String>,
    pub public_url: S<String>,
    pub max_body_bytes: S<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub listen: S<String>,
    pub token_file: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub path: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannels {
    pub ttl: S<String>,
    pub renew_before: S<String>,
    pub check_schedule: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    pub poll_interval: S<String>,
    pub page_size: S<i64>,
    pub debounce: S<String>,
    pub single_events: S<bool>,
    pub max_concurrent: S<i64>,
    pub retry_base: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub name: S<String>,
    pub credentials_file: S<String>,
    pub subject: S<String>,
    pub calendars: S<toml::Value>,
    pub on_calendar_removed: S<String>,
    pub write: S<bool>,
    pub requests_per_minute: S<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFeed {
    pub retention: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSink {
    pub name: S<String>,
    #[serde(rename = "type")]
    pub kind: S<String>,
    pub url: S<String>,
    pub command: S<Vec<String>>,
    pub secret_file: S<String>,
    pub accounts: S<Vec<String>>,
    pub calendars: S<Vec<String>>,
    pub batch_max: S<i64>,
    pub timeout: S<String>,
    pub max_lag: S<String>,
    pub stream: S<String>,
    pub subject_prefix: S<String>,
    pub credentials_file: S<String>,
}
