//! The validation pass: raw spanned structs in, [`Config`] or every error out.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use toml::Spanned;

use super::raw::{RawAccount, RawConfig, RawSink, S};
use super::source::{parse_all, ConfigErrors, Source};
use super::*;

const DEFAULT_API_BASE: &str = "https://www.googleapis.com/calendar/v3";
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// Where systemd tells a service its `LoadCredential=` directory.
const CREDENTIALS_DIRECTORY_ENV: &str = "CREDENTIALS_DIRECTORY";

pub(super) fn validate(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let mut src = Source::new(path, text);
    // A file that is not TOML (or whose shape serde gave up on) is reported
    // alone: "is required" errors after a syntax error would be noise.
    let Some(raw) = parse_all::<RawConfig>(&mut src) else {
        return Err(ConfigErrors(src.errors));
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
    let mut v = Validator { src, base };
    let config = v.config(&raw);
    match (config, v.src.errors.is_empty()) {
        (Some(c), true) => Ok(c),
        _ => {
            let mut errors = std::mem::take(&mut v.src.errors);
            errors.sort_by_key(|e| e.position);
            Err(ConfigErrors(errors))
        }
    }
}

struct Validator<'a> {
    src: Source<'a>,
    /// Directory that relative paths are resolved against.
    base: PathBuf,
}

fn span_of<T>(t: &S<T>) -> Range<usize> {
    t.as_ref().map_or(0..0, Spanned::span)
}

impl Validator<'_> {
    fn config(&mut self, raw: &RawConfig) -> Option<Config> {
        let log_level = self.log_level(&raw.log_level);
        let google = raw.google.as_ref().map(|g| g.get_ref());
        let api_base_url = self.url(
            google.and_then(|g| g.api_base_url.as_ref()),
            "google.api_base_url",
            DEFAULT_API_BASE,
        );
        let hook = self.hook(raw);
        let api = self.api(raw);
        let store = raw.store.as_ref().and_then(|s| s.get_ref().path.as_ref());
        let store_path = self.path(store, "store.path", "/var/lib/gcal-syncd");
        let channels = self.channels(raw);
        let sync = self.sync(raw);
        let accounts = self.accounts(raw);
        let feed = raw
            .feed
            .as_ref()
            .and_then(|f| f.get_ref().retention.as_ref());
        let retention = self.duration(feed, "feed.retention", "7d", false, DAY * 3650);
        let sinks = self.sinks(raw);
        Some(Config {
            path: self.src.file().to_path_buf(),
            log_level: log_level?,
            google: GoogleConfig {
                api_base_url: api_base_url?,
            },
            hook: hook?,
            api: api?,
            store: StoreConfig { path: store_path? },
            channels: channels?,
            sync: sync?,
            accounts: accounts?,
            feed: FeedConfig {
                retention: retention?,
            },
            sinks: sinks?,
        })
    }

    fn log_level(&mut self, raw: &S<String>) -> Option<String> {
        let Some(level) = raw else {
            return Some("info".into());
        };
        match crate::logging::parse_filter(level.get_ref()) {
            Ok(_) => Some(level.get_ref().clone()),
            Err(e) => {
                self.src.error_at(
                    level,
                    "log_level",
                    format!("not a log filter ({e}); try \"info\" or \"debug\""),
                );
                None
            }
        }
    }

    fn hook(&mut self, raw: &RawConfig) -> Option<HookConfig> {
        let table = raw.hook.as_ref().map(|h| h.get_ref());
        let listen = self.addr(
            table.and_then(|h| h.listen.as_ref()),
            "hook.listen",
            "127.0.0.1:8787",
        );
        let public_url = match table.and_then(|h| h.public_url.as_ref()) {
            Some(u) => self.url(Some(u), "hook.public_url", ""),
            None => {
                self.src.missing(span_of(&raw.hook), "hook.public_url");
                None
            }
        };
        let max_body = table.and_then(|h| h.max_body_bytes.as_ref());
        let max_body_bytes = self.int(max_body, "hook.max_body_bytes", 65536, 0..=16 * 1024 * 1024);
        Some(HookConfig {
            listen: listen?,
            public_url: public_url?,
            max_body_bytes: max_body_bytes? as usize,
        })
    }

    fn api(&mut self, raw: &RawConfig) -> Option<ApiConfig> {
        let table = raw.api.as_ref().map(|a| a.get_ref());
        let listen = self.addr(
            table.and_then(|a| a.listen.as_ref()),
            "api.listen",
            "127.0.0.1:8788",
        );
        let token = match table.and_then(|a| a.token_file.as_ref()) {
            None => Some(None),
            Some(file) => self.secret_file(file, "api.token_file").map(Some),
        };
        Some(ApiConfig {
            listen: listen?,
            token: token?,
        })
    }

    fn channels(&mut self, raw: &RawConfig) -> Option<ChannelsConfig> {
        let table = raw.channels.as_ref().map(|c| c.get_ref());
        let ttl = self.duration(
            table.and_then(|c| c.ttl.as_ref()),
            "channels.ttl",
            "7d",
            false,
            DAY * 30,
        );
        let renew_raw = table.and_then(|c| c.renew_before.as_ref());
        let renew_before = self.duration(renew_raw, "channels.renew_before", "1d", false, DAY * 30);
        if let (Some(ttl), Some(renew)) = (ttl, renew_before) {
            if renew >= ttl {
                let span = renew_raw.map_or(span_of(&raw.channels), Spanned::span);
                let msg = format!(
                    "must be shorter than channels.ttl ({})",
                    humantime::format_duration(ttl)
                );
                self.src.error(span, "channels.renew_before", msg);
            }
        }
        let schedule = table.and_then(|c| c.check_schedule.as_ref());
        let check_schedule = self.cron(schedule, "channels.check_schedule", "0 */5 * * * *");
        Some(ChannelsConfig {
            ttl: ttl?,
            renew_before: renew_before?,
            check_schedule: check_schedule?,
        })
    }

    fn sync(&mut self, raw: &RawConfig) -> Option<SyncConfig> {
        let t = raw.sync.as_ref().map(|s| s.get_ref());
        let poll = self.duration(
            t.and_then(|s| s.poll_interval.as_ref()),
            "sync.poll_interval",
            "15m",
            false,
            DAY * 7,
        );
        let page_size = self.int(
            t.and_then(|s| s.page_size.as_ref()),
            "sync.page_size",
            2500,
            1..=2500,
        );
        let debounce = self.duration(
            t.and_then(|s| s.debounce.as_ref()),
            "sync.debounce",
            "1s",
            true,
            MINUTE * 10,
        );
        let max_conc = self.int(
            t.and_then(|s| s.max_concurrent.as_ref()),
            "sync.max_concurrent",
            4,
            1..=256,
        );
        let single_events = t
            .and_then(|s| s.single_events.as_ref())
            .is_some_and(|b| *b.get_ref());
        let retry = t.and_then(|s| s.retry_base.as_ref());
        let retry_base = self.duration(retry, "sync.retry_base", "1s", false, MINUTE * 10);
        Some(SyncConfig {
            poll_interval: poll?,
            page_size: page_size? as u32,
            debounce: debounce?,
            single_events,
            max_concurrent: max_conc? as usize,
            retry_base: retry_base?,
        })
    }

    fn accounts(&mut self, raw: &RawConfig) -> Option<Vec<Account>> {
        let Some(list) = &raw.accounts else {
            self.src.error(
                0..0,
                "accounts",
                "at least one [[accounts]] table is required",
            );
            return None;
        };
        if list.get_ref().is_empty() {
            self.src
                .error_at(list, "accounts", "at least one account is required");
        }
        let mut names = HashSet::new();
        let mut out = Some(Vec::new());
        for (i, acc) in list.get_ref().iter().enumerate() {
            if let Some(name) = &acc.get_ref().name {
                if !names.insert(name.get_ref().clone()) {
                    let msg = format!(
                        "duplicate account name \"{}\"",
                        name.get_ref().escape_debug()
                    );
                    self.src.error_at(name, &format!("accounts[{i}].name"), msg);
                }
            }
            match (&mut out, self.account(i, acc)) {
                (Some(v), Some(a)) => v.push(a),
                _ => out = None,
            }
        }
        out
    }

    fn account(&mut self, i: usize, acc: &Spanned<RawAccount>) -> Option<Account> {
        let key = |k: &str| format!("accounts[{i}].{k}");
        let raw = acc.get_ref();
        let name = match &raw.name {
            None => {
                self.src.missing(acc.span(), &key("name"));
                None
            }
            Some(n) if n.get_ref().trim().is_empty() => {
                self.src.error_at(n, &key("name"), "must not be empty");
                None
            }
            Some(n) => Some(n.get_ref().clone()),
        };
        let (credentials_file, credentials) = match &raw.credentials_file {
            None => {
                self.src.missing(acc.span(), &key("credentials_file"));
                (None, None)
            }
            Some(f) => match self.secret_path(f, &key("credentials_file")) {
                None => (None, None),
                Some(path) => match Credentials::load(&path) {
                    Ok(c) => (Some(path), Some(c)),
                    Err(e) => {
                        self.src.error_at(f, &key("credentials_file"), e);
                        (None, None)
                    }
                },
            },
        };
        let calendars = self.calendars(acc, &key("calendars"));
        let on_removed = match raw
            .on_calendar_removed
            .as_ref()
            .map(|s| (s, s.get_ref().as_str()))
        {
            None | Some((_, "emit_deletes")) => Some(OnCalendarRemoved::EmitDeletes),
            Some((_, "keep")) => Some(OnCalendarRemoved::Keep),
            Some((s, other)) => {
                let msg = format!(
                    "\"{}\" is not one of \"emit_deletes\", \"keep\"",
                    other.escape_debug()
                );
                self.src.error_at(s, &key("on_calendar_removed"), msg);
                None
            }
        };
        let rpm = self.int(
            raw.requests_per_minute.as_ref(),
            &key("requests_per_minute"),
            600,
            1..=1_000_000,
        );
        Some(Account {
            name: name?,
            credentials_file: credentials_file?,
            credentials: credentials?,
            subject: raw.subject.as_ref().map(|s| s.get_ref().clone()),
            calendars: calendars?,
            on_calendar_removed: on_removed?,
            write: raw.write.as_ref().is_some_and(|w| *w.get_ref()),
            requests_per_minute: rpm? as u32,
        })
    }

    fn calendars(&mut self, acc: &Spanned<RawAccount>, key: &str) -> Option<CalendarSelection> {
        let Some(value) = &acc.get_ref().calendars else {
            self.src.missing(acc.span(), key);
            return None;
        };
        let list = match value.get_ref() {
            toml::Value::String(s) if s == "all" => return Some(CalendarSelection::All),
            toml::Value::Array(items) => items,
            _ => {
                self.src
                    .error_at(value, key, "must be \"all\" or a list of calendar ids");
                return None;
            }
        };
        let mut ids = Vec::new();
        for item in list {
            match item.as_str() {
                Some(id) if !id.trim().is_empty() && !ids.iter().any(|x| x == id) => {
                    ids.push(id.to_string())
                }
                Some(id) if id.trim().is_empty() => {
                    self.src
                        .error_at(value, key, "calendar ids must not be empty")
                }
                Some(id) => self.src.error_at(
                    value,
                    key,
                    format!("duplicate calendar id \"{}\"", id.escape_debug()),
                ),
                None => self
                    .src
                    .error_at(value, key, "calendar ids must be strings"),
            }
        }
        if list.is_empty() {
            self.src
                .error_at(value, key, "at least one calendar is required (or \"all\")");
            return None;
        }
        Some(CalendarSelection::List(ids))
    }

    fn sinks(&mut self, raw: &RawConfig) -> Option<Vec<Sink>> {
        let Some(list) = &raw.sinks else {
            return Some(Vec::new());
        };
        let mut names = HashSet::new();
        let mut out = Some(Vec::new());
        for (i, s) in list.get_ref().iter().enumerate() {
            if let Some(name) = &s.get_ref().name {
                if !names.insert(name.get_ref().clone()) {
                    let msg = format!("duplicate sink name \"{}\"", name.get_ref().escape_debug());
                    self.src.error_at(name, &format!("sinks[{i}].name"), msg);
                }
            }
            match (&mut out, self.sink(i, s)) {
                (Some(v), Some(s)) => v.push(s),
                _ => out = None,
            }
        }
        out
    }

    fn sink(&mut self, i: usize, s: &Spanned<RawSink>) -> Option<Sink> {
        let key = |k: &str| format!("sinks[{i}].{k}");
        let raw = s.get_ref();
        let name = match raw.name.as_ref() {
            None => {
                self.src.missing(s.span(), &key("name"));
                None
            }
            Some(n) if !plain_name(n.get_ref()) => {
                let msg = format!(
                    "\"{}\" is not a sink name: 1 to 64 letters, digits, '.', '_' or '-' (it names the sink in URLs, metrics and the store)",
                    n.get_ref().escape_debug()
                );
                self.src.error_at(n, &key("name"), msg);
                None
            }
            Some(n) => Some(n.get_ref().clone()),
        };
        let target = match raw.kind.as_ref().map(|k| (k, k.get_ref().as_str())) {
            Some((_, "webhook")) => match &raw.url {
                Some(u) => self.url(Some(u), &key("url"), "").map(SinkTarget::Webhook),
                None => {
                    self.src.missing(s.span(), &key("url"));
                    None
                }
            },
            Some((_, "command")) => match &raw.command {
                Some(c) if !c.get_ref().is_empty() => match program_problem(&c.get_ref()[0]) {
                    None => Some(SinkTarget::Command(c.get_ref().clone())),
                    Some(why) => {
                        self.src.error_at(c, &key("command"), why);
                        None
                    }
                },
                _ => {
                    self.src.error(
                        s.span(),
                        &key("command"),
                        "is required for a command sink (a non-empty list)",
                    );
                    None
                }
            },
            Some((_, "nats")) => self.nats(s, raw, &key).map(SinkTarget::Nats),
            Some((k, other)) => {
                self.src.error_at(
                    k,
                    &key("type"),
                    format!(
                        "\"{}\" is not one of \"webhook\", \"command\", \"nats\"",
                        other.escape_debug()
                    ),
                );
                None
            }
            None => {
                self.src.missing(s.span(), &key("type"));
                None
            }
        };
        let secret_key = if raw.credentials_file.is_some() {
            key("credentials_file")
        } else {
            key("secret_file")
        };
        let secret_file = match (&target, &raw.credentials_file) {
            (Some(SinkTarget::Nats(_)), Some(creds)) => Some(creds),
            (_, Some(creds)) => {
                self.src
                    .error_at(creds, &key("credentials_file"), "is only for a nats sink");
                None
            }
            _ => raw.secret_file.as_ref(),
        };
        let secret = match secret_file {
            None if matches!(target, Some(SinkTarget::Webhook(_))) => {
                self.src.error(
                    s.span(),
                    &key("secret_file"),
                    "is required for a webhook sink (a Standard Webhooks secret, whsec_ + base64)",
                );
                None
            }
            None => Some(None),
            Some(f) => match self.secret_file(f, &secret_key) {
                Some(secret) if matches!(target, Some(SinkTarget::Webhook(_))) => {
                    match crate::sinks::Signer::new(secret.expose()) {
                        Ok(_) => Some(Some(secret)),
                        Err(why) => {
                            self.src.error_at(f, &key("secret_file"), why);
                            None
                        }
                    }
                }
                other => other.map(Some),
            },
        };
        let batch_max = self.int(raw.batch_max.as_ref(), &key("batch_max"), 100, 1..=10_000);
        let timeout = self.duration(
            raw.timeout.as_ref(),
            &key("timeout"),
            "10s",
            false,
            Duration::from_secs(600),
        );
        let max_lag = self.duration(
            raw.max_lag.as_ref(),
            &key("max_lag"),
            "7d",
            false,
            DAY * 3650,
        );
        let list = |v: &S<Vec<String>>| v.as_ref().map_or(Vec::new(), |l| l.get_ref().clone());
        Some(Sink {
            name: name?,
            target: target?,
            secret: secret?,
            filter: crate::store::Filter {
                accounts: list(&raw.accounts),
                calendars: list(&raw.calendars),
            },
            batch_max: batch_max? as usize,
            timeout: timeout?,
            max_lag: max_lag?,
        })
    }

    /// A nats sink's `url`, `stream` and `subject_prefix`.
    fn nats(
        &mut self,
        s: &Spanned<RawSink>,
        raw: &RawSink,
        key: &dyn Fn(&str) -> String,
    ) -> Option<super::NatsTarget> {
        let mut required = |v: &S<String>, k: &str, check: fn(&str) -> Option<String>| match v {
            None => {
                self.src.missing(s.span(), &key(k));
                None
            }
            Some(v) => match check(v.get_ref()) {
                None => Some(v.get_ref().clone()),
                Some(why) => {
                    self.src.error_at(v, &key(k), why);
                    None
                }
            },
        };
        let url = required(&raw.url, "url", |u| match Url::parse(u) {
            Ok(u) if matches!(u.scheme(), "nats" | "tls") && u.host_str().is_some() => None,
            Ok(_) => Some("must be a nats:// or tls:// URL with a host".into()),
            Err(e) => Some(format!(
                "\"{}\" is not an absolute URL ({e})",
                u.escape_debug()
            )),
        });
        let stream = required(&raw.stream, "stream", |v| {
            (v.is_empty() || v.contains(|c: char| c.is_whitespace() || ".*>/\\".contains(c)))
                .then(|| format!("\"{}\" is not a JetStream stream name (no spaces, '.', '*', '>', '/', '\\')", v.escape_debug()))
        });
        let prefix = required(&raw.subject_prefix, "subject_prefix", |v| {
            let bad = |t: &str| {
                t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
            };
            v.split('.').any(bad).then(|| {
                format!("\"{}\" is not a subject prefix: dot-separated, non-empty tokens without spaces, '*' or '>'", v.escape_debug())
            })
        });
        Some(super::NatsTarget {
            url: url?,
            stream: stream?,
            subject_prefix: prefix?,
        })
    }

    // ----- leaf values -----

    fn duration(
        &mut self,
        v: Option<&Spanned<String>>,
        key: &str,
        default: &str,
        zero_ok: bool,
        max: Duration,
    ) -> Option<Duration> {
        let text = v.map_or(default, |s| s.get_ref().as_str());
        match humantime::parse_duration(text) {
            Ok(d) if d > max => {
                let msg = format!(
                    "\"{}\" is longer than the most this setting allows ({})",
                    text.escape_debug(),
                    humantime::format_duration(max)
                );
                self.src.error(v.map_or(0..0, Spanned::span), key, msg);
                None
            }
            Ok(d) if d.is_zero() && !zero_ok => {
                self.src.error(
                    v.map_or(0..0, Spanned::span),
                    key,
                    "must be longer than zero",
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                let msg = format!(
                    "\"{}\" is not a duration ({e}); write e.g. \"90s\", \"15m\", \"7d\"",
                    text.escape_debug()
                );
                self.src.error(v.map_or(0..0, Spanned::span), key, msg);
                None
            }
        }
    }

    fn addr(
        &mut self,
        v: Option<&Spanned<String>>,
        key: &str,
        default: &str,
    ) -> Option<SocketAddr> {
        let text = v.map_or(default, |s| s.get_ref().as_str());
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                let msg = format!(
                    "\"{}\" is not an IP:port address, e.g. \"127.0.0.1:8787\"",
                    text.escape_debug()
                );
                self.src.error(v.map_or(0..0, Spanned::span), key, msg);
                None
            }
        }
    }

    fn url(&mut self, v: Option<&Spanned<String>>, key: &str, default: &str) -> Option<Url> {
        let text = v.map_or(default, |s| s.get_ref().as_str());
        let problem = match Url::parse(text) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                "must be an http:// or https:// URL".to_string()
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => "has no host".to_string(),
            Ok(u) => return Some(u),
            Err(e) => format!("\"{}\" is not an absolute URL ({e})", text.escape_debug()),
        };
        self.src.error(v.map_or(0..0, Spanned::span), key, problem);
        None
    }

    fn int(
        &mut self,
        v: Option<&Spanned<i64>>,
        key: &str,
        default: i64,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
        let Some(n) = v else { return Some(default) };
        if range.contains(n.get_ref()) {
            return Some(*n.get_ref());
        }
        let msg = format!(
            "{} is out of range ({}..={})",
            n.get_ref(),
            range.start(),
            range.end()
        );
        self.src.error_at(n, key, msg);
        None
    }

    fn path(&mut self, v: Option<&Spanned<String>>, key: &str, default: &str) -> Option<PathBuf> {
        match v {
            Some(p) if p.get_ref().is_empty() => {
                self.src.error_at(p, key, "must not be empty");
                None
            }
            Some(p) => Some(self.base.join(p.get_ref())),
            None => Some(PathBuf::from(default)),
        }
    }

    fn cron(&mut self, v: Option<&Spanned<String>>, key: &str, default: &str) -> Option<String> {
        let text = v.map_or(default, |s| s.get_ref().as_str());
        match tokio_cron_scheduler::Job::new(text, |_, _| {}) {
            Ok(_) => Some(text.to_string()),
            Err(_) => {
                let msg = format!(
                    "\"{}\" is not a cron expression with a seconds field, e.g. \"0 */5 * * * *\"",
                    text.escape_debug()
                );
                self.src.error(v.map_or(0..0, Spanned::span), key, msg);
                None
            }
        }
    }

    /// The path of a file holding a secret. A leading `%d/` is systemd's
    /// credentials directory (`$CREDENTIALS_DIRECTORY`, filled by
    /// `LoadCredential=`), as `%d` means in a unit file.
    fn secret_path(&mut self, f: &Spanned<String>, key: &str) -> Option<PathBuf> {
        let Some(name) = f.get_ref().strip_prefix("%d/") else {
            return Some(self.base.join(f.get_ref()));
        };
        match std::env::var_os(CREDENTIALS_DIRECTORY_ENV).filter(|d| !d.is_empty()) {
            Some(dir) if !name.is_empty() => Some(Path::new(&dir).join(name)),
            Some(_) => {
                self.src.error_at(f, key, "names no file after %d/");
                None
            }
            None => {
                let msg = format!(
                    "%d/ stands for ${CREDENTIALS_DIRECTORY_ENV}, which is not set: systemd sets it \
                     for a unit with LoadCredential=; elsewhere set it to the directory holding \
                     {name:?}, or write the file's full path"
                );
                self.src.error_at(f, key, msg);
                None
            }
        }
    }

    fn secret_file(&mut self, f: &Spanned<String>, key: &str) -> Option<Secret> {
        let path = self.secret_path(f, key)?;
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Some(Secret::new(s.trim())),
            Ok(_) => {
                self.src
                    .error_at(f, key, format!("{} is empty", path.display()));
                None
            }
            Err(e) => {
                self.src
                    .error_at(f, key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }
}

/// Why a command sink's program cannot be run, if it cannot: it is run
/// without a shell and without a search path, so it must be an absolute
/// path to an executable file.
fn program_problem(program: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::path::Path::new(program);
    if !path.is_absolute() {
        return Some(format!(
            "{:?} is not an absolute path (the command runs without a shell or PATH)",
            program
        ));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => None,
        Ok(_) => Some(format!("{program:?} is not an executable file")),
        Err(e) => Some(format!("cannot use {program:?}: {e}")),
    }
}

/// A sink name: 1 to 64 ASCII letters, digits, '.', '_' or '-'.
fn plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
